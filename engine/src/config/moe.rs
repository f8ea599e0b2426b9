//! Mixture-of-experts keys of an HF config.json (Mixtral, Qwen2-MoE,
//! Qwen3-MoE), with the defaults of each transformers config class.
//!
//! Which layers are sparse follows `Qwen2MoeDecoderLayer`: layer `i` has
//! experts unless `i` is in `mlp_only_layers`, and only when
//! `(i + 1) % decoder_sparse_step == 0`; every other layer is a dense MLP of
//! `intermediate_size`. Mixtral's layers are all sparse.

use super::Architecture::{self, Mixtral, Qwen2Moe, Qwen3Moe};
use super::Keys;
use crate::weights::error::LoadError;

/// The experts of a sparse layer and how tokens are routed to them.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    /// `num_local_experts` (Mixtral) / `num_experts` (Qwen).
    pub num_experts: usize,
    /// Experts each token is sent to (`num_experts_per_tok`).
    pub top_k: usize,
    /// Rows of each expert's gate and up projections (Mixtral:
    /// `intermediate_size`; Qwen: `moe_intermediate_size`).
    pub expert_intermediate_size: usize,
    /// The top-k softmax weights are divided by their sum (Mixtral always;
    /// Qwen's `norm_topk_prob`).
    pub renormalize: bool,
    /// Qwen2-MoE's shared expert: a dense MLP of this size every token
    /// takes, scaled by `sigmoid(shared_expert_gate · x)`.
    pub shared_expert_intermediate_size: Option<usize>,
    /// Per layer: whether it has experts (else a dense MLP).
    pub sparse_layers: Vec<bool>,
}

impl MoeConfig {
    pub fn is_sparse(&self, layer: usize) -> bool {
        self.sparse_layers.get(layer).copied().unwrap_or(false)
    }

    /// The tensors of one sparse layer as a published HF checkpoint names
    /// them (per-expert 2D matrices: what transformers 5.24 saves too),
    /// relative to `model.layers.{i}`.
    pub(super) fn push_layer_shapes(
        &self,
        architecture: Architecture,
        hidden: usize,
        push: &mut impl FnMut(&str, Vec<usize>),
    ) {
        let (e, inter) = (self.num_experts, self.expert_intermediate_size);
        let names = ExpertNames::of(architecture);
        push(&format!("{}.gate.weight", names.block), vec![e, hidden]);
        for j in 0..e {
            let p = format!("{}.experts.{j}", names.block);
            push(&format!("{p}.{}.weight", names.gate), vec![inter, hidden]);
            push(&format!("{p}.{}.weight", names.up), vec![inter, hidden]);
            push(&format!("{p}.{}.weight", names.down), vec![hidden, inter]);
        }
        if let Some(s) = self.shared_expert_intermediate_size {
            push("mlp.shared_expert.gate_proj.weight", vec![s, hidden]);
            push("mlp.shared_expert.up_proj.weight", vec![s, hidden]);
            push("mlp.shared_expert.down_proj.weight", vec![hidden, s]);
            push("mlp.shared_expert_gate.weight", vec![1, hidden]);
        }
    }

    /// Checks what routing relies on: at least one expert, 1 <= top_k <= experts.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_experts == 0 || self.expert_intermediate_size == 0 {
            return Err(format!(
                "a mixture of experts needs experts of positive size (num_experts {}, \
                 expert intermediate size {})",
                self.num_experts, self.expert_intermediate_size
            ));
        }
        if self.top_k == 0 || self.top_k > self.num_experts {
            return Err(format!(
                "num_experts_per_tok ({}) must be between 1 and the number of experts ({})",
                self.top_k, self.num_experts
            ));
        }
        if self.shared_expert_intermediate_size == Some(0) {
            return Err("shared_expert_intermediate_size must be positive".into());
        }
        Ok(())
    }
}

/// How a checkpoint names a sparse block and its experts' matrices:
/// Mixtral's `block_sparse_moe.experts.N.w1/w3/w2`, Qwen's
/// `mlp.experts.N.gate_proj/up_proj/down_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertNames {
    pub block: &'static str,
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl ExpertNames {
    pub const MIXTRAL: ExpertNames = ExpertNames {
        block: "block_sparse_moe",
        gate: "w1",
        up: "w3",
        down: "w2",
    };
    pub const QWEN: ExpertNames = ExpertNames {
        block: "mlp",
        gate: "gate_proj",
        up: "up_proj",
        down: "down_proj",
    };

    /// The names the architecture's published checkpoints use.
    pub fn of(architecture: Architecture) -> ExpertNames {
        if architecture == Mixtral {
            Self::MIXTRAL
        } else {
            Self::QWEN
        }
    }
}

