//! The mixture-of-experts part of `ModelConfig::from_gguf`: llama.cpp's
//! `{arch}.expert_count`, `expert_used_count`, `expert_feed_forward_length`,
//! `expert_shared_feed_forward_length` and `expert_weights_norm`. Mixtral
//! GGUFs say `general.architecture = llama` and differ only by
//! `llama.expert_count`; Qwen's are `qwen2moe` / `qwen3moe`.

use super::gguf::GgufFile;
use super::LoadError;
use crate::config::{Architecture, MoeConfig};

/// The architecture a GGUF `general.architecture` names, MoE ones included.
pub(super) fn moe_architecture(g: &GgufFile, arch: &str) -> Option<Architecture> {
    match arch {
        "llama" if g.get_u64("llama.expert_count").unwrap_or(0) > 0 => Some(Architecture::Mixtral),
        "qwen2moe" => Some(Architecture::Qwen2Moe),
        "qwen3moe" => Some(Architecture::Qwen3Moe),
        _ => None,
    }
}

/// The MoE config of a MoE GGUF (None for a dense architecture). A layer is
/// sparse when it has a router tensor (`blk.N.ffn_gate_inp.weight`).
pub(super) fn moe_config(
    g: &GgufFile,
    arch: &str,
    architecture: Architecture,
    num_layers: usize,
    feed_forward_length: usize,
) -> Result<Option<MoeConfig>, LoadError> {
    let path = g.path();
    let key = |k: &str| format!("{arch}.{k}");
    let need = |k: &str| -> Result<usize, LoadError> {
        let full = key(k);
        g.get_u64(&full)
            .map(|v| v as usize)
            .ok_or_else(|| LoadError::config(path, format!("missing integer key {full:?}")))
    };
    let (renormalize_default, expert_size, shared) = match architecture {
        Architecture::Mixtral => (true, feed_forward_length, None),
        Architecture::Qwen2Moe => (
            false,
            need("expert_feed_forward_length")?,
            Some(need("expert_shared_feed_forward_length")?),
        ),
        Architecture::Qwen3Moe => (true, need("expert_feed_forward_length")?, None),
        _ => return Ok(None),
    };
    let renormalize = match g.metadata(&key("expert_weights_norm")) {
        None => renormalize_default,
        Some(v) => v.as_bool().ok_or_else(|| {
            LoadError::config(
                path,
                format!("{:?} must be a bool", key("expert_weights_norm")),
            )
        })?,
    };
    let config = MoeConfig {
        num_experts: need("expert_count")?,
        top_k: need("expert_used_count")?,
        expert_intermediate_size: expert_size,
        renormalize,
        shared_expert_intermediate_size: shared,
        sparse_layers: (0..num_layers)
            .map(|i| {
                g.tensor_info(&format!("blk.{i}.ffn_gate_inp.weight"))
                    .is_some()
            })
            .collect(),
    };
    config.validate().map_err(|m| LoadError::config(path, m))?;
    Ok(Some(config))
}
