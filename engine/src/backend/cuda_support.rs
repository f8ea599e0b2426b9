//! What the CUDA backend cannot run yet, decided from the model config at
//! load, before a device is opened: `--device cuda` refuses such a model
//! naming the feature, `--device auto` falls back to the CPU. Sliding
//! windows, soft-capping, GeGLU, Gemma's norms and embedding scale all run
//! on CUDA; mixtures of experts do not (no fused-MoE kernels yet).

use crate::config::ModelConfig;

/// The features of `config` the CUDA backend lacks, by name; empty when it
/// runs the model.
pub fn cuda_unsupported_features(config: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(moe) = &config.moe {
        out.push(format!(
            "mixture-of-experts layers ({} experts): the CUDA backend has no fused-MoE path \
             yet (routing kernel + grouped GEMMs)",
            moe.num_experts
        ));
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
    fn only_mixtures_of_experts_are_kept_off_cuda() {
        let mixtral = r#"{"architectures": ["MixtralForCausalLM"], "hidden_size": 32,
            "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_local_experts": 4, "vocab_size": 64}"#;
        let why = cuda_unsupported_features(&config(mixtral)).join("; ");
        assert!(
            why.contains("fused-MoE") && why.contains("4 experts"),
            "{why}"
        );
        let gemma2 = r#"{"architectures": ["Gemma2ForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "head_dim": 16, "sliding_window": 16, "vocab_size": 100}"#;
        assert!(cuda_unsupported_features(&config(gemma2)).is_empty());
        let mistral = mixtral.replace("MixtralForCausalLM", "MistralForCausalLM");
        assert!(cuda_unsupported_features(&config(&mistral)).is_empty());
    }
}
