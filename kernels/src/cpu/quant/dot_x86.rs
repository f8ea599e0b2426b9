//! x86 integer dot products of weight blocks with 8-bit activation blocks:
//! AVX2 (`vpmaddubsw` u8·i8 pairs to i16, `vpmaddwd` to i32) or AVX-512
//! VNNI (`vpdpbusd`, u8·i8 quadruples straight to i32). Each block's i32 sums
//! are scaled in f32 lanes (8 accumulators per activation row) and reduced
//! once per output; offsets (Q4_0's 8, Q4_1's and Q4_K's mins, Q6_K's 32)
//! are applied through the activation blocks' precomputed sums.
//!
//! A weight block is decoded once and dotted with up to 4 activation rows
//! (`R`), so small batches read and unpack the weights once. Every output's
//! arithmetic is the same whatever `R`: results do not depend on the batch.

use std::arch::x86_64::*;

use super::q8::{Q8Row, Q8Rows, Q8_BLOCK};
use super::QuantType;

/// `out[i, j] = Σ w[j]·x[i]` for every row `i` of `x` and the `w.len() /
/// row_bytes` rows of `w`, written at `dst + i * ldo + j`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (and AVX-512 F/VL/BW/VNNI when
/// `vnni`); `dst` must address the `x.rows() x nr` outputs at row stride
/// `ldo`, written by no one else; `ty` must have an integer kernel and
/// `row_bytes` be its row size for `x.k`.
pub(crate) unsafe fn tile(
    vnni: bool,
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if vnni {
            tile_vnni(ty, w, row_bytes, x, dst, ldo)
        } else {
            tile_avx2(ty, w, row_bytes, x, dst, ldo)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    // SAFETY: the features are enabled; the rest is the caller's contract.
    unsafe { tile_body::<false>(ty, w, row_bytes, x, dst, ldo) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn tile_vnni(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    // SAFETY: as above.
    unsafe { tile_body::<true>(ty, w, row_bytes, x, dst, ldo) }
}

#[inline(always)]
unsafe fn tile_body<const VNNI: bool>(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    let m = x.rows();
    assert_eq!(row_bytes, ty.row_bytes(x.k), "tile: row size mismatch");
    let mut i = 0;
    while i < m {
        let r = (m - i).min(4);
        // SAFETY: features per the caller; row lengths checked above.
        unsafe {
            match r {
                1 => rows::<1, VNNI>(ty, w, row_bytes, x, i, dst, ldo),
                2 => rows::<2, VNNI>(ty, w, row_bytes, x, i, dst, ldo),
                3 => rows::<3, VNNI>(ty, w, row_bytes, x, i, dst, ldo),
                _ => rows::<4, VNNI>(ty, w, row_bytes, x, i, dst, ldo),
            }
        }
        i += r;
    }
}

/// Activation rows `i0..i0 + R` against every weight row of `w`. The
/// activation rows' slices are taken once here, not per weight row (at one
/// row per decode step that was 4% of the step), and the format is matched
/// once per task.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const R: usize, const VNNI: bool>(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    x: &Q8Rows,
    i0: usize,
    dst: *mut f32,
    ldo: usize,
) {
    let xs: [Q8Row<'_>; R] = std::array::from_fn(|t| x.row(i0 + t));
    // One loop per format (a fn pointer would lose the target features).
    macro_rules! each_row {
        ($kernel:ident) => {
            for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
                // SAFETY: features per the caller.
                let out = unsafe { $kernel::<R, VNNI>(wr, &xs) };
                for (t, v) in out.iter().enumerate() {
                    // SAFETY: (i0 + t, j) is inside the caller's output block.
                    unsafe { *dst.add((i0 + t) * ldo + j) = *v };
                }
            }
        };
    }
    match ty {
        QuantType::Q4_0 => each_row!(q4_0),
        QuantType::Q4_1 => each_row!(q4_1),
        QuantType::Q8_0 => each_row!(q8_0),
        QuantType::Q4_K => each_row!(q4_k),
        QuantType::Q6_K => each_row!(q6_k),
        other => unreachable!("no integer kernel for {other}"),
    }
}

/// u8 x i8, 32 pairs, to eight i32 sums of four.
#[inline(always)]
unsafe fn dot_u8_i8<const VNNI: bool>(q: __m256i, x: __m256i) -> __m256i {
    // SAFETY: AVX2 (and VNNI when asked) per the caller.
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, x)
        } else {
            // Pairs of u8 <= 255 times i8 stay within i16 for every format
            // here (weights <= 63, or |w| <= 128 with |x| <= 127).
            _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1))
        }
    }
}

