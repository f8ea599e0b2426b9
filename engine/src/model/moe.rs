//! Loading a sparse (mixture-of-experts) layer: the router, every expert's
//! gate/up (fused, as the dense MLP) and down matrices, and Qwen2-MoE's
//! shared expert. The forward pass is one backend op, `fused_moe`.
//!
//! Checkpoints store experts three ways, all accepted:
//! - per expert, 2D (every published HF checkpoint, and what transformers
//!   5.24 saves): Mixtral `block_sparse_moe.experts.N.w1/w3/w2`, Qwen
//!   `mlp.experts.N.gate_proj/up_proj/down_proj`;
//! - transformers 5's in-memory layout, 3D: `mlp.experts.gate_up_proj`
//!   `[E, 2I, H]` and `mlp.experts.down_proj` `[E, H, I]`;
//! - llama.cpp's, 3D per projection (`ffn_gate_exps` etc., which the GGUF
//!   reader names `mlp.experts.gate_proj.weight` `[E, I, H]`, ...).

use anyhow::Context;

use super::weights::TensorLoader;
use crate::backend::moe::{ExpertWeights, MoeWeights, SharedExpertWeights};
use crate::backend::Backend;
use crate::config::{ExpertNames, MoeConfig};
use crate::weights::{HostTensor, TensorData};

impl<B: Backend> TensorLoader<'_, B> {
    pub(super) fn load_moe(
        &self,
        moe: &MoeConfig,
        names: ExpertNames,
        hidden: usize,
    ) -> anyhow::Result<MoeWeights<B::Weight>> {
        let (e, inter, h) = (moe.num_experts, moe.expert_intermediate_size, hidden);
        let has = |suffix: &str| self.source.contains(&self.name(suffix));
        // The published block name first, then transformers 5's / GGUF's `mlp`.
        let block = [names.block, "mlp"]
            .into_iter()
            .find(|b| has(&format!("{b}.gate.weight")))
            .with_context(|| {
                format!(
                    "{}: no router {}.{}.gate.weight",
                    self.source.describe(),
                    self.prefix,
                    names.block
                )
            })?;
        let router = self.upload_matrix(&[(&format!("{block}.gate.weight"), &[e, h])])?;
        let experts = self
            .load_experts(block, names, e, inter, h)
            .context("loading the experts")?;
        let shared = match moe.shared_expert_intermediate_size {
            None => None,
            Some(si) => Some(SharedExpertWeights {
                intermediate: si,
                mlp: ExpertWeights {
                    gate_up: self.upload_matrix(&[
                        ("mlp.shared_expert.gate_proj.weight", &[si, h]),
                        ("mlp.shared_expert.up_proj.weight", &[si, h]),
                    ])?,
                    down: self
                        .upload_matrix(&[("mlp.shared_expert.down_proj.weight", &[h, si])])?,
                },
                gate: self.upload_matrix(&[("mlp.shared_expert_gate.weight", &[1, h])])?,
            }),
        };
        Ok(MoeWeights {
            router,
            experts,
            shared,
            hidden: h,
            intermediate: inter,
            top_k: moe.top_k,
            renormalize: moe.renormalize,
        })
    }

    fn load_experts(
        &self,
        block: &str,
        names: ExpertNames,
        e: usize,
        inter: usize,
        h: usize,
    ) -> anyhow::Result<Vec<ExpertWeights<B::Weight>>> {
        let has = |suffix: &str| self.source.contains(&self.name(suffix));
        let per_expert = [names, ExpertNames::MIXTRAL, ExpertNames::QWEN]
            .into_iter()
            .find(|n| has(&format!("{block}.experts.0.{}.weight", n.gate)));
        let mut out = Vec::with_capacity(e);
        if let Some(n) = per_expert {
            for j in 0..e {
                let p = format!("{block}.experts.{j}");
                out.push(ExpertWeights {
                    gate_up: self.upload_matrix(&[
                        (&format!("{p}.{}.weight", n.gate), &[inter, h]),
                        (&format!("{p}.{}.weight", n.up), &[inter, h]),
                    ])?,
                    down: self
                        .upload_matrix(&[(&format!("{p}.{}.weight", n.down), &[h, inter])])?,
                });
            }
            return Ok(out);
        }
        let fused = format!("{block}.experts.gate_up_proj");
        let stacked = format!("{block}.experts.gate_proj.weight");
        let (gate_up, down) = if has(&fused) {
            (
                split_experts(self.get(&fused, &[e, 2 * inter, h])?, e),
                split_experts(
                    self.get(&format!("{block}.experts.down_proj"), &[e, h, inter])?,
                    e,
                ),
            )
        } else if has(&stacked) {
            let gate = split_experts(self.get(&stacked, &[e, inter, h])?, e);
            let up = split_experts(
                self.get(&format!("{block}.experts.up_proj.weight"), &[e, inter, h])?,
                e,
            );
            let gate_up = gate
                .into_iter()
                .zip(up)
                .map(|(g, u)| HostTensor::concat_rows(vec![g, u]))
                .collect();
            let down = split_experts(
                self.get(&format!("{block}.experts.down_proj.weight"), &[e, h, inter])?,
                e,
            );
            (gate_up, down)
        } else {
            anyhow::bail!(
                "{}: no experts under {}.{block}.experts (looked for per-expert \
                 {}.weight / {}.weight, 3D gate_up_proj, 3D gate_proj.weight)",
                self.source.describe(),
                self.prefix,
                format_args!("0.{}", names.gate),
                "0.gate_proj",
            );
        };
        for (gu, d) in gate_up.into_iter().zip(down) {
            out.push(ExpertWeights {
                gate_up: self.backend.load_matrix(vec![gu])?,
                down: self.backend.load_matrix(vec![d])?,
            });
        }
        Ok(out)
    }
}

/// `[E, rows, cols]` into E tensors `[rows, cols]`, each in the stored
/// format (blocks split as bytes: every row is whole blocks).
fn split_experts(t: HostTensor, e: usize) -> Vec<HostTensor> {
    let shape = t.shape[1..].to_vec();
    let chunks = |len: usize| len / e.max(1);
    let wrap = |data: TensorData| HostTensor {
        shape: shape.clone(),
        data,
    };
    match t.data {
        TensorData::F32(v) => v
            .chunks(chunks(v.len()))
            .map(|c| wrap(TensorData::F32(c.to_vec())))
            .collect(),
        TensorData::F16(v) => v
            .chunks(chunks(v.len()))
            .map(|c| wrap(TensorData::F16(c.to_vec())))
            .collect(),
        TensorData::BF16(v) => v
            .chunks(chunks(v.len()))
            .map(|c| wrap(TensorData::BF16(c.to_vec())))
            .collect(),
        TensorData::Quant { ty, bytes } => bytes
            .chunks(chunks(bytes.len()))
            .map(|c| {
                wrap(TensorData::Quant {
                    ty,
                    bytes: c.to_vec(),
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_format_and_order() {
        let t = HostTensor {
            shape: vec![3, 2, 2],
            data: TensorData::F32((0..12).map(|i| i as f32).collect()),
        };
        let parts = split_experts(t, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].shape, vec![2, 2]);
        assert_eq!(parts[1].clone().to_f32(), vec![4.0, 5.0, 6.0, 7.0]);
    }
}
