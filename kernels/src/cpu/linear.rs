//! `y = x · Wᵀ` for a weight in whatever format it is kept in: f32, 16-bit
//! (bf16/f16) or GGUF blocks. The model's linear layers call this; the
//! format picks the kernel.
//!
//! f32 weights take [`matmul_transb`]. Every other format is either
//! multiplied in integers ([`quant::quant_matmul`], for block types with a
//! kernel, in [`MatmulMode::Fast`]) or converted per tile: a range of 128 to
//! 255 weight rows is decoded to f32 into a per-thread buffer (a few hundred
//! KiB: no f32 copy of the matrix ever exists) and multiplied by the same
//! `gemm` crate calls and GEMV as f32 weights, so the values are those of the
//! f32 path on the dequantized matrix. 16-bit weights convert exactly, so
//! they take this path in both modes.

use half::{bf16, f16};
use rayon::prelude::*;

use super::gemm::OutPtr;
use super::gemm::{batch_invariant, gemm_call, gemv_rows, matmul_transb, GEMV_MAX_M};
use super::quant::{self, MatmulMode, QuantType};

/// A weight matrix `[n, k]`, borrowed in its storage format.
#[derive(Debug, Clone, Copy)]
pub enum WeightRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    /// `n` rows of `k / block_size` blocks.
    Quant(QuantType, &'a [u8]),
    /// `n / 8` groups of eight rows, interleaved ([`quant::repack`]).
    QuantX8(QuantType, &'a [u8]),
}

impl WeightRef<'_> {
    /// Bytes one row of `k` values takes.
    fn row_bytes(&self, k: usize) -> usize {
        match self {
            WeightRef::F32(_) => 4 * k,
            WeightRef::F16(_) | WeightRef::BF16(_) => 2 * k,
            WeightRef::Quant(ty, _) | WeightRef::QuantX8(ty, _) => ty.row_bytes(k),
        }
    }

    /// Bytes of the whole matrix.
    fn bytes(&self) -> usize {
        match self {
            WeightRef::F32(v) => 4 * v.len(),
            WeightRef::F16(v) => 2 * v.len(),
            WeightRef::BF16(v) => 2 * v.len(),
            WeightRef::Quant(_, b) | WeightRef::QuantX8(_, b) => b.len(),
        }
    }

    /// Decodes rows `j0..j0 + out.len() / k` to f32 (embedding lookups,
    /// tiles of the exact path).
    pub fn decode_rows(&self, j0: usize, k: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let (a, b) = (j0 * k, j0 * k + out.len());
        match self {
            WeightRef::F32(v) => out.copy_from_slice(&v[a..b]),
            WeightRef::F16(v) => v[a..b].convert_to_f32_slice(out),
            WeightRef::BF16(v) => v[a..b].convert_to_f32_slice(out),
            WeightRef::Quant(ty, bytes) => {
                let rb = ty.row_bytes(k);
                let rows = out.len() / k;
                quant::dequantize_row(*ty, &bytes[j0 * rb..(j0 + rows) * rb], out);
            }
            WeightRef::QuantX8(ty, bytes) => {
                quant::repack::dequantize_rows_x8(*ty, bytes, k, j0, out)
            }
        }
    }
}

/// `out[i * ldo + j] = x[i] · w[j]` for `x` `[m, k]` and `w` `[n, k]`.
///
/// # Panics
/// If a slice does not match its shape (a block type's `k` must be whole
/// blocks).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &[f32],
    w: WeightRef<'_>,
    out: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    ldo: usize,
    mode: MatmulMode,
) {
    assert_eq!(x.len(), m * k, "linear: x is not [m={m}, k={k}]");
    if let WeightRef::Quant(ty, _) | WeightRef::QuantX8(ty, _) = w {
        assert!(
            k.is_multiple_of(ty.block_size()),
            "linear: k={k} is not whole {ty} blocks"
        );
    }
    assert_eq!(
        w.bytes(),
        n * w.row_bytes(k),
        "linear: w is not [n={n}, k={k}]"
    );
    assert!(ldo >= n, "linear: ldo={ldo} < n={n}");
    if m == 0 || n == 0 {
        return;
    }
    assert!(out.len() >= (m - 1) * ldo + n, "linear: out too short");
    match w {
        // (f32 weights with ldo != n are copied per tile below.)
        WeightRef::F32(w) if ldo == n => matmul_transb(x, w, &mut out[..m * n], m, k, n),
        WeightRef::Quant(ty, bytes) if mode == MatmulMode::Fast && ty.has_int8_kernel() => {
            quant::quant_matmul(ty, x, bytes, out, m, k, n, ldo)
        }
        WeightRef::QuantX8(ty, bytes) if mode == MatmulMode::Fast => {
            quant::quant_matmul_x8_with(quant::quant_isa(), ty, x, bytes, out, m, k, n, ldo)
        }
        _ => tiled(x, w, out, m, k, n, ldo),
    }
}

