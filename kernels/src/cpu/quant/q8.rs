//! Activations quantized per row to 8-bit blocks of 32 (llama.cpp's Q8_0
//! idea), the other operand of the integer dot products.
//!
//! Each block keeps an f32 scale `d = max|x| / 127` and 32 signed bytes
//! `round(x / d)`, plus the sums of its two halves of 16 quants: weight
//! formats with an offset (Q4_0's `q - 8`, Q4_1's `+ m`, Q6_K's `q - 32`) fold
//! it into one multiply by such a sum instead of a subtraction per value.
//! Blocks of 32 serve the K-quants too (their sub-blocks are 32 or 16 wide),
//! with finer scales than llama.cpp's 256-wide Q8_K. Each block also keeps
//! `s = d · Σq` (llama.cpp's Q8_1 `s`): a weight format's per-block min
//! then costs one multiply-add per block, eight blocks to a vector.

use rayon::prelude::*;

/// Values per activation block.
pub const Q8_BLOCK: usize = 32;

/// `m` rows of `k` activations as 8-bit blocks (`k` a multiple of 32).
#[derive(Debug, Default, Clone)]
pub struct Q8Rows {
    pub k: usize,
    /// `[m, k / 32]` scales.
    pub d: Vec<f32>,
    /// `[m, k]` quants.
    pub qs: Vec<i8>,
    /// `[m, k / 16]` sums of 16 consecutive quants.
    pub sums: Vec<i32>,
    /// `[m, k / 32]` each block's `d` times the sum of its quants.
    pub s: Vec<f32>,
}

/// One row of a [`Q8Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Q8Row<'a> {
    pub d: &'a [f32],
    pub qs: &'a [i8],
    pub sums: &'a [i32],
    pub s: &'a [f32],
}

impl Q8Rows {
    pub fn rows(&self) -> usize {
        self.qs.len() / self.k.max(1)
    }

    #[inline]
    pub fn row(&self, i: usize) -> Q8Row<'_> {
        let nb = self.k / Q8_BLOCK;
        Q8Row {
            d: &self.d[i * nb..(i + 1) * nb],
            qs: &self.qs[i * self.k..(i + 1) * self.k],
            sums: &self.sums[i * 2 * nb..(i + 1) * 2 * nb],
            s: &self.s[i * nb..(i + 1) * nb],
        }
    }

    /// Quantizes `x` (`[m, k]`) into `self`, reusing its buffers.
    ///
    /// # Panics
    /// If `k` is not a multiple of 32 or `x` is not `[m, k]`.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        assert!(
            k.is_multiple_of(Q8_BLOCK),
            "Q8Rows: k={k} is not whole blocks"
        );
        assert_eq!(x.len(), m * k, "Q8Rows: x is not [m={m}, k={k}]");
        let nb = k / Q8_BLOCK;
        self.k = k;
        self.d.resize(m * nb, 0.0);
        self.qs.resize(m * k, 0);
        self.sums.resize(m * 2 * nb, 0);
        self.s.resize(m * nb, 0.0);
        let work = |((xb, (d, s)), (qs, sums)): BlockRefs<'_>| quantize_block(xb, d, s, qs, sums);
        if m * k >= 1 << 16 {
            x.par_chunks_exact(Q8_BLOCK)
                .zip(self.d.par_iter_mut().zip(self.s.par_iter_mut()))
                .zip(
                    self.qs
                        .par_chunks_exact_mut(Q8_BLOCK)
                        .zip(self.sums.par_chunks_exact_mut(2)),
                )
                .with_min_len(256)
                .for_each(work);
        } else {
            x.chunks_exact(Q8_BLOCK)
                .zip(self.d.iter_mut().zip(self.s.iter_mut()))
                .zip(
                    self.qs
                        .chunks_exact_mut(Q8_BLOCK)
                        .zip(self.sums.chunks_exact_mut(2)),
                )
                .for_each(work);
        }
    }
}

/// One block's input, scale and `s`, quants and half sums.
type BlockRefs<'a> = (
    (&'a [f32], (&'a mut f32, &'a mut f32)),
    (&'a mut [i8], &'a mut [i32]),
);

/// One block: scale, quants rounded half away from zero, half sums, `s`.
#[inline]
fn quantize_block(x: &[f32], d: &mut f32, s: &mut f32, qs: &mut [i8], sums: &mut [i32]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    *d = scale;
    for (q, v) in qs.iter_mut().zip(x) {
        // |v * inv| <= 127 (up to rounding), and `as` saturates NaN to 0.
        *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    sums[0] = qs[..16].iter().map(|&q| q as i32).sum();
    sums[1] = qs[16..].iter().map(|&q| q as i32).sum();
    *s = scale * (sums[0] + sums[1]) as f32;
}
