//! Dense matmul in the HF `Linear` layout: `y = x · Wᵀ`, W row-major `[n, k]`.
//!
//! Batches go to the `gemm` crate (packed, cache-blocked, AVX-512/AVX2
//! microkernels chosen at run time), split over the rayon pool by ranges of
//! W's rows; batches of up to 256 rows have it write `outᵀ` (then
//! transposed), which its microkernels run up to 2x faster; a single row takes
//! its GEMV path. Batches of 2 to
//! [`GEMV_MAX_M`] rows, where the `gemm` crate is several times slower than
//! memory allows, go to a hand-written GEMV that reads W once for all rows.
//!
//! Batch invariance: the `gemm` crate gives every output row the same bits
//! whatever the number of rows and output layout (from 3 rows up, 65 when W
//! has at most 64 rows; measured and pinned by a test), but its 1- and 2-row
//! paths and the GEMV round differently. With
//! [`set_batch_invariant`] every batch goes through the `gemm` crate (small
//! batches padded with copies of their rows), so a sequence's logits do not depend on what it is batched
//! with, at the price of slow 1 to 4-row batches (vLLM's batch-invariant mode).

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::num_threads;
use super::simd::{dispatch, fmadd, hsum, LANES};

/// Largest batch handled by the GEMV kernel (from 2 rows: one row is the
/// `gemm` crate's own GEMV, faster still).
pub const GEMV_MAX_M: usize = 4;

/// Below this many multiply-adds a GEMV runs on the calling thread: fork/join
/// costs more than it saves.
const PAR_MIN_MACS: usize = 1 << 18;

/// Least work per parallel GEMM task: each also packs x again.
const MIN_MACS_PER_RANGE: usize = 1 << 21;

static BATCH_INVARIANT: AtomicBool = AtomicBool::new(false);

/// Makes [`matmul_transb`] give each row of `x` the same bits whatever the
/// batch size (see the module docs). Process-wide; off by default.
pub fn set_batch_invariant(enabled: bool) {
    BATCH_INVARIANT.store(enabled, Ordering::Relaxed);
}

