//! Varlen paged attention on the GPU for one flat batch (vLLM v1 layout; the
//! CPU `paged_attention` is the reference). Sequences with several new
//! tokens go through the tensor-core prefill kernel; sequences with exactly
//! one (decodes) through the split-context decode kernel and, when a context
//! spans several partitions, its reduce pass.

use super::buffer::{DeviceBuffer, DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::{decode_plan, prefill_shape, scale_log2, DecodePlan, LaunchShape};
use super::params::{AttentionParams, DevPtr};
use super::sources::{attention_unit, ATTENTION_DECODE, ATTENTION_PREFILL, HEAD_DIMS};
use super::{to_i32, CudaError, CudaKernels, Half16};

/// The batch's metadata, on the device, plus sizes the host knows.
#[derive(Debug, Clone, Copy)]
pub struct AttentionMetadata<'a> {
    /// `[num_seqs + 1]` prefix sums of new tokens.
    pub query_start_loc: &'a DeviceBuffer<u32>,
    /// `[num_seqs]` tokens in the cache after this step.
    pub seq_lens: &'a DeviceBuffer<u32>,
    /// `[num_seqs, max_blocks_per_seq]`.
    pub block_tables: &'a DeviceBuffer<u32>,
    pub max_blocks_per_seq: usize,
    pub num_tokens: usize,
    pub num_seqs: usize,
    /// Sequences with exactly one new token.
    pub num_decodes: usize,
    /// Bounds every decode's `seq_len`: sizes the decode grid (for a captured
    /// graph, the model's max length, so the grid stays valid).
    pub max_seq_len: usize,
}

/// Head layout and strides (in elements) of q and out rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
    /// Elements between consecutive tokens' q rows (`num_heads * head_dim`
    /// for a packed q, wider for a view into fused qkv).
    pub q_stride: usize,
    pub out_stride: usize,
    /// The layer's sliding window (keys a token sees, itself included);
    /// slots before a token's window are never read.
    pub sliding_window: Option<usize>,
    /// Gemma 2's `attn_logit_softcapping`: scores become `c·tanh(s / c)`.
    pub logit_softcap: Option<f32>,
}

/// The decode path's partial results; allocate once for the largest batch
/// and context (fixed addresses for graph capture).
#[derive(Debug)]
pub struct AttentionWorkspace {
    pub tmp_out: DeviceBuffer<f32>,
    pub tmp_max: DeviceBuffer<f32>,
    pub tmp_sum: DeviceBuffer<f32>,
}

impl AttentionWorkspace {
    /// Room for any batch of up to `max_num_seqs` decodes of up to
    /// `max_seq_len` tokens.
    pub fn new(
        kernels: &CudaKernels,
        max_num_seqs: usize,
        shape: &AttentionShape,
        max_seq_len: usize,
    ) -> Result<Self, CudaError> {
        let (out, stats) =
            workspace_len_for(max_num_seqs, shape, max_seq_len, kernels.info().num_sms);
        Ok(Self {
            tmp_out: kernels.alloc_zeros(out.max(1))?,
            tmp_max: kernels.alloc_zeros(stats.max(1))?,
            tmp_sum: kernels.alloc_zeros(stats.max(1))?,
        })
    }
}

fn workspace_need(plan: &DecodePlan, num_seqs: usize, s: &AttentionShape) -> (usize, usize) {
    // The kernels index partials by [seq][head][partition], with the plan's max_partitions.
    plan.workspace_len(num_seqs, s.num_heads, s.head_dim)
}

/// The largest workspace any batch of 1..=`max_num_seqs` decodes needs (a
/// smaller batch may split finer, so the largest batch is not always the
/// largest need).
pub fn workspace_len_for(
    max_num_seqs: usize,
    s: &AttentionShape,
    max_seq_len: usize,
    num_sms: usize,
) -> (usize, usize) {
    (1..=max_num_seqs.max(1))
        .map(|n| {
            let plan = decode_plan(
                n,
                s.num_heads,
                s.num_kv_heads,
                s.head_dim,
                max_seq_len,
                num_sms,
            );
            workspace_need(&plan, n, s)
        })
        .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)))
}

/// Element counts of the buffers, for validation without a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionLens {
    pub q: usize,
    pub out: usize,
    pub k_cache: usize,
    pub v_cache: usize,
    pub query_start_loc: usize,
    pub seq_lens: usize,
    pub block_tables: usize,
}

