//! Writes an HF Phi-3 fixture as a GGUF file the way llama.cpp's
//! `convert_hf_to_gguf.py` (`Phi3MiniModel`) does: arch `phi3`, the fused
//! `qkv_proj` / `gate_up_proj` kept fused as `attn_qkv` / `ffn_up` (no row
//! permutation: llama.cpp runs Phi-3 with NeoX rope), the window as
//! `attention.sliding_window` (0 for none), and LongRoPE as the tensors
//! `rope_factors_{short,long}.weight` plus the original context and the
//! attention factor as metadata.

use std::path::Path;

use pagoda_engine::config::{Architecture, ModelConfig};
use pagoda_engine::weights::gguf_names::{hf_to_gguf_name_for, NameTable};
use pagoda_engine::weights::gguf_writer::RawTensor;
use pagoda_engine::weights::{GgufValue, SafetensorsWeights, WeightSource};

/// Converts the HF Phi-3 folder `dir` into the GGUF file `out`.
pub fn convert_phi3_fixture(dir: &Path, out: &Path) {
    let config = ModelConfig::from_hf_dir(dir).unwrap();
    assert_eq!(config.architecture, Architecture::Phi3);
    let arch = "phi3";
    let weights = SafetensorsWeights::open_dir(dir).unwrap();
    let mut tensors: Vec<RawTensor> = Vec::new();
    for (name, shape) in config.tensor_shapes() {
        let t = weights.get(&name, &shape).unwrap();
        let gguf = hf_to_gguf_name_for(&name, NameTable::Phi3)
            .unwrap_or_else(|| panic!("no GGUF name for {name}"));
        let (ty, bytes) = super::raw(t.data);
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push((gguf, dims, ty, bytes));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta = super::common_meta(arch, &config);
    meta.extend([
        (k("rope.dimension_count"), u(config.rotary_dim())),
        (k("rope.freq_base"), GgufValue::F32(config.rope_theta)),
        (
            k("attention.sliding_window"),
            u(config.sliding_window.unwrap_or(0)),
        ),
    ]);
    if let Some(lr) = &config.variant.long_rope {
        meta.push((
            k("rope.scaling.original_context_length"),
            u(lr.original_max_position_embeddings),
        ));
        meta.push((
            k("rope.scaling.attn_factor"),
            GgufValue::F32(lr.attention_factor),
        ));
        for (name, f) in [
            ("rope_factors_long.weight", &lr.long_factor),
            ("rope_factors_short.weight", &lr.short_factor),
        ] {
            let bytes = f.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((name.into(), vec![f.len() as u64], 0, bytes));
        }
    }
    super::write_gguf(out, &meta, &tensors);
}
