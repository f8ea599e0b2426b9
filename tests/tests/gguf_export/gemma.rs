//! Writes an HF Gemma 2 or Gemma 3 fixture as a GGUF file the way llama.cpp's
//! `convert_hf_to_gguf.py` does: arch `gemma2`/`gemma3`, every norm weight
//! (q/k norms included) stored as `1 + w` in F32, Gemma's norm names
//! (`post_attention_norm`, `ffn_norm` for the pre-MLP norm,
//! `post_ffw_norm`), the soft-caps, window and Gemma 3's global rope
//! scaling as metadata, and no `query_pre_attn_scalar` (llama.cpp derives
//! it). Departures, each a key llama.cpp reads when present:
//! - the converter drops an untied `lm_head`; it is kept as `output.weight`
//!   so an untied fixture can be checked;
//! - the converter writes no layer pattern (llama.cpp assumes Gemma's
//!   production one, which a 3-layer fixture does not have), so the
//!   fixture's is written as `attention.sliding_window_pattern`;
//! - a local rope base other than 10000 as `rope.freq_base_swa`.

use std::path::Path;

use pagoda_engine::config::{Architecture, ModelConfig, RopeScaling};
use pagoda_engine::weights::gguf_names::{hf_to_gguf_name_for, is_gemma_norm, NameTable};
use pagoda_engine::weights::gguf_writer::RawTensor;
use pagoda_engine::weights::{GgufValue, SafetensorsWeights, WeightSource};

/// Converts the HF Gemma 2/3 folder `dir` into the GGUF file `out`.
pub fn convert_gemma_fixture(dir: &Path, out: &Path) {
    let config = ModelConfig::from_hf_dir(dir).unwrap();
    let arch = match config.architecture {
        Architecture::Gemma2 => "gemma2",
        Architecture::Gemma3 => "gemma3",
        other => panic!("{other:?} is not Gemma 2/3"),
    };
    let weights = SafetensorsWeights::open_dir(dir).unwrap();
    let mut tensors: Vec<RawTensor> = Vec::new();
    for (name, shape) in config.tensor_shapes() {
        let t = weights.get(&name, &shape).unwrap();
        let gguf = hf_to_gguf_name_for(&name, NameTable::Gemma)
            .unwrap_or_else(|| panic!("no GGUF name for {name}"));
        let (ty, bytes) = if is_gemma_norm(&name) {
            let plus_one: Vec<u8> = t
                .to_f32()
                .into_iter()
                .flat_map(|w| (w + 1.0).to_le_bytes())
                .collect();
            (0, plus_one)
        } else {
            super::raw(t.data)
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        tensors.push((gguf, dims, ty, bytes));
    }
    let v = &config.variant;
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta = super::common_meta(arch, &config);
    meta.extend([
        (k("attention.key_length"), u(config.head_dim)),
        (k("attention.value_length"), u(config.head_dim)),
        (k("rope.freq_base"), GgufValue::F32(config.rope_theta)),
    ]);
    let caps = [
        ("attn_logit_softcapping", v.attn_logit_softcapping),
        ("final_logit_softcapping", v.final_logit_softcapping),
    ];
    for (key, cap) in caps {
        // Gemma 2's absent cap means llama.cpp's default, so 0 marks none.
        if cap.is_some() || arch == "gemma2" {
            meta.push((k(key), GgufValue::F32(cap.unwrap_or(0.0))));
        }
    }
    if let Some(w) = config.sliding_window {
        meta.push((k("attention.sliding_window"), u(w)));
        if arch == "gemma3" {
            let pattern = (0..config.num_hidden_layers)
                .map(|i| GgufValue::Bool(config.layer_window(i).is_some()))
                .collect();
            meta.push((
                k("attention.sliding_window_pattern"),
                GgufValue::Array(pattern),
            ));
        }
    }
    match config.rope_scaling {
        RopeScaling::Default => {}
        RopeScaling::Linear { factor } => {
            meta.push((k("rope.scaling.type"), GgufValue::String("linear".into())));
            meta.push((k("rope.scaling.factor"), GgufValue::F32(factor)));
        }
        ref other => panic!("the converter writes linear scaling only, not {other:?}"),
    }
    match &v.local_rope {
        Some((theta, RopeScaling::Default)) if *theta != 10000.0 => {
            meta.push((k("rope.freq_base_swa"), GgufValue::F32(*theta)));
        }
        None | Some((_, RopeScaling::Default)) => {}
        Some(other) => panic!("llama.cpp's local rope is unscaled, not {other:?}"),
    }
    super::write_gguf(out, &meta, &tensors);
}
