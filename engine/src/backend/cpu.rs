//! The CPU backend: f32 activations, weights in their checkpoint format
//! ([`CpuWeight`]), and the kernels of `pagoda_kernels::cpu`.

pub use super::cpu_weight::CpuWeight;
use super::{AttentionDims, Backend, ForwardBatch, InputLimits};
use crate::sampler::{Sampled, SamplingRow};
use crate::weights::HostTensor;
use pagoda_kernels::cpu;
use rayon::prelude::*;

#[derive(Debug)]
pub struct CpuBackend {
    /// How block-quantized weights are multiplied (`--cpu-matmul`).
    matmul_mode: cpu::MatmulMode,
    /// The KV cache's element type (`--kv-cache-dtype`).
    kv_cache_dtype: cpu::KvCacheDtype,
    /// `fused_moe`'s buffers (MoE models only; empty otherwise).
    moe_scratch: std::sync::Mutex<super::cpu_moe_scratch::MoeScratch>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend {
            matmul_mode: cpu::MatmulMode::default(),
            kv_cache_dtype: cpu::KvCacheDtype::F32,
            moe_scratch: Default::default(),
        }
    }
}

impl CpuBackend {
    /// Exact matmuls, an f32 KV cache.
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// A backend multiplying block-quantized weights as `mode` says.
    pub fn with_matmul_mode(mode: cpu::MatmulMode) -> Self {
        CpuBackend {
            matmul_mode: mode,
            ..CpuBackend::default()
        }
    }

    /// The same backend keeping its KV cache in `dtype`.
    pub fn with_kv_cache_dtype(self, dtype: cpu::KvCacheDtype) -> Self {
        CpuBackend {
            kv_cache_dtype: dtype,
            ..self
        }
    }

    pub(super) fn matmul_mode(&self) -> cpu::MatmulMode {
        self.matmul_mode
    }

    pub(super) fn moe_scratch(&self) -> &std::sync::Mutex<super::cpu_moe_scratch::MoeScratch> {
        &self.moe_scratch
    }
}

impl Backend for CpuBackend {
    type Tensor = Vec<f32>;
    type Weight = CpuWeight;
    type Rope = cpu::RotaryCache;
    type Inputs = ForwardBatch;
    type Graph = ();
    type KvCache = cpu::KvBuffer;

