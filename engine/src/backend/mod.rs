//! The device-neutral op set the model is written over.
//!
//! A backend owns its buffers (`Tensor`): the model allocates every activation
//! once for the largest step, and each op works on the leading rows it is
//! told about. Fixed buffers keep the CPU path allocation-free per step and
//! are what CUDA graph capture needs on the GPU.

pub mod cpu;
mod cpu_moe;
mod cpu_moe_scratch;
mod cpu_weight;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_moe;
pub mod moe;

use crate::sampler::{Sampled, SamplingRow};
use crate::weights::HostTensor;

/// One step's flat batch, on the host (vLLM v1's varlen layout).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardBatch {
    /// Every token computed this step, request after request.
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// KV slot of each token: `block_id * block_size + offset` (KV-cache
    /// group 0; other groups' are in `kv_groups`).
    pub slot_mapping: Vec<i64>,
    /// Prefix sums of the new tokens per request: `[num_seqs + 1]`.
    pub query_start_loc: Vec<u32>,
    /// Tokens in the KV cache after this step, per request.
    pub seq_lens: Vec<u32>,
    /// `[num_seqs, max_blocks_per_seq]`, padded with the null block 0
    /// (KV-cache group 0).
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    /// KV-cache groups 1.. of a hybrid model (`model::KvCacheLayout`), each
    /// with its own slots and block tables; empty for one group.
    pub kv_groups: Vec<KvGroupBatch>,
    /// Bounds every `seq_len` (sizes the GPU's decode grid): the step's
    /// longest sequence, or the model's max length in a graph step, whose
    /// launch shapes must not depend on the batch.
    pub max_seq_len: usize,
}

/// One more KV-cache group's part of a step: the same tokens' slots and
/// the same sequences' block tables, in that group's blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvGroupBatch {
    pub slot_mapping: Vec<i64>,
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
}

impl ForwardBatch {
    /// KV-cache group `group`'s slots.
    pub fn group_slot_mapping(&self, group: usize) -> &[i64] {
        match group {
            0 => &self.slot_mapping,
            g => &self.kv_groups[g - 1].slot_mapping,
        }
    }

    /// KV-cache group `group`'s block tables and their width.
    pub fn group_block_tables(&self, group: usize) -> (&[u32], usize) {
        match group {
            0 => (&self.block_tables, self.max_blocks_per_seq),
            g => {
                let kg = &self.kv_groups[g - 1];
                (&kg.block_tables, kg.max_blocks_per_seq)
            }
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    pub fn clear(&mut self) {
        self.token_ids.clear();
        self.positions.clear();
        self.slot_mapping.clear();
        self.query_start_loc.clear();
        self.seq_lens.clear();
        self.block_tables.clear();
        self.max_blocks_per_seq = 0;
        self.max_seq_len = 0;
        for g in &mut self.kv_groups {
            g.slot_mapping.clear();
            g.block_tables.clear();
            g.max_blocks_per_seq = 0;
        }
    }

    /// Whether every sequence computes exactly one token (a graph-able step).
    pub fn is_pure_decode(&self) -> bool {
        self.num_seqs() > 0 && self.num_tokens() == self.num_seqs()
    }

    /// Pads a pure-decode batch to `size` sequences with vLLM's padding
    /// rows: token 0 at position 0, slot -1 (nothing written to the KV
    /// cache), `seq_len` 0 (attention reads nothing) and a block-table row
    /// of null blocks. Block tables are re-laid with `max_blocks_per_seq`
    /// columns and `max_seq_len` is set, so the launch shapes of the step
    /// depend on `size` only.
    pub fn pad_decodes(&mut self, size: usize, max_blocks_per_seq: usize, max_seq_len: usize) {
        debug_assert!(self.is_pure_decode() || self.num_seqs() == 0);
        let n = self.num_seqs();
        debug_assert!(size >= n && max_blocks_per_seq >= self.max_blocks_per_seq);
        pad_tables(
            &mut self.block_tables,
            &mut self.max_blocks_per_seq,
            n,
            size,
            max_blocks_per_seq,
        );
        for g in &mut self.kv_groups {
            pad_tables(
                &mut g.block_tables,
                &mut g.max_blocks_per_seq,
                n,
                size,
                max_blocks_per_seq,
            );
            g.slot_mapping.resize(size, -1);
        }
        if self.query_start_loc.is_empty() {
            self.query_start_loc.push(0);
        }
        for _ in n..size {
            self.token_ids.push(0);
            self.positions.push(0);
            self.slot_mapping.push(-1);
            let last = *self.query_start_loc.last().unwrap_or(&0);
            self.query_start_loc.push(last + 1);
            self.seq_lens.push(0);
        }
        self.max_seq_len = max_seq_len;
    }
}

/// Re-lays `n` rows of `tables` (`width` columns) with `new_width` columns
/// and adds null rows up to `size` rows.
fn pad_tables(tables: &mut Vec<u32>, width: &mut usize, n: usize, size: usize, new_width: usize) {
    if new_width != *width {
        let old = std::mem::take(tables);
        *tables = Vec::with_capacity(size * new_width);
        for row in old.chunks_exact((*width).max(1)).take(n) {
            tables.extend_from_slice(row);
            tables.resize(tables.len() + new_width - *width, 0);
        }
        *width = new_width;
    }
    tables.resize(size * new_width, 0);
}

/// The largest step `Inputs` must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    pub max_tokens: usize,
    pub max_seqs: usize,
    pub max_blocks_per_seq: usize,
    /// KV-cache groups of the model's layout (1 unless it is hybrid or
    /// windowed): each has its own slots and block tables.
    pub num_kv_groups: usize,
}

/// Shapes of the attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
    /// This layer's sliding window (keys a token sees, itself included).
    pub sliding_window: Option<usize>,
    /// Gemma 2's `attn_logit_softcapping`.
    pub logit_softcap: Option<f32>,
    /// The layer's KV-cache group: which block tables it reads
    /// (`ForwardBatch::group_block_tables`); 0 unless the model is hybrid.
    pub kv_group: usize,
}

