//! Loading the decoder's weights by their HF names, fusing q/k/v and
//! gate/up into one matrix each so a layer runs three GEMMs, not seven.

use super::ModelDims;
use crate::backend::moe::MoeWeights;
use crate::backend::Backend;
use crate::config::{ExpertNames, ModelConfig, MoeConfig};
use crate::weights::{HostTensor, WeightSource};
use anyhow::Context;

pub struct LayerWeights<B: Backend> {
    pub input_layernorm: B::Tensor,
    /// `[q_dim + 2 * kv_dim, hidden]`.
    pub qkv_proj: B::Weight,
    pub qkv_bias: Option<B::Tensor>,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    pub o_proj: B::Weight,
    /// Llama's `attention_bias` also biases o_proj (Qwen2's does not).
    pub o_bias: Option<B::Tensor>,
    pub post_attention_layernorm: B::Tensor,
    pub mlp: FeedForward<B>,
    /// Gemma's norms on the attention and MLP outputs (checkpoint names
    /// `post_attention_layernorm` and `post_feedforward_layernorm`; Gemma's
    /// pre-MLP `pre_feedforward_layernorm` then loads as
    /// `post_attention_layernorm` above, the norm before the MLP).
    pub attn_output_norm: Option<B::Tensor>,
    pub mlp_output_norm: Option<B::Tensor>,
    /// This layer's sliding window; `None`: full attention.
    pub sliding_window: Option<usize>,
    /// Rotates with `DecoderWeights::local_rope` (Gemma 3's local layers).
    pub uses_local_rope: bool,
}

/// A layer's MLP: dense, or a mixture of experts (`model/moe.rs`).
pub enum FeedForward<B: Backend> {
    Dense(DenseMlpWeights<B>),
    Sparse(MoeWeights<B::Weight>),
}

pub struct DenseMlpWeights<B: Backend> {
    /// `[2 * intermediate, hidden]`: gate rows, then up rows.
    pub gate_up_proj: B::Weight,
    pub down_proj: B::Weight,
    /// Llama's `mlp_bias`: gate/up fused like the weights, then down.
    pub gate_up_bias: Option<B::Tensor>,
    pub down_bias: Option<B::Tensor>,
}

pub struct DecoderWeights<B: Backend> {
    pub embed_tokens: B::Weight,
    pub layers: Vec<LayerWeights<B>>,
    pub norm: B::Tensor,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<B::Weight>,
    pub rope: B::Rope,
    /// Gemma 3's rope of the sliding layers (its own base frequency).
    pub local_rope: Option<B::Rope>,
}

