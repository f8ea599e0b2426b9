//! The integer matmul: activations quantized once per call, weight rows split
//! into many small tasks over rayon's pool.
//!
//! Tasks are ranges of weight rows, several per thread, so a thread that the
//! OS preempts (a compile on a shared machine) leaves its remaining ranges to
//! be stolen instead of stalling the step. Within a task, activation rows go
//! four at a time against each weight row (see `dot_x86`); results do not
//! depend on the batch size or the split.

use rayon::prelude::*;

use super::isa::{quant_isa, QuantIsa};
use super::q8::{Q8Rows, Q8_BLOCK};
use super::repack::{self, has_x8, X8};
use super::{dot_scalar, QuantType};
use crate::cpu::gemm::OutPtr;
use crate::cpu::num_threads;

/// Below this many multiply-adds a call stays on the calling thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// Tasks per thread: enough that a stalled thread's share is small.
const TASKS_PER_THREAD: usize = 8;

thread_local! {
    /// The calling thread's quantized activations, kept between calls.
    static XQ: std::cell::RefCell<Q8Rows> = std::cell::RefCell::new(Q8Rows::default());
}

/// `out[i * ldo + j] = x[i] · w[j]` for `i < m`, `j < n`: `x` is `[m, k]`
/// f32, `w` is `n` rows of `k` values in blocks of `ty`, quantized-activation
/// integer dot products on the best path this CPU has.
///
/// # Panics
/// If `ty` has no integer kernel, `k` is not whole blocks of `ty`, or a slice
/// does not match its shape.
#[allow(clippy::too_many_arguments)]
pub fn quant_matmul(
    ty: QuantType,
    x: &[f32],
    w: &[u8],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ldo: usize,
) {
    quant_matmul_with(quant_isa(), ty, x, w, out, m, k, n, ldo)
}

/// [`quant_matmul`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn quant_matmul_with(
    isa: QuantIsa,
    ty: QuantType,
    x: &[f32],
    w: &[u8],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ldo: usize,
) {
    assert!(
        ty.has_int8_kernel(),
        "quant_matmul: no integer kernel for {ty}"
    );
    assert!(
        k.is_multiple_of(ty.block_size()),
        "quant_matmul: k={k} is not whole {ty} blocks"
    );
    let rb = ty.row_bytes(k);
    if !check_shapes("quant_matmul", ty, x, w, out, [m, k, n, ldo]) {
        return;
    }
    let isa = isa.min(quant_isa());
    with_quantized(isa, x, m, k, |xq| {
        let dst = OutPtr(out.as_mut_ptr());
        let rows_per_task = rows_per_task(m, k, n, 4);
        let run = |(t, wt): (usize, &[u8])| {
            let j0 = t * rows_per_task;
            // SAFETY: task t writes columns j0..j0 + wt.len() / rb of rows
            // 0..m, inside `out` (checked above) and disjoint from other tasks';
            // `out` stays borrowed until all have joined.
            unsafe { tile(isa, ty, wt, rb, xq, dst.get().add(j0), ldo) };
        };
        if rows_per_task >= n {
            run((0, w));
        } else {
            w.par_chunks(rows_per_task * rb).enumerate().for_each(run);
        }
    });
}

/// [`quant_matmul`] for a weight interleaved eight rows to a group
/// ([`super::repack`]), on a chosen path (lowered to what the CPU supports).
///
/// # Panics
/// As [`quant_matmul`], and if `ty` has no interleaved layout or `n` is not
/// whole groups.
#[allow(clippy::too_many_arguments)]
pub fn quant_matmul_x8_with(
    isa: QuantIsa,
    ty: QuantType,
    x: &[f32],
    w: &[u8],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ldo: usize,
) {
    assert!(
        has_x8(ty),
        "quant_matmul_x8: no interleaved layout for {ty}"
    );
    assert!(
        k.is_multiple_of(ty.block_size()) && n.is_multiple_of(X8),
        "quant_matmul_x8: [n={n}, k={k}] is not whole {ty} blocks and groups of {X8}"
    );
    let rb = ty.row_bytes(k);
    if !check_shapes("quant_matmul_x8", ty, x, w, out, [m, k, n, ldo]) {
        return;
    }
    let isa = isa.min(quant_isa());
    with_quantized(isa, x, m, k, |xq| {
        let dst = OutPtr(out.as_mut_ptr());
        let rows_per_task = rows_per_task(m, k, n, X8);
        let run = |(t, wt): (usize, &[u8])| {
            let j0 = t * rows_per_task;
            // SAFETY: as in `quant_matmul_with`: disjoint columns per task.
            unsafe { tile_x8(isa, ty, wt, k, xq, dst.get().add(j0), ldo) };
        };
        if rows_per_task >= n {
            run((0, w));
        } else {
            w.par_chunks(rows_per_task * rb).enumerate().for_each(run);
        }
    });
}

