//! Block dequantization, bit-for-bit llama.cpp's reference
//! `dequantize_row_*` (ggml-quants.c, mirrored by gguf-py's `quants.py`):
//! the arithmetic is written in the reference's order (f32 multiplies and
//! adds, never fused), so the values are identical, not merely close. The
//! exact matmul mode and embedding lookups decode through these.

use half::f16;

use super::QuantType;

/// Dequantizes one block of `ty` (`x` is `type_size` bytes) into `y`
/// (`block_size` values).
#[inline]
pub fn dequantize_block(ty: QuantType, x: &[u8], y: &mut [f32]) {
    match ty {
        QuantType::Q4_0 => q4_0(x, y),
        QuantType::Q4_1 => q4_1(x, y),
        QuantType::Q5_0 => q5_0(x, y),
        QuantType::Q5_1 => q5_1(x, y),
        QuantType::Q8_0 => q8_0(x, y),
        QuantType::Q2_K => q2_k(x, y),
        QuantType::Q3_K => q3_k(x, y),
        QuantType::Q4_K => q4_k(x, y),
        QuantType::Q5_K => q5_k(x, y),
        QuantType::Q6_K => q6_k(x, y),
    }
}

/// Dequantizes whole blocks: `out.len()` values from `bytes`.
///
/// # Panics
/// If `out` is not a whole number of blocks or `bytes` not exactly their size.
pub fn dequantize_row(ty: QuantType, bytes: &[u8], out: &mut [f32]) {
    let (bs, ts) = (ty.block_size(), ty.type_size());
    assert!(
        out.len().is_multiple_of(bs) && bytes.len() == out.len() / bs * ts,
        "dequantize_row: {} bytes are not {} values of {ty}",
        bytes.len(),
        out.len()
    );
    for (y, x) in out.chunks_exact_mut(bs).zip(bytes.chunks_exact(ts)) {
        dequantize_block(ty, x, y);
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
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
pub(crate) fn k4_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
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
