//! The Gemma 2 part of `ModelConfig::from_gguf`, following what llama.cpp
//! does with the keys its converter writes (`gemma2.attn_logit_softcapping`,
//! `gemma2.final_logit_softcapping`, `gemma2.attention.sliding_window`):
//!
//! - the local/global pattern is not in the metadata: llama.cpp hard-codes
//!   Gemma 2's (even layers slide), default window 4096;
//! - `query_pre_attn_scalar` is not written: llama.cpp scales attention by
//!   `head_dim^-0.5`, except for the 46-layer 27B model, where it uses
//!   `(hidden / heads)^-0.5` (which is that model's query_pre_attn_scalar);
//! - the soft-caps default to 50 and 30 when absent; a cap of 0 means none;
//! - norm weights are stored as `1 + w` (the converter adds 1); the weight
//!   source takes the 1 off again (`gguf_names::is_gemma_norm`).

use super::gguf::GgufFile;
use super::LoadError;
use crate::config::{Architecture, DecoderVariant, HiddenAct};

/// Gemma 2 27B's layer count, the one size llama.cpp scales differently.
const GEMMA2_27B_LAYERS: usize = 46;

/// (sliding_window, variant) of a `gemma2` GGUF.
pub(super) fn gemma_variant(
    g: &GgufFile,
    arch: &str,
    architecture: Architecture,
    dims: (usize, usize, usize, usize),
) -> Result<(Option<usize>, DecoderVariant), LoadError> {
    let path = g.path();
    let (hidden, heads, head_dim, layers) = dims;
    let key = |k: &str| format!("{arch}.{k}");
    debug_assert_eq!(architecture, Architecture::Gemma2);
    let cap = |k: &str, default: f32| -> Result<Option<f32>, LoadError> {
        match g.get_f32(&key(k)).unwrap_or(default) {
            0.0 => Ok(None),
            c if c.is_finite() && c > 0.0 => Ok(Some(c)),
            c => Err(LoadError::config(
                path,
                format!("{} ({c}) must be positive", key(k)),
            )),
        }
    };
    let window = match g.get_u64(&key("attention.sliding_window")) {
        None => 4096,
        Some(0) => {
            return Err(LoadError::config(
                path,
                format!("{} must be positive", key("attention.sliding_window")),
            ))
        }
        Some(w) => w as usize,
    };
    let scale_dim = if layers == GEMMA2_27B_LAYERS {
        hidden / heads.max(1)
    } else {
        head_dim
    };
    let variant = DecoderVariant {
        sliding_layers: (0..layers).map(|i| i % 2 == 0).collect(),
        hidden_act: HiddenAct::GeluTanh,
        gemma_norms: true,
        scale_embeddings: true,
        query_pre_attn_scalar: Some(scale_dim as f32),
        attn_logit_softcapping: cap("attn_logit_softcapping", 50.0)?,
        final_logit_softcapping: cap("final_logit_softcapping", 30.0)?,
        ..DecoderVariant::default()
    };
    Ok((Some(window), variant))
}
