//! Phi-3's LongRoPE (`rope_type` "longrope", older "su"; transformers maps
//! Phi-3's "yarn" onto it too): per-frequency short and long factors and an
//! attention factor on cos/sin.
//!
//! transformers switches a sequence to the long factors once it is longer
//! than `original_max_position_embeddings`, recomputing the whole sequence
//! in `generate` (Phi-3's `prepare_inputs_for_generation` drops the cache).
//! A paged cache shared by many sequences cannot do that per token, so
//! Pagoda does what vLLM does: the factor set is fixed by `max_model_len`,
//! the long factors for every sequence when it exceeds the original
//! context, else the short ones (`factors_for`). So with `--max-model-len`
//! at most the original context Pagoda equals transformers; above it, a
//! sequence shorter than the original context gets the long factors where
//! transformers would use the short ones.

use serde_json::Value;

use super::Keys;
use crate::weights::error::LoadError;

#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    pub theta: f32,
    pub short_factor: Vec<f32>,
    pub long_factor: Vec<f32>,
    pub original_max_position_embeddings: usize,
    /// Multiplies cos and sin (the paper's `sqrt(1 + ln(s) / ln(L))`).
    pub attention_factor: f32,
}

impl LongRope {
    /// The inverse frequencies of one factor set (`short_factor` or
    /// `long_factor`), as transformers computes them in f32:
    /// `1 / (factor[i] * theta^(2i / dim))`.
    pub fn inv_freq(&self, rotary_dim: usize, factors: &[f32]) -> Vec<f32> {
        let dim = rotary_dim as f32;
        factors
            .iter()
            .enumerate()
            .map(|(i, f)| 1.0 / (f * self.theta.powf((2 * i) as f32 / dim)))
            .collect()
    }

    /// The factor set every sequence uses under `max_model_len`: the long
    /// factors when sequences can pass the original context (vLLM's
    /// `use_long_rope`), else the short ones.
    pub fn factors_for(&self, max_model_len: usize) -> &[f32] {
        if max_model_len > self.original_max_position_embeddings {
            &self.long_factor
        } else {
            &self.short_factor
        }
    }
}

/// transformers' attention factor when a LongRoPE config gives none:
/// `sqrt(1 + ln(factor) / ln(original))` for a context extended by
/// `factor > 1` over `original` positions, else 1. The GGUF loader uses
/// it too, for files without `rope.scaling.attn_factor`.
pub(crate) fn default_attention_factor(factor: f64, original: usize) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / (original as f64).ln()).sqrt()
    }
}

