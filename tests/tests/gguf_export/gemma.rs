//! Writes an HF Gemma 2 fixture as a GGUF file the way llama.cpp's
//! `convert_hf_to_gguf.py` does: arch `gemma2`, every norm weight stored
//! as `1 + w` in F32, Gemma's norm names (`post_attention_norm`,
//! `ffn_norm` for the pre-MLP norm, `post_ffw_norm`), the soft-caps and the
//! window as metadata, and no `query_pre_attn_scalar` or layer pattern
//! (llama.cpp derives them). One departure: llama.cpp's converter drops an
//! untied `lm_head`; it is kept here as `output.weight` so an untied fixture
//! can be checked (the loader reads `output.weight` when present).

use std::path::Path;

use pagoda_engine::config::{Architecture, ModelConfig};
use pagoda_engine::weights::gguf_names::{hf_to_gguf_name_for, is_gemma_norm};
use pagoda_engine::weights::gguf_writer::{encode, RawTensor};
use pagoda_engine::weights::{GgufValue, SafetensorsWeights, WeightSource};

/// Converts the HF Gemma 2 folder `dir` into the GGUF file `out`.
pub fn convert_gemma2_fixture(dir: &Path, out: &Path) {
    let config = ModelConfig::from_hf_dir(dir).unwrap();
    assert_eq!(config.architecture, Architecture::Gemma2);
    let weights = SafetensorsWeights::open_dir(dir).unwrap();
    let mut tensors: Vec<RawTensor> = Vec::new();
    for (name, shape) in config.tensor_shapes() {
        let t = weights.get(&name, &shape).unwrap();
        let gguf =
            hf_to_gguf_name_for(&name, true).unwrap_or_else(|| panic!("no GGUF name for {name}"));
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
    let arch = "gemma2";
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(arch.into()),
        ),
        (k("block_count"), u(config.num_hidden_layers)),
        (k("context_length"), u(config.max_position_embeddings)),
        (k("embedding_length"), u(config.hidden_size)),
        (k("feed_forward_length"), u(config.intermediate_size)),
        (k("attention.head_count"), u(config.num_attention_heads)),
        (k("attention.head_count_kv"), u(config.num_key_value_heads)),
        (k("attention.key_length"), u(config.head_dim)),
        (k("attention.value_length"), u(config.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(config.rms_norm_eps),
        ),
        (
            k("attn_logit_softcapping"),
            GgufValue::F32(v.attn_logit_softcapping.unwrap_or(0.0)),
        ),
        (
            k("final_logit_softcapping"),
            GgufValue::F32(v.final_logit_softcapping.unwrap_or(0.0)),
        ),
    ];
    if let Some(w) = config.sliding_window {
        meta.push((k("attention.sliding_window"), u(w)));
    }
    if let Some(bos) = config.bos_token_id {
        meta.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(bos)));
    }
    if let Some(&eos) = config.eos_token_ids.first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(eos)));
    }
    meta.push((k("vocab_size"), u(config.vocab_size)));
    let refs: Vec<(&str, GgufValue)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    std::fs::write(out, encode(3, &refs, &tensors)).unwrap();
}
