//! Launch shapes, computed on the host from host-known sizes only (so the
//! same shapes serve CUDA graph capture): grids, blocks and shared memory
//! per kernel and head size, and the decode path's split along the context.
//! Pure functions: every rule here is unit-tested without a GPU. The
//! constants mirror the `#define`s of the `.cu` sources.

use cudarc::driver::LaunchConfig;

/// Query rows per prefill CTA (`PF_BM`) and its threads (`PF_THREADS`).
pub const PREFILL_BLOCK_M: usize = 64;
pub const PREFILL_THREADS: usize = 128;
/// Decode CTA threads (`DEC_THREADS`) and query heads per CTA at most (`DEC_MAX_GROUP`).
pub const DECODE_THREADS: usize = 128;
pub const DECODE_MAX_GROUP: usize = 8;
/// Partition sizes the split-K choice picks from (largest first).
pub const PARTITION_SIZES: [usize; 3] = [512, 256, 128];
/// Threads per row of the row-wise kernels, and of the sampler (`SAMPLE_THREADS`).
pub const ROW_THREADS: usize = 256;
pub const SAMPLE_THREADS: usize = 1024;
/// Largest top-k of the logprobs kernel (`LOGPROBS_MAX_K`).
pub const LOGPROBS_MAX_K: usize = 1024;
/// Shared memory a CTA may use without opting in.
pub const DEFAULT_SMEM_LIMIT: usize = 48 * 1024;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchShape {
    pub grid: (u32, u32, u32),
    pub block: u32,
    pub smem_bytes: u32,
}

impl LaunchShape {
    pub fn config(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: self.grid,
            block_dim: (self.block, 1, 1),
            shared_mem_bytes: self.smem_bytes,
        }
    }
}

/// Keys per prefill K/V tile (`BN` of the instance).
pub fn prefill_block_n(head_dim: usize) -> usize {
    if head_dim > 128 {
        32
    } else {
        64
    }
}

/// Q, K and V tiles in 16-bit elements, rows padded by 8 elements.
pub fn prefill_smem_bytes(head_dim: usize) -> usize {
    (PREFILL_BLOCK_M + 2 * prefill_block_n(head_dim)) * (head_dim + 8) * 2
}

/// x: vLLM's varlen tile count `num_tokens / 64 + num_seqs`; y: query heads.
pub fn prefill_shape(
    num_tokens: usize,
    num_seqs: usize,
    num_heads: usize,
    head_dim: usize,
) -> LaunchShape {
    LaunchShape {
        grid: (
            (num_tokens / PREFILL_BLOCK_M + num_seqs) as u32,
            num_heads as u32,
            1,
        ),
        block: PREFILL_THREADS as u32,
        smem_bytes: prefill_smem_bytes(head_dim) as u32,
    }
}

/// How the decode kernel splits its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodePlan {
    /// Query heads of one KV head handled by one CTA.
    pub heads_per_cta: usize,
    /// CTAs per KV head (`ceil(group / heads_per_cta)`).
    pub head_chunks: usize,
    /// Context tokens per CTA.
    pub partition_size: usize,
    /// Partitions of the longest context the grid covers.
    pub max_partitions: usize,
    pub decode: LaunchShape,
    pub reduce: LaunchShape,
}

impl DecodePlan {
    /// Whether some sequence may need the reduce pass.
    pub fn needs_reduce(&self) -> bool {
        self.max_partitions > 1
    }

    /// Elements of the f32 workspace: partial outputs, maxima, sums.
    pub fn workspace_len(
        &self,
        num_seqs: usize,
        num_heads: usize,
        head_dim: usize,
    ) -> (usize, usize) {
        let stats = num_seqs * num_heads * self.max_partitions;
        (stats * head_dim, stats)
    }
}

/// Key lanes of the decode P·V phase (`NTL`): 128 threads / (head_dim / 8).
pub fn decode_key_lanes(head_dim: usize) -> usize {
    DECODE_THREADS / (head_dim / 8)
}

