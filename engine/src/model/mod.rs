//! The decoder-only transformer of Llama, Mistral, Qwen2 and Qwen3, written
//! once over the device-neutral op set. The architectures differ only in
//! flags: q/k/v bias (Qwen2), per-head q/k RMSNorm (Qwen3), rope scaling and
//! tied embeddings; the flags come from `ModelConfig`. Gemma 2/3 add per-layer
//! sliding windows, scaled embeddings, norms on the attention and MLP outputs,
//! GeGLU and logit soft-capping (`config::DecoderVariant`). Mixtral and Qwen
//! MoE models replace some or all MLPs with a mixture of experts (`moe.rs`).

mod gemma;

mod decoder_layer;
mod kv_cache_layout;
mod moe;
mod weights;
mod workspace;

pub use kv_cache_layout::KvCacheLayout;
pub use weights::{DecoderWeights, DenseMlpWeights, FeedForward, LayerWeights};
pub use workspace::{KvCache, Workspace};

use crate::backend::{AttentionDims, Backend};
use crate::config::{HiddenAct, ModelConfig};

/// The shapes the forward pass needs, derived once from the config.
#[derive(Debug, Clone, Copy)]
pub struct ModelDims {
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub qk_norm: bool,
    pub qkv_bias: bool,
    /// Softmax scale of attention scores.
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Factor on the embeddings (Gemma: `sqrt(hidden)`, as an f32).
    pub embed_scale: Option<f32>,
    pub hidden_act: HiddenAct,
    /// Experts of the sparse layers (0: a dense model).
    pub num_experts: usize,
}

impl ModelDims {
    pub fn from_config(c: &ModelConfig) -> Self {
        Self {
            vocab_size: c.vocab_size,
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            eps: c.rms_norm_eps,
            qk_norm: c.qk_norm,
            qkv_bias: c.attention_bias,
            attn_scale: gemma::attn_scale(c),
            attn_softcap: c.variant.attn_logit_softcapping,
            final_softcap: c.variant.final_logit_softcapping,
            embed_scale: gemma::embed_scale(c),
            hidden_act: c.variant.hidden_act,
            num_experts: c.moe.as_ref().map_or(0, |m| m.num_experts),
        }
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    pub fn qkv_dim(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }

    /// The attention call's shapes for a KV cache of `block_size`-token
    /// blocks (a full-attention layer's: `attention_block` sets the window).
    pub fn attention_dims(&self, block_size: usize) -> AttentionDims {
        AttentionDims {
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            block_size,
            scale: self.attn_scale,
            sliding_window: None,
            logit_softcap: self.attn_softcap,
            kv_group: 0,
        }
    }

    /// KV-cache elements per token over all layers (K and V).
    pub fn kv_elements_per_token(&self) -> usize {
        2 * self.num_layers * self.kv_dim()
    }
}

/// A loaded model: its weights on one backend.
pub struct DecoderModel<B: Backend> {
    pub dims: ModelDims,
    pub weights: DecoderWeights<B>,
}

impl<B: Backend> DecoderModel<B> {
    /// Runs every layer over the batch in `inputs` and writes the final
    /// normalized hidden states into `ws.hidden`. KV of the new tokens is
    /// written into `kv` before each layer's attention reads it, so tokens of
    /// one step may attend to each other's KV (prefix-cache hits within a step).
    pub fn forward_hidden(
        &self,
        backend: &B,
        inputs: &B::Inputs,
        num_tokens: usize,
        ws: &mut Workspace<B>,
        kv: &mut KvCache<B>,
    ) {
        let d = self.dims;
        let t = num_tokens;
        let w = &self.weights;
        backend.embedding(inputs, &w.embed_tokens, &mut ws.residual, d.hidden);
        if let Some(s) = d.embed_scale {
            backend.scale(&mut ws.residual, t * d.hidden, s);
        }
        for (i, layer) in w.layers.iter().enumerate() {
            if i == 0 {
                backend.rms_norm(
                    &ws.residual,
                    &layer.input_layernorm,
                    &mut ws.hidden,
                    t,
                    d.hidden,
                    d.eps,
                );
            } else {
                backend.fused_add_rms_norm(
                    &mut ws.hidden,
                    &mut ws.residual,
                    &layer.input_layernorm,
                    t,
                    d.hidden,
                    d.eps,
                );
            }
            self.attention_block(backend, inputs, i, t, ws, kv);
            if let Some(norm) = &layer.attn_output_norm {
                backend.rms_norm_inplace(&mut ws.hidden, norm, t, d.hidden, d.eps);
            }
            backend.fused_add_rms_norm(
                &mut ws.hidden,
                &mut ws.residual,
                &layer.post_attention_layernorm,
                t,
                d.hidden,
                d.eps,
            );
            match &layer.mlp {
                FeedForward::Dense(mlp) => self.mlp_block(backend, mlp, t, ws),
                FeedForward::Sparse(moe) => backend.fused_moe(&mut ws.hidden, moe, t),
            }
            if let Some(norm) = &layer.mlp_output_norm {
                backend.rms_norm_inplace(&mut ws.hidden, norm, t, d.hidden, d.eps);
            }
        }
        backend.fused_add_rms_norm(
            &mut ws.hidden,
            &mut ws.residual,
            &w.norm,
            t,
            d.hidden,
            d.eps,
        );
    }

