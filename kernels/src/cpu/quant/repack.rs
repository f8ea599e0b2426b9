//! Weight rows interleaved eight to a group, so the integer kernels put
//! eight weight rows in the eight lanes of a vector (llama.cpp's
//! `block_q4_0x8` repacking, done once at load).
//!
//! Row-major blocks make a batch kernel reduce every block's dot product
//! across lanes (a horizontal sum per block and activation row: the limit
//! once a step has many rows). Interleaved, one 4-byte slice of an
//! activation row is broadcast against four quants of each of eight weight
//! rows: the lanes end up holding the eight rows' sums, and nothing is
//! reduced across lanes.
//!
//! Layout of group `g` (rows `8g..8g + 8`), block `b` (values `32b..32b +
//! 32`), [`x8_block_bytes`] bytes, groups one after another and a group's
//! blocks in order:
//! - the eight rows' f16 scales `d` (Q4_1: then their eight f16 mins `m`);
//! - the rest of each row's block as 4-byte words, word `c` of each of the
//!   eight rows in turn: byte `32c + 4r + e` is byte `4c + e` of what follows
//!   row `r`'s header. For Q5 word 0 is the row's 32 fifth bits (`qh`), so
//!   the group's `qh` come as one vector of eight lanes; for Q4/Q5 a quant
//!   byte holds values `4c + e` (low nibble) and `16 + 4c + e` (high
//!   nibble): ggml's own nibble order, so no nibble moves.
//!
//! The bytes are the same as the row-major blocks', only reordered: the
//! weight takes no more memory.

use super::q8::Q8Rows;
use super::{dequantize_block, dot_scalar, QuantType};

/// Rows per group.
pub const X8: usize = 8;

/// Whether `ty` has an interleaved layout and kernels.
pub fn has_x8(ty: QuantType) -> bool {
    use QuantType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// Header bytes of one row's block (its f16 scale, and min).
fn header(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_1 | QuantType::Q5_1 => 4,
        _ => 2,
    }
}

/// Bytes of one group's block: eight row blocks.
pub fn x8_block_bytes(ty: QuantType) -> usize {
    X8 * ty.type_size()
}

/// `rows` row-major rows of `k` values of `ty` (GGUF's layout) to the
/// interleaved layout, or `None` when `ty` has none or `rows` is not whole
/// groups.
pub fn repack_x8(ty: QuantType, bytes: &[u8], rows: usize, k: usize) -> Option<Vec<u8>> {
    if !has_x8(ty) || !rows.is_multiple_of(X8) || !k.is_multiple_of(ty.block_size()) {
        return None;
    }
    let (ts, h, rb) = (ty.type_size(), header(ty), ty.row_bytes(k));
    assert_eq!(
        bytes.len(),
        rows * rb,
        "repack_x8: not [{rows}, {k}] of {ty}"
    );
    let nb = k / ty.block_size();
    let words = (ts - h) / 4;
    let mut out = vec![0u8; bytes.len()];
    for (g, dst) in out.chunks_exact_mut(X8 * rb).enumerate() {
        for (b, blk) in dst.chunks_exact_mut(X8 * ts).enumerate() {
            let (head, qs) = blk.split_at_mut(X8 * h);
            for r in 0..X8 {
                let src = &bytes[(g * X8 + r) * rb + b * ts..][..ts];
                // Scales of the eight rows, then mins.
                for f in 0..h / 2 {
                    head[f * 2 * X8 + 2 * r..][..2].copy_from_slice(&src[2 * f..2 * f + 2]);
                }
                for c in 0..words {
                    qs[(c * X8 + r) * 4..][..4].copy_from_slice(&src[h + 4 * c..h + 4 * c + 4]);
                }
            }
        }
        debug_assert_eq!(dst.len(), nb * X8 * ts);
    }
    Some(out)
}

/// Row `r` (of 8) of one group's block back in GGUF's layout, into `out`
/// (`ty.type_size()` bytes).
fn unpack_block(ty: QuantType, blk: &[u8], r: usize, out: &mut [u8]) {
    let (ts, h) = (ty.type_size(), header(ty));
    for f in 0..h / 2 {
        out[2 * f..2 * f + 2].copy_from_slice(&blk[f * 2 * X8 + 2 * r..][..2]);
    }
    let qs = &blk[X8 * h..];
    for c in 0..(ts - h) / 4 {
        out[h + 4 * c..h + 4 * c + 4].copy_from_slice(&qs[(c * X8 + r) * 4..][..4]);
    }
}

