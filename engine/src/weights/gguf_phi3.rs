//! The Phi-3 part of `ModelConfig::from_gguf`, from the keys and tensors
//! llama.cpp's converter writes for arch `phi3`:
//!
//! - `qkv_proj` and `gate_up_proj` stay fused (`attn_qkv`, `ffn_up`);
//! - LongRoPE: the short and long factors are the tensors
//!   `rope_factors_short.weight` / `rope_factors_long.weight`, the original
//!   context `rope.scaling.original_context_length`, the attention factor
//!   `rope.scaling.attn_factor` (computed as transformers does when absent);
//! - `attention.sliding_window` (0: none, how the converter marks Phi-4).
//!   The window is honoured, as transformers does for the HF checkpoint
//!   the file came from; llama.cpp turns Phi-3's window off (with a
//!   warning), so on prompts longer than the window llama.cpp differs from
//!   the checkpoint and Pagoda does not;
//! - `rope.dimension_count` below the head size is partial rotary
//!   (Phi-4-mini: 96 of 128), the LongRoPE factors then half of it.

use super::gguf::GgufFile;
use super::LoadError;
use crate::config::{default_attention_factor, DecoderVariant, LongRope};

const SHORT_FACTORS: &str = "rope_factors_short.weight";
const LONG_FACTORS: &str = "rope_factors_long.weight";

/// (sliding_window, variant) of a `phi3` GGUF whose heads are `head_dim`
/// wide (`hidden / heads`; Phi-3 writes no key_length).
pub(super) fn phi3_variant(
    g: &GgufFile,
    arch: &str,
    head_dim: usize,
    rope_theta: f32,
    max_position_embeddings: usize,
) -> Result<(Option<usize>, DecoderVariant), LoadError> {
    let path = g.path();
    let key = |k: &str| format!("{arch}.{k}");
    let rotary_dim = g
        .get_u64(&key("rope.dimension_count"))
        .map_or(head_dim, |r| r as usize);
    if rotary_dim == 0 || rotary_dim > head_dim || rotary_dim % 2 == 1 {
        return Err(LoadError::config(
            path,
            format!(
                "{} ({rotary_dim}) must be even and at most the head size ({head_dim})",
                key("rope.dimension_count")
            ),
        ));
    }
    let window = match g.get_u64(&key("attention.sliding_window")) {
        None | Some(0) => None,
        Some(w) => Some(w as usize),
    };
    let variant = DecoderVariant {
        fused_projections: true,
        long_rope: long_rope(g, arch, rotary_dim, rope_theta, max_position_embeddings)?,
        // Phi-4-mini's partial rotary: the leading dims of each head.
        partial_rotary_dim: (rotary_dim < head_dim).then_some(rotary_dim),
        ..DecoderVariant::default()
    };
    Ok((window, variant))
}

fn long_rope(
    g: &GgufFile,
    arch: &str,
    rotary_dim: usize,
    theta: f32,
    max_position_embeddings: usize,
) -> Result<Option<LongRope>, LoadError> {
    let path = g.path();
    let key = |k: &str| format!("{arch}.{k}");
    let (short, long) = match (g.tensor_info(SHORT_FACTORS), g.tensor_info(LONG_FACTORS)) {
        (None, None) => return Ok(None),
        (Some(s), Some(l)) => (g.dequantize(s)?, g.dequantize(l)?),
        _ => {
            return Err(LoadError::config(
                path,
                format!("LongRoPE needs both {SHORT_FACTORS:?} and {LONG_FACTORS:?}"),
            ))
        }
    };
    for (name, f) in [(SHORT_FACTORS, &short), (LONG_FACTORS, &long)] {
        if f.len() != rotary_dim / 2 || f.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
            return Err(LoadError::config(
                path,
                format!(
                    "tensor {name:?} must hold {} positive factors (rotary dims / 2), found {}",
                    rotary_dim / 2,
                    f.len()
                ),
            ));
        }
    }
    let original = g
        .get_u64(&key("rope.scaling.original_context_length"))
        .map(|v| v as usize)
        .unwrap_or(max_position_embeddings);
    if original == 0 {
        return Err(LoadError::config(
            path,
            format!(
                "{} must be positive",
                key("rope.scaling.original_context_length")
            ),
        ));
    }
    let attention_factor = match g.get_f32(&key("rope.scaling.attn_factor")) {
        Some(a) if a.is_finite() && a > 0.0 => a,
        Some(a) => {
            return Err(LoadError::config(
                path,
                format!("{} ({a}) must be positive", key("rope.scaling.attn_factor")),
            ))
        }
        None => {
            let factor = max_position_embeddings as f64 / original as f64;
            default_attention_factor(factor, original) as f32
        }
    };
    Ok(Some(LongRope {
        theta,
        short_factor: short,
        long_factor: long,
        original_max_position_embeddings: original,
        attention_factor,
    }))
}