impl<B: Backend> DecoderWeights<B> {
    /// The rope table `layer` rotates q and k with.
    pub fn layer_rope(&self, layer: &LayerWeights<B>) -> &B::Rope {
        match (&self.local_rope, layer.uses_local_rope) {
            (Some(local), true) => local,
            _ => &self.rope,
        }
    }

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
        let model = TensorLoader {
            backend,
            source,
            prefix: "model".into(),
        };
        let embed_tokens =
            model.upload_matrix(&[("embed_tokens.weight", &[d.vocab_size, d.hidden])])?;
        progress(1, total);
        let mut layers = Vec::with_capacity(d.num_layers);
        for i in 0..d.num_layers {
            let layer = TensorLoader {
                backend,
                source,
                prefix: format!("model.layers.{i}"),
            };
            let sparse = config
                .moe
                .as_ref()
                .filter(|m| m.is_sparse(i))
                .map(|m| (m, ExpertNames::of(config.architecture)));
            let weights = layer
                .load_layer(&d, config, i, sparse)
                .with_context(|| format!("loading layer {i}"))?;
            layers.push(weights);
            progress(2 + i, total);
        }
        let gemma_norms = config.variant.gemma_norms;
        let norm = model.upload_norm("norm.weight", d.hidden, gemma_norms)?;
        let lm_head = if source.contains("lm_head.weight") {
            let head = source.get("lm_head.weight", &[d.vocab_size, d.hidden])?;
            Some(backend.load_matrix(vec![head])?)
        } else if config.tie_word_embeddings {
            None
        } else {
            anyhow::bail!(
                "{}: missing tensor lm_head.weight (and tie_word_embeddings is false)",
                source.describe()
            );
        };
        let rope = match &config.variant.long_rope {
            Some(lr) => {
                let factors = lr.factors_for(max_position);
                let inv_freq = lr.inv_freq(config.rotary_dim(), factors);
                backend.rope(&inv_freq, max_position, lr.attention_factor)?
            }
            None => {
                let inv_freq = pagoda_kernels::cpu::rope_inv_freq(
                    config.rotary_dim(),
                    config.rope_theta,
                    &config.rope_scaling,
                );
                backend.rope(&inv_freq, max_position, 1.0)?
            }
        };
        let local_rope = match &config.variant.local_rope {
            Some((theta, scaling)) => {
                let inv_freq =
                    pagoda_kernels::cpu::rope_inv_freq(config.rotary_dim(), *theta, scaling);
                Some(backend.rope(&inv_freq, max_position, 1.0)?)
            }
            None => None,
        };
        progress(total, total);
        let weights = Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            local_rope,
        };
        weights.log_formats(backend);
        Ok(weights)
    }

    /// Every weight matrix, with its name, for the load log.
    fn matrices(&self) -> Vec<(String, &B::Weight)> {
        let mut out = vec![("embed_tokens".to_string(), &self.embed_tokens)];
        for (i, l) in self.layers.iter().enumerate() {
            for (name, w) in [("qkv_proj", &l.qkv_proj), ("o_proj", &l.o_proj)] {
                out.push((format!("layers.{i}.{name}"), w));
            }
            match &l.mlp {
                FeedForward::Dense(m) => {
                    out.push((format!("layers.{i}.gate_up_proj"), &m.gate_up_proj));
                    out.push((format!("layers.{i}.down_proj"), &m.down_proj));
                }
                FeedForward::Sparse(m) => out.extend(
                    m.named_matrices()
                        .into_iter()
                        .map(|(n, w)| (format!("layers.{i}.{n}"), w)),
                ),
            }
        }
        if let Some(h) = &self.lm_head {
            out.push(("lm_head".to_string(), h));
        }
        out
    }

    /// Logs what the weight matrices keep resident: each matrix's format(s)
    /// at debug level, totals per format at info level.
    fn log_formats(&self, backend: &B) {
        let mut totals: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for (name, w) in self.matrices() {
            let formats = backend.weight_formats(w);
            let parts: Vec<String> = formats
                .iter()
                .map(|(f, b)| format!("{f} {:.2} MiB", *b as f64 / (1 << 20) as f64))
                .collect();
            tracing::debug!("weight {name}: {}", parts.join(" + "));
            for (f, b) in formats {
                let e = totals.entry(f).or_default();
                e.0 += 1;
                e.1 += b;
            }
        }
        let all: usize = totals.values().map(|v| v.1).sum();
        let parts: Vec<String> = totals
            .iter()
            .map(|(f, (n, b))| format!("{f} x{n} {:.1} MiB", *b as f64 / (1 << 20) as f64))
            .collect();
        tracing::info!(
            "weight matrices resident on {}: {:.1} MiB ({})",
            backend.device_name(),
            all as f64 / (1 << 20) as f64,
            parts.join(", ")
        );
    }
}

/// Reads tensors by their HF names under one prefix (`model`,
/// `model.layers.{i}`), checking shapes, and uploads them: the names of a
/// layer are then written once, relative to it.
pub(super) struct TensorLoader<'a, B: Backend> {
    pub(super) backend: &'a B,
    pub(super) source: &'a dyn WeightSource,
    pub(super) prefix: String,
}