/// Row `j` of an interleaved matrix back in GGUF's layout (`row_bytes(k)`).
fn unpack_row(ty: QuantType, bytes: &[u8], k: usize, j: usize, out: &mut [u8]) {
    let (ts, rb) = (ty.type_size(), ty.row_bytes(k));
    let group = &bytes[j / X8 * X8 * rb..][..X8 * rb];
    for (b, o) in out.chunks_exact_mut(ts).enumerate() {
        unpack_block(ty, &group[b * X8 * ts..][..X8 * ts], j % X8, o);
    }
}

/// Rows `j0..j0 + out.len() / k` of an interleaved matrix, dequantized
/// (embedding lookups and the exact path's tiles): the values the
/// row-major blocks give.
pub fn dequantize_rows_x8(ty: QuantType, bytes: &[u8], k: usize, j0: usize, out: &mut [f32]) {
    let bs = ty.block_size();
    let mut blk = [0u8; 64];
    let blk = &mut blk[..ty.type_size()];
    for (j, row) in out.chunks_exact_mut(k).enumerate() {
        let group = &bytes[(j0 + j) / X8 * X8 * ty.row_bytes(k)..];
        for (b, y) in row.chunks_exact_mut(bs).enumerate() {
            let src = &group[b * x8_block_bytes(ty)..][..x8_block_bytes(ty)];
            unpack_block(ty, src, (j0 + j) % X8, blk);
            dequantize_block(ty, blk, y);
        }
    }
}

/// The portable path: each group's rows unpacked and dotted as row-major
/// blocks. `out[i * ldo + j]` for the groups in `w` and the rows of `x`.
///
/// # Safety
/// `dst` must address `x.rows() x (w.len() / row_bytes)` outputs at stride
/// `ldo`, written by no one else.
pub(crate) unsafe fn tile_scalar(
    ty: QuantType,
    w: &[u8],
    k: usize,
    x: &Q8Rows,
    dst: *mut f32,
    ldo: usize,
) {
    let rb = ty.row_bytes(k);
    let mut row = vec![0u8; rb];
    for j in 0..w.len() / rb {
        unpack_row(ty, w, k, j, &mut row);
        for i in 0..x.rows() {
            // SAFETY: (i, j) is inside the caller's output block.
            unsafe { *dst.add(i * ldo + j) = dot_scalar::dot_row(ty, &row, x.row(i)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacking_moves_bytes_and_dequantizes_to_the_same_rows() {
        for ty in QuantType::ALL {
            let (rows, k): (usize, usize) = (16, 96);
            if !k.is_multiple_of(ty.block_size()) {
                continue;
            }
            let bytes: Vec<u8> = (0..rows * ty.row_bytes(k))
                .map(|i| (i * 7 % 251) as u8)
                .collect();
            let Some(packed) = repack_x8(ty, &bytes, rows, k) else {
                assert!(!has_x8(ty), "{ty}");
                continue;
            };
            assert!(has_x8(ty));
            assert_ne!(packed, bytes, "{ty}: nothing moved");
            let mut sorted = (packed.clone(), bytes.clone());
            sorted.0.sort_unstable();
            sorted.1.sort_unstable();
            assert_eq!(sorted.0, sorted.1, "{ty}: bytes lost or made up");
            let mut want = vec![0f32; rows * k];
            super::super::dequantize_row(ty, &bytes, &mut want);
            // Every row range, whole or inside a group.
            for (j0, n) in [(0, rows), (3, 1), (5, 6), (8, 8), (15, 1)] {
                let mut got = vec![0f32; n * k];
                dequantize_rows_x8(ty, &packed, k, j0, &mut got);
                let want = &want[j0 * k..(j0 + n) * k];
                assert!(
                    got.iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ty}: rows {j0}..{}",
                    j0 + n
                );
            }
        }
        // Not whole groups: left row-major.
        assert!(repack_x8(QuantType::Q4_0, &[0; 7 * 18], 7, 32).is_none());
    }
}