/// The op set. Sizes are explicit: `rows` is the number of leading rows used.
pub trait Backend: Send + 'static {
    /// A dense buffer of the backend's element type (f32 on CPU, bf16 on CUDA).
    type Tensor: Send;
    /// A weight matrix (linear layers, embeddings): kept in its checkpoint
    /// format on CPU (16-bit, GGUF blocks), bf16 on CUDA.
    type Weight: Send;
    /// Precomputed rotary cos/sin table.
    type Rope: Send;
    /// One step's batch metadata, resident where the kernels read it,
    /// allocated once for the largest step (fixed addresses for graphs).
    type Inputs: Send;
    /// A recorded sequence of ops replayed as one (CUDA graphs).
    type Graph: Send;
    /// One layer's K or V cache (`--kv-cache-dtype` picks its element type
    /// on CPU).
    type KvCache: Send;

    /// Human-readable device name, for logs and /metrics.
    fn device_name(&self) -> String;
    /// Runs one step's work (`f`) where this backend's kernels are cheapest
    /// to start: the CPU backend runs it on a thread of its compute pool.
    fn on_compute_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        f()
    }
    /// Bytes per element of `KvCache` (KV-cache sizing).
    fn kv_cache_element_bytes(&self) -> usize;
    /// The KV cache's element type, as vLLM logs it (`bfloat16`, ...).
    fn kv_cache_dtype_name(&self) -> &'static str;

    /// A small dense tensor (norm weights, biases) in the element type.
    fn load_weight(&self, tensor: HostTensor) -> anyhow::Result<Self::Tensor>;
    /// An RMSNorm gain. A Gemma checkpoint stores `w` for a gain of
    /// `1 + w`: by default the sum is taken here, in f32 (exact for the CPU's
    /// f32 norms); a backend whose norm kernels add the 1 themselves (CUDA,
    /// so a bf16 `w` keeps its bits) keeps `w`.
    fn load_norm_weight(&self, tensor: HostTensor, gemma: bool) -> anyhow::Result<Self::Tensor> {
        if !gemma {
            return self.load_weight(tensor);
        }
        let shape = tensor.shape.clone();
        let shifted = tensor.to_f32().into_iter().map(|w| 1.0 + w).collect();
        self.load_weight(HostTensor {
            shape,
            data: crate::weights::TensorData::F32(shifted),
        })
    }
    /// A weight matrix stacked row-wise from `parts` (q/k/v, gate/up: one
    /// matmul for what the checkpoint stores apart; parts may differ in
    /// format).
    fn load_matrix(&self, parts: Vec<HostTensor>) -> anyhow::Result<Self::Weight>;
    /// What a weight matrix keeps resident: (format, bytes) per part.
    fn weight_formats(&self, weight: &Self::Weight) -> Vec<(&'static str, usize)>;
    /// A zeroed buffer of `len` elements.
    fn alloc(&self, len: usize) -> anyhow::Result<Self::Tensor>;
    /// A zeroed K or V cache of `len` elements.
    fn alloc_kv_cache(&self, len: usize) -> anyhow::Result<Self::KvCache>;
    fn rope(
        &self,
        inv_freq: &[f32],
        max_position: usize,
        attention_scaling: f32,
    ) -> anyhow::Result<Self::Rope>;
    /// Metadata buffers for steps of up to these sizes.
    fn alloc_inputs(&self, limits: InputLimits) -> anyhow::Result<Self::Inputs>;
    /// Copies one step's batch into `inputs` (ordered before the step's ops).
    fn prepare_inputs(
        &mut self,
        batch: &ForwardBatch,
        inputs: &mut Self::Inputs,
    ) -> anyhow::Result<()>;

    /// Starts recording the ops issued until `end_capture` instead of
    /// running them.
    fn begin_capture(&self) -> anyhow::Result<()> {
        anyhow::bail!("{} cannot record graphs", self.device_name())
    }
    /// Ends the recording (always, even after a failed op) and returns it.
    fn end_capture(&self) -> anyhow::Result<Self::Graph> {
        anyhow::bail!("{} cannot record graphs", self.device_name())
    }
    /// Runs a recorded graph over the buffers it was recorded with.
    fn replay(&self, _graph: &Self::Graph) -> anyhow::Result<()> {
        anyhow::bail!("{} cannot replay graphs", self.device_name())
    }

    /// `out[t] = table[token_ids[t]]` (rows decoded per lookup).
    fn embedding(
        &self,
        inputs: &Self::Inputs,
        table: &Self::Weight,
        out: &mut Self::Tensor,
        hidden: usize,
    );
    /// `out[m, n] = x[m, k] · w[n, k]ᵀ`.
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        out: &mut Self::Tensor,
        m: usize,
        k: usize,
        n: usize,
    );
    fn add_bias(&self, out: &mut Self::Tensor, bias: &Self::Tensor, rows: usize, n: usize);
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        weight: &Self::Tensor,
        out: &mut Self::Tensor,
        rows: usize,
        dim: usize,
        eps: f32,
    );
    /// `residual += x; x = rms_norm(residual)`.
    fn fused_add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        residual: &mut Self::Tensor,
        weight: &Self::Tensor,
        rows: usize,
        dim: usize,
        eps: f32,
    );
    /// Per-row norm in place (Qwen3's per-head q/k norm).
    fn rms_norm_inplace(
        &self,
        x: &mut Self::Tensor,
        weight: &Self::Tensor,
        rows: usize,
        dim: usize,
        eps: f32,
    );
    /// Splits fused `[rows, q_dim + 2 * kv_dim]` projections into q, k and v.
    #[allow(clippy::too_many_arguments)]
    fn split_qkv(
        &self,
        qkv: &Self::Tensor,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        v: &mut Self::Tensor,
        rows: usize,
        q_dim: usize,
        kv_dim: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn rotary(
        &self,
        inputs: &Self::Inputs,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        rope: &Self::Rope,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    );
    /// `out = silu(x[:, :inter]) * x[:, inter:]`.
    fn silu_and_mul(
        &self,
        x: &Self::Tensor,
        out: &mut Self::Tensor,
        rows: usize,
        intermediate: usize,
    );
    /// `out = gelu_tanh(x[:, :inter]) * x[:, inter:]` (Gemma's GeGLU).
    fn gelu_tanh_and_mul(
        &self,
        x: &Self::Tensor,
        out: &mut Self::Tensor,
        rows: usize,
        intermediate: usize,
    );
    /// `x[..len] *= factor` (Gemma's embedding scale).
    fn scale(&self, x: &mut Self::Tensor, len: usize, factor: f32);
    /// `x[..len] = cap * tanh(x / cap)` (Gemma 2's final logit soft-capping).
    fn softcap(&self, x: &mut Self::Tensor, len: usize, cap: f32);
    /// Writes this step's K and V rows into KV-cache group `kv_group`'s
    /// slots (`ForwardBatch::group_slot_mapping`).
    #[allow(clippy::too_many_arguments)]
    fn reshape_and_cache(
        &self,
        inputs: &Self::Inputs,
        kv_group: usize,
        k: &Self::Tensor,
        v: &Self::Tensor,
        k_cache: &mut Self::KvCache,
        v_cache: &mut Self::KvCache,
        num_kv_heads: usize,
        head_dim: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn paged_attention(
        &self,
        inputs: &Self::Inputs,
        q: &Self::Tensor,
        k_cache: &Self::KvCache,
        v_cache: &Self::KvCache,
        out: &mut Self::Tensor,
        dims: AttentionDims,
    );
    /// vLLM's `fused_moe` over the first `rows` rows of `hidden` (normalized
    /// activations), in place: route every row in one pass (softmax, top-k,
    /// optional renormalization), run each expert that got rows once over
    /// them (gathered), add the weighted outputs back per row, plus the
    /// gated shared expert when there is one.
    fn fused_moe(
        &self,
        hidden: &mut Self::Tensor,
        moe: &moe::MoeWeights<Self::Weight>,
        rows: usize,
    );
    /// `out[i] = x[rows[i]]` for rows of `dim` elements.
    fn gather_rows(
        &self,
        x: &Self::Tensor,
        rows: &[u32],
        out: &mut Self::Tensor,
        dim: usize,
    ) -> anyhow::Result<()>;
    /// Whether `sample` works: only token ids then come back to the host.
    fn samples_on_device(&self) -> bool {
        false
    }
    /// Whether `sample` takes this row (a device kernel may not run every
    /// kind of draw); the runner samples the step on the host otherwise.
    fn can_sample(&self, row: &SamplingRow) -> bool {
        let _ = row;
        self.samples_on_device()
    }
    /// Samples row `i` of `logits` (`[rows, vocab]`) as `rows[i]` says
    /// (processors, then greedy or random; logprobs of the raw row when
    /// asked), appending one result per row to `out`.
    fn sample(
        &self,
        _logits: &Self::Tensor,
        _vocab: usize,
        _rows: &[SamplingRow],
        _out: &mut Vec<Sampled>,
    ) -> anyhow::Result<()> {
        anyhow::bail!("{} samples on the host", self.device_name())
    }
    /// Appends the first `len` elements, as f32, to `out` (a buffer the
    /// caller reuses: fresh multi-megabyte vectors page-fault every step).
    fn to_host(&self, x: &Self::Tensor, len: usize, out: &mut Vec<f32>) -> anyhow::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two decodes: seq 0 at position 5 (blocks [3]), seq 1 at 17 (blocks [4, 7]).
    fn two_decodes() -> ForwardBatch {
        ForwardBatch {
            token_ids: vec![11, 12],
            positions: vec![5, 17],
            slot_mapping: vec![3 * 16 + 5, 7 * 16 + 1],
            query_start_loc: vec![0, 1, 2],
            seq_lens: vec![6, 18],
            block_tables: vec![3, 0, 4, 7],
            max_blocks_per_seq: 2,
            max_seq_len: 18,
            kv_groups: Vec::new(),
        }
    }

    #[test]
    fn padding_pads_every_kv_group() {
        let mut b = two_decodes();
        b.kv_groups.push(KvGroupBatch {
            slot_mapping: vec![9 * 16 + 5, 8 * 16 + 1],
            block_tables: vec![9, 0, 0, 8],
            max_blocks_per_seq: 2,
        });
        b.pad_decodes(3, 3, 48);
        assert_eq!(b.group_slot_mapping(1), &[9 * 16 + 5, 8 * 16 + 1, -1]);
        assert_eq!(
            b.group_block_tables(1),
            (&[9, 0, 0, 0, 8, 0, 0, 0, 0][..], 3)
        );
        assert_eq!(b.group_block_tables(0).0, &[3, 0, 0, 4, 7, 0, 0, 0, 0]);
        b.clear();
        assert_eq!(b.kv_groups.len(), 1, "groups stay, emptied");
        assert!(b.group_slot_mapping(1).is_empty());
    }

    #[test]
    fn padding_adds_null_rows_and_widens_block_tables() {
        let mut b = two_decodes();
        assert!(b.is_pure_decode());
        b.pad_decodes(4, 3, 64);
        assert_eq!(b.token_ids, vec![11, 12, 0, 0]);
        assert_eq!(b.positions, vec![5, 17, 0, 0]);
        assert_eq!(b.slot_mapping, vec![53, 113, -1, -1]);
        assert_eq!(b.query_start_loc, vec![0, 1, 2, 3, 4]);
        assert_eq!(b.seq_lens, vec![6, 18, 0, 0]);
        assert_eq!(b.block_tables, vec![3, 0, 0, 4, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((b.max_blocks_per_seq, b.max_seq_len), (3, 64));
        assert!(b.is_pure_decode());
    }

    #[test]
    fn padding_to_the_same_size_only_fixes_the_shapes() {
        let mut b = two_decodes();
        b.pad_decodes(2, 2, 32);
        let mut want = two_decodes();
        want.max_seq_len = 32;
        assert_eq!(b, want);
        let mut empty = ForwardBatch::default();
        empty.pad_decodes(1, 1, 8);
        assert_eq!(empty.query_start_loc, vec![0, 1]);
        assert_eq!(empty.block_tables, vec![0]);
        assert!(empty.is_pure_decode());
    }

    #[test]
    fn a_prefill_is_not_a_pure_decode() {
        let b = ForwardBatch {
            token_ids: vec![1, 2, 3],
            query_start_loc: vec![0, 3],
            seq_lens: vec![3],
            ..ForwardBatch::default()
        };
        assert!(!b.is_pure_decode());
        assert!(!ForwardBatch::default().is_pure_decode());
    }
}
