//! The Gemma 2/3 parts of the shared decoder that are plain numbers: the
//! attention scale and the embedding factor. (The `1 + w` norm gains are
//! `Backend::load_norm_weight`'s; windows, soft-capping and GeGLU are
//! kernel options.)

use crate::config::ModelConfig;

/// `query_pre_attn_scalar^-0.5` (Gemma, from a Python float as
/// transformers computes it), else `head_dim^-0.5`.
pub(super) fn attn_scale(c: &ModelConfig) -> f32 {
    match c.variant.query_pre_attn_scalar {
        Some(s) => (s as f64).powf(-0.5) as f32,
        None => 1.0 / (c.head_dim as f32).sqrt(),
    }
}

/// Gemma multiplies the embeddings by `sqrt(hidden_size)`, a constant of the
/// compute dtype (f32 here, which the golden reference also uses; a bf16
/// forward pass rounds it to bf16 first).
pub(super) fn embed_scale(c: &ModelConfig) -> Option<f32> {
    c.variant
        .scale_embeddings
        .then(|| (c.hidden_size as f64).sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_scales() {
        let c = ModelConfig::from_hf_json_str(
            r#"{"architectures": ["Gemma2ForCausalLM"], "hidden_size": 72,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "head_dim": 16, "query_pre_attn_scalar": 24, "vocab_size": 100}"#,
        )
        .unwrap();
        assert_eq!(attn_scale(&c), (24f64.powf(-0.5)) as f32);
        assert_eq!(embed_scale(&c), Some(72f64.sqrt() as f32));
        let mut llama = c.clone();
        llama.variant = Default::default();
        assert_eq!(attn_scale(&llama), 0.25);
        assert_eq!(embed_scale(&llama), None);
    }
}
