//! x86 integer dot products of weight blocks with 8-bit activation blocks:
//! AVX2 (`vpmaddubsw` u8·i8 pairs to i16, `vpmaddwd` to i32) or AVX-512
//! VNNI (`vpdpbusd`, u8·i8 quadruples straight to i32).
//!
//! Blocks go eight at a time (a K-quant super-block, or eight 32-value
//! blocks): their eight integer dot products are reduced together into one
//! vector of eight block sums (`vphaddd`), converted once and scaled by the
//! eight blocks' `d_w · d_x` in one multiply-add. Scaling each block on its
//! own (a scalar scale, a broadcast and a multiply-add per 32 values) cost
//! three times the integer work at batch 1. Offsets (Q4_0's 8, Q5_0's 16,
//! Q4_1's, Q5_1's and Q4_K's mins, Q6_K's 32) go through the activation
//! blocks' precomputed sums, also eight at a time.
//!
//! A weight group is decoded once and dotted with up to 4 activation rows
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

/// One activation row as raw pointers, taken once per task (the bounds were
/// checked when the rows were built: `k / 32` blocks, `k` quants).
/// The interleaved kernels (`x8_x86`) read rows through it too.
#[derive(Clone, Copy)]
pub(super) struct XRow {
    pub(super) d: *const f32,
    pub(super) s: *const f32,
    pub(super) qs: *const i8,
    sums: *const i32,
}

impl XRow {
    pub(super) fn new(x: Q8Row<'_>) -> Self {
        XRow {
            d: x.d.as_ptr(),
            s: x.s.as_ptr(),
            qs: x.qs.as_ptr(),
            sums: x.sums.as_ptr(),
        }
    }
}

/// Activation rows `i0..i0 + R` against every weight row of `w`, one loop
/// per format (a fn pointer would lose the target features).
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
    let xs: [XRow; R] = std::array::from_fn(|t| XRow::new(x.row(i0 + t)));
    let nb = x.k / Q8_BLOCK;
    macro_rules! each_row {
        ($kernel:expr) => {
            for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
                // SAFETY: features per the caller; `wr` is one row of `nb`
                // 32-value blocks (or `nb / 8` super-blocks), as `xs`.
                let out: [f32; R] = unsafe { $kernel(wr.as_ptr(), nb, &xs) };
                for (t, v) in out.iter().enumerate() {
                    // SAFETY: (i0 + t, j) is inside the caller's output block.
                    unsafe { *dst.add((i0 + t) * ldo + j) = *v };
                }
            }
        };
    }
    match ty {
        QuantType::Q4_0 => each_row!(blocks32::<R, VNNI, Q4_0>),
        QuantType::Q4_1 => each_row!(blocks32::<R, VNNI, Q4_1>),
        QuantType::Q5_0 => each_row!(blocks32::<R, VNNI, Q5_0>),
        QuantType::Q5_1 => each_row!(blocks32::<R, VNNI, Q5_1>),
        QuantType::Q8_0 => each_row!(blocks32::<R, VNNI, Q8_0>),
        QuantType::Q4_K => each_row!(q4_k::<R, VNNI, false>),
        QuantType::Q5_K => each_row!(q4_k::<R, VNNI, true>),
        QuantType::Q6_K => each_row!(q6_k::<R, VNNI>),
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

/// Eight vectors to the vector of their eight lane sums, in order.
#[inline(always)]
unsafe fn reduce8(p: &[__m256i; 8]) -> __m256i {
    // SAFETY: AVX2 per the caller.
    unsafe {
        let p01 = _mm256_hadd_epi32(p[0], p[1]);
        let p23 = _mm256_hadd_epi32(p[2], p[3]);
        let p45 = _mm256_hadd_epi32(p[4], p[5]);
        let p67 = _mm256_hadd_epi32(p[6], p[7]);
        // [p0..p3 over lanes 0-3 | p0..p3 over lanes 4-7], same for p4..p7.
        let lo = _mm256_hadd_epi32(p01, p23);
        let hi = _mm256_hadd_epi32(p45, p67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256(lo, hi, 0x20),
            _mm256_permute2x128_si256(lo, hi, 0x31),
        )
    }
}

/// Lanes `0..n` all ones.
#[inline(always)]
unsafe fn lanes(n: usize) -> __m256i {
    // SAFETY: AVX2 per the caller.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

/// `n <= 8` f32 from `p`, zeros after.
///
/// # Safety
/// `p..p + n` readable.
#[inline(always)]
unsafe fn load8(p: *const f32, n: usize) -> __m256 {
    // SAFETY: masked lanes are not read.
    unsafe {
        if n == 8 {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, lanes(n))
        }
    }
}

/// Eight f16 (given as bits) to f32.
#[inline(always)]
unsafe fn f16x8(bits: &[u16; 8]) -> __m256 {
    // SAFETY: F16C per the caller; 16 readable bytes.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(bits.as_ptr() as *const __m128i)) }
}

#[inline(always)]
unsafe fn u16_at(p: *const u8) -> u16 {
    // SAFETY: two readable bytes, per the caller.
    unsafe { u16::from_le_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
unsafe fn f16(p: *const u8) -> f32 {
    // SAFETY: F16C and two readable bytes, per the caller.
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16_at(p) as i32))) }
}

