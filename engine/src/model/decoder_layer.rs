//! One decoder layer's two blocks, as nano-vllm's `Qwen3Attention` and
//! `Qwen3MLP` split them: self-attention (fused QKV projection, optional
//! bias and per-head q/k norm, rotary, KV written to the cache, paged
//! attention, output projection) and the gated MLP (fused gate/up, SiLU and
//! multiply, down projection). `forward_hidden` puts the norms and the
//! residual stream around them.

use super::{DecoderModel, DenseMlpWeights, KvCache, Workspace};
use crate::backend::{AttentionDims, Backend};
use crate::config::HiddenAct;

impl<B: Backend> DecoderModel<B> {
    /// Self-attention of layer `i` over the `t` normalized rows in
    /// `ws.hidden`; the output replaces them. The new tokens' K/V are
    /// written to the layer's cache before attention reads it.
    pub(super) fn attention_block(
        &self,
        backend: &B,
        inputs: &B::Inputs,
        i: usize,
        t: usize,
        ws: &mut Workspace<B>,
        kv: &mut KvCache<B>,
    ) {
        let d = self.dims;
        let w = &self.weights;
        let layer = &w.layers[i];
        let kv_group = kv.layer_group(i);
        let attn_dims = AttentionDims {
            sliding_window: layer.sliding_window,
            kv_group,
            ..d.attention_dims(kv.block_size)
        };
        backend.matmul(
            &ws.hidden,
            &layer.qkv_proj,
            &mut ws.qkv,
            t,
            d.hidden,
            d.qkv_dim(),
        );
        if let Some(bias) = &layer.qkv_bias {
            backend.add_bias(&mut ws.qkv, bias, t, d.qkv_dim());
        }
        backend.split_qkv(
            &ws.qkv,
            &mut ws.q,
            &mut ws.k,
            &mut ws.v,
            t,
            d.q_dim(),
            d.kv_dim(),
        );
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            backend.rms_norm_inplace(&mut ws.q, qn, t * d.num_heads, d.head_dim, d.eps);
            backend.rms_norm_inplace(&mut ws.k, kn, t * d.num_kv_heads, d.head_dim, d.eps);
        }
        backend.rotary(
            inputs,
            &mut ws.q,
            &mut ws.k,
            w.layer_rope(layer),
            d.num_heads,
            d.num_kv_heads,
            d.head_dim,
        );
        let (k_cache, v_cache) = kv.layer_mut(i);
        backend.reshape_and_cache(
            inputs,
            kv_group,
            &ws.k,
            &ws.v,
            k_cache,
            v_cache,
            d.num_kv_heads,
            d.head_dim,
        );
        let (k_cache, v_cache) = kv.layer(i);
        backend.paged_attention(inputs, &ws.q, k_cache, v_cache, &mut ws.attn, attn_dims);
        backend.matmul(
            &ws.attn,
            &layer.o_proj,
            &mut ws.hidden,
            t,
            d.q_dim(),
            d.hidden,
        );
        if let Some(bias) = &layer.o_bias {
            backend.add_bias(&mut ws.hidden, bias, t, d.hidden);
        }
    }

    /// The gated MLP over the `t` normalized rows in `ws.hidden`; the
    /// output replaces them.
    pub(super) fn mlp_block(
        &self,
        backend: &B,
        layer: &DenseMlpWeights<B>,
        t: usize,
        ws: &mut Workspace<B>,
    ) {
        let d = self.dims;
        backend.matmul(
            &ws.hidden,
            &layer.gate_up_proj,
            &mut ws.gate_up,
            t,
            d.hidden,
            2 * d.intermediate,
        );
        if let Some(bias) = &layer.gate_up_bias {
            backend.add_bias(&mut ws.gate_up, bias, t, 2 * d.intermediate);
        }
        match d.hidden_act {
            HiddenAct::Silu => backend.silu_and_mul(&ws.gate_up, &mut ws.act, t, d.intermediate),
            HiddenAct::GeluTanh => {
                backend.gelu_tanh_and_mul(&ws.gate_up, &mut ws.act, t, d.intermediate)
            }
        }
        backend.matmul(
            &ws.act,
            &layer.down_proj,
            &mut ws.hidden,
            t,
            d.intermediate,
            d.hidden,
        );
        if let Some(bias) = &layer.down_bias {
            backend.add_bias(&mut ws.hidden, bias, t, d.hidden);
        }
    }
}