/// The MoE config of an MoE architecture (None for dense ones, and for a
/// Qwen MoE config with `num_experts` 0, whose layers are all dense).
/// Keys that only matter in training (`router_jitter_noise`,
/// `output_router_logits`, `router_aux_loss_coef`) are read by nobody.
pub(super) fn parse_moe(
    k: &Keys,
    architecture: Architecture,
    num_layers: usize,
    intermediate_size: usize,
) -> Result<Option<MoeConfig>, LoadError> {
    let config =
        match architecture {
            Mixtral => MoeConfig {
                num_experts: experts_key(k, "num_local_experts", "num_experts")?.unwrap_or(8),
                top_k: k.usize("num_experts_per_tok")?.unwrap_or(2),
                expert_intermediate_size: intermediate_size,
                renormalize: true,
                shared_expert_intermediate_size: None,
                sparse_layers: vec![true; num_layers],
            },
            Qwen2Moe | Qwen3Moe => {
                let qwen2 = architecture == Qwen2Moe;
                // transformers 5 saves Qwen3-MoE's `num_experts` under its
                // attribute_map alias `num_local_experts`.
                let num_experts = if qwen2 {
                    k.usize("num_experts")?.unwrap_or(60)
                } else {
                    experts_key(k, "num_experts", "num_local_experts")?.unwrap_or(128)
                };
                if num_experts == 0 {
                    return Ok(None);
                }
                let step = k.usize("decoder_sparse_step")?.unwrap_or(1);
                if step == 0 {
                    return Err(k.error("decoder_sparse_step must be positive"));
                }
                let mlp_only = mlp_only_layers(k)?;
                MoeConfig {
                    num_experts,
                    top_k: k
                        .usize("num_experts_per_tok")?
                        .unwrap_or(if qwen2 { 4 } else { 8 }),
                    expert_intermediate_size: k
                        .usize("moe_intermediate_size")?
                        .unwrap_or(if qwen2 { 1408 } else { 768 }),
                    renormalize: k.bool("norm_topk_prob")?.unwrap_or(false),
                    shared_expert_intermediate_size: if qwen2 {
                        Some(k.usize("shared_expert_intermediate_size")?.unwrap_or(5632))
                    } else {
                        None
                    },
                    sparse_layers: (0..num_layers)
                        .map(|i| !mlp_only.contains(&i) && (i + 1) % step == 0)
                        .collect(),
                }
            }
            _ => return Ok(None),
        };
    config.validate().map_err(|m| k.error(m))?;
    Ok(Some(config))
}