#[inline(always)]
unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: 32 readable bytes, per the caller.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// 16 bytes of nibbles to 32 values: low nibbles, then high.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: 16 readable bytes; AVX2 per the caller.
    unsafe {
        let v = _mm_loadu_si128(p as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
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
unsafe fn finish<const R: usize>(acc: [__m256; R]) -> [f32; R] {
    // SAFETY: AVX per the caller.
    std::array::from_fn(|r| unsafe { hsum(acc[r]) })
}

/// A 32-value block format.
trait Block32 {
    /// Bytes per block.
    const SIZE: usize;
    /// Has an f16 min after its f16 scale (`w = d·q + m`).
    const MIN: bool;
    /// `w = d·(q - OFFSET)`.
    const OFFSET: f32;
    /// Quants are signed bytes (multiplied through the sign trick).
    const SIGNED: bool;
    /// The block's 32 quants, in value order (unsigned unless `SIGNED`).
    unsafe fn quants(blk: *const u8) -> __m256i;
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;

/// Nibbles at `qs` with fifth bits from the u32 at `qh` (bit `i` for value
/// `i`): each set bit's byte becomes 0xFF, masked to 0x10.
#[inline(always)]
unsafe fn nibbles5(qs: *const u8, qh: *const u8) -> __m256i {
    // SAFETY: 16 + 4 readable bytes; AVX2 per the caller.
    unsafe {
        let bits = u32::from_le_bytes([*qh, *qh.add(1), *qh.add(2), *qh.add(3)]);
        // Byte i holds byte i / 8 of the bits...
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        // ...and is all ones iff its bit i % 8 is set.
        let all = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        let high = _mm256_cmpeq_epi8(all, _mm256_set1_epi64x(-1));
        _mm256_or_si256(nibbles(qs), _mm256_and_si256(high, _mm256_set1_epi8(0x10)))
    }
}

impl Block32 for Q4_0 {
    const SIZE: usize = 18;
    const MIN: bool = false;
    const OFFSET: f32 = 8.0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn quants(blk: *const u8) -> __m256i {
        // SAFETY: a whole block, per the caller.
        unsafe { nibbles(blk.add(2)) }
    }
}

impl Block32 for Q4_1 {
    const SIZE: usize = 20;
    const MIN: bool = true;
    const OFFSET: f32 = 0.0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn quants(blk: *const u8) -> __m256i {
        // SAFETY: as above.
        unsafe { nibbles(blk.add(4)) }
    }
}

impl Block32 for Q5_0 {
    const SIZE: usize = 22;
    const MIN: bool = false;
    const OFFSET: f32 = 16.0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn quants(blk: *const u8) -> __m256i {
        // SAFETY: as above.
        unsafe { nibbles5(blk.add(6), blk.add(2)) }
    }
}

impl Block32 for Q5_1 {
    const SIZE: usize = 24;
    const MIN: bool = true;
    const OFFSET: f32 = 0.0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn quants(blk: *const u8) -> __m256i {
        // SAFETY: as above.
        unsafe { nibbles5(blk.add(8), blk.add(4)) }
    }
}

impl Block32 for Q8_0 {
    const SIZE: usize = 34;
    const MIN: bool = false;
    const OFFSET: f32 = 0.0;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn quants(blk: *const u8) -> __m256i {
        // SAFETY: as above.
        unsafe { load32(blk.add(2)) }
    }
}

/// One weight row of `nb` 32-value blocks of `B` against `R` activation rows.
///
/// # Safety
/// Features per the caller; `w` is `nb` blocks of `B`, each `xs` row `nb`
/// activation blocks.
#[inline(always)]
unsafe fn blocks32<const R: usize, const VNNI: bool, B: Block32>(
    w: *const u8,
    nb: usize,
    xs: &[XRow; R],
) -> [f32; R] {
    // SAFETY: groups stay inside the row (b0 + n <= nb).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut b0 = 0;
        // A literal 8 here lets the compiler keep a whole group in registers.
        while b0 + 8 <= nb {
            group32::<R, VNNI, B>(w, b0, 8, xs, &mut acc);
            b0 += 8;
        }
        if b0 < nb {
            group32::<R, VNNI, B>(w, b0, nb - b0, xs, &mut acc);
        }
        finish(acc)
    }
}

/// Blocks `b0..b0 + n` (`n <= 8`) of one weight row into `acc`.
///
/// # Safety
/// As [`blocks32`], with `b0 + n <= nb`.
#[inline(always)]
unsafe fn group32<const R: usize, const VNNI: bool, B: Block32>(
    w: *const u8,
    b0: usize,
    n: usize,
    xs: &[XRow; R],
    acc: &mut [__m256; R],
) {
    // SAFETY: every pointer below stays inside the row (blocks < b0 + n).
    unsafe {
        let mut q = [_mm256_setzero_si256(); 8];
        let mut sign = [_mm256_setzero_si256(); 8];
        let mut dbits = [0u16; 8];
        let mut mbits = [0u16; 8];
        for b in 0..n {
            let blk = w.add((b0 + b) * B::SIZE);
            dbits[b] = u16_at(blk);
            if B::MIN {
                mbits[b] = u16_at(blk.add(2));
            }
            q[b] = B::quants(blk);
            if B::SIGNED {
                // |w| as unsigned; its sign goes onto x below.
                sign[b] = q[b];
                q[b] = _mm256_sign_epi8(q[b], q[b]);
            }
        }
        let dw = f16x8(&dbits);
        let mw = if B::MIN {
            f16x8(&mbits)
        } else {
            _mm256_mul_ps(dw, _mm256_set1_ps(-B::OFFSET))
        };
        for r in 0..R {
            let x = xs[r];
            let mut p = [_mm256_setzero_si256(); 8];
            for b in 0..n {
                let xv = load32(x.qs.add((b0 + b) * Q8_BLOCK) as *const u8);
                let xv = if B::SIGNED {
                    _mm256_sign_epi8(xv, sign[b])
                } else {
                    xv
                };
                p[b] = dot_u8_i8::<VNNI>(q[b], xv);
            }
            let sums = _mm256_cvtepi32_ps(reduce8(&p));
            let dx = load8(x.d.add(b0), n);
            acc[r] = _mm256_fmadd_ps(sums, _mm256_mul_ps(dw, dx), acc[r]);
            if B::MIN || B::OFFSET != 0.0 {
                acc[r] = _mm256_fmadd_ps(mw, load8(x.s.add(b0), n), acc[r]);
            }
        }
    }
}

/// Q4_K: super-blocks of 8 x 32, 6-bit scales and mins per sub-block; Q5_K
/// (`FIVE`): the same with 32 bytes of fifth bits before the nibbles (bit
/// `sb` of byte `l` for value `l` of sub-block `sb`).
#[inline(always)]
unsafe fn q4_k<const R: usize, const VNNI: bool, const FIVE: bool>(
    w: *const u8,
    nb: usize,
    xs: &[XRow; R],
) -> [f32; R] {
    let (size, qs) = if FIVE { (176, 48) } else { (144, 16) };
    // SAFETY: as in blocks32; `nb / 8` super-blocks of `size` bytes.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mask = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        for s in 0..nb / 8 {
            let blk = w.add(s * size);
            let bytes = std::slice::from_raw_parts(blk.add(4), 12);
            let (sc, mn) = super::dequant::k4_scales_mins(bytes);
            let to_f32 = |v: [u8; 8]| {
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                    v.as_ptr() as *const __m128i
                )))
            };
            let dsc = _mm256_mul_ps(to_f32(sc), _mm256_set1_ps(f16(blk)));
            let mmn = _mm256_mul_ps(to_f32(mn), _mm256_set1_ps(-f16(blk.add(2))));
            let mut q = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let v = load32(blk.add(qs + 32 * c));
                q[2 * c] = _mm256_and_si256(v, mask);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            }
            if FIVE {
                // Bit sb of each byte to bit 4 (a 16-bit shift moves no
                // bit across a byte boundary once masked to bit 0).
                let qh = load32(blk.add(16));
                for (sb, qv) in q.iter_mut().enumerate() {
                    let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(sb as i32));
                    let bit = _mm256_slli_epi16(_mm256_and_si256(h, one), 4);
                    *qv = _mm256_or_si256(*qv, bit);
                }
            }
            for r in 0..R {
                let x = xs[r];
                let p: [__m256i; 8] = std::array::from_fn(|b| {
                    dot_u8_i8::<VNNI>(q[b], load32(x.qs.add((s * 8 + b) * Q8_BLOCK) as *const u8))
                });
                let sums = _mm256_cvtepi32_ps(reduce8(&p));
                let dx = _mm256_loadu_ps(x.d.add(s * 8));
                acc[r] = _mm256_fmadd_ps(sums, _mm256_mul_ps(dsc, dx), acc[r]);
                acc[r] = _mm256_fmadd_ps(mmn, _mm256_loadu_ps(x.s.add(s * 8)), acc[r]);
            }
        }
        finish(acc)
    }
}