#[inline(always)]
unsafe fn f16(b: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    // SAFETY: F16C per the caller.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))) }
}

#[inline(always)]
unsafe fn load_x(x: &Q8Row<'_>, b: usize) -> __m256i {
    let q = &x.qs[b * Q8_BLOCK..][..Q8_BLOCK];
    // SAFETY: 32 readable bytes.
    unsafe { _mm256_loadu_si256(q.as_ptr() as *const __m256i) }
}

#[inline(always)]
unsafe fn load32(b: &[u8]) -> __m256i {
    let b = &b[..32];
    // SAFETY: 32 readable bytes.
    unsafe { _mm256_loadu_si256(b.as_ptr() as *const __m256i) }
}

/// 16 bytes of nibbles to 32 values: low nibbles, then high.
#[inline(always)]
unsafe fn nibbles(b: &[u8]) -> __m256i {
    let b = &b[..16];
    // SAFETY: 16 readable bytes; AVX2 per the caller.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr() as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
        _mm256_set_m128i(hi, lo)
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX per the caller.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[inline(always)]
unsafe fn fmadd(acc: __m256, p: __m256i, s: f32) -> __m256 {
    // SAFETY: AVX2 + FMA per the caller.
    unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s), acc) }
}

#[inline(always)]
unsafe fn finish<const R: usize>(acc: [__m256; R], corr: [f32; R]) -> [f32; R] {
    // SAFETY: AVX per the caller.
    std::array::from_fn(|r| unsafe { hsum(acc[r]) } + corr[r])
}

#[inline(always)]
unsafe fn q4_0<const R: usize, const VNNI: bool>(w: &[u8], xs: &[Q8Row<'_>; R]) -> [f32; R] {
    // SAFETY: features per the caller; every load is of a checked slice.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut corr = [0f32; R];
        for (b, blk) in w.chunks_exact(18).enumerate() {
            let d = f16(blk, 0);
            let q = nibbles(&blk[2..]);
            for r in 0..R {
                let s = d * xs[r].d[b];
                acc[r] = fmadd(acc[r], dot_u8_i8::<VNNI>(q, load_x(&xs[r], b)), s);
                corr[r] -= s * (8 * (xs[r].sums[2 * b] + xs[r].sums[2 * b + 1])) as f32;
            }
        }
        finish(acc, corr)
    }
}

#[inline(always)]
unsafe fn q4_1<const R: usize, const VNNI: bool>(w: &[u8], xs: &[Q8Row<'_>; R]) -> [f32; R] {
    // SAFETY: as in q4_0.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut corr = [0f32; R];
        for (b, blk) in w.chunks_exact(20).enumerate() {
            let (d, m) = (f16(blk, 0), f16(blk, 2));
            let q = nibbles(&blk[4..]);
            for r in 0..R {
                let dx = xs[r].d[b];
                acc[r] = fmadd(acc[r], dot_u8_i8::<VNNI>(q, load_x(&xs[r], b)), d * dx);
                corr[r] += m * dx * (xs[r].sums[2 * b] + xs[r].sums[2 * b + 1]) as f32;
            }
        }
        finish(acc, corr)
    }
}

