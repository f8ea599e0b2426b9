//! What the CUDA backend cannot run yet, decided from the model config at
//! load: `--device cuda` refuses such a model naming the feature, `--device
//! auto` falls back to the CPU. Sliding windows (per KV-cache group) and
//! attention soft-capping run in the CUDA attention kernels; the final
//! logit cap, GELU-tanh, the embedding scale and Gemma's norms do not yet,
//! and computing without them would be silently wrong.

use crate::config::{HiddenAct, ModelConfig};

/// The features of `config` the CUDA backend lacks, by name; empty when it
/// runs the model.
pub fn cuda_unsupported_features(config: &ModelConfig) -> Vec<String> {
    let v = &config.variant;
    let mut out = Vec::new();
    if v.final_logit_softcapping.is_some() {
        out.push("final logit soft-capping (final_logit_softcapping)".into());
    }
    if v.hidden_act == HiddenAct::GeluTanh {
        out.push("the gelu_pytorch_tanh activation".into());
    }
    if v.scale_embeddings {
        out.push("scaled embeddings".into());
    }
    if v.gemma_norms {
        out.push("Gemma's (1 + w) RMSNorm and post-norms (bf16 gains)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ModelConfig {
        ModelConfig::from_hf_json_str(json).unwrap()
    }

    #[test]
    fn gemma_and_windows_are_named() {
        let gemma2 = config(
            r#"{"architectures": ["Gemma2ForCausalLM"], "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "head_dim": 16, "sliding_window": 16, "vocab_size": 100}"#,
        );
        let f = cuda_unsupported_features(&gemma2).join("; ");
        for needle in ["final_logit", "gelu", "embeddings", "(1 + w)"] {
            assert!(f.contains(needle), "{needle}: {f}");
        }
        // Windows and attention soft-capping run in the CUDA kernels.
        assert!(!f.contains("window") && !f.contains("attn_logit"), "{f}");
        let mistral = r#"{"architectures": ["MistralForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "sliding_window": 4096, "vocab_size": 100}"#;
        assert!(cuda_unsupported_features(&config(mistral)).is_empty());
    }
}