/// Dynamic shared memory of the decode kernel: pre-scaled q, then the logits
/// or (reused) the key-lane reduction buffer, f32.
pub fn decode_smem_bytes(heads_per_cta: usize, head_dim: usize, partition_size: usize) -> usize {
    let work = partition_size.max(decode_key_lanes(head_dim) / 2 * head_dim);
    heads_per_cta * (head_dim + work) * 4
}

/// Plans the decode path. `max_seq_len` bounds the context of every decode
/// in the batch (for a captured graph: the model's max length); `num_sms`
/// is the GPU's multiprocessor count. Splits get finer (512 → 256 → 128
/// tokens) while the grid has fewer than two CTAs per multiprocessor, so
/// small batches over long contexts still fill the GPU; large batches keep
/// long partitions and few partial results.
pub fn decode_plan(
    num_seqs: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    max_seq_len: usize,
    num_sms: usize,
) -> DecodePlan {
    let group = (num_heads / num_kv_heads.max(1)).max(1);
    let head_chunks = group.div_ceil(DECODE_MAX_GROUP);
    let heads_per_cta = group.div_ceil(head_chunks);
    let base = num_seqs.max(1) * num_kv_heads.max(1) * head_chunks;
    let ctx = max_seq_len.max(1);
    let mut partition_size = PARTITION_SIZES[0];
    for &p in &PARTITION_SIZES[1..] {
        if base * ctx.div_ceil(partition_size) >= 2 * num_sms || ctx <= p {
            break;
        }
        partition_size = p;
    }
    let max_partitions = ctx.div_ceil(partition_size);
    DecodePlan {
        heads_per_cta,
        head_chunks,
        partition_size,
        max_partitions,
        decode: LaunchShape {
            grid: (
                (num_kv_heads * head_chunks) as u32,
                num_seqs as u32,
                max_partitions as u32,
            ),
            block: DECODE_THREADS as u32,
            smem_bytes: decode_smem_bytes(heads_per_cta, head_dim, partition_size) as u32,
        },
        reduce: LaunchShape {
            grid: (num_heads as u32, num_seqs as u32, 1),
            block: DECODE_THREADS as u32,
            smem_bytes: (max_partitions * 4) as u32,
        },
    }
}

/// One CTA per row with `threads` threads (at most the row length, rounded to a warp).
pub fn rows_shape(rows: usize, row_len: usize, threads: usize) -> LaunchShape {
    let t = row_len.clamp(1, threads).div_ceil(32) * 32;
    LaunchShape {
        grid: (rows as u32, 1, 1),
        block: t as u32,
        smem_bytes: 0,
    }
}

/// reshape_and_cache: one CTA per token, a thread per 16-byte vector of the
/// K/V row (`row_len` elements), at most 128.
pub fn reshape_and_cache_shape(num_tokens: usize, row_len: usize) -> LaunchShape {
    rows_shape(num_tokens, row_len / 8, 128)
}

/// Rotary: one CTA per token, a thread per rotated pair of any q or k head.
pub fn rotary_shape(num_tokens: usize, heads: usize, half: usize) -> LaunchShape {
    rows_shape(num_tokens, heads * half, 256)
}

/// Logit bias and penalties: one 128-thread CTA per row over its CSR entries.
pub fn logit_edits_shape(rows: usize) -> LaunchShape {
    rows_shape(rows, 128, 128)
}

/// `apply_token_bitmask`: one thread per logit, a grid row per masked row.
pub fn token_bitmask_shape(masked_rows: usize, vocab: usize) -> LaunchShape {
    LaunchShape {
        grid: (vocab.div_ceil(256).max(1) as u32, masked_rows as u32, 1),
        block: 256,
        smem_bytes: 0,
    }
}