/// Fewest weight rows per tile: the `gemm` crate blocks k differently for
/// matrices of at most 64 x 64, and a row's bits must not depend on its batch.
const TILE_ROWS: usize = 128;

/// Batches up to this many rows have the `gemm` crate write `outᵀ`, as
/// `matmul_transb` does.
const TRANSPOSED_MAX_M: usize = 256;

thread_local! {
    /// The calling thread's decoded tile.
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    TILE.with(|cell| {
        let mut fresh = Vec::new();
        let mut held = cell.try_borrow_mut();
        let buf = match held.as_mut() {
            Ok(b) => &mut **b,
            Err(_) => &mut fresh,
        };
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// Per-tile decode, then the f32 kernels (see the module docs).
#[allow(clippy::too_many_arguments)]
fn tiled(x: &[f32], w: WeightRef<'_>, out: &mut [f32], m: usize, k: usize, n: usize, ldo: usize) {
    if k == 0 {
        for i in 0..m {
            out[i * ldo..i * ldo + n].fill(0.0);
        }
        return;
    }
    let tiles = (n / TILE_ROWS).max(1);
    let chunk = n.div_ceil(tiles);
    let invariant = batch_invariant();
    // As `matmul_transb` in batch-invariant mode: small batches padded with
    // copies of their rows, so the `gemm` crate takes its many-row path.
    let min_rows = if chunk <= 64 { 65 } else { 3 };
    let padded: Option<Vec<f32>> = (invariant && m < min_rows).then(|| {
        let mut xp = Vec::with_capacity(min_rows * k);
        while xp.len() < min_rows * k {
            xp.extend_from_slice(x);
        }
        xp.truncate(min_rows * k);
        xp
    });
    let dst = OutPtr(out.as_mut_ptr());
    let run = |t: usize| {
        let j0 = t * chunk;
        let cols = chunk.min(n - j0);
        with_buffer(cols * k, |wt| {
            w.decode_rows(j0, k, wt);
            // SAFETY (all three arms): this task writes rows 0..m, columns
            // j0..j0 + cols of the output (row stride ldo), inside `out`
            // (checked by `linear`) and disjoint from other tasks' columns.
            if let Some(xp) = &padded {
                let mut tmp = vec![0f32; min_rows * cols];
                // SAFETY: wt is [cols, k]; tmp is [min_rows, cols].
                unsafe {
                    gemm_call(
                        xp,
                        wt.as_ptr(),
                        tmp.as_mut_ptr(),
                        min_rows,
                        k,
                        cols,
                        cols as isize,
                        1,
                    )
                };
                for i in 0..m {
                    let row = &tmp[i * cols..(i + 1) * cols];
                    // SAFETY: see above.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            row.as_ptr(),
                            dst.get().add(i * ldo + j0),
                            cols,
                        )
                    };
                }
            } else if !invariant && (2..=GEMV_MAX_M).contains(&m) {
                let mut out_t = vec![0f32; cols * m];
                gemv_rows(x, wt, &mut out_t, m, k);
                for (j, col) in out_t.chunks_exact(m).enumerate() {
                    for (i, v) in col.iter().enumerate() {
                        // SAFETY: see above.
                        unsafe { *dst.get().add(i * ldo + j0 + j) = *v };
                    }
                }
            } else if m <= TRANSPOSED_MAX_M {
                // As `matmul_transb`: the crate writes outᵀ (faster for few
                // rows, and the same bits as the f32 path at 1 row).
                let mut out_t = vec![0f32; cols * m];
                // SAFETY: wt is [cols, k]; out_t is [cols, m] = the m x cols
                // output column-major.
                unsafe {
                    gemm_call(
                        x,
                        wt.as_ptr(),
                        out_t.as_mut_ptr(),
                        m,
                        k,
                        cols,
                        1,
                        m as isize,
                    )
                };
                for (j, col) in out_t.chunks_exact(m).enumerate() {
                    for (i, v) in col.iter().enumerate() {
                        // SAFETY: see above.
                        unsafe { *dst.get().add(i * ldo + j0 + j) = *v };
                    }
                }
            } else {
                // SAFETY: see above; wt is [cols, k].
                unsafe {
                    gemm_call(
                        x,
                        wt.as_ptr(),
                        dst.get().add(j0),
                        m,
                        k,
                        cols,
                        ldo as isize,
                        1,
                    )
                };
            }
        });
    };
    if tiles == 1 || m * n * k < 1 << 18 {
        (0..tiles).for_each(run);
    } else {
        (0..tiles).into_par_iter().for_each(run);
    }
}
