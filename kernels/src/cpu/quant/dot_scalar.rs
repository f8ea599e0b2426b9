//! Portable integer dot products of one weight row (blocks) with one
//! activation row ([`Q8Row`]): the fallback on CPUs without AVX2, and the
//! arithmetic the SIMD paths reproduce (same integer sums, f32 scaling per
//! 32-value block; only the order of the f32 additions differs).

use super::dequant::{f16_at, k4_scales_mins};
use super::q8::{Q8Row, Q8_BLOCK};
use super::QuantType;

/// `Σ w·x` over one row; `w` is `k / block_size` blocks of `ty`.
pub(crate) fn dot_row(ty: QuantType, w: &[u8], x: Q8Row<'_>) -> f32 {
    match ty {
        QuantType::Q4_0 => q4_0(w, x),
        QuantType::Q4_1 => q4_1(w, x),
        QuantType::Q5_0 => q5(w, x, 22, false),
        QuantType::Q5_1 => q5(w, x, 24, true),
        QuantType::Q8_0 => q8_0(w, x),
        QuantType::Q4_K => q4_k(w, x, false),
        QuantType::Q5_K => q4_k(w, x, true),
        QuantType::Q6_K => q6_k(w, x),
        other => unreachable!("no integer kernel for {other}"),
    }
}

/// Σ over 32 values of unsigned weights times signed activations.
#[inline(always)]
fn dot32(q: &[u8; 32], x: &[i8]) -> i32 {
    q.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// The 32 values of a block of nibbles: low nibbles first, then high.
#[inline(always)]
fn nibbles(qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = qs[j] & 0x0F;
        q[j + 16] = qs[j] >> 4;
    }
    q
}

fn q4_0(w: &[u8], x: Q8Row<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let xq = &x.qs[b * Q8_BLOCK..][..Q8_BLOCK];
        let sum_x = x.sums[2 * b] + x.sums[2 * b + 1];
        let isum = dot32(&nibbles(&blk[2..18]), xq) - 8 * sum_x;
        acc += f16_at(blk, 0) * x.d[b] * isum as f32;
    }
    acc
}

fn q4_1(w: &[u8], x: Q8Row<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let xq = &x.qs[b * Q8_BLOCK..][..Q8_BLOCK];
        let sum_x = x.sums[2 * b] + x.sums[2 * b + 1];
        let isum = dot32(&nibbles(&blk[4..20]), xq);
        acc += f16_at(blk, 0) * x.d[b] * isum as f32 + f16_at(blk, 2) * x.d[b] * sum_x as f32;
    }
    acc
}

/// Q5_0 (`w = d·(q - 16)`) and Q5_1 (`w = d·q + m`): nibbles plus a fifth
/// bit per value from a u32 (bit `i` for value `i`).
fn q5(w: &[u8], x: Q8Row<'_>, size: usize, min: bool) -> f32 {
    let at = if min { 4 } else { 2 };
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(size).enumerate() {
        let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
        let mut q = nibbles(&blk[at + 4..at + 20]);
        for (i, v) in q.iter_mut().enumerate() {
            *v |= (((qh >> i) & 1) << 4) as u8;
        }
        let xq = &x.qs[b * Q8_BLOCK..][..Q8_BLOCK];
        let sum_x = x.sums[2 * b] + x.sums[2 * b + 1];
        let d = f16_at(blk, 0) * x.d[b];
        acc += if min {
            d * dot32(&q, xq) as f32 + f16_at(blk, 2) * x.d[b] * sum_x as f32
        } else {
            d * (dot32(&q, xq) - 16 * sum_x) as f32
        };
    }
    acc
}

fn q8_0(w: &[u8], x: Q8Row<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let xq = &x.qs[b * Q8_BLOCK..][..Q8_BLOCK];
        let isum: i32 = blk[2..34]
            .iter()
            .zip(xq)
            .map(|(&a, &b)| a as i8 as i32 * b as i32)
            .sum();
        acc += f16_at(blk, 0) * x.d[b] * isum as f32;
    }
    acc
}

/// Q4_K, or Q5_K (`five`): the same plus 32 bytes of fifth bits before the
/// nibbles, bit `sb` of `qh[l]` for value `l` of sub-block `sb`.
fn q4_k(w: &[u8], x: Q8Row<'_>, five: bool) -> f32 {
    let (size, qs) = if five { (176, 48) } else { (144, 16) };
    let mut acc = 0f32;
    for (s, blk) in w.chunks_exact(size).enumerate() {
        let d = f16_at(blk, 0);
        let dmin = f16_at(blk, 2);
        let (sc, mn) = k4_scales_mins(&blk[4..16]);
        for c in 0..4 {
            let bytes = &blk[qs + 32 * c..][..32];
            for half in 0..2 {
                let sb = 2 * c + half;
                let b = s * 8 + sb;
                let mut q = [0u8; 32];
                for (l, (v, &byte)) in q.iter_mut().zip(bytes).enumerate() {
                    *v = (byte >> (4 * half)) & 0x0F;
                    if five {
                        *v |= ((blk[16 + l] >> sb) & 1) << 4;
                    }
                }
                let isum = dot32(&q, &x.qs[b * Q8_BLOCK..][..Q8_BLOCK]);
                let sum_x = x.sums[2 * b] + x.sums[2 * b + 1];
                acc += d * sc[sb] as f32 * x.d[b] * isum as f32
                    - dmin * mn[sb] as f32 * x.d[b] * sum_x as f32;
            }
        }
    }
    acc
}

fn q6_k(w: &[u8], x: Q8Row<'_>) -> f32 {
    let mut acc = 0f32;
    for (s, blk) in w.chunks_exact(210).enumerate() {
        let (ql, qh, scales) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let d = f16_at(blk, 208);
        for h in 0..2 {
            for k in 0..4 {
                let b = s * 8 + h * 4 + k;
                let mut q = [0u8; 32];
                for (l, v) in q.iter_mut().enumerate() {
                    let low = (ql[h * 64 + (k % 2) * 32 + l] >> (4 * (k / 2))) & 0x0F;
                    let high = (qh[h * 32 + l] >> (2 * k)) & 0x03;
                    *v = low | (high << 4);
                }
                let xq = &x.qs[b * Q8_BLOCK..][..Q8_BLOCK];
                let sc0 = scales[h * 8 + 2 * k] as i8 as i32;
                let sc1 = scales[h * 8 + 2 * k + 1] as i8 as i32;
                let lo: i32 = (0..16).map(|l| q[l] as i32 * xq[l] as i32).sum();
                let hi: i32 = (16..32).map(|l| q[l] as i32 * xq[l] as i32).sum();
                let isum = sc0 * (lo - 32 * x.sums[2 * b]) + sc1 * (hi - 32 * x.sums[2 * b + 1]);
                acc += d * x.d[b] * isum as f32;
            }
        }
    }
    acc
}
