//! x86 kernels for weights interleaved eight rows to a group (see
//! `repack`): lanes are weight rows, so a block's eight dot products come
//! out in one vector with no horizontal sums.
//!
//! Per 32-value block: each 4-byte word of an activation row is broadcast
//! and multiplied against the matching word of all eight weight rows (AVX2
//! `vpmaddubsw`, pairs to i16, or VNNI `vpdpbusd`, quadruples to i32). Q4's
//! eight products per block stay within i16 (|q| <= 15, |x| <= 127: at
//! most 8 · 2 · 15 · 127 = 30480), so AVX2 widens once per block. The
//! block's i32 sums are converted and scaled by the eight rows' `d_w` times
//! the activation block's `d_x`; offsets and mins go through the block's
//! `s = d_x · Σ q_x`. Up to four activation rows share each decoded weight
//! word (`R`); the arithmetic of an output does not depend on `R`.

use std::arch::x86_64::*;

use super::dot_x86::XRow;
use super::q8::Q8Rows;
use super::repack::{x8_block_bytes, X8};
use super::QuantType;

/// `dst[i * ldo + j] = Σ w[j]·x[i]` for the rows of `x` and the groups of
/// `w` (interleaved, `k` values per row).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (and AVX-512 F/VL/BW/VNNI when
/// `vnni`); `ty` must have an interleaved layout, `w` be whole groups of
/// `k`-value rows and every `x` row `k` values; `dst` must address the `x.rows()
/// x rows` outputs at stride `ldo`, written by no one else.
pub(crate) unsafe fn tile(
    vnni: bool,
    ty: QuantType,
    w: &[u8],
    k: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    let group_bytes = X8 * ty.row_bytes(k);
    assert!(
        w.len().is_multiple_of(group_bytes),
        "x8 tile: not whole groups"
    );
    assert_eq!(x.k, k, "x8 tile: row width");
    // SAFETY: forwarded from the caller.
    unsafe {
        if vnni {
            tile_vnni(ty, w, k, x, dst, ldo)
        } else {
            tile_avx2(ty, w, k, x, dst, ldo)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2(ty: QuantType, w: &[u8], k: usize, x: &Q8Rows, dst: *mut f32, ldo: usize) {
    // SAFETY: the features are enabled; the rest is the caller's contract.
    unsafe { groups::<false>(ty, w, k, x, dst, ldo) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn tile_vnni(ty: QuantType, w: &[u8], k: usize, x: &Q8Rows, dst: *mut f32, ldo: usize) {
    // SAFETY: as above.
    unsafe { groups::<true>(ty, w, k, x, dst, ldo) }
}

/// Each group against the activation rows, four at a time: the group's
/// weights (a few KiB) stay in L1 while the rows stream past.
#[inline(always)]
unsafe fn groups<const VNNI: bool>(
    ty: QuantType,
    w: &[u8],
    k: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    let nb = k / 32;
    let group_bytes = X8 * ty.row_bytes(k);
    for (g, gw) in w.chunks_exact(group_bytes).enumerate() {
        let mut i = 0;
        while i < x.rows() {
            let r = (x.rows() - i).min(4);
            let (p, out) = (gw.as_ptr(), dst.wrapping_add(i * ldo + g * X8));
            // `kernel::<R, VNNI, flags..>` on rows `i..i + r` (a fn pointer
            // would lose the target features).
            macro_rules! by_rows {
                ($kernel:ident $(, $flag:literal)*) => {
                    // SAFETY: features per the caller; `gw` is `nb` group
                    // blocks, each row of `x` `nb` blocks (checked by
                    // `tile`); outputs inside the caller's.
                    unsafe {
                        match r {
                            1 => $kernel::<1, VNNI $(, $flag)*>(p, nb, &rows(x, i), out, ldo),
                            2 => $kernel::<2, VNNI $(, $flag)*>(p, nb, &rows(x, i), out, ldo),
                            3 => $kernel::<3, VNNI $(, $flag)*>(p, nb, &rows(x, i), out, ldo),
                            _ => $kernel::<4, VNNI $(, $flag)*>(p, nb, &rows(x, i), out, ldo),
                        }
                    }
                };
            }
            match ty {
                QuantType::Q4_0 => by_rows!(q4, false, false),
                QuantType::Q4_1 => by_rows!(q4, true, false),
                QuantType::Q5_0 => by_rows!(q4, false, true),
                QuantType::Q5_1 => by_rows!(q4, true, true),
                QuantType::Q8_0 => by_rows!(q8_0),
                other => unreachable!("no interleaved kernel for {other}"),
            }
            i += r;
        }
    }
}

/// Rows `i..i + R` of `x` as raw pointers (no allocation per task).
#[inline(always)]
fn rows<const R: usize>(x: &Q8Rows, i: usize) -> [XRow; R] {
    std::array::from_fn(|t| XRow::new(x.row(i + t)))
}

/// The activation word `x[b * 32 + at..][..4]` in every lane.
#[inline(always)]
unsafe fn word(x: XRow, b: usize, at: usize) -> __m256i {
    // SAFETY: inside the row, per the caller; AVX2 per the caller.
    unsafe { _mm256_set1_epi32((x.qs.add(b * 32 + at) as *const i32).read_unaligned()) }
}

/// `acc + u8 · i8` in AVX2's i16 pairs or VNNI's i32 quadruples.
#[inline(always)]
unsafe fn dot_acc<const VNNI: bool>(acc: __m256i, q: __m256i, x: __m256i) -> __m256i {
    // SAFETY: AVX2 (and VNNI when asked) per the caller.
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(acc, q, x)
        } else {
            _mm256_add_epi16(acc, _mm256_maddubs_epi16(q, x))
        }
    }
}

/// A block's accumulator to i32 lanes (AVX2's i16 pairs summed).
#[inline(always)]
unsafe fn widen<const VNNI: bool>(acc: __m256i) -> __m256i {
    // SAFETY: AVX2 per the caller.
    unsafe {
        if VNNI {
            acc
        } else {
            _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
        }
    }
}

/// The fifth bits of one word of eight Q5 rows, as 0x10 per byte: byte
/// `e` of lane `r` gets bit `8 * byte + e + 4 * upper` of row `r`'s `qh`
/// (lane `r` of `qh`).
#[inline(always)]
unsafe fn fifth_bits(qh: __m256i, byte: i8, upper: bool) -> __m256i {
    // SAFETY: AVX2 per the caller.
    unsafe {
        // Each lane's byte `byte`, copied to its four bytes...
        let idx = _mm256_add_epi8(
            _mm256_setr_epi8(
                0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0, 0, 0, 0, 4, 4, 4, 4, 8, 8,
                8, 8, 12, 12, 12, 12,
            ),
            _mm256_set1_epi8(byte),
        );
        let spread = _mm256_shuffle_epi8(qh, idx);
        // ...then byte e keeps bit e (or e + 4), all ones where it is set.
        let bits = _mm256_set1_epi32(if upper {
            0x8040_2010u32 as i32
        } else {
            0x0804_0201
        });
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
}

/// Q4_0 (`w = d·(q - 8)`), Q4_1 (`MIN`: `w = d·q + m`), Q5_0 (`FIVE`: `w =
/// d·(q - 16)`) or Q5_1 (both). A Q5 block's `qh` words come first (lane
/// `r` = row `r`'s 32 fifth bits), then the nibble words.
#[inline(always)]
unsafe fn q4<const R: usize, const VNNI: bool, const MIN: bool, const FIVE: bool>(
    w: *const u8,
    nb: usize,
    xs: &[XRow; R],
    out: *mut f32,
    ldo: usize,
) {
    let ty = match (MIN, FIVE) {
        (false, false) => QuantType::Q4_0,
        (true, false) => QuantType::Q4_1,
        (false, true) => QuantType::Q5_0,
        (true, true) => QuantType::Q5_1,
    };
    let bytes = x8_block_bytes(ty);
    let head = if MIN { 32 } else { 16 };
    let quants = head + if FIVE { 32 } else { 0 };
    let offset = if FIVE { 16.0 } else { 8.0 };
    // SAFETY: AVX2/FMA/F16C per the caller; every read is inside block `b`
    // of the group or of an activation row, per the caller.
    unsafe {
        let low = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let blk = w.add(b * bytes);
            let qh = if FIVE {
                _mm256_loadu_si256(blk.add(head) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let mut isum = [_mm256_setzero_si256(); R];
            // Q5 on AVX2: i16 holds four products of 31 · 127 pairs, not
            // eight, so the pairs are widened halfway through the block.
            let mut wide = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                let v = _mm256_loadu_si256(blk.add(quants + 32 * c) as *const __m256i);
                let mut lo = _mm256_and_si256(v, low);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
                if FIVE {
                    // Values 4c..4c + 4 and 16 + 4c..: bits in byte c / 2
                    // and 2 + c / 2 of qh, upper half for odd c.
                    let (byte, upper) = ((c / 2) as i8, c % 2 == 1);
                    lo = _mm256_or_si256(lo, fifth_bits(qh, byte, upper));
                    hi = _mm256_or_si256(hi, fifth_bits(qh, byte + 2, upper));
                }
                for t in 0..R {
                    isum[t] = dot_acc::<VNNI>(isum[t], lo, word(xs[t], b, 4 * c));
                    isum[t] = dot_acc::<VNNI>(isum[t], hi, word(xs[t], b, 16 + 4 * c));
                }
                if FIVE && !VNNI && c == 1 {
                    for t in 0..R {
                        wide[t] = widen::<VNNI>(isum[t]);
                        isum[t] = _mm256_setzero_si256();
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            for t in 0..R {
                let mut i32s = widen::<VNNI>(isum[t]);
                if FIVE && !VNNI {
                    i32s = _mm256_add_epi32(i32s, wide[t]);
                }
                let f = _mm256_cvtepi32_ps(i32s);
                let dx = _mm256_set1_ps(*xs[t].d.add(b));
                let sx = *xs[t].s.add(b);
                if MIN {
                    let mw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
                    acc[t] = _mm256_fmadd_ps(dw, _mm256_mul_ps(f, dx), acc[t]);
                    acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(sx), acc[t]);
                } else {
                    let off = _mm256_fmsub_ps(f, dx, _mm256_set1_ps(offset * sx));
                    acc[t] = _mm256_fmadd_ps(dw, off, acc[t]);
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(t * ldo), *a);
        }
    }
}

/// Q8_0 (`w = d·q`, q signed): the sign trick (|w| times x with w's sign)
/// makes the unsigned operand; pairs near 127·127 leave no room in i16, so
/// AVX2 widens every word.
#[inline(always)]
unsafe fn q8_0<const R: usize, const VNNI: bool>(
    w: *const u8,
    nb: usize,
    xs: &[XRow; R],
    out: *mut f32,
    ldo: usize,
) {
    let bytes = x8_block_bytes(QuantType::Q8_0);
    // SAFETY: as in `q4`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let blk = w.add(b * bytes);
            let mut isum = [_mm256_setzero_si256(); R];
            for c in 0..8 {
                let v = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                let a = _mm256_abs_epi8(v);
                for t in 0..R {
                    let sx = _mm256_sign_epi8(word(xs[t], b, 4 * c), v);
                    isum[t] = if VNNI {
                        _mm256_dpbusd_epi32(isum[t], a, sx)
                    } else {
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(a, sx), ones);
                        _mm256_add_epi32(isum[t], p)
                    };
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            for t in 0..R {
                let f = _mm256_cvtepi32_ps(isum[t]);
                let dx = _mm256_set1_ps(*xs[t].d.add(b));
                acc[t] = _mm256_fmadd_ps(dw, _mm256_mul_ps(f, dx), acc[t]);
            }
        }
        for (t, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(t * ldo), *a);
        }
    }
}
