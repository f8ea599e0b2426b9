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

use super::isa::QuantIsa;

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
        self.quantize_with(super::isa::quant_isa(), x, m, k)
    }

    /// [`Self::quantize`] on a chosen path (lowered to what the CPU
    /// supports); every path gives the same bits.
    pub fn quantize_with(&mut self, isa: QuantIsa, x: &[f32], m: usize, k: usize) {
        let simd = isa.min(super::isa::quant_isa()) >= QuantIsa::Avx2;
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
        let work = |((xb, (d, s)), (qs, sums)): BlockRefs<'_>| {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX2 and FMA are present (checked above).
                return unsafe { quantize_block_avx2(xb, d, s, qs, sums) };
            }
            let _ = simd;
            quantize_block(xb, d, s, qs, sums)
        };
        // Small inputs stay on the calling thread (no split below the
        // whole length), large ones go over the pool in runs of 256 blocks.
        let min_len = if m * k >= 1 << 16 { 256 } else { usize::MAX };
        x.par_chunks_exact(Q8_BLOCK)
            .zip(self.d.par_iter_mut().zip(self.s.par_iter_mut()))
            .zip(
                self.qs
                    .par_chunks_exact_mut(Q8_BLOCK)
                    .zip(self.sums.par_chunks_exact_mut(2)),
            )
            .with_min_len(min_len)
            .for_each(work);
    }
}

/// One block's input, scale and `s`, quants and half sums.
type BlockRefs<'a> = (
    (&'a [f32], (&'a mut f32, &'a mut f32)),
    (&'a mut [i8], &'a mut [i32]),
);

/// The scale of a block whose largest magnitude is `amax`, and its inverse.
#[inline(always)]
fn scale_of(amax: f32) -> (f32, f32) {
    let scale = amax / 127.0;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

/// One block: scale, quants rounded half to even (what `vroundps` does, so
/// the SIMD path gives the same bits), half sums, `s`. NaN inputs are
/// skipped by the maximum and quantize to 0.
#[inline]
fn quantize_block(x: &[f32], d: &mut f32, s: &mut f32, qs: &mut [i8], sums: &mut [i32]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (scale, inv) = scale_of(amax);
    *d = scale;
    for (q, v) in qs.iter_mut().zip(x) {
        // |v * inv| <= 127 (up to rounding), and `as` saturates NaN to 0.
        *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    sums[0] = qs[..16].iter().map(|&q| q as i32).sum();
    sums[1] = qs[16..].iter().map(|&q| q as i32).sum();
    *s = scale * (sums[0] + sums[1]) as f32;
}

/// [`quantize_block`] in AVX2: the same operations on eight lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `x` and `qs` hold 32 values, `sums` 2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(
    x: &[f32],
    d: &mut f32,
    s: &mut f32,
    qs: &mut [i8],
    sums: &mut [i32],
) {
    use std::arch::x86_64::*;
    let (x, qs, sums) = (&x[..Q8_BLOCK], &mut qs[..Q8_BLOCK], &mut sums[..2]);
    // SAFETY: 32 f32 read, 32 bytes written (lengths fixed above).
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let sign = _mm256_set1_ps(-0.0);
        // max(|v|, acc) keeps acc where |v| is NaN, as f32::max does.
        let mut amax = _mm256_setzero_ps();
        for vi in v {
            amax = _mm256_max_ps(_mm256_andnot_ps(sign, vi), amax);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
        let (scale, inv) = scale_of(_mm_cvtss_f32(m1));
        *d = scale;
        let inv = _mm256_set1_ps(inv);
        let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        let q: [__m256i; 4] = std::array::from_fn(|i| {
            let p = _mm256_mul_ps(v[i], inv);
            // NaN lanes to 0 (as `as i8` does), before the clamp would
            // turn them into -127.
            let p = _mm256_and_ps(p, _mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
            _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
        });
        let hsum = |a: __m256i, b: __m256i| {
            let t = _mm256_add_epi32(a, b);
            let t = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b01_00_11_10));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b10_11_00_01));
            _mm_cvtsi128_si32(t)
        };
        sums[0] = hsum(q[0], q[1]);
        sums[1] = hsum(q[2], q[3]);
        let p01 = _mm256_packs_epi32(q[0], q[1]);
        let p23 = _mm256_packs_epi32(q[2], q[3]);
        let bytes = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(p01, p23),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
        );
        _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, bytes);
        *s = scale * (sums[0] + sums[1]) as f32;
    }
}
