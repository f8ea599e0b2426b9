//! Loading the decoder's weights by their HF names, fusing q/k/v and
//! gate/up into one matrix each so a layer runs three GEMMs, not seven.

use super::ModelDims;
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::weights::{HostTensor, TensorData, WeightSource};
use anyhow::Context;

pub struct LayerWeights<B: Backend> {
    pub input_layernorm: B::Tensor,
    /// `[q_dim + 2 * kv_dim, hidden]`.
    pub qkv_proj: B::Tensor,
    pub qkv_bias: Option<B::Tensor>,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    pub o_proj: B::Tensor,
    /// Llama's `attention_bias` also biases o_proj (Qwen2's does not).
    pub o_bias: Option<B::Tensor>,
    pub post_attention_layernorm: B::Tensor,
    /// `[2 * intermediate, hidden]`: gate rows, then up rows.
    pub gate_up_proj: B::Tensor,
    pub down_proj: B::Tensor,
    /// Llama's `mlp_bias`: gate/up fused like the weights, then down.
    pub gate_up_bias: Option<B::Tensor>,
    pub down_bias: Option<B::Tensor>,
}

pub struct DecoderWeights<B: Backend> {
    pub embed_tokens: B::Tensor,
    pub layers: Vec<LayerWeights<B>>,
    pub norm: B::Tensor,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<B::Tensor>,
    pub rope: B::Rope,
}

/// Stacks tensors along their first dimension (all converted to f32 when dtypes differ).
fn concat_rows(parts: Vec<HostTensor>) -> HostTensor {
    let cols: usize = parts[0].shape[1..].iter().product();
    let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
    let mut shape = parts[0].shape.clone();
    shape[0] = rows;
    let all_bf16 = parts.iter().all(|p| matches!(p.data, TensorData::BF16(_)));
    let data = if all_bf16 {
        let mut out = Vec::with_capacity(rows * cols);
        for p in parts {
            out.extend(p.to_bf16());
        }
        TensorData::BF16(out)
    } else {
        let mut out = Vec::with_capacity(rows * cols);
        for p in parts {
            out.extend(p.to_f32());
        }
        TensorData::F32(out)
    };
    HostTensor { shape, data }
}

impl<B: Backend> DecoderWeights<B> {
    /// Loads every tensor, checking shapes against the config; `progress` is
    /// called after each tensor with (done, total).
    pub fn load(
        backend: &B,
        config: &ModelConfig,
        source: &dyn WeightSource,
        max_position: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> anyhow::Result<Self> {
        let d = ModelDims::from_config(config);
        let total = 3 + d.num_layers;
        let get = |name: &str, shape: &[usize]| -> anyhow::Result<HostTensor> {
            Ok(source.get(name, shape)?)
        };
        let load = |t: HostTensor| backend.load_weight(t);
        let embed_tokens = load(get("model.embed_tokens.weight", &[d.vocab_size, d.hidden])?)?;
        progress(1, total);
        let mut layers = Vec::with_capacity(d.num_layers);
        for i in 0..d.num_layers {
            let p = format!("model.layers.{i}");
            let layer = (|| -> anyhow::Result<LayerWeights<B>> {
                let q = get(
                    &format!("{p}.self_attn.q_proj.weight"),
                    &[d.q_dim(), d.hidden],
                )?;
                let k = get(
                    &format!("{p}.self_attn.k_proj.weight"),
                    &[d.kv_dim(), d.hidden],
                )?;
                let v = get(
                    &format!("{p}.self_attn.v_proj.weight"),
                    &[d.kv_dim(), d.hidden],
                )?;
                let qkv_bias = if d.qkv_bias {
                    let qb = get(&format!("{p}.self_attn.q_proj.bias"), &[d.q_dim()])?;
                    let kb = get(&format!("{p}.self_attn.k_proj.bias"), &[d.kv_dim()])?;
                    let vb = get(&format!("{p}.self_attn.v_proj.bias"), &[d.kv_dim()])?;
                    Some(load(concat_rows(vec![qb, kb, vb]))?)
                } else {
                    None
                };
                let (q_norm, k_norm) = if d.qk_norm {
                    (
                        Some(load(get(
                            &format!("{p}.self_attn.q_norm.weight"),
                            &[d.head_dim],
                        )?)?),
                        Some(load(get(
                            &format!("{p}.self_attn.k_norm.weight"),
                            &[d.head_dim],
                        )?)?),
                    )
                } else {
                    (None, None)
                };
                let optional =
                    |name: String, shape: &[usize]| -> anyhow::Result<Option<HostTensor>> {
                        if source.contains(&name) {
                            Ok(Some(get(&name, shape)?))
                        } else {
                            Ok(None)
                        }
                    };
                let o_bias = optional(format!("{p}.self_attn.o_proj.bias"), &[d.hidden])?;
                let gate_bias = optional(format!("{p}.mlp.gate_proj.bias"), &[d.intermediate])?;
                let up_bias = optional(format!("{p}.mlp.up_proj.bias"), &[d.intermediate])?;
                let down_bias = optional(format!("{p}.mlp.down_proj.bias"), &[d.hidden])?;
                let gate_up_bias = match (gate_bias, up_bias) {
                    (Some(g), Some(u)) => Some(load(concat_rows(vec![g, u]))?),
                    (None, None) => None,
                    _ => anyhow::bail!(
                        "{}: layer {i} has only one of the gate/up biases",
                        source.describe()
                    ),
                };
                let gate = get(
                    &format!("{p}.mlp.gate_proj.weight"),
                    &[d.intermediate, d.hidden],
                )?;
                let up = get(
                    &format!("{p}.mlp.up_proj.weight"),
                    &[d.intermediate, d.hidden],
                )?;
                Ok(LayerWeights {
                    input_layernorm: load(get(
                        &format!("{p}.input_layernorm.weight"),
                        &[d.hidden],
                    )?)?,
                    qkv_proj: load(concat_rows(vec![q, k, v]))?,
                    qkv_bias,
                    q_norm,
                    k_norm,
                    o_proj: load(get(
                        &format!("{p}.self_attn.o_proj.weight"),
                        &[d.hidden, d.q_dim()],
                    )?)?,
                    o_bias: o_bias.map(load).transpose()?,
                    post_attention_layernorm: load(get(
                        &format!("{p}.post_attention_layernorm.weight"),
                        &[d.hidden],
                    )?)?,
                    gate_up_proj: load(concat_rows(vec![gate, up]))?,
                    down_proj: load(get(
                        &format!("{p}.mlp.down_proj.weight"),
                        &[d.hidden, d.intermediate],
                    )?)?,
                    gate_up_bias,
                    down_bias: down_bias.map(load).transpose()?,
                })
            })()
            .with_context(|| format!("loading layer {i}"))?;
            layers.push(layer);
            progress(2 + i, total);
        }
        let norm = load(get("model.norm.weight", &[d.hidden])?)?;
        let lm_head = if source.contains("lm_head.weight") {
            Some(load(get("lm_head.weight", &[d.vocab_size, d.hidden])?)?)
        } else if config.tie_word_embeddings {
            None
        } else {
            anyhow::bail!(
                "{}: missing tensor lm_head.weight (and tie_word_embeddings is false)",
                source.describe()
            );
        };
        let inv_freq =
            pagoda_kernels::cpu::rope_inv_freq(d.head_dim, config.rope_theta, &config.rope_scaling);
        let rope = backend.rope(&inv_freq, max_position, 1.0)?;
        progress(total, total);
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
        })
    }
}
