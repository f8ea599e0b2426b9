//! Buffers allocated once at start-up: activations for the largest step and
//! the paged KV cache.

use super::{KvCacheLayout, ModelDims};
use crate::backend::Backend;

/// Activation buffers sized for `max_tokens` rows.
pub struct Workspace<B: Backend> {
    pub max_tokens: usize,
    pub max_logits_rows: usize,
    pub residual: B::Tensor,
    pub hidden: B::Tensor,
    pub qkv: B::Tensor,
    pub q: B::Tensor,
    pub k: B::Tensor,
    pub v: B::Tensor,
    pub attn: B::Tensor,
    pub gate_up: B::Tensor,
    pub act: B::Tensor,
    pub logits_hidden: B::Tensor,
    pub logits: B::Tensor,
}

impl<B: Backend> Workspace<B> {
    pub fn new(
        backend: &B,
        d: &ModelDims,
        max_tokens: usize,
        max_logits_rows: usize,
    ) -> anyhow::Result<Self> {
        let t = max_tokens;
        Ok(Self {
            max_tokens,
            max_logits_rows,
            residual: backend.alloc(t * d.hidden)?,
            hidden: backend.alloc(t * d.hidden)?,
            qkv: backend.alloc(t * d.qkv_dim())?,
            q: backend.alloc(t * d.q_dim())?,
            k: backend.alloc(t * d.kv_dim())?,
            v: backend.alloc(t * d.kv_dim())?,
            attn: backend.alloc(t * d.q_dim())?,
            gate_up: backend.alloc(t * 2 * d.intermediate)?,
            act: backend.alloc(t * d.intermediate)?,
            logits_hidden: backend.alloc(max_logits_rows * d.hidden)?,
            logits: backend.alloc(max_logits_rows * d.vocab_size)?,
        })
    }
}

/// The paged KV cache: `layout.group_size` K and V tensors of
/// `[num_blocks, block_size, num_kv_heads, head_dim]`, each shared by one
/// layer of every KV-cache group (`KvCacheLayout`); a plain model has one
/// tensor pair per layer.
pub struct KvCache<B: Backend> {
    pub num_blocks: usize,
    pub block_size: usize,
    pub layout: KvCacheLayout,
    k: Vec<B::KvCache>,
    v: Vec<B::KvCache>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(
        backend: &B,
        d: &ModelDims,
        layout: &KvCacheLayout,
        num_blocks: usize,
        block_size: usize,
    ) -> anyhow::Result<Self> {
        debug_assert_eq!(layout.layers.len(), d.num_layers);
        let per_tensor = num_blocks * block_size * d.kv_dim();
        let mut k = Vec::with_capacity(layout.group_size);
        let mut v = Vec::with_capacity(layout.group_size);
        for _ in 0..layout.group_size {
            k.push(backend.alloc_kv_cache(per_tensor)?);
            v.push(backend.alloc_kv_cache(per_tensor)?);
        }
        Ok(Self {
            num_blocks,
            block_size,
            layout: layout.clone(),
            k,
            v,
        })
    }

    /// Bytes one block takes over the tensors of `layout`, K and V.
    pub fn bytes_per_block(
        d: &ModelDims,
        layout: &KvCacheLayout,
        block_size: usize,
        element_bytes: usize,
    ) -> usize {
        2 * layout.group_size * d.kv_dim() * block_size * element_bytes
    }

    /// Layer `i`'s KV-cache group (which block table and slots it uses).
    pub fn layer_group(&self, i: usize) -> usize {
        self.layout.layers[i].0
    }

    pub fn layer(&self, i: usize) -> (&B::KvCache, &B::KvCache) {
        let t = self.layout.layers[i].1;
        (&self.k[t], &self.v[t])
    }

    pub fn layer_mut(&mut self, i: usize) -> (&mut B::KvCache, &mut B::KvCache) {
        let t = self.layout.layers[i].1;
        (&mut self.k[t], &mut self.v[t])
    }
}