    /// The LM head's weight (the embedding when tied).
    fn lm_head(&self) -> &B::Weight {
        self.weights
            .lm_head
            .as_ref()
            .unwrap_or(&self.weights.embed_tokens)
    }

    /// The LM head over the first `rows` rows of `ws.hidden`, into
    /// `ws.logits` on the device (the decode path: every row samples, so no
    /// gather; the ops a decode graph records end here).
    pub fn lm_head_dense(&self, backend: &B, ws: &mut Workspace<B>, rows: usize) {
        let d = self.dims;
        debug_assert!(rows <= ws.max_logits_rows);
        backend.matmul(
            &ws.hidden,
            self.lm_head(),
            &mut ws.logits,
            rows,
            d.hidden,
            d.vocab_size,
        );
        if let Some(cap) = d.final_softcap {
            backend.softcap(&mut ws.logits, rows * d.vocab_size, cap);
        }
    }

    /// Logits (f32, on the host) of the given token rows of `ws.hidden`,
    /// computed in chunks that fit the workspace, into `logits` (cleared first).
    pub fn compute_logits(
        &self,
        backend: &B,
        ws: &mut Workspace<B>,
        rows: &[u32],
        logits: &mut Vec<f32>,
    ) -> anyhow::Result<()> {
        logits.clear();
        let vocab = self.dims.vocab_size;
        self.for_logits_chunks(backend, ws, rows, |backend, chunk_logits, _, len| {
            backend.to_host(chunk_logits, len * vocab, logits)
        })
    }

    /// Runs the LM head over the given token rows of `ws.hidden` in chunks
    /// that fit the workspace, handing each chunk's logits (on the device)
    /// to `f` with the chunk's first row index into `rows` and its length.
    pub fn for_logits_chunks(
        &self,
        backend: &B,
        ws: &mut Workspace<B>,
        rows: &[u32],
        mut f: impl FnMut(&B, &B::Tensor, usize, usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let d = self.dims;
        let lm_head = self.lm_head();
        for (c, chunk) in rows.chunks(ws.max_logits_rows).enumerate() {
            backend.gather_rows(&ws.hidden, chunk, &mut ws.logits_hidden, d.hidden)?;
            backend.matmul(
                &ws.logits_hidden,
                lm_head,
                &mut ws.logits,
                chunk.len(),
                d.hidden,
                d.vocab_size,
            );
            if let Some(cap) = d.final_softcap {
                backend.softcap(&mut ws.logits, chunk.len() * d.vocab_size, cap);
            }
            f(backend, &ws.logits, c * ws.max_logits_rows, chunk.len())?;
        }
        Ok(())
    }
}