/// Checks shapes and lengths before anything is launched.
pub fn validate_attention(
    s: &AttentionShape,
    lens: &AttentionLens,
    num_tokens: usize,
    num_seqs: usize,
    num_decodes: usize,
    max_blocks_per_seq: usize,
) -> Result<(), CudaError> {
    let op = "paged_attention";
    ensure(HEAD_DIMS.contains(&s.head_dim), op, || {
        format!("head_dim {} unsupported (have {HEAD_DIMS:?})", s.head_dim)
    })?;
    ensure(
        s.num_kv_heads > 0 && s.num_heads.is_multiple_of(s.num_kv_heads),
        op,
        || {
            format!(
                "{} query heads are not a multiple of {} KV heads",
                s.num_heads, s.num_kv_heads
            )
        },
    )?;
    ensure(s.block_size > 0, op, || "block_size 0".into())?;
    ensure(s.sliding_window != Some(0), op, || {
        "sliding window 0".into()
    })?;
    ensure(
        s.logit_softcap.is_none_or(|c| c.is_finite() && c > 0.0),
        op,
        || format!("logit soft-cap {:?} must be positive", s.logit_softcap),
    )?;
    let row = s.num_heads * s.head_dim;
    for (name, stride) in [("q_stride", s.q_stride), ("out_stride", s.out_stride)] {
        ensure(stride >= row && stride.is_multiple_of(8), op, || {
            format!("{name} {stride} must be >= {row} and a multiple of 8 (16-byte rows)")
        })?;
    }
    if num_tokens > 0 {
        let need_q = (num_tokens - 1) * s.q_stride + row;
        let need_out = (num_tokens - 1) * s.out_stride + row;
        ensure(lens.q >= need_q, op, || {
            format!("q holds {} elements, {need_q} needed", lens.q)
        })?;
        ensure(lens.out >= need_out, op, || {
            format!("out holds {} elements, {need_out} needed", lens.out)
        })?;
    }
    let block = s.block_size * s.num_kv_heads * s.head_dim;
    ensure(
        lens.k_cache == lens.v_cache && lens.k_cache.is_multiple_of(block) && lens.k_cache > 0,
        op,
        || {
            format!(
                "caches of {} and {} elements are not whole blocks of {block}",
                lens.k_cache, lens.v_cache
            )
        },
    )?;
    ensure(lens.query_start_loc > num_seqs, op, || {
        format!("query_start_loc shorter than {}", num_seqs + 1)
    })?;
    ensure(lens.seq_lens >= num_seqs, op, || {
        format!("seq_lens shorter than {num_seqs}")
    })?;
    ensure(
        lens.block_tables >= num_seqs * max_blocks_per_seq,
        op,
        || format!("block_tables shorter than {num_seqs} x {max_blocks_per_seq}"),
    )?;
    ensure(
        num_decodes <= num_seqs && num_seqs <= num_tokens.max(num_seqs),
        op,
        || format!("{num_decodes} decodes among {num_seqs} sequences"),
    )?;
    Ok(())
}

impl CudaKernels {
    /// `out = softmax(q·Kᵀ·scale)·V`, causal, per query head, over the paged
    /// caches (`[num_blocks, block_size, num_kv_heads, head_dim]`).
    #[allow(clippy::too_many_arguments)]
    pub fn paged_attention<T: Half16>(
        &self,
        q: &impl DeviceMem<T>,
        k_cache: &impl DeviceMem<T>,
        v_cache: &impl DeviceMem<T>,
        out: &mut impl DeviceMemMut<T>,
        meta: &AttentionMetadata<'_>,
        shape: &AttentionShape,
        ws: &mut AttentionWorkspace,
    ) -> Result<(), CudaError> {
        let lens = AttentionLens {
            q: q.len(),
            out: out.len(),
            k_cache: k_cache.len(),
            v_cache: v_cache.len(),
            query_start_loc: meta.query_start_loc.len(),
            seq_lens: meta.seq_lens.len(),
            block_tables: meta.block_tables.len(),
        };
        validate_attention(
            shape,
            &lens,
            meta.num_tokens,
            meta.num_seqs,
            meta.num_decodes,
            meta.max_blocks_per_seq,
        )?;
        let q_p = q.addr();
        let k_p = k_cache.addr();
        let v_p = v_cache.addr();
        let o_p = out.addr_mut();
        let qsl_p = meta.query_start_loc.addr();
        let sl_p = meta.seq_lens.addr();
        let bt_p = meta.block_tables.addr();
        let ws_lens = [ws.tmp_out.len(), ws.tmp_max.len(), ws.tmp_sum.len()];
        let to_p = ws.tmp_out.addr_mut();
        let tm_p = ws.tmp_max.addr_mut();
        let ts_p = ws.tmp_sum.addr_mut();
        let ptrs = AttentionPtrs {
            out: o_p,
            q: q_p,
            k_cache: k_p,
            v_cache: v_p,
            block_tables: bt_p,
            query_start_loc: qsl_p,
            seq_lens: sl_p,
            tmp_out: to_p,
            tmp_max: tm_p,
            tmp_sum: ts_p,
        };
        let batch = AttentionBatch {
            max_blocks_per_seq: meta.max_blocks_per_seq,
            num_tokens: meta.num_tokens,
            num_seqs: meta.num_seqs,
            num_decodes: meta.num_decodes,
            max_seq_len: meta.max_seq_len,
        };
        let sms = self.info().num_sms;
        for l in attention_launches(T::SUFFIX, &ptrs, &batch, shape, ws_lens, sms)? {
            let f = self.function(&l.unit, &l.kernel, l.shape.smem_bytes as usize)?;
            self.launch_kernel(&f, &l.shape, &l.params)?;
        }
        Ok(())
    }
}

