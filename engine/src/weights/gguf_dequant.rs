//! Dequantization of ggml tensor types to f32, bit-for-bit the values of
//! llama.cpp's reference `dequantize_row_*` (ggml-quants.c), which the `gguf`
//! Python package's `gguf/quants.py` mirrors. The arithmetic is written in
//! the same order as the reference (f32 multiplies and adds, never fused), so
//! the results are identical, not merely close: tests/gguf_dequant.rs checks
//! every type against vectors made with gguf-py.

use half::{bf16, f16};
use rayon::prelude::*;

use super::ggml_type::GgmlType;

/// The types `dequantize` handles, for error messages.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// Dequantizes `numel` values stored as `ty` in `bytes`. None when the type
/// is not supported or `bytes` is not exactly `numel` values long.
pub fn dequantize(ty: GgmlType, bytes: &[u8], numel: usize) -> Option<Vec<f32>> {
    let block_fn: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => f32_block,
        GgmlType::F16 => f16_block,
        GgmlType::BF16 => bf16_block,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q2K => q2_k,
        GgmlType::Q3K => q3_k,
        GgmlType::Q4K => q4_k,
        GgmlType::Q5K => q5_k,
        GgmlType::Q6K => q6_k,
        _ => return None,
    };
    let (block, type_size) = ty.block_layout()?;
    if !numel.is_multiple_of(block) || bytes.len() != numel / block * type_size {
        return None;
    }
    let mut out = vec![0f32; numel];
    // Blocks are independent: split into chunks of many blocks for rayon.
    let blocks_per_chunk = (1 << 16) / block;
    out.par_chunks_mut(blocks_per_chunk * block)
        .zip(bytes.par_chunks(blocks_per_chunk * type_size))
        .for_each(|(y, x)| {
            for (yb, xb) in y.chunks_exact_mut(block).zip(x.chunks_exact(type_size)) {
                block_fn(xb, yb);
            }
        });
    Some(out)
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

fn f32_block(x: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
}

fn f16_block(x: &[u8], y: &mut [f32]) {
    y[0] = f16_at(x, 0);
}

fn bf16_block(x: &[u8], y: &mut [f32]) {
    y[0] = bf16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32();
}

/// 32 values: f16 d, 16 bytes of nibbles (low nibbles are values 0..16).
fn q4_0(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let qs = &x[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// 32 values: f16 d, f16 m, 16 bytes of nibbles; y = q * d + m.
fn q4_1(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let m = f16_at(x, 2);
    let qs = &x[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// 32 values: f16 d, u32 of fifth bits, 16 bytes of nibbles.
fn q5_0(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    let qs = &x[6..22];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = (((qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// 32 values: f16 d, f16 m, u32 of fifth bits, 16 bytes of nibbles.
fn q5_1(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let m = f16_at(x, 2);
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    let qs = &x[8..24];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) as f32 * d + m;
    }
}

/// 32 values: f16 d, 32 signed bytes.
fn q8_0(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    for j in 0..32 {
        y[j] = (x[2 + j] as i8) as f32 * d;
    }
}

/// 256 values: 16 bytes of 4-bit scale|min pairs, 64 bytes of 2-bit quants,
/// f16 d, f16 dmin. Element e = h*128 + k*32 + l is bits 2k of qs[h*32 + l].
fn q2_k(x: &[u8], y: &mut [f32]) {
    let scales = &x[0..16];
    let qs = &x[16..80];
    let d = f16_at(x, 80);
    let dmin = f16_at(x, 82);
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let e = h * 128 + k * 32 + l;
                let sc = scales[e / 16];
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = (qs[h * 32 + l] >> (2 * k)) & 3;
                y[e] = dl * q as f32 - ml;
            }
        }
    }
}

/// 256 values: 32 bytes of high-bit mask, 64 bytes of 2-bit quants, 12 bytes
/// of packed 6-bit scales, f16 d. A clear mask bit subtracts 4.
fn q3_k(x: &[u8], y: &mut [f32]) {
    let hmask = &x[0..32];
    let qs = &x[32..96];
    let s = &x[96..108];
    let d = f16_at(x, 108);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        let scale = ((low | (high << 4)) as i8).wrapping_sub(32);
        *dl = d * scale as f32;
    }
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let e = h * 128 + k * 32 + l;
                let low = ((qs[h * 32 + l] >> (2 * k)) & 3) as i8;
                let high_set = (hmask[l] >> (h * 4 + k)) & 1 == 1;
                let q = if high_set { low } else { low - 4 };
                y[e] = dl[e / 16] * q as f32;
            }
        }
    }
}