/// Whether [`set_batch_invariant`] is on.
pub fn batch_invariant() -> bool {
    BATCH_INVARIANT.load(Ordering::Relaxed)
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` (row-major throughout).
///
/// # Panics
/// If a slice length does not match its shape.
pub fn matmul_transb(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    matmul_transb_with(batch_invariant(), x, w, out, m, k, n);
}

fn matmul_transb_with(
    invariant: bool,
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert_eq!(x.len(), m * k, "matmul_transb: x is not [m={m}, k={k}]");
    assert_eq!(w.len(), n * k, "matmul_transb: w is not [n={n}, k={k}]");
    assert_eq!(out.len(), m * n, "matmul_transb: out is not [m={m}, n={n}]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let min_rows = if n <= 64 { 65 } else { 3 };
    if invariant && m < min_rows {
        // The gemm crate takes other paths, which round differently, for 1 or
        // 2 rows, and for matrices of at most 64 x 64: pad with copies.
        let mut xp = Vec::with_capacity(min_rows * k);
        while xp.len() < min_rows * k {
            xp.extend_from_slice(x);
        }
        xp.truncate(min_rows * k);
        let mut padded = vec![0f32; min_rows * n];
        gemm_blocked(&xp, w, &mut padded, min_rows, k, n);
        out.copy_from_slice(&padded[..m * n]);
    } else if !invariant && (2..=GEMV_MAX_M).contains(&m) {
        gemv(x, w, out, m, k, n);
    } else {
        gemm_blocked(x, w, out, m, k, n);
    }
}

/// `out[m, n] += bias[n]` for every row.
///
/// # Panics
/// If `out` is not a whole number of rows of `bias.len()`.
pub fn add_bias(out: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    if n == 0 {
        assert!(out.is_empty(), "add_bias: empty bias for non-empty out");
        return;
    }
    assert_eq!(out.len() % n, 0, "add_bias: out is not [m, {n}]");
    for row in out.chunks_exact_mut(n) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// Batches up to this many rows (and outputs up to [`TRANSPOSED_MAX_ELEMS`])
/// have the `gemm` crate write `outᵀ`, then transpose it: the crate runs
/// 1.2x to 2x faster writing a column-major output than a row-major one of
/// few rows (its microkernel then walks W in the order it is stored), and the
/// transpose costs a few percent. Bigger batches are as fast either way.
const TRANSPOSED_MAX_M: usize = 256;
const TRANSPOSED_MAX_ELEMS: usize = 1 << 22;

thread_local! {
    /// `outᵀ` scratch of the calling thread, kept to avoid page faults per call.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn gemm_blocked(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    // W's rows (= output columns) are split into one range per thread, each
    // worth a few tens of microseconds and over 64 long: the crate blocks k
    // differently for matrices of at most 64 x 64, and a row's bits must not
    // depend on the batch it is in.
    let ranges = (n / 96)
        .min(m * n * k / MIN_MACS_PER_RANGE)
        .clamp(1, num_threads());
    let chunk = n.div_ceil(ranges);
    let parallel = ranges > 1;
    if m <= TRANSPOSED_MAX_M && m * n <= TRANSPOSED_MAX_ELEMS {
        TRANSPOSED.with(|cell| {
            // A rayon worker can re-enter while it waits: then use a fresh buffer.
            let mut fresh = Vec::new();
            let mut held = cell.try_borrow_mut();
            let buf = match held.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut fresh,
            };
            if buf.len() < m * n {
                buf.resize(m * n, 0.0);
            }
            let out_t = &mut buf[..m * n];
            // Column range t of out is rows t * chunk.. of outᵀ: contiguous.
            let run = |(t, dst): (usize, &mut [f32])| {
                let (j0, cols) = (t * chunk, dst.len() / m);
                // SAFETY: x is [m, k] (row stride k); w rows j0..j0 + cols are
                // [cols, k], read as Wᵀ (row stride 1, column stride k); dst is
                // [cols, m] = the m x cols output column-major (row stride 1,
                // column stride m), exactly dst.len() elements.
                unsafe {
                    gemm_call(
                        x,
                        w.as_ptr().add(j0 * k),
                        dst.as_mut_ptr(),
                        m,
                        k,
                        cols,
                        1,
                        m as isize,
                    )
                }
            };
            if parallel {
                out_t.par_chunks_mut(chunk * m).enumerate().for_each(run);
            } else {
                out_t.chunks_mut(chunk * m).enumerate().for_each(run);
            }
            transpose(out_t, out, m, n, parallel);
        });
        return;
    }
    let dst = OutPtr(out.as_mut_ptr());
    let run = |t: usize| {
        let (j0, cols) = (t * chunk, chunk.min(n - t * chunk));
        // SAFETY: as above, with dst + j0 at row stride n addressing
        // out[.., j0..j0 + cols] inside `out` (len m * n). Tasks write
        // disjoint column ranges and `out` stays mutably borrowed until all
        // have joined.
        unsafe {
            gemm_call(
                x,
                w.as_ptr().add(j0 * k),
                dst.get().add(j0),
                m,
                k,
                cols,
                n as isize,
                1,
            )
        }
    };
    if parallel {
        (0..ranges).into_par_iter().for_each(run);
    } else {
        (0..ranges).for_each(run);
    }
}

/// `dst[m, cols] = x[m, k] · w[cols, k]ᵀ`, single-threaded, dst at the given strides.
///
/// # Safety
/// `w` must point at `cols * k` readable values and `dst` address `m x cols`
/// writable values at strides (`dst_rs`, `dst_cs`) that no one else accesses.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_call(
    x: &[f32],
    w: *const f32,
    dst: *mut f32,
    m: usize,
    k: usize,
    cols: usize,
    dst_rs: isize,
    dst_cs: isize,
) {
    debug_assert_eq!(x.len(), m * k);
    // SAFETY: forwarded from the caller; x is [m, k] row-major.
    unsafe {
        gemm::gemm(
            m,
            cols,
            k,
            dst,
            dst_cs,
            dst_rs,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w,
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out[i, j] = out_t[j, i]` for `out` `[m, n]`, in 16 x 16 tiles.
fn transpose(out_t: &[f32], out: &mut [f32], m: usize, n: usize, parallel: bool) {
    const TILE: usize = 16;
    let rows = |(ib, block): (usize, &mut [f32])| {
        let i0 = ib * TILE;
        let nr = block.len() / n;
        for j0 in (0..n).step_by(TILE) {
            let nc = TILE.min(n - j0);
            for i in 0..nr {
                let dst = &mut block[i * n + j0..][..nc];
                for (jj, v) in dst.iter_mut().enumerate() {
                    *v = out_t[(j0 + jj) * m + i0 + i];
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(TILE * n).enumerate().for_each(rows);
    } else {
        out.chunks_mut(TILE * n).enumerate().for_each(rows);
    }
}

/// A raw output pointer that rayon tasks share; each writes a disjoint range
/// of columns (also `linear` and `quant::matmul`).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

impl OutPtr {
    /// A method, so closures capture the `Sync` wrapper, not its raw field.
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}
// SAFETY: only used to write disjoint column ranges from different threads.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Rows of W per GEMV task: big enough to amortize the fork, small enough to
/// balance two cores.
const GEMV_ROWS_PER_TASK: usize = 128;

fn gemv(x: &[f32], w: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    let rows = if n * k < PAR_MIN_MACS {
        n
    } else {
        GEMV_ROWS_PER_TASK.max(n.div_ceil(num_threads() * 16))
    };
    // Compute out transposed ([n, m], contiguous per task), then scatter.
    let mut out_t = vec![0f32; n * m];
    let work = |(o, wc): (&mut [f32], &[f32])| gemv_rows(x, wc, o, m, k);
    if rows >= n {
        work((&mut out_t, w));
    } else {
        out_t
            .par_chunks_mut(rows * m)
            .zip(w.par_chunks(rows * k))
            .for_each(work);
    }
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * n + j] = *v;
        }
    }
}

dispatch! {
    /// `out_t[j, i] = dot(x[i], w[j])` for a block of W rows, `m <= GEMV_MAX_M`.
    pub(super) fn gemv_rows / gemv_rows_with(x: &[f32], w: &[f32], out_t: &mut [f32], m: usize, k: usize) = gemv_rows_body;
}

#[inline(always)]
fn gemv_rows_body<const ISA: u8>(x: &[f32], w: &[f32], out_t: &mut [f32], m: usize, k: usize) {
    match m {
        0 | 1 => gemv_tile::<ISA, 1, 4>(x, w, out_t, k),
        2 => gemv_tile::<ISA, 2, 4>(x, w, out_t, k),
        3 => gemv_tile::<ISA, 3, 2>(x, w, out_t, k),
        _ => gemv_tile::<ISA, 4, 2>(x, w, out_t, k),
    }
}

/// M x rows against W rows NW at a time: M * NW independent accumulators
/// hide the FMA latency, and each loaded W lane feeds M multiply-adds.
#[inline(always)]
fn gemv_tile<const ISA: u8, const M: usize, const NW: usize>(
    x: &[f32],
    w: &[f32],
    out_t: &mut [f32],
    k: usize,
) {
    let x = &x[..M * k];
    let n = w.len() / k;
    let full = k / LANES * LANES;
    let mut j = 0;
    while j < n {
        let nw = NW.min(n - j);
        let mut acc = [[[0f32; LANES]; NW]; M];
        let mut c = 0;
        while c < full {
            for r in 0..NW {
                // Tail blocks (nw < NW) reuse the last row; their sums are dropped.
                let wr = &w[(j + r.min(nw - 1)) * k + c..][..LANES];
                for i in 0..M {
                    let xi = &x[i * k + c..][..LANES];
                    for l in 0..LANES {
                        acc[i][r][l] = fmadd::<ISA>(xi[l], wr[l], acc[i][r][l]);
                    }
                }
            }
            c += LANES;
        }
        for r in 0..nw {
            let wr = &w[(j + r) * k..][..k];
            for i in 0..M {
                let xi = &x[i * k..][..k];
                let mut s = hsum::<ISA>(acc[i][r]);
                for l in full..k {
                    s = fmadd::<ISA>(xi[l], wr[l], s);
                }
                out_t[(j + r) * M + i] = s;
            }
        }
        j += nw;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::Isa;
    use crate::cpu::test_util::{assert_close, random_vec};

    fn naive(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_f64_on_odd_and_model_shapes() {
        let shapes = [
            (1, 1, 1),
            (1, 17, 3),
            (2, 33, 5),
            (3, 576, 97),
            (4, 100, 1000),
            (5, 7, 9),
            (13, 576, 192),
            (64, 576, 200),
            (37, 1536, 77),
            (130, 64, 257),
            (300, 100, 70),
            (257, 33, 300),
            (1, 576, 4099),
        ];
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            let x = random_vec(m * k, 10 + s as u64);
            let w = random_vec(n * k, 20 + s as u64);
            let mut out = vec![f32::NAN; m * n];
            matmul_transb(&x, &w, &mut out, m, k, n);
            assert_close(
                &out,
                &naive(&x, &w, m, k, n),
                1e-5,
                1e-4,
                &format!("m={m} k={k} n={n}"),
            );
        }
    }

    #[test]
    fn gemv_matches_f64_on_every_isa() {
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            for m in 1..=GEMV_MAX_M {
                for (k, n) in [(1, 1), (15, 3), (16, 4), (63, 9), (576, 31)] {
                    let x = random_vec(m * k, 1);
                    let w = random_vec(n * k, 2);
                    let mut out_t = vec![f32::NAN; n * m];
                    gemv_rows_with(isa, &x, &w, &mut out_t, m, k);
                    let want = naive(&x, &w, m, k, n);
                    let got: Vec<f32> = (0..m * n).map(|e| out_t[(e % n) * m + e / n]).collect();
                    assert_close(
                        &got,
                        &want,
                        1e-5,
                        1e-4,
                        &format!("{isa:?} m={m} k={k} n={n}"),
                    );
                }
            }
        }
    }

    /// Pins the `gemm` crate's behaviour that batch-invariant mode relies on:
    /// every row's bits are the same whatever the batch size, 1 included.
    #[test]
    fn batch_invariant_mode_gives_rows_the_same_bits_at_any_batch_size() {
        for (k, n) in [
            (576, 1536),
            (1536, 576),
            (576, 192),
            (700, 40),
            (64, 150),
            (2048, 97),
        ] {
            let x = random_vec(300 * k, 5);
            let w = random_vec(n * k, 6);
            let mut all = vec![0f32; 300 * n];
            matmul_transb_with(true, &x, &w, &mut all, 300, k, n);
            for m in [1, 2, 3, 4, 5, 17, 64, 65, 130] {
                let mut part = vec![0f32; m * n];
                matmul_transb_with(true, &x[..m * k], &w, &mut part, m, k, n);
                assert_eq!(
                    part,
                    all[..m * n],
                    "k={k} n={n}: first {m} rows differ from a 300-row batch"
                );
            }
        }
        let x = random_vec(3 * 64, 1);
        let w = random_vec(100 * 64, 2);
        let mut out = vec![0f32; 300];
        matmul_transb_with(true, &x, &w, &mut out, 3, 64, 100);
        assert_close(
            &out,
            &naive(&x, &w, 3, 64, 100),
            1e-5,
            1e-4,
            "invariant mode",
        );
        assert!(!batch_invariant(), "off by default");
    }

    #[test]
    fn degenerate_shapes() {
        let mut out = vec![1.0; 6];
        matmul_transb(&[], &[], &mut out, 2, 0, 3);
        assert_eq!(out, vec![0.0; 6]);
        matmul_transb(&[], &[1.0, 2.0], &mut [], 0, 2, 1);
    }

    #[test]
    #[should_panic(expected = "w is not")]
    fn wrong_weight_length_panics() {
        matmul_transb(&[1.0; 4], &[1.0; 5], &mut [0.0; 6], 2, 2, 3);
    }

    #[test]
    fn bias_is_added_to_every_row() {
        let mut out = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        add_bias(&mut out, &[10.0, 20.0, 30.0]);
        assert_eq!(out, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    }
}