/// The LongRoPE of a Phi-3 config (`rope_scaling` or `rope_parameters`),
/// `None` for another rope type. `rotary_dim`: the dims each head rotates
/// (its factors are half as many).
pub(super) fn long_rope(
    k: &Keys,
    max_position_embeddings: usize,
    rotary_dim: usize,
) -> Result<Option<LongRope>, LoadError> {
    let params = match (k.get("rope_scaling"), k.get("rope_parameters")) {
        (Some(Value::Object(m)), _) | (None, Some(Value::Object(m))) => m,
        _ => return Ok(None),
    };
    let p = Keys {
        obj: params,
        path: k.path,
    };
    let rope_type = p.string("rope_type")?.or(p.string("type")?);
    if !matches!(rope_type, Some("longrope" | "su" | "yarn")) {
        return Ok(None);
    }
    let factors = |key: &str| -> Result<Vec<f32>, LoadError> {
        let v = p
            .get(key)
            .ok_or_else(|| p.error(format!("LongRoPE needs {key:?}")))?;
        let list = v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_f64().map(|x| x as f32))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| p.wrong(key, "a list of numbers", v))?;
        if list.len() != rotary_dim / 2 || list.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(p.error(format!(
                "{key} must be {} positive numbers (rotary dims / 2), found {}",
                rotary_dim / 2,
                list.len()
            )));
        }
        Ok(list)
    };
    let original = match p.usize("original_max_position_embeddings")? {
        Some(v) => v,
        None => k.usize("original_max_position_embeddings")?.unwrap_or(4096),
    };
    if original == 0 {
        return Err(k.error("original_max_position_embeddings must be positive"));
    }
    let factor = p
        .f64("factor")?
        .unwrap_or(max_position_embeddings as f64 / original as f64);
    let attention_factor = match p.f64("attention_factor")? {
        Some(a) => a,
        None => default_attention_factor(factor, original),
    };
    let theta = match p.f64("rope_theta")? {
        Some(t) => t,
        None => k.f64("rope_theta")?.unwrap_or(10000.0),
    };
    Ok(Some(LongRope {
        theta: theta as f32,
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        original_max_position_embeddings: original,
        attention_factor: attention_factor as f32,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::ModelConfig;

    fn phi3(patch: &str) -> Result<ModelConfig, crate::weights::error::LoadError> {
        ModelConfig::from_hf_json_str(&format!(
            r#"{{"architectures": ["Phi3ForCausalLM"], "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "vocab_size": 100, "max_position_embeddings": 131072,
                "original_max_position_embeddings": 4096 {patch}}}"#
        ))
    }

    #[test]
    fn su_and_longrope_keys() {
        let factors = r#""short_factor": [1, 1, 1, 1, 1, 1, 1, 2],
                         "long_factor": [1, 2, 3, 4, 5, 6, 7, 8]"#;
        let old = phi3(&format!(r#", "rope_scaling": {{"type": "su", {factors}}}"#)).unwrap();
        let new = phi3(&format!(
            r#", "rope_parameters": {{"rope_type": "longrope", "rope_theta": 10000.0, {factors}}}"#
        ))
        .unwrap();
        for c in [&old, &new] {
            let lr = c.variant.long_rope.as_ref().unwrap();
            assert_eq!(lr.original_max_position_embeddings, 4096);
            let want = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt() as f32;
            assert_eq!(lr.attention_factor, want);
            assert_eq!(lr.short_factor[7], 2.0);
            let inv = lr.inv_freq(16, &lr.short_factor);
            assert_eq!(inv[0], 1.0);
            assert_eq!(inv[7], 1.0 / (2.0 * 10000f32.powf(14.0 / 16.0)));
            let long = lr.inv_freq(16, &lr.long_factor);
            assert_eq!(long[7], 1.0 / (8.0 * 10000f32.powf(14.0 / 16.0)));
            // A max_model_len past 4096 takes the long factors throughout.
            assert_eq!(lr.factors_for(4096), &lr.short_factor[..]);
            assert_eq!(lr.factors_for(4097), &lr.long_factor[..]);
            assert!(c.variant.fused_projections);
        }
        let err =
            phi3(r#", "rope_scaling": {"type": "su", "short_factor": [1], "long_factor": [1]}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("short_factor"), "{err}");
        // Phi-4-mini: 0.75 of 16 rotates 12 dims; its factors are 6 each,
        // at the top level or (transformers 5) in rope_parameters.
        let c = phi3(r#", "partial_rotary_factor": 0.75"#).unwrap();
        assert_eq!((c.rotary_dim(), c.head_dim), (12, 16));
        let six = r#""short_factor": [1, 1, 1, 1, 1, 2], "long_factor": [1, 1, 1, 1, 1, 1]"#;
        let c = phi3(&format!(
            r#", "rope_parameters": {{"rope_type": "longrope", "partial_rotary_factor": 0.75, {six}}}"#
        ))
        .unwrap();
        assert_eq!(c.rotary_dim(), 12);
        let inv = c
            .variant
            .long_rope
            .as_ref()
            .unwrap()
            .inv_freq(12, &[1.0, 1.0, 1.0, 1.0, 1.0, 2.0]);
        assert_eq!(inv[5], 1.0 / (2.0 * 10000f32.powf(10.0 / 12.0)));
        let err = phi3(&format!(
            r#", "partial_rotary_factor": 0.75, "rope_scaling": {{"type": "su", {factors}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("6 positive numbers"), "{err}");
        let err = phi3(r#", "partial_rotary_factor": 0.7"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("even"), "{err}");
        let plain = phi3(r#", "sliding_window": 2047"#).unwrap();
        assert_eq!(plain.variant.long_rope, None);
        assert_eq!(
            (plain.layer_window(0), plain.layer_window(1)),
            (Some(2047), Some(2047))
        );
        assert_eq!(plain.num_key_value_heads, 4);
    }
}
