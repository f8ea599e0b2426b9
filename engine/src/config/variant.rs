//! What Gemma 2, Gemma 3 (text) and Phi-3 add to the shared decoder, and
//! which layers use the sliding window (Gemma's local/global pattern, Qwen's
//! `max_window_layers`, Mistral's and Phi-3's every layer), read from
//! config.json with transformers' defaults. Every key here is honoured or
//! refused by name.

use serde_json::{Map, Value};

use super::{parse_rope, Architecture, Keys, LongRope, ModelConfig, RopeScaling};
use crate::weights::error::LoadError;

/// A rope's (theta, scaling).
pub type Rope = (f32, RopeScaling);

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenAct {
    /// `silu(gate) * up` (Llama, Mistral, Qwen).
    #[default]
    Silu,
    /// `gelu_tanh(gate) * up` (GeGLU; transformers' `gelu_pytorch_tanh`).
    GeluTanh,
}

/// The decoder's departures from Llama; `Default` is Llama's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecoderVariant {
    /// Per layer: whether it attends through `ModelConfig::sliding_window`.
    /// Empty: every layer does (Mistral).
    pub sliding_layers: Vec<bool>,
    pub hidden_act: HiddenAct,
    /// Gemma's RMSNorm, `norm(x) * (1 + w)` (checkpoints store `w` as the
    /// offset from 1), with norms on the attention and MLP outputs too
    /// (`post_attention_layernorm`, `post_feedforward_layernorm`).
    pub gemma_norms: bool,
    /// Embeddings multiplied by `sqrt(hidden_size)` (Gemma).
    pub scale_embeddings: bool,
    /// Attention scale `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5`.
    pub query_pre_attn_scalar: Option<f32>,
    /// `cap * tanh(score / cap)` on attention scores (Gemma 2).
    pub attn_logit_softcapping: Option<f32>,
    /// `cap * tanh(logit / cap)` on the LM head's output (Gemma 2).
    pub final_logit_softcapping: Option<f32>,
    /// Rope (theta, scaling) of the sliding layers when it differs from the
    /// global one (Gemma 3's local base frequency).
    pub local_rope: Option<Rope>,
    /// The checkpoint stores `qkv_proj` and `gate_up_proj` already fused
    /// (Phi-3), in the row order Pagoda fuses them (q, k, v; gate, up).
    pub fused_projections: bool,
    /// Phi-3's LongRoPE (then `ModelConfig::rope_scaling` is `Default`).
    pub long_rope: Option<LongRope>,
    /// Partial rotary (Phi-4-mini: 96 of 128): only the leading dims of
    /// each head rotate, the rest pass through (`ModelConfig::rotary_dim`).
    pub partial_rotary_dim: Option<usize>,
}

impl ModelConfig {
    /// Leading dims of each head the rotary embedding turns: the head size
    /// unless the config says `partial_rotary_factor`.
    pub fn rotary_dim(&self) -> usize {
        self.variant.partial_rotary_dim.unwrap_or(self.head_dim)
    }

    /// The sliding window of layer `i`; `None`: full causal attention.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        let sliding = self.variant.sliding_layers.get(i).copied().unwrap_or(true);
        self.sliding_window.filter(|_| sliding)
    }

    /// Whether any layer attends through a window.
    pub fn has_sliding_window(&self) -> bool {
        (0..self.num_hidden_layers).any(|i| self.layer_window(i).is_some())
    }
}

/// Gemma 2/3's defaults for the keys config.rs reads for every architecture.
pub(super) struct GemmaDefaults {
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
}

pub(super) const GEMMA_DEFAULTS: GemmaDefaults = GemmaDefaults {
    num_key_value_heads: 4,
    head_dim: 256,
    max_position_embeddings: 8192,
};

/// Gemma 3's longer default context.
pub(super) const GEMMA3_MAX_POSITION_EMBEDDINGS: usize = 131_072;

/// The window and its layers for every architecture: (sliding_window,
/// variant.sliding_layers).
pub(super) fn sliding_window_of(
    k: &Keys,
    architecture: Architecture,
    num_layers: usize,
) -> Result<(Option<usize>, Vec<bool>), LoadError> {
    use Architecture::*;
    // A missing key takes the class default (4096); null means none.
    let window = || match k.obj.get("sliding_window") {
        None => Ok(Some(4096)),
        Some(_) => k.usize("sliding_window"),
    };
    let qwen_window = k.bool("use_sliding_window")?.unwrap_or(false);
    let (window, every_layer) = match architecture {
        Llama => return Ok((None, vec![])),
        // Mistral windows every layer (transformers ignores its layer_types).
        Mistral => (window()?, true),
        // Phi-3 too, with no window by default.
        Phi3 | Mixtral => (k.usize("sliding_window")?, true),
        Qwen2 | Qwen3 | Qwen2Moe | Qwen3Moe if !qwen_window => return Ok((None, vec![])),
        Qwen2 | Qwen3 | Qwen2Moe | Qwen3Moe | Gemma2 | Gemma3 => (window()?, false),
    };
    if window == Some(0) {
        return Err(k.error("sliding_window must be positive"));
    }
    if every_layer {
        return Ok((window, vec![]));
    }
    let layers = match layer_types(k, num_layers)? {
        Some(layers) => layers,
        None => match architecture {
            Qwen2 | Qwen3 | Qwen2Moe | Qwen3Moe => {
                let first = k.usize("max_window_layers")?.unwrap_or(28);
                (0..num_layers).map(|i| i >= first).collect()
            }
            Gemma2 => (0..num_layers).map(|i| (i + 1) % 2 != 0).collect(),
            _ => {
                // Gemma 3's older key; transformers' default is 6.
                let pattern = k.usize("sliding_window_pattern")?.unwrap_or(6);
                if pattern == 0 {
                    return Err(k.error("sliding_window_pattern must be positive"));
                }
                (0..num_layers).map(|i| (i + 1) % pattern != 0).collect()
            }
        },
    };
    Ok((window, layers))
}