/// Weight rows per task: all of them for small calls, else a multiple of
/// `align` giving each thread [`TASKS_PER_THREAD`] tasks.
fn rows_per_task(m: usize, k: usize, n: usize, align: usize) -> usize {
    if m * n * k < PAR_MIN_MACS {
        n
    } else {
        n.div_ceil(num_threads() * TASKS_PER_THREAD)
            .next_multiple_of(align)
    }
}

/// Runs `f` on `x` quantized into this thread's reused buffer.
fn with_quantized(isa: QuantIsa, x: &[f32], m: usize, k: usize, f: impl FnOnce(&Q8Rows)) {
    XQ.with(|cell| {
        let mut fresh = Q8Rows::default();
        let mut held = cell.try_borrow_mut();
        let xq = match held.as_mut() {
            Ok(b) => &mut **b,
            Err(_) => &mut fresh,
        };
        xq.quantize_with(isa, x, m, k);
        f(xq)
    })
}

/// One task's groups on `isa`.
///
/// # Safety
/// `dst` must address the task's `m x nr` outputs at row stride `ldo`.
unsafe fn tile_x8(
    isa: QuantIsa,
    ty: QuantType,
    w: &[u8],
    k: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= QuantIsa::Avx2 {
        // SAFETY: `isa` was lowered to what CPUID reports; the rest is ours.
        return unsafe { super::x8_x86::tile(isa == QuantIsa::Avx512Vnni, ty, w, k, x, dst, ldo) };
    }
    let _ = isa;
    // SAFETY: forwarded.
    unsafe { repack::tile_scalar(ty, w, k, x, dst, ldo) }
}

/// One task's rows on `isa`.
///
/// # Safety
/// `dst` must address the task's `m x nr` outputs at row stride `ldo`.
unsafe fn tile(
    isa: QuantIsa,
    ty: QuantType,
    w: &[u8],
    rb: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= QuantIsa::Avx2 {
        // SAFETY: `isa` was lowered to what CPUID reports; the rest is ours.
        return unsafe {
            super::dot_x86::tile(isa == QuantIsa::Avx512Vnni, ty, w, rb, x, dst, ldo)
        };
    }
    let _ = isa;
    debug_assert!(x.k.is_multiple_of(Q8_BLOCK));
    for (j, wr) in w.chunks_exact(rb).enumerate() {
        for i in 0..x.rows() {
            // SAFETY: (i, j) is inside the caller's block.
            unsafe { *dst.add(i * ldo + j) = dot_scalar::dot_row(ty, wr, x.row(i)) };
        }
    }
}

/// The buffer checks both entry points share; false when there is nothing
/// to compute (`m` or `n` zero).
///
/// # Panics
/// If `w`, `x` or `out` does not hold `[n, k]` blocks of `ty`, `[m, k]`
/// values and `m` rows of `ldo >= n` outputs.
fn check_shapes(
    name: &str,
    ty: QuantType,
    x: &[f32],
    w: &[u8],
    out: &[f32],
    [m, k, n, ldo]: [usize; 4],
) -> bool {
    assert_eq!(
        w.len(),
        n * ty.row_bytes(k),
        "{name}: w is not [n={n}, k={k}] of {ty}"
    );
    assert_eq!(x.len(), m * k, "{name}: x is not [m={m}, k={k}]");
    assert!(ldo >= n, "{name}: ldo={ldo} < n={n}");
    if m == 0 || n == 0 {
        return false;
    }
    assert!(out.len() >= (m - 1) * ldo + n, "{name}: out too short");
    true
}
