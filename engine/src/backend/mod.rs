//! The device-neutral op set the model is written over.
//!
//! A backend owns its buffers (`Tensor`): the model allocates every activation
//! once for the largest step, and each op works on the leading rows it is
//! told about. Fixed buffers keep the CPU path allocation-free per step and
//! are what CUDA graph capture needs on the GPU.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::weights::HostTensor;

/// One step's flat batch, on the host (vLLM v1's varlen layout).
#[derive(Debug, Clone, Default)]
pub struct ForwardBatch {
    /// Every token computed this step, request after request.
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// KV slot of each token: `block_id * block_size + offset`.
    pub slot_mapping: Vec<i64>,
    /// Prefix sums of the new tokens per request: `[num_seqs + 1]`.
    pub query_start_loc: Vec<u32>,
    /// Tokens in the KV cache after this step, per request.
    pub seq_lens: Vec<u32>,
    /// `[num_seqs, max_blocks_per_seq]`, padded with the null block 0.
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
}

impl ForwardBatch {
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
    }
}

/// Shapes of the attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionDims {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
}

/// The op set. Sizes are explicit: `rows` is the number of leading rows used.
pub trait Backend: Send + 'static {
    /// A dense buffer of the backend's element type (f32 on CPU, bf16 on CUDA).
    type Tensor: Send;
    /// Precomputed rotary cos/sin table.
    type Rope: Send;
    /// One step's batch metadata, resident where the kernels read it.
    type Inputs: Send;

    /// Human-readable device name, for logs and /metrics.
    fn device_name(&self) -> String;
    /// Bytes per element of `Tensor` (KV-cache sizing).
    fn element_bytes(&self) -> usize;

    fn load_weight(&self, tensor: HostTensor) -> anyhow::Result<Self::Tensor>;
    /// A zeroed buffer of `len` elements.
    fn alloc(&self, len: usize) -> anyhow::Result<Self::Tensor>;
    fn rope(
        &self,
        inv_freq: &[f32],
        max_position: usize,
        attention_scaling: f32,
    ) -> anyhow::Result<Self::Rope>;
    fn prepare_inputs(&mut self, batch: &ForwardBatch) -> anyhow::Result<Self::Inputs>;

    /// `out[t] = table[token_ids[t]]`.
    fn embedding(
        &self,
        inputs: &Self::Inputs,
        table: &Self::Tensor,
        out: &mut Self::Tensor,
        hidden: usize,
    );
    /// `out[m, n] = x[m, k] · w[n, k]ᵀ`.
    fn matmul(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
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
    #[allow(clippy::too_many_arguments)]
    fn reshape_and_cache(
        &self,
        inputs: &Self::Inputs,
        k: &Self::Tensor,
        v: &Self::Tensor,
        k_cache: &mut Self::Tensor,
        v_cache: &mut Self::Tensor,
        num_kv_heads: usize,
        head_dim: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn paged_attention(
        &self,
        inputs: &Self::Inputs,
        q: &Self::Tensor,
        k_cache: &Self::Tensor,
        v_cache: &Self::Tensor,
        out: &mut Self::Tensor,
        dims: AttentionDims,
    );
    /// `out[i] = x[rows[i]]` for rows of `dim` elements.
    fn gather_rows(
        &self,
        x: &Self::Tensor,
        rows: &[u32],
        out: &mut Self::Tensor,
        dim: usize,
    ) -> anyhow::Result<()>;
    /// Appends the first `len` elements, as f32, to `out` (a buffer the
    /// caller reuses: fresh multi-megabyte vectors page-fault every step).
    fn to_host(&self, x: &Self::Tensor, len: usize, out: &mut Vec<f32>) -> anyhow::Result<()>;
}