/// An expert count under either of its two names; both must then agree.
fn experts_key(k: &Keys, name: &str, alias: &str) -> Result<Option<usize>, LoadError> {
    match (k.usize(name)?, k.usize(alias)?) {
        (Some(a), Some(b)) if a != b => Err(k.error(format!(
            "{name} ({a}) and {alias} ({b}) disagree on the number of experts"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// `mlp_only_layers`: a list of layer indices (null or absent: none).
fn mlp_only_layers(k: &Keys) -> Result<Vec<usize>, LoadError> {
    match k.get("mlp_only_layers") {
        None => Ok(vec![]),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| k.wrong("mlp_only_layers", "a list of layer indices", v))
            })
            .collect(),
        Some(v) => Err(k.wrong("mlp_only_layers", "a list of layer indices", v)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Architecture, ModelConfig};

    const MIXTRAL: &str = r#"{"architectures": ["MixtralForCausalLM"], "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
        "router_jitter_noise": 0.1, "output_router_logits": true, "sliding_window": null,
        "vocab_size": 64}"#;

    #[test]
    fn mixtral_routes_top_k_renormalized_in_every_layer() {
        let c = ModelConfig::from_hf_json_str(MIXTRAL).unwrap();
        assert_eq!(c.architecture, Architecture::Mixtral);
        let m = c.moe.clone().unwrap();
        assert_eq!(
            (m.num_experts, m.top_k, m.expert_intermediate_size),
            (4, 2, 48)
        );
        assert!(m.renormalize && m.shared_expert_intermediate_size.is_none());
        assert_eq!(m.sparse_layers, vec![true, true]);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );
        assert_eq!(c.sliding_window, None);
        let shapes = c.tensor_shapes();
        let has = |n: &str, s: &[usize]| shapes.iter().any(|(a, b)| a == n && b == s);
        assert!(has("model.layers.1.block_sparse_moe.gate.weight", &[4, 32]));
        assert!(has(
            "model.layers.1.block_sparse_moe.experts.3.w2.weight",
            &[32, 48]
        ));
        assert!(!shapes.iter().any(|(n, _)| n.contains("mlp.")));
        // 2 layers x (attention 32*32*2 + 16*32*2, router 4*32, 4 experts x 3 x 48*32).
        let per_layer = 2 * 32 * 32 + 2 * 16 * 32 + 4 * 32 + 4 * 3 * 48 * 32 + 2 * 32;
        assert_eq!(c.num_params(), 2 * 64 * 32 + 32 + 2 * per_layer);
    }

    #[test]
    fn qwen_moe_sparse_layers_shared_expert_and_defaults() {
        let q2 = r#"{"architectures": ["Qwen2MoeForCausalLM"], "hidden_size": 32,
            "intermediate_size": 48, "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 24, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4,
            "num_experts_per_tok": 2, "decoder_sparse_step": 2, "mlp_only_layers": [3],
            "norm_topk_prob": false, "vocab_size": 64}"#;
        let c = ModelConfig::from_hf_json_str(q2).unwrap();
        let m = c.moe.clone().unwrap();
        assert_eq!(m.sparse_layers, vec![false, true, false, false]);
        assert_eq!(m.shared_expert_intermediate_size, Some(24));
        assert!(!m.renormalize && c.attention_bias && !c.o_proj_bias && !c.qk_norm);
        let shapes = c.tensor_shapes();
        let has = |n: &str| shapes.iter().any(|(a, _)| a == n);
        assert!(has("model.layers.0.mlp.gate_proj.weight"));
        assert!(has("model.layers.1.mlp.experts.3.down_proj.weight"));
        assert!(has("model.layers.1.mlp.shared_expert_gate.weight"));
        assert!(has("model.layers.1.mlp.shared_expert.up_proj.weight"));
        assert!(!has("model.layers.1.mlp.gate_proj.weight"));
        let no_bias = q2.replace("\"vocab_size\"", "\"qkv_bias\": false, \"vocab_size\"");
        assert!(
            !ModelConfig::from_hf_json_str(&no_bias)
                .unwrap()
                .attention_bias
        );

        let q3 = r#"{"architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 32,
            "intermediate_size": 48, "moe_intermediate_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 8,
            "num_experts_per_tok": 3, "norm_topk_prob": true, "vocab_size": 64}"#;
        let c = ModelConfig::from_hf_json_str(q3).unwrap();
        let m = c.moe.clone().unwrap();
        assert_eq!((m.num_experts, m.top_k, m.renormalize), (8, 3, true));
        assert_eq!(m.sparse_layers, vec![true, true]);
        assert!(m.shared_expert_intermediate_size.is_none() && c.qk_norm);
        // Qwen3-MoE's head_dim defaults to hidden / heads (dense Qwen3: 128).
        assert_eq!(c.head_dim, 8);
        let v5 = q3.replace("\"num_experts\"", "\"num_local_experts\"");
        assert_eq!(
            ModelConfig::from_hf_json_str(&v5)
                .unwrap()
                .moe
                .unwrap()
                .num_experts,
            8
        );
        let dense = q3.replace("\"num_experts\": 8", "\"num_experts\": 0");
        assert!(ModelConfig::from_hf_json_str(&dense).unwrap().moe.is_none());
    }

    #[test]
    fn bad_moe_values_are_refused_by_name() {
        let cases = [
            (
                MIXTRAL.replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 5"),
                "num_experts_per_tok",
            ),
            (
                MIXTRAL.replace("\"num_local_experts\": 4", "\"num_local_experts\": 0"),
                "experts",
            ),
            (
                MIXTRAL
                    .replace("MixtralForCausalLM", "Qwen3MoeForCausalLM")
                    .replace(
                        "\"vocab_size\"",
                        "\"mlp_only_layers\": \"x\", \"vocab_size\"",
                    ),
                "mlp_only_layers",
            ),
            (
                MIXTRAL
                    .replace("MixtralForCausalLM", "Qwen2MoeForCausalLM")
                    .replace(
                        "\"vocab_size\"",
                        "\"decoder_sparse_step\": 0, \"vocab_size\"",
                    ),
                "decoder_sparse_step",
            ),
        ];
        for (json, needle) in cases {
            let err = ModelConfig::from_hf_json_str(&json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
