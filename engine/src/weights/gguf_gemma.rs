//! The Gemma 2 and Gemma 3 part of `ModelConfig::from_gguf`, following what
//! llama.cpp does with the keys its converter writes:
//!
//! - the local/global pattern is not in the converter's metadata: llama.cpp
//!   hard-codes it (Gemma 2: even layers slide; Gemma 3: five local layers,
//!   then one global). A `{arch}.attention.sliding_window_pattern` key
//!   (llama.cpp's name: per layer, true = sliding; or a period) is honoured
//!   when present;
//! - the window: Gemma 2 defaults to 4096; for Gemma 3 an absent or zero
//!   window means none (every layer global), as in current llama.cpp;
//! - `query_pre_attn_scalar` is not written: llama.cpp scales attention by
//!   `head_dim^-0.5`, except for the 27B models (46 layers for Gemma 2, 62
//!   for Gemma 3), where it uses `(hidden / heads)^-0.5` (which is those
//!   models' query_pre_attn_scalar);
//! - soft-caps: Gemma 2's default to 50 and 30 when absent; Gemma 3 has
//!   none unless the key is there; a cap of 0 means none;
//! - Gemma 3's local layers use rope base 10000 (`rope.freq_base_swa` when
//!   written) without scaling; `rope.freq_base` and any linear scaling are
//!   the global layers';
//! - norm weights are stored as `1 + w` (the converter adds 1), q/k norms
//!   included; the weight source takes the 1 off again
//!   (`gguf_names::is_gemma_norm`).

use super::gguf::{GgufFile, GgufValue};
use super::LoadError;
use crate::config::{Architecture, DecoderVariant, HiddenAct, RopeScaling};

/// The 27B models' layer counts, the one size llama.cpp scales differently.
const GEMMA2_27B_LAYERS: usize = 46;
const GEMMA3_27B_LAYERS: usize = 62;

/// Gemma 3's local rope base when the file does not say.
const GEMMA3_LOCAL_ROPE_THETA: f32 = 10_000.0;

/// (sliding_window, variant) of a `gemma2` or `gemma3` GGUF.
pub(super) fn gemma_variant(
    g: &GgufFile,
    arch: &str,
    architecture: Architecture,
    dims: (usize, usize, usize, usize),
) -> Result<(Option<usize>, DecoderVariant), LoadError> {
    let path = g.path();
    let (hidden, heads, head_dim, layers) = dims;
    let key = |k: &str| format!("{arch}.{k}");
    let gemma2 = architecture == Architecture::Gemma2;
    debug_assert!(matches!(
        architecture,
        Architecture::Gemma2 | Architecture::Gemma3
    ));
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
    let window = match (g.get_u64(&key("attention.sliding_window")), gemma2) {
        (None, true) => Some(4096),
        (None, false) | (Some(0), false) => None,
        (Some(0), true) => {
            return Err(LoadError::config(
                path,
                format!("{} must be positive", key("attention.sliding_window")),
            ))
        }
        (Some(w), _) => Some(w as usize),
    };
    let (period, big) = if gemma2 {
        (2, GEMMA2_27B_LAYERS)
    } else {
        (6, GEMMA3_27B_LAYERS)
    };
    let scale_dim = if layers == big {
        hidden / heads.max(1)
    } else {
        head_dim
    };
    let (attn_cap, final_cap) = if gemma2 { (50.0, 30.0) } else { (0.0, 0.0) };
    let local_rope = (!gemma2).then(|| {
        let theta = g
            .get_f32(&key("rope.freq_base_swa"))
            .unwrap_or(GEMMA3_LOCAL_ROPE_THETA);
        (theta, RopeScaling::Default)
    });
    let variant = DecoderVariant {
        sliding_layers: sliding_layers(
            g,
            &key("attention.sliding_window_pattern"),
            layers,
            period,
        )?,
        hidden_act: HiddenAct::GeluTanh,
        gemma_norms: true,
        scale_embeddings: true,
        query_pre_attn_scalar: Some(scale_dim as f32),
        attn_logit_softcapping: cap("attn_logit_softcapping", attn_cap)?,
        final_logit_softcapping: cap("final_logit_softcapping", final_cap)?,
        local_rope,
        ..DecoderVariant::default()
    };
    Ok((window, variant))
}

/// Per layer, whether it slides: from `pattern_key` (a bool per layer, or a
/// period `n`: every `n`-th layer global), else llama.cpp's period.
fn sliding_layers(
    g: &GgufFile,
    pattern_key: &str,
    layers: usize,
    default_period: usize,
) -> Result<Vec<bool>, LoadError> {
    let path = g.path();
    let by_period = |n: usize| (0..layers).map(|i| (i + 1) % n != 0).collect();
    let Some(value) = g.metadata(pattern_key) else {
        return Ok(by_period(default_period));
    };
    let bad = || {
        LoadError::config(
            path,
            format!("{pattern_key} must be a positive period or one bool per layer ({layers})"),
        )
    };
    match value {
        GgufValue::Array(items) => {
            let flags: Option<Vec<bool>> = items.iter().map(GgufValue::as_bool).collect();
            flags.filter(|f| f.len() == layers).ok_or_else(bad)
        }
        v => match v.as_u64() {
            Some(n) if n > 0 => Ok(by_period(n as usize)),
            _ => Err(bad()),
        },
    }
}