/// The 8 6-bit (scale, min) pairs of Q4_K/Q5_K (ggml's get_scale_min_k4).
fn k4_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// 256 values: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of
/// nibbles; sub-block 2c (+1) is the low (high) nibbles of qs[32c..32c+32].
fn q4_k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let dmin = f16_at(x, 2);
    let (sc, mn) = k4_scales_mins(&x[4..16]);
    let qs = &x[16..144];
    for sb in 0..8 {
        let d1 = d * sc[sb] as f32;
        let m1 = dmin * mn[sb] as f32;
        let (c, shift) = (sb / 2, 4 * (sb % 2));
        for l in 0..32 {
            let q = (qs[c * 32 + l] >> shift) & 0x0F;
            y[sb * 32 + l] = d1 * q as f32 - m1;
        }
    }
}

/// Q4_K plus 32 bytes of fifth bits: bit sb of qh[l] for sub-block sb.
fn q5_k(x: &[u8], y: &mut [f32]) {
    let d = f16_at(x, 0);
    let dmin = f16_at(x, 2);
    let (sc, mn) = k4_scales_mins(&x[4..16]);
    let qh = &x[16..48];
    let qs = &x[48..176];
    for sb in 0..8 {
        let d1 = d * sc[sb] as f32;
        let m1 = dmin * mn[sb] as f32;
        let (c, shift) = (sb / 2, 4 * (sb % 2));
        for l in 0..32 {
            let q = ((qs[c * 32 + l] >> shift) & 0x0F) | (((qh[l] >> sb) & 1) << 4);
            y[sb * 32 + l] = d1 * q as f32 - m1;
        }
    }
}

/// 256 values: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed
/// 8-bit scales, f16 d; y = (d * scale) * (q - 32).
fn q6_k(x: &[u8], y: &mut [f32]) {
    let ql = &x[0..128];
    let qh = &x[128..192];
    let scales = &x[192..208];
    let d = f16_at(x, 208);
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let e = h * 128 + k * 32 + l;
                let low = (ql[h * 64 + (k % 2) * 32 + l] >> (4 * (k / 2))) & 0x0F;
                let high = (qh[h * 32 + l] >> (2 * k)) & 0x03;
                let q = (low | (high << 4)) as i8 - 32;
                let dl = d * (scales[e / 16] as i8) as f32;
                y[e] = dl * q as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = vec![0u8; 34];
        b[0..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        for j in 0..32 {
            b[2 + j] = (j as i8 - 16) as u8;
        }
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_nibble_order() {
        // Low nibbles are the first 16 values, high nibbles the last 16.
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        b[2] = 0xA3; // value 0: 3 - 8 = -5; value 16: 10 - 8 = 2
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        assert_eq!((y[0], y[16], y[1]), (-5.0, 2.0, -8.0));
    }

    #[test]
    fn wrong_length_or_type_is_none() {
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 33], 32).is_none());
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], 31).is_none());
        assert!(dequantize(GgmlType::IQ2XXS, &[0u8; 66], 256).is_none());
        assert!(dequantize(GgmlType::Unknown(77), &[], 0).is_none());
    }

    #[test]
    fn large_tensors_split_into_chunks_consistently() {
        // More than one rayon chunk: equal to dequantizing each block alone.
        let n_blocks = 5000;
        let bytes: Vec<u8> = (0..n_blocks * 34)
            .map(|i| {
                if i % 34 == 1 {
                    0x3c
                } else {
                    (i * 7 % 251) as u8
                }
            })
            .collect();
        let all = dequantize(GgmlType::Q8_0, &bytes, n_blocks * 32).unwrap();
        for b in [0, 1, 2047, 2048, 4999] {
            let one = dequantize(GgmlType::Q8_0, &bytes[b * 34..(b + 1) * 34], 32).unwrap();
            assert_eq!(&all[b * 32..(b + 1) * 32], &one[..]);
        }
    }
}