impl<B: Backend> TensorLoader<'_, B> {
    pub(super) fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// The host tensor `prefix.suffix`, of exactly `shape`.
    pub(super) fn get(&self, suffix: &str, shape: &[usize]) -> anyhow::Result<HostTensor> {
        Ok(self.source.get(&self.name(suffix), shape)?)
    }

    /// Like [`Self::get`], `None` when the checkpoint lacks the tensor
    /// (biases some Llama variants have and others do not).
    fn get_optional(&self, suffix: &str, shape: &[usize]) -> anyhow::Result<Option<HostTensor>> {
        if self.source.contains(&self.name(suffix)) {
            Ok(Some(self.get(suffix, shape)?))
        } else {
            Ok(None)
        }
    }

    /// An RMSNorm gain: Gemma stores `w` for `norm(x) * (1 + w)`; the
    /// backend adds the 1 (`Backend::load_norm_weight`).
    fn upload_norm(&self, suffix: &str, dim: usize, gemma: bool) -> anyhow::Result<B::Tensor> {
        self.backend
            .load_norm_weight(self.get(suffix, &[dim])?, gemma)
    }

    /// Stacks bias `parts` (name, shape) into one device tensor, so one add
    /// serves what the checkpoint stores apart.
    fn upload_fused(&self, parts: &[(&str, &[usize])]) -> anyhow::Result<B::Tensor> {
        let host = parts
            .iter()
            .map(|(suffix, shape)| self.get(suffix, shape))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.backend.load_weight(HostTensor::concat_rows(host))
    }

    /// Stacks weight matrices `parts` (name, shape) row-wise into one, so
    /// one GEMM serves what the checkpoint stores apart; each keeps its format.
    pub(super) fn upload_matrix(&self, parts: &[(&str, &[usize])]) -> anyhow::Result<B::Weight> {
        let host = parts
            .iter()
            .map(|(suffix, shape)| self.get(suffix, shape))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.backend.load_matrix(host)
    }

    /// One decoder layer: q/k/v and gate/up fused, biases and q/k norms
    /// where the architecture (or the checkpoint) has them.
    fn load_layer(
        &self,
        d: &ModelDims,
        config: &ModelConfig,
        i: usize,
        sparse: Option<(&MoeConfig, ExpertNames)>,
    ) -> anyhow::Result<LayerWeights<B>> {
        let gemma = config.variant.gemma_norms;
        let norm = |suffix: &str, dim: usize| self.upload_norm(suffix, dim, gemma);
        let (h, q, kv, inter) = (d.hidden, d.q_dim(), d.kv_dim(), d.intermediate);
        let fused = config.variant.fused_projections;
        let qkv_proj = if fused {
            self.upload_matrix(&[("self_attn.qkv_proj.weight", &[q + 2 * kv, h])])?
        } else {
            self.upload_matrix(&[
                ("self_attn.q_proj.weight", &[q, h]),
                ("self_attn.k_proj.weight", &[kv, h]),
                ("self_attn.v_proj.weight", &[kv, h]),
            ])?
        };
        let qkv_bias = if d.qkv_bias {
            Some(self.upload_fused(&[
                ("self_attn.q_proj.bias", &[q]),
                ("self_attn.k_proj.bias", &[kv]),
                ("self_attn.v_proj.bias", &[kv]),
            ])?)
        } else {
            None
        };
        let (q_norm, k_norm) = if d.qk_norm {
            (
                Some(norm("self_attn.q_norm.weight", d.head_dim)?),
                Some(norm("self_attn.k_norm.weight", d.head_dim)?),
            )
        } else {
            (None, None)
        };
        let upload_optional = |suffix: &str, shape: &[usize]| -> anyhow::Result<_> {
            let host = self.get_optional(suffix, shape)?;
            host.map(|t| self.backend.load_weight(t)).transpose()
        };
        Ok(LayerWeights {
            input_layernorm: norm("input_layernorm.weight", h)?,
            qkv_proj,
            qkv_bias,
            q_norm,
            k_norm,
            o_proj: self.upload_matrix(&[("self_attn.o_proj.weight", &[h, q])])?,
            o_bias: upload_optional("self_attn.o_proj.bias", &[h])?,
            post_attention_layernorm: norm(
                if gemma {
                    "pre_feedforward_layernorm.weight"
                } else {
                    "post_attention_layernorm.weight"
                },
                h,
            )?,
            mlp: match sparse {
                Some((moe, names)) => FeedForward::Sparse(self.load_moe(moe, names, h)?),
                None => FeedForward::Dense(DenseMlpWeights {
                    gate_up_proj: if fused {
                        self.upload_matrix(&[("mlp.gate_up_proj.weight", &[2 * inter, h])])?
                    } else {
                        self.upload_matrix(&[
                            ("mlp.gate_proj.weight", &[inter, h]),
                            ("mlp.up_proj.weight", &[inter, h]),
                        ])?
                    },
                    down_proj: self.upload_matrix(&[("mlp.down_proj.weight", &[h, inter])])?,
                    gate_up_bias: self.gate_up_bias(inter)?,
                    down_bias: upload_optional("mlp.down_proj.bias", &[h])?,
                }),
            },
            attn_output_norm: gemma
                .then(|| norm("post_attention_layernorm.weight", h))
                .transpose()?,
            mlp_output_norm: gemma
                .then(|| norm("post_feedforward_layernorm.weight", h))
                .transpose()?,
            sliding_window: config.layer_window(i),
            uses_local_rope: config.variant.sliding_layers.get(i) == Some(&true),
        })
    }

    /// Llama's `mlp_bias`: both of gate/up or neither; one alone is a broken
    /// checkpoint, not a model variant.
    fn gate_up_bias(&self, intermediate: usize) -> anyhow::Result<Option<B::Tensor>> {
        let gate = self.get_optional("mlp.gate_proj.bias", &[intermediate])?;
        let up = self.get_optional("mlp.up_proj.bias", &[intermediate])?;
        match (gate, up) {
            (Some(g), Some(u)) => Ok(Some(
                self.backend
                    .load_weight(HostTensor::concat_rows(vec![g, u]))?,
            )),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "{}: {} has only one of the gate/up biases",
                self.source.describe(),
                self.prefix
            ),
        }
    }
}