    fn device_name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    /// A parallel kernel called from outside rayon's pool hands its job to a
    /// worker and sleeps on a lock until it is done: two thread wake-ups per
    /// op, hundreds per decode step, as much as the arithmetic of a small
    /// model. Run from a worker, a kernel's tasks start on the calling thread
    /// and the other workers steal what they can (spinning between ops).
    fn on_compute_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        if rayon::current_thread_index().is_some() {
            f()
        } else {
            rayon::scope(|_| f())
        }
    }

    fn kv_cache_element_bytes(&self) -> usize {
        self.kv_cache_dtype.bytes()
    }

    fn kv_cache_dtype_name(&self) -> &'static str {
        self.kv_cache_dtype.name()
    }

    fn load_weight(&self, tensor: HostTensor) -> anyhow::Result<Vec<f32>> {
        Ok(tensor.to_f32())
    }

    fn load_matrix(&self, parts: Vec<HostTensor>) -> anyhow::Result<CpuWeight> {
        CpuWeight::from_parts(parts)
    }

    fn weight_formats(&self, weight: &CpuWeight) -> Vec<(&'static str, usize)> {
        weight.formats()
    }

    fn alloc(&self, len: usize) -> anyhow::Result<Vec<f32>> {
        cpu::zeroed_vec(len).ok_or_else(|| out_of_memory(len, 4))
    }

    fn alloc_kv_cache(&self, len: usize) -> anyhow::Result<cpu::KvBuffer> {
        let dtype = self.kv_cache_dtype;
        cpu::KvBuffer::zeroed(dtype, len).ok_or_else(|| out_of_memory(len, dtype.bytes()))
    }

    fn rope(
        &self,
        inv_freq: &[f32],
        max_position: usize,
        attention_scaling: f32,
    ) -> anyhow::Result<cpu::RotaryCache> {
        Ok(cpu::RotaryCache::new(
            inv_freq,
            max_position,
            attention_scaling,
        ))
    }

    fn alloc_inputs(&self, _limits: InputLimits) -> anyhow::Result<ForwardBatch> {
        Ok(ForwardBatch::default())
    }

    fn prepare_inputs(
        &mut self,
        batch: &ForwardBatch,
        inputs: &mut ForwardBatch,
    ) -> anyhow::Result<()> {
        inputs.clone_from(batch);
        Ok(())
    }

    fn embedding(
        &self,
        inputs: &ForwardBatch,
        table: &CpuWeight,
        out: &mut Vec<f32>,
        hidden: usize,
    ) {
        let n = inputs.num_tokens() * hidden;
        let rows = out[..n].par_chunks_mut(hidden).zip(&inputs.token_ids);
        rows.with_min_len(64).for_each(|(row, &t)| {
            // The scheduler only admits token ids below the vocabulary size.
            assert!(
                table.decode_row(t as usize, row),
                "embedding: token id {t} out of range ({} rows)",
                table.rows()
            );
        });
    }

    fn matmul(
        &self,
        x: &Vec<f32>,
        w: &CpuWeight,
        out: &mut Vec<f32>,
        m: usize,
        k: usize,
        n: usize,
    ) {
        debug_assert_eq!(w.rows(), n);
        w.matmul(&x[..m * k], &mut out[..m * n], m, self.matmul_mode);
    }

    fn add_bias(&self, out: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, n: usize) {
        cpu::add_bias(&mut out[..rows * n], &bias[..n]);
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        cpu::rms_norm(
            &x[..rows * dim],
            &weight[..dim],
            eps,
            &mut out[..rows * dim],
        );
    }

    fn fused_add_rms_norm(
        &self,
        x: &mut Vec<f32>,
        residual: &mut Vec<f32>,
        weight: &Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        cpu::fused_add_rms_norm(
            &mut x[..rows * dim],
            &mut residual[..rows * dim],
            &weight[..dim],
            eps,
        );
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Vec<f32>,
        weight: &Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        cpu::rms_norm_inplace(&mut x[..rows * dim], &weight[..dim], eps);
    }

    fn split_qkv(
        &self,
        qkv: &Vec<f32>,
        q: &mut Vec<f32>,
        k: &mut Vec<f32>,
        v: &mut Vec<f32>,
        rows: usize,
        q_dim: usize,
        kv_dim: usize,
    ) {
        let width = q_dim + 2 * kv_dim;
        for (r, row) in qkv[..rows * width].chunks_exact(width).enumerate() {
            q[r * q_dim..(r + 1) * q_dim].copy_from_slice(&row[..q_dim]);
            k[r * kv_dim..(r + 1) * kv_dim].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
            v[r * kv_dim..(r + 1) * kv_dim].copy_from_slice(&row[q_dim + kv_dim..]);
        }
    }

    fn rotary(
        &self,
        inputs: &ForwardBatch,
        q: &mut Vec<f32>,
        k: &mut Vec<f32>,
        rope: &cpu::RotaryCache,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) {
        let t = inputs.num_tokens();
        cpu::rotary_embedding(
            &inputs.positions,
            &mut q[..t * num_heads * head_dim],
            &mut k[..t * num_kv_heads * head_dim],
            num_heads,
            num_kv_heads,
            head_dim,
            rope,
        );
    }

    fn silu_and_mul(&self, x: &Vec<f32>, out: &mut Vec<f32>, rows: usize, intermediate: usize) {
        cpu::silu_and_mul(
            &x[..rows * 2 * intermediate],
            &mut out[..rows * intermediate],
            intermediate,
        );
    }

    fn gelu_tanh_and_mul(
        &self,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        intermediate: usize,
    ) {
        cpu::gelu_tanh_and_mul(
            &x[..rows * 2 * intermediate],
            &mut out[..rows * intermediate],
            intermediate,
        );
    }

    fn scale(&self, x: &mut Vec<f32>, len: usize, factor: f32) {
        x[..len].iter_mut().for_each(|v| *v *= factor);
    }

    fn softcap(&self, x: &mut Vec<f32>, len: usize, cap: f32) {
        cpu::softcap_inplace(&mut x[..len], cap);
    }

    fn reshape_and_cache(
        &self,
        inputs: &ForwardBatch,
        kv_group: usize,
        k: &Vec<f32>,
        v: &Vec<f32>,
        k_cache: &mut cpu::KvBuffer,
        v_cache: &mut cpu::KvBuffer,
        num_kv_heads: usize,
        head_dim: usize,
    ) {
        let n = inputs.num_tokens() * num_kv_heads * head_dim;
        cpu::reshape_and_cache(
            &k[..n],
            &v[..n],
            k_cache.as_mut_slice(),
            v_cache.as_mut_slice(),
            inputs.group_slot_mapping(kv_group),
            num_kv_heads,
            head_dim,
        );
    }

    fn paged_attention(
        &self,
        inputs: &ForwardBatch,
        q: &Vec<f32>,
        k_cache: &cpu::KvBuffer,
        v_cache: &cpu::KvBuffer,
        out: &mut Vec<f32>,
        dims: AttentionDims,
    ) {
        let n = inputs.num_tokens() * dims.num_heads * dims.head_dim;
        let (block_tables, max_blocks_per_seq) = inputs.group_block_tables(dims.kv_group);
        let params = cpu::PagedAttentionParams {
            query_start_loc: &inputs.query_start_loc,
            seq_lens: &inputs.seq_lens,
            block_tables,
            max_blocks_per_seq,
            block_size: dims.block_size,
            num_heads: dims.num_heads,
            num_kv_heads: dims.num_kv_heads,
            head_dim: dims.head_dim,
            scale: dims.scale,
            sliding_window: dims.sliding_window,
            logit_softcap: dims.logit_softcap,
        };
        let (k_cache, v_cache) = (k_cache.as_slice(), v_cache.as_slice());
        cpu::paged_attention(&q[..n], k_cache, v_cache, &params, &mut out[..n]);
    }

    fn fused_moe(
        &self,
        hidden: &mut Vec<f32>,
        moe: &super::moe::MoeWeights<CpuWeight>,
        rows: usize,
    ) {
        self.fused_moe_cpu(hidden, moe, rows);
    }

    fn gather_rows(
        &self,
        x: &Vec<f32>,
        rows: &[u32],
        out: &mut Vec<f32>,
        dim: usize,
    ) -> anyhow::Result<()> {
        for (i, &r) in rows.iter().enumerate() {
            let src = r as usize * dim;
            anyhow::ensure!(src + dim <= x.len(), "gather_rows: row {r} out of range");
            out[i * dim..(i + 1) * dim].copy_from_slice(&x[src..src + dim]);
        }
        Ok(())
    }

    /// Rows sampled in place of the engine's host sampler (same rules and
    /// draws), skipping the copy of the logits out of the workspace.
    fn samples_on_device(&self) -> bool {
        true
    }

    fn sample(
        &self,
        logits: &Vec<f32>,
        vocab: usize,
        rows: &[SamplingRow],
        out: &mut Vec<Sampled>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            rows.len() * vocab <= logits.len(),
            "sample: {} rows of {vocab} exceed the logits",
            rows.len()
        );
        let sampled: Vec<Sampled> = rows
            .par_iter()
            .enumerate()
            .map(|(r, row)| row.sample(&logits[r * vocab..(r + 1) * vocab]))
            .collect();
        out.extend(sampled);
        Ok(())
    }

    fn to_host(&self, x: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> anyhow::Result<()> {
        out.extend_from_slice(&x[..len]);
        Ok(())
    }
}

/// Allocation failure is an error, not an abort.
fn out_of_memory(len: usize, element_bytes: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "out of memory allocating {} MiB",
        len.saturating_mul(element_bytes) >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_is_zeroed_and_sized() {
        let v = CpuBackend::new().alloc(1 << 20).unwrap();
        assert_eq!(v.len(), 1 << 20);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(CpuBackend::new().alloc(usize::MAX / 2).is_err());
    }

    #[test]
    fn kv_caches_take_the_configured_type() {
        let b = CpuBackend::new().with_kv_cache_dtype(cpu::KvCacheDtype::BF16);
        assert_eq!(b.kv_cache_element_bytes(), 2);
        assert_eq!(b.kv_cache_dtype_name(), "bfloat16");
        let c = b.alloc_kv_cache(64).unwrap();
        assert_eq!(c.dtype(), cpu::KvCacheDtype::BF16);
        assert_eq!(c.as_slice().len(), 64);
        assert_eq!(CpuBackend::new().kv_cache_element_bytes(), 4);
    }
}
