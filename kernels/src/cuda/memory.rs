//! KV-cache sizing on a GPU, vLLM's way: after a profiling forward pass at
//! the largest batch, the cache gets `total * gpu_memory_utilization` minus
//! the peak memory that pass used (weights, activations, cuBLAS workspace,
//! everything the driver reports as used), in whole blocks.

use super::CudaError;

/// Bytes of one KV block across all layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheSpec {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype_bytes: usize,
}

impl KvCacheSpec {
    /// K and V, every layer, one block.
    pub fn bytes_per_block(&self) -> u64 {
        2 * (self.num_layers
            * self.block_size
            * self.num_kv_heads
            * self.head_dim
            * self.dtype_bytes) as u64
    }

    /// Elements of one layer's K (or V) cache for `num_blocks`.
    pub fn layer_elems(&self, num_blocks: usize) -> usize {
        num_blocks * self.block_size * self.num_kv_heads * self.head_dim
    }
}

/// How the memory was split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvCachePlan {
    pub num_blocks: usize,
    pub kv_cache_bytes: u64,
    /// `total * gpu_memory_utilization`.
    pub budget_bytes: u64,
}

/// Blocks that fit. `peak_used_bytes` is the device memory in use at the
/// profile's high-water mark (driver view: total − free). Block 0 is the
/// null block, so at least two blocks are required.
pub fn plan_kv_cache(
    total_bytes: u64,
    peak_used_bytes: u64,
    gpu_memory_utilization: f32,
    spec: &KvCacheSpec,
) -> Result<KvCachePlan, CudaError> {
    let op = "gpu_memory_utilization";
    if !(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0) {
        return Err(CudaError::invalid(
            op,
            format!("must be in (0, 1], got {gpu_memory_utilization}"),
        ));
    }
    let per_block = spec.bytes_per_block();
    if per_block == 0 {
        return Err(CudaError::invalid(
            "kv cache",
            "a block of zero bytes (zero layers, heads or block size)",
        ));
    }
    let budget = (total_bytes as f64 * gpu_memory_utilization as f64) as u64;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let free = budget.checked_sub(peak_used_bytes).filter(|&f| f >= 2 * per_block).ok_or_else(|| {
        CudaError::invalid(
            op,
            format!(
                "no memory left for the KV cache: the model's peak use is {:.2} GiB and the budget \
                 ({gpu_memory_utilization} of {:.2} GiB) is {:.2} GiB; raise --gpu-memory-utilization \
                 or lower --max-num-batched-tokens / --max-model-len",
                gib(peak_used_bytes),
                gib(total_bytes),
                gib(budget)
            ),
        )
    })?;
    let num_blocks = (free / per_block) as usize;
    Ok(KvCachePlan {
        num_blocks,
        kv_cache_bytes: num_blocks as u64 * per_block,
        budget_bytes: budget,
    })
}

/// vLLM's "maximum concurrency": how many requests of `max_model_len`
/// tokens the usable blocks (all but the null block) hold at once.
pub fn max_concurrency(num_blocks: usize, block_size: usize, max_model_len: usize) -> f64 {
    if max_model_len == 0 {
        return 0.0;
    }
    (num_blocks.saturating_sub(1) * block_size) as f64 / max_model_len as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3_8B: KvCacheSpec = KvCacheSpec {
        num_layers: 32,
        num_kv_heads: 8,
        head_dim: 128,
        block_size: 16,
        dtype_bytes: 2,
    };
    const GIB: u64 = 1 << 30;

    #[test]
    fn llama3_8b_block_bytes() {
        // 128 KiB per token (2 * 32 * 8 * 128 * 2), 2 MiB per 16-token block.
        assert_eq!(LLAMA3_8B.bytes_per_block(), 2 << 20);
        assert_eq!(LLAMA3_8B.layer_elems(10), 10 * 16 * 8 * 128);
    }

    #[test]
    fn h200_budget() {
        // 141 GB card, 0.9 utilization, 17 GiB peak (16 GB weights + activations).
        let total = 143_771 * (1 << 20);
        let plan = plan_kv_cache(total, 17 * GIB, 0.9, &LLAMA3_8B).unwrap();
        let expect = ((total as f64 * 0.9) as u64 - 17 * GIB) / (2 << 20);
        assert_eq!(plan.num_blocks as u64, expect);
        assert!(plan.kv_cache_bytes <= plan.budget_bytes - 17 * GIB);
        assert!(plan.num_blocks > 50_000);
        let c = max_concurrency(plan.num_blocks, 16, 8192);
        assert!((c - ((plan.num_blocks - 1) * 16) as f64 / 8192.0).abs() < 1e-9);
    }

    #[test]
    fn refuses_when_nothing_is_left() {
        let e = plan_kv_cache(80 * GIB, 75 * GIB, 0.9, &LLAMA3_8B)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no memory left") && e.contains("gpu-memory-utilization"),
            "{e}"
        );
        assert!(plan_kv_cache(10 * GIB, 0, 0.0, &LLAMA3_8B).is_err());
        assert!(plan_kv_cache(10 * GIB, 0, 1.5, &LLAMA3_8B).is_err());
        assert!(plan_kv_cache(10 * GIB, 0, f32::NAN, &LLAMA3_8B).is_err());
        let zero = KvCacheSpec {
            num_layers: 0,
            ..LLAMA3_8B
        };
        assert!(plan_kv_cache(10 * GIB, 0, 0.9, &zero).is_err());
    }

    #[test]
    fn exactly_two_blocks_is_enough() {
        let total = 100 * (2 << 20);
        let plan = plan_kv_cache(total, total - 2 * (2 << 20), 1.0, &LLAMA3_8B).unwrap();
        assert_eq!(plan.num_blocks, 2);
        assert!(plan_kv_cache(total, total - 2 * (2 << 20) + 1, 1.0, &LLAMA3_8B).is_err());
        assert_eq!(max_concurrency(0, 16, 100), 0.0);
        assert_eq!(max_concurrency(5, 16, 0), 0.0);
    }
}