/// Q6_K: super-blocks of 16 x 16, 6-bit quants offset by 32, i8 scales.
/// The dot products are reduced to the 16 half-block sums (a 32-value
/// block's halves are its vector's two 128-bit lanes), scaled in integers,
/// then paired into the 8 block sums.
#[inline(always)]
unsafe fn q6_k<const R: usize, const VNNI: bool>(
    w: *const u8,
    nb: usize,
    xs: &[XRow; R],
) -> [f32; R] {
    // SAFETY: as in blocks32; `nb / 8` super-blocks of 210 bytes.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        // Half-block order after the reduction: [0lo 1lo 2lo 3lo | 0hi ..].
        let order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
        for s in 0..nb / 8 {
            let blk = w.add(s * 210);
            let scales = _mm_loadu_si128(blk.add(192) as *const __m128i);
            // Scales in the sums' pair order, and in the reduction's order.
            let sc_pairs = [
                _mm256_cvtepi8_epi32(scales),
                _mm256_cvtepi8_epi32(_mm_srli_si128(scales, 8)),
            ];
            let so = _mm_shuffle_epi8(scales, order);
            let sc_red = [
                _mm256_cvtepi8_epi32(so),
                _mm256_cvtepi8_epi32(_mm_srli_si128(so, 8)),
            ];
            let d = _mm256_set1_ps(f16(blk.add(208)));
            let mut q = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let ql0 = load32(blk.add(h * 64));
                let ql1 = load32(blk.add(h * 64 + 32));
                let qh = load32(blk.add(128 + h * 32));
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
                    q[h * 4 + k] = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                }
            }
            for r in 0..R {
                let x = xs[r];
                let b0 = s * 8;
                let p: [__m256i; 8] = std::array::from_fn(|b| {
                    dot_u8_i8::<VNNI>(q[b], load32(x.qs.add((b0 + b) * Q8_BLOCK) as *const u8))
                });
                // [b lo for b in 0..4 | b hi for b in 0..4], then 4..8.
                let h03 =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
                let h47 =
                    _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
                let t03 = _mm256_mullo_epi32(h03, sc_red[0]);
                let t47 = _mm256_mullo_epi32(h47, sc_red[1]);
                let dots = _mm256_add_epi32(
                    _mm256_permute2x128_si256(t03, t47, 0x20),
                    _mm256_permute2x128_si256(t03, t47, 0x31),
                );
                // 32 x Σ scale x half-sum of x, per block.
                let sums = x.sums.add(2 * b0) as *const __m256i;
                let o = _mm256_hadd_epi32(
                    _mm256_mullo_epi32(_mm256_loadu_si256(sums), sc_pairs[0]),
                    _mm256_mullo_epi32(_mm256_loadu_si256(sums.add(1)), sc_pairs[1]),
                );
                let offs = _mm256_permute4x64_epi64(o, 0b11_01_10_00);
                let isum = _mm256_sub_epi32(dots, _mm256_slli_epi32(offs, 5));
                let dx = _mm256_mul_ps(d, _mm256_loadu_ps(x.d.add(b0)));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dx, acc[r]);
            }
        }
        finish(acc)
    }
}