/// `layer_types` (newer configs): per layer, sliding or full attention.
fn layer_types(k: &Keys, num_layers: usize) -> Result<Option<Vec<bool>>, LoadError> {
    let Some(v) = k.get("layer_types") else {
        return Ok(None);
    };
    let bad = || k.wrong("layer_types", "a list of layer types", v);
    let items = v.as_array().ok_or_else(bad)?;
    if items.len() != num_layers {
        return Err(k.error(format!(
            "layer_types has {} entries for {num_layers} layers",
            items.len()
        )));
    }
    items
        .iter()
        .map(|t| match t.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            Some(other) => Err(k.error(format!(
                "layer type {other:?} is not supported (sliding_attention, full_attention)"
            ))),
            None => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Gemma 2/3's keys into `variant` (its `sliding_layers` already set).
pub(super) fn parse_gemma(
    k: &Keys,
    architecture: Architecture,
    variant: &mut DecoderVariant,
    max_position_embeddings: usize,
) -> Result<(), LoadError> {
    let gemma2 = architecture == Architecture::Gemma2;
    // transformers reads `hidden_activation` (a `hidden_act` is ignored).
    match k
        .string("hidden_activation")?
        .unwrap_or("gelu_pytorch_tanh")
    {
        "gelu_pytorch_tanh" => variant.hidden_act = HiddenAct::GeluTanh,
        other => {
            return Err(k.error(format!(
                "hidden_activation {other:?} is not supported (only gelu_pytorch_tanh)"
            )))
        }
    }
    if k.bool("use_bidirectional_attention")?.unwrap_or(false) {
        return Err(k.error("use_bidirectional_attention = true is not supported"));
    }
    variant.gemma_norms = true;
    variant.scale_embeddings = true;
    let positive = |key: &str, default: Option<f64>| -> Result<Option<f32>, LoadError> {
        let v = match k.obj.get(key) {
            None => default,
            Some(_) => k.f64(key)?,
        };
        match v {
            Some(x) if !(x.is_finite() && x > 0.0) => {
                Err(k.error(format!("{key} ({x}) must be positive")))
            }
            v => Ok(v.map(|x| x as f32)),
        }
    };
    variant.query_pre_attn_scalar = positive("query_pre_attn_scalar", Some(256.0))?;
    let (attn_cap, final_cap) = if gemma2 {
        (Some(50.0), Some(30.0))
    } else {
        (None, None)
    };
    variant.attn_logit_softcapping = positive("attn_logit_softcapping", attn_cap)?;
    variant.final_logit_softcapping = positive("final_logit_softcapping", final_cap)?;
    if !gemma2 {
        variant.local_rope = Some(gemma3_ropes(k, max_position_embeddings)?.1);
    }
    Ok(())
}

/// Gemma 3's (global, local) rope: from per-layer-type `rope_parameters`
/// (`full_attention`, `sliding_attention`), or from the older `rope_theta` +
/// `rope_scaling` (global) and `rope_local_base_freq` (local, never scaled),
/// with transformers' default thetas 1e6 and 1e4.
pub(super) fn gemma3_ropes(
    k: &Keys,
    max_position_embeddings: usize,
) -> Result<(Rope, Rope), LoadError> {
    let one = |params: Option<&Value>, theta: f64| {
        let mut obj = Map::new();
        obj.insert("rope_theta".into(), Value::from(theta));
        if let Some(p) = params {
            obj.insert("rope_parameters".into(), p.clone());
        }
        parse_rope(
            &Keys {
                obj: &obj,
                path: k.path,
            },
            max_position_embeddings,
        )
    };
    let per_type = match k.get("rope_parameters") {
        Some(Value::Object(m)) if m.values().any(Value::is_object) => Some(m),
        _ => None,
    };
    if let (Some(m), None) = (per_type, k.get("rope_scaling")) {
        for key in m.keys() {
            if key != "full_attention" && key != "sliding_attention" {
                return Err(k.error(format!(
                    "rope_parameters for layer type {key:?} is not supported"
                )));
            }
        }
        let global = one(m.get("full_attention"), 1e6)?;
        let local = one(m.get("sliding_attention"), 1e4)?;
        return Ok((global, local));
    }
    let mut obj = k.obj.clone();
    obj.remove("rope_parameters");
    if k.get("rope_theta").is_none() {
        obj.insert("rope_theta".into(), Value::from(1e6_f64));
    }
    let global = parse_rope(
        &Keys {
            obj: &obj,
            path: k.path,
        },
        max_position_embeddings,
    )?;
    let local_theta = k.f64("rope_local_base_freq")?.unwrap_or(1e4);
    let local = one(None, local_theta)?;
    Ok((global, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig, LoadError> {
        ModelConfig::from_hf_json_str(json)
    }

    const BASE: &str = r#""hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "vocab_size": 100"#;

    #[test]
    fn gemma2_defaults_follow_transformers() {
        let c = parse(&format!(
            r#"{{"architectures": ["Gemma2ForCausalLM"], "num_hidden_layers": 3, {BASE}}}"#
        ))
        .unwrap();
        assert_eq!(c.architecture, Architecture::Gemma2);
        assert_eq!((c.head_dim, c.num_key_value_heads), (256, 4));
        assert!(c.tie_word_embeddings && !c.qk_norm);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(2), vec![1])
        );
        let windows: Vec<_> = (0..3).map(|i| c.layer_window(i)).collect();
        assert_eq!(windows, vec![Some(4096), None, Some(4096)]);
        let v = &c.variant;
        assert_eq!(v.hidden_act, HiddenAct::GeluTanh);
        assert!(v.gemma_norms && v.scale_embeddings && v.local_rope.is_none());
        assert_eq!(v.query_pre_attn_scalar, Some(256.0));
        assert_eq!(
            (v.attn_logit_softcapping, v.final_logit_softcapping),
            (Some(50.0), Some(30.0))
        );
        assert!(c
            .tensor_shapes()
            .iter()
            .any(|(n, _)| n == "model.layers.2.post_feedforward_layernorm.weight"));
        // null turns a cap or the window off.
        let c = parse(&format!(
            r#"{{"architectures": ["Gemma2ForCausalLM"], "num_hidden_layers": 2, {BASE},
                "attn_logit_softcapping": null, "sliding_window": null}}"#
        ))
        .unwrap();
        assert_eq!(c.variant.attn_logit_softcapping, None);
        assert!(!c.has_sliding_window());
    }

    #[test]
    fn gemma3_old_and_new_keys_mean_the_same() {
        let legacy = parse(&format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 4, {BASE},
                "head_dim": 16, "sliding_window": 8, "sliding_window_pattern": 2,
                "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                "rope_scaling": {{"rope_type": "linear", "factor": 8.0}}}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 4, {BASE},
                "head_dim": 16, "sliding_window": 8,
                "layer_types": ["sliding_attention", "full_attention",
                                "sliding_attention", "full_attention"],
                "rope_parameters": {{
                    "full_attention": {{"rope_type": "linear", "factor": 8.0,
                                        "rope_theta": 1000000.0}},
                    "sliding_attention": {{"rope_type": "default", "rope_theta": 10000.0}}}}}}"#
        ))
        .unwrap();
        for c in [&legacy, &v5] {
            assert!(c.qk_norm);
            assert_eq!(c.rope_theta, 1e6);
            assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 8.0 });
            assert_eq!(c.variant.local_rope, Some((1e4, RopeScaling::Default)));
            assert_eq!(c.variant.sliding_layers, vec![true, false, true, false]);
            assert_eq!(c.variant.attn_logit_softcapping, None);
            assert_eq!(c.layer_window(2), Some(8));
        }
        // Default pattern 6 and thetas.
        let c = parse(&format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 7, {BASE}}}"#
        ))
        .unwrap();
        assert_eq!(
            c.variant.sliding_layers,
            vec![true, true, true, true, true, false, true]
        );
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.variant.local_rope, Some((1e4, RopeScaling::Default)));
    }

    #[test]
    fn unsupported_gemma_keys_are_refused_by_name() {
        for (patch, needle) in [
            (r#""hidden_activation": "gelu""#, "hidden_activation"),
            (
                r#""use_bidirectional_attention": true"#,
                "use_bidirectional_attention",
            ),
            (
                r#""layer_types": ["chunked_attention", "full_attention"]"#,
                "chunked_attention",
            ),
            (r#""layer_types": ["full_attention"]"#, "layer_types"),
            (
                r#""final_logit_softcapping": -1"#,
                "final_logit_softcapping",
            ),
            (r#""sliding_window": 0"#, "sliding_window"),
            (r#""sliding_window_pattern": 0"#, "sliding_window_pattern"),
        ] {
            let err = parse(&format!(
                r#"{{"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 2, {BASE},
                    {patch}}}"#
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{patch}: {err}");
        }
        let err = parse(&format!(
            r#"{{"architectures": ["Gemma3ForConditionalGeneration"], "num_hidden_layers": 2,
                {BASE}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("Gemma3ForConditionalGeneration"), "{err}");
    }
}