/// Device addresses of the attention op's buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionPtrs {
    pub out: DevPtr,
    pub q: DevPtr,
    pub k_cache: DevPtr,
    pub v_cache: DevPtr,
    pub block_tables: DevPtr,
    pub query_start_loc: DevPtr,
    pub seq_lens: DevPtr,
    pub tmp_out: DevPtr,
    pub tmp_max: DevPtr,
    pub tmp_sum: DevPtr,
}

/// The host-known sizes of a batch ([`AttentionMetadata`] without the buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionBatch {
    pub max_blocks_per_seq: usize,
    pub num_tokens: usize,
    pub num_seqs: usize,
    pub num_decodes: usize,
    pub max_seq_len: usize,
}

/// One kernel launch of the attention op.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionLaunch {
    /// Compile unit and kernel name.
    pub unit: String,
    pub kernel: String,
    pub shape: LaunchShape,
    pub params: AttentionParams,
}

/// The launches of one batch, in order: the tensor-core prefill kernel over
/// every sequence with several new tokens (it skips the decodes when the
/// batch has any: they take the split-context kernel, faster for one query
/// row); the decode kernel; and, when a context may span several
/// partitions, the reduce pass merging them (vLLM's paged_attention_v2).
/// `ws_lens`: the workspace's tmp_out, tmp_max and tmp_sum lengths. The GPU
/// path and the emulator run exactly these.
pub fn attention_launches(
    suffix: &str,
    ptrs: &AttentionPtrs,
    batch: &AttentionBatch,
    shape: &AttentionShape,
    ws_lens: [usize; 3],
    num_sms: usize,
) -> Result<Vec<AttentionLaunch>, CudaError> {
    let op = "paged_attention";
    let d = shape.head_dim;
    let mut base = AttentionParams {
        out: ptrs.out,
        q: ptrs.q,
        k_cache: ptrs.k_cache,
        v_cache: ptrs.v_cache,
        block_tables: ptrs.block_tables,
        query_start_loc: ptrs.query_start_loc,
        seq_lens: ptrs.seq_lens,
        tmp_out: ptrs.tmp_out,
        tmp_max: ptrs.tmp_max,
        tmp_sum: ptrs.tmp_sum,
        out_stride: to_i32(op, shape.out_stride)?,
        q_stride: to_i32(op, shape.q_stride)?,
        max_blocks_per_seq: to_i32(op, batch.max_blocks_per_seq)?,
        num_seqs: to_i32(op, batch.num_seqs)?,
        num_heads: to_i32(op, shape.num_heads)?,
        num_kv_heads: to_i32(op, shape.num_kv_heads)?,
        block_size: to_i32(op, shape.block_size)?,
        scale_log2: scale_log2(shape.scale),
        skip_decodes: (batch.num_decodes > 0) as i32,
        heads_per_cta: 0,
        partition_size: 0,
        max_partitions: 0,
        // A window past i32::MAX sees every key the kernels can index.
        sliding_window: shape
            .sliding_window
            .map_or(0, |w| w.min(i32::MAX as usize) as i32),
        softcap_log2: shape.logit_softcap.map_or(0.0, scale_log2),
    };
    let mut launches = Vec::new();
    if batch.num_tokens == 0 || batch.num_seqs == 0 {
        return Ok(launches);
    }
    if batch.num_decodes < batch.num_seqs {
        launches.push(AttentionLaunch {
            unit: attention_unit(&ATTENTION_PREFILL, d),
            kernel: format!("paged_attention_prefill_{suffix}_d{d}"),
            shape: prefill_shape(batch.num_tokens, batch.num_seqs, shape.num_heads, d),
            params: base,
        });
    }
    if batch.num_decodes == 0 {
        return Ok(launches);
    }
    let plan = decode_plan(
        batch.num_seqs,
        shape.num_heads,
        shape.num_kv_heads,
        d,
        batch.max_seq_len,
        num_sms,
    );
    if plan.needs_reduce() {
        let (need_out, need_stats) = workspace_need(&plan, batch.num_seqs, shape);
        ensure(
            ws_lens[0] >= need_out && ws_lens[1] >= need_stats && ws_lens[2] >= need_stats,
            op,
            || {
                format!(
                    "workspace too small for {} sequences of up to {} tokens",
                    batch.num_seqs, batch.max_seq_len
                )
            },
        )?;
    }
    base.heads_per_cta = to_i32(op, plan.heads_per_cta)?;
    base.partition_size = to_i32(op, plan.partition_size)?;
    base.max_partitions = to_i32(op, plan.max_partitions)?;
    let unit = attention_unit(&ATTENTION_DECODE, d);
    launches.push(AttentionLaunch {
        unit: unit.clone(),
        kernel: format!("paged_attention_decode_{suffix}_d{d}"),
        shape: plan.decode,
        params: base,
    });
    if plan.needs_reduce() {
        launches.push(AttentionLaunch {
            unit,
            kernel: format!("paged_attention_reduce_{suffix}_d{d}"),
            shape: plan.reduce,
            params: base,
        });
    }
    Ok(launches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> AttentionShape {
        AttentionShape {
            num_heads: 8,
            num_kv_heads: 2,
            head_dim: 64,
            block_size: 16,
            scale: 0.125,
            q_stride: 512,
            out_stride: 512,
            sliding_window: None,
            logit_softcap: None,
        }
    }

    fn lens() -> AttentionLens {
        AttentionLens {
            q: 10 * 512,
            out: 10 * 512,
            k_cache: 4 * 16 * 2 * 64,
            v_cache: 4 * 16 * 2 * 64,
            query_start_loc: 3,
            seq_lens: 2,
            block_tables: 2 * 4,
        }
    }

    #[test]
    fn accepts_a_consistent_batch() {
        validate_attention(&shape(), &lens(), 10, 2, 1, 4).unwrap();
        // A q view into fused qkv rows (stride 512 + 2 * 128).
        let s = AttentionShape {
            q_stride: 768,
            ..shape()
        };
        validate_attention(
            &s,
            &AttentionLens {
                q: 9 * 768 + 512,
                ..lens()
            },
            10,
            2,
            1,
            4,
        )
        .unwrap();
    }

    #[test]
    fn workspace_covers_every_batch_size() {
        let s = AttentionShape {
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            ..shape()
        };
        let (out, stats) = workspace_len_for(64, &s, 8192, 132);
        for n in 1..=64 {
            let plan = decode_plan(n, 32, 8, 128, 8192, 132);
            let (o, st) = workspace_need(&plan, n, &s);
            assert!(
                o <= out && st <= stats,
                "{n} sequences need more than the workspace"
            );
        }
        assert_eq!(out, stats * 128);
    }

    #[test]
    fn rejects_bad_shapes() {
        let bad = |s: AttentionShape, l: AttentionLens| {
            validate_attention(&s, &l, 10, 2, 1, 4)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(
            AttentionShape {
                head_dim: 72,
                ..shape()
            },
            lens()
        )
        .contains("head_dim 72"));
        assert!(bad(
            AttentionShape {
                num_kv_heads: 3,
                ..shape()
            },
            lens()
        )
        .contains("multiple"));
        assert!(bad(
            AttentionShape {
                q_stride: 516,
                ..shape()
            },
            lens()
        )
        .contains("q_stride"));
        assert!(bad(shape(), AttentionLens { q: 100, ..lens() }).contains("q holds"));
        assert!(bad(
            shape(),
            AttentionLens {
                v_cache: 100,
                ..lens()
            }
        )
        .contains("whole blocks"));
        assert!(bad(
            shape(),
            AttentionLens {
                block_tables: 7,
                ..lens()
            }
        )
        .contains("block_tables"));
        assert!(bad(
            shape(),
            AttentionLens {
                query_start_loc: 2,
                ..lens()
            }
        )
        .contains("query_start_loc"));
        assert!(validate_attention(&shape(), &lens(), 10, 2, 3, 4).is_err());
    }
}
