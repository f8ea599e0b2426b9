//! What the CUDA backend cannot run yet, decided from the model config at
//! load: `--device cuda` refuses such a model naming the feature, `--device
//! auto` falls back to the CPU. The CUDA kernels have no sliding window, no
//! soft-capping, no GELU-tanh and no embedding scale; computing without
//! them would be silently wrong.

use crate::config::{HiddenAct, ModelConfig};

/// The features of `config` the CUDA backend lacks, by name; empty when it
/// runs the model. A sliding window no sequence can outgrow
/// (`max_model_len <= window`) changes nothing and is not counted.
pub fn cuda_unsupported_features(config: &ModelConfig, max_model_len: usize) -> Vec<String> {
    let v = &config.variant;
    let mut out = Vec::new();
    let smallest_window = (0..config.num_hidden_layers)
        .filter_map(|i| config.layer_window(i))
        .min();
    if let Some(w) = smallest_window.filter(|&w| w < max_model_len) {
        out.push(format!(
            "sliding-window attention (window {w} < max_model_len {max_model_len}; \
             --max-model-len {w} keeps it within the window)"
        ));
    }
    if v.attn_logit_softcapping.is_some() {
        out.push("attention logit soft-capping (attn_logit_softcapping)".into());
    }
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
        let f = cuda_unsupported_features(&gemma2, 8192).join("; ");
        for needle in [
            "window 16",
            "attn_logit_softcapping",
            "final_logit",
            "gelu",
            "embeddings",
        ] {
            assert!(f.contains(needle), "{needle}: {f}");
        }
        let mistral = r#"{"architectures": ["MistralForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "sliding_window": 4096, "vocab_size": 100}"#;
        let mistral = config(mistral);
        assert_eq!(
            cuda_unsupported_features(&mistral, 4096),
            Vec::<String>::new()
        );
        assert_eq!(cuda_unsupported_features(&mistral, 4097).len(), 1);
        let llama = ModelConfig {
            sliding_window: None,
            ..mistral
        };
        assert!(cuda_unsupported_features(&llama, 1 << 20).is_empty());
    }
}