/// One warp per sub-row, 4 warps per CTA.
pub fn warp_rows_shape(sub_rows: usize) -> LaunchShape {
    LaunchShape {
        grid: (sub_rows.div_ceil(4).max(1) as u32, 1, 1),
        block: 128,
        smem_bytes: 0,
    }
}

/// A grid-stride loop over `n` elements, 256 threads per CTA, capped grid.
pub fn elementwise_shape(n: usize) -> LaunchShape {
    LaunchShape {
        grid: (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
        block: 256,
        smem_bytes: 0,
    }
}

/// The sampler: one 1,024-thread CTA per row.
pub fn sampling_shape(rows: usize) -> LaunchShape {
    LaunchShape {
        grid: (rows as u32, 1, 1),
        block: SAMPLE_THREADS as u32,
        smem_bytes: 0,
    }
}

/// `scale * log2(e)`: the kernels' softmax runs in base 2.
pub fn scale_log2(scale: f32) -> f32 {
    scale * std::f32::consts::LOG2_E
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::sources::HEAD_DIMS;

    #[test]
    fn prefill_smem_per_head_dim() {
        assert_eq!(prefill_smem_bytes(64), 192 * 72 * 2);
        assert_eq!(prefill_smem_bytes(128), 192 * 136 * 2);
        assert_eq!(prefill_smem_bytes(256), 128 * 264 * 2);
        // Above 48 KiB for 128 and 256: those instances need the opt-in attribute,
        // and every one fits Ampere's and Hopper's opt-in limits (99 / 227 KiB).
        assert!(prefill_smem_bytes(128) > DEFAULT_SMEM_LIMIT);
        for d in HEAD_DIMS {
            assert!(prefill_smem_bytes(d) <= 99 * 1024, "d{d}");
            assert_eq!(d % 16, 0);
        }
    }

    #[test]
    fn prefill_grid_covers_every_tile_of_every_sequence() {
        // Brute force over query_start_loc layouts: the kernel maps CTA x to the last
        // sequence s with qsl[s] / 64 + s <= x; every (seq, tile) must get a CTA.
        let layouts: Vec<Vec<usize>> = vec![
            vec![1],
            vec![64],
            vec![65, 1, 1],
            vec![63, 2, 130, 1],
            vec![1; 40],
            vec![200, 64, 64, 0, 7],
        ];
        for lens in layouts {
            let mut qsl = vec![0usize];
            for l in &lens {
                qsl.push(qsl.last().unwrap() + l);
            }
            let n = *qsl.last().unwrap();
            let shape = prefill_shape(n, lens.len(), 1, 128);
            let mut covered = vec![0usize; lens.len()];
            for x in 0..shape.grid.0 as usize {
                let s = (0..lens.len())
                    .rev()
                    .find(|&s| qsl[s] / PREFILL_BLOCK_M + s <= x)
                    .unwrap_or(0);
                let row0 = (x - (qsl[s] / PREFILL_BLOCK_M + s)) * PREFILL_BLOCK_M;
                if row0 < lens[s] {
                    covered[s] += 1;
                    assert_eq!(row0 % PREFILL_BLOCK_M, 0);
                }
            }
            for (s, &l) in lens.iter().enumerate() {
                assert_eq!(
                    covered[s],
                    l.div_ceil(PREFILL_BLOCK_M),
                    "seq {s} of {lens:?}"
                );
            }
        }
    }

    #[test]
    fn decode_groups_query_heads_of_a_kv_head() {
        let p = decode_plan(4, 32, 8, 128, 1000, 132); // Llama-3-8B: group 4
        assert_eq!((p.heads_per_cta, p.head_chunks), (4, 1));
        let p = decode_plan(4, 32, 32, 128, 1000, 132); // MHA
        assert_eq!((p.heads_per_cta, p.head_chunks), (1, 1));
        let p = decode_plan(4, 12, 1, 64, 1000, 132); // MQA, group 12 -> 2 CTAs of 6
        assert_eq!((p.heads_per_cta, p.head_chunks), (6, 2));
        assert_eq!(p.decode.grid.0, 2);
        let p = decode_plan(4, 9, 3, 64, 1000, 132); // SmolLM2
        assert_eq!((p.heads_per_cta, p.head_chunks), (3, 1));
    }

    #[test]
    fn decode_splits_finer_only_when_the_grid_is_small() {
        // Batch 2, 8 KV heads, 8k context: 16 * 16 = 256 CTAs < 264 -> 256-token partitions.
        let p = decode_plan(2, 32, 8, 128, 8192, 132);
        assert_eq!(p.partition_size, 256);
        assert_eq!(p.max_partitions, 32);
        // Batch 1: 8 * 32 = 256 is still short -> 128.
        assert_eq!(decode_plan(1, 32, 8, 128, 8192, 132).partition_size, 128);
        // Batch 256: plenty of CTAs, long partitions.
        let p = decode_plan(256, 32, 8, 128, 8192, 132);
        assert_eq!(p.partition_size, 512);
        assert_eq!(p.max_partitions, 16);
        // Short contexts never split below the context itself.
        let p = decode_plan(1, 32, 8, 128, 100, 132);
        assert_eq!((p.partition_size, p.max_partitions), (512, 1));
        assert!(!p.needs_reduce());
        // Tiny batch, long context: the finest partitions.
        let p = decode_plan(1, 8, 1, 128, 32768, 132);
        assert_eq!(p.partition_size, 128);
        assert_eq!(p.max_partitions, 256);
        assert!(p.needs_reduce());
        assert_eq!(p.reduce.smem_bytes, 256 * 4);
    }

    #[test]
    fn decode_partitions_cover_the_context() {
        for ctx in [1, 127, 128, 129, 511, 512, 513, 4096, 100_000] {
            for seqs in [1, 7, 256] {
                let p = decode_plan(seqs, 32, 8, 128, ctx, 132);
                assert!(p.max_partitions * p.partition_size >= ctx);
                assert!((p.max_partitions - 1) * p.partition_size < ctx);
                assert_eq!(p.decode.grid.2 as usize, p.max_partitions);
            }
        }
    }

    #[test]
    fn decode_smem_fits_without_opt_in() {
        for d in HEAD_DIMS {
            for &part in &PARTITION_SIZES {
                let s = decode_smem_bytes(DECODE_MAX_GROUP, d, part);
                assert!(s <= DEFAULT_SMEM_LIMIT, "d{d} p{part}: {s}");
                // The reduction buffer (NTL/2 lanes x heads x d) fits the work area.
                let work = s / 4 / DECODE_MAX_GROUP - d;
                assert!(work >= decode_key_lanes(d) / 2 * d && work >= part);
            }
        }
        assert_eq!(decode_key_lanes(80), 12);
        assert_eq!(decode_key_lanes(96), 10);
        assert_eq!(decode_key_lanes(256), 4);
    }

    #[test]
    fn workspace_sizes() {
        let p = decode_plan(2, 4, 2, 64, 2000, 132);
        let (out, stats) = p.workspace_len(2, 4, 64);
        assert_eq!(stats, 2 * 4 * p.max_partitions);
        assert_eq!(out, stats * 64);
    }

    #[test]
    fn row_shapes() {
        assert_eq!(rows_shape(10, 4096, ROW_THREADS).block, 256);
        assert_eq!(rows_shape(10, 40, ROW_THREADS).block, 64);
        assert_eq!(rows_shape(0, 0, ROW_THREADS).grid.0, 0);
        assert_eq!(warp_rows_shape(9).grid.0, 3);
        assert_eq!(elementwise_shape(1 << 30).grid.0, 65_535);
        assert!((scale_log2(2.0) - 2.0 * std::f32::consts::LOG2_E).abs() < 1e-6);
    }
}