#[inline(always)]
unsafe fn q8_0<const R: usize, const VNNI: bool>(w: &[u8], xs: &[Q8Row<'_>; R]) -> [f32; R] {
    // SAFETY: as in q4_0.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for (b, blk) in w.chunks_exact(34).enumerate() {
            let d = f16(blk, 0);
            let wq = load32(&blk[2..]);
            // |w| as unsigned, its sign moved onto x: u8 x i8 products.
            let q = _mm256_sign_epi8(wq, wq);
            for r in 0..R {
                let xv = _mm256_sign_epi8(load_x(&xs[r], b), wq);
                acc[r] = fmadd(acc[r], dot_u8_i8::<VNNI>(q, xv), d * xs[r].d[b]);
            }
        }
        finish(acc, [0f32; R])
    }
}

#[inline(always)]
unsafe fn q4_k<const R: usize, const VNNI: bool>(w: &[u8], xs: &[Q8Row<'_>; R]) -> [f32; R] {
    // SAFETY: as in q4_0.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut corr = [0f32; R];
        let mask = _mm256_set1_epi8(0x0F);
        for (s, blk) in w.chunks_exact(144).enumerate() {
            let d = f16(blk, 0);
            let dmin = f16(blk, 2);
            let (sc, mn) = super::dequant::k4_scales_mins(&blk[4..16]);
            for c in 0..4 {
                let v = load32(&blk[16 + 32 * c..]);
                let halves = [
                    _mm256_and_si256(v, mask),
                    _mm256_and_si256(_mm256_srli_epi16(v, 4), mask),
                ];
                for (h, q) in halves.into_iter().enumerate() {
                    let sb = 2 * c + h;
                    let b = s * 8 + sb;
                    let (dsc, mmn) = (d * sc[sb] as f32, dmin * mn[sb] as f32);
                    for r in 0..R {
                        let dx = xs[r].d[b];
                        acc[r] = fmadd(acc[r], dot_u8_i8::<VNNI>(q, load_x(&xs[r], b)), dsc * dx);
                        corr[r] -= mmn * dx * (xs[r].sums[2 * b] + xs[r].sums[2 * b + 1]) as f32;
                    }
                }
            }
        }
        finish(acc, corr)
    }
}

#[inline(always)]
unsafe fn q6_k<const R: usize, const VNNI: bool>(w: &[u8], xs: &[Q8Row<'_>; R]) -> [f32; R] {
    // SAFETY: as in q4_0.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut corr = [0f32; R];
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        for (s, blk) in w.chunks_exact(210).enumerate() {
            let scales = &blk[192..208];
            let d = f16(blk, 208);
            for h in 0..2 {
                let ql0 = load32(&blk[h * 64..]);
                let ql1 = load32(&blk[h * 64 + 32..]);
                let qh = load32(&blk[128 + h * 32..]);
                for k in 0..4 {
                    let ql = if k % 2 == 0 { ql0 } else { ql1 };
                    let low = if k / 2 == 0 {
                        _mm256_and_si256(ql, m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
                    };
                    let high = match k {
                        0 => _mm256_and_si256(qh, m2),
                        1 => _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2),
                        2 => _mm256_and_si256(_mm256_srli_epi16(qh, 4), m2),
                        _ => _mm256_and_si256(_mm256_srli_epi16(qh, 6), m2),
                    };
                    let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                    let sc0 = scales[h * 8 + 2 * k] as i8 as i32;
                    let sc1 = scales[h * 8 + 2 * k + 1] as i8 as i32;
                    let b = s * 8 + h * 4 + k;
                    for r in 0..R {
                        let xv = load_x(&xs[r], b);
                        let p = if VNNI {
                            let sc = _mm256_set_m128i(_mm_set1_epi32(sc1), _mm_set1_epi32(sc0));
                            _mm256_mullo_epi32(dot_u8_i8::<VNNI>(q, xv), sc)
                        } else {
                            let sc = _mm256_set_m128i(
                                _mm_set1_epi16(sc1 as i16),
                                _mm_set1_epi16(sc0 as i16),
                            );
                            _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), sc)
                        };
                        let dx = d * xs[r].d[b];
                        acc[r] = fmadd(acc[r], p, dx);
                        let offs = sc0 * xs[r].sums[2 * b] + sc1 * xs[r].sums[2 * b + 1];
                        corr[r] -= dx * (32 * offs) as f32;
                    }
                }
            }
        }
        finish(acc, corr)
    }
}
