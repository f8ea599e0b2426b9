//! Dequantization of ggml tensor types to f32, bit-for-bit the values of
//! llama.cpp's reference `dequantize_row_*` (ggml-quants.c), which the `gguf`
//! Python package's `gguf/quants.py` mirrors. The block types' decoders live
//! with the kernels (`pagoda_kernels::cpu::quant`), which also decode blocks
//! kept in memory; tests/gguf_dequant.rs checks every type against vectors
//! made with gguf-py.

use half::{bf16, f16};
use rayon::prelude::*;

use pagoda_kernels::cpu::quant::dequantize_block;

use super::ggml_type::GgmlType;

/// The types `dequantize` handles, for error messages.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// Decodes one block into its values.
type BlockFn = dyn Fn(&[u8], &mut [f32]) + Sync;

/// Dequantizes `numel` values stored as `ty` in `bytes`. None when the type
/// is not supported or `bytes` is not exactly `numel` values long.
pub fn dequantize(ty: GgmlType, bytes: &[u8], numel: usize) -> Option<Vec<f32>> {
    let block_fn: Box<BlockFn> = match ty {
        GgmlType::F32 => Box::new(f32_block),
        GgmlType::F16 => Box::new(f16_block),
        GgmlType::BF16 => Box::new(bf16_block),
        other => {
            let q = other.quant_type()?;
            Box::new(move |x: &[u8], y: &mut [f32]| dequantize_block(q, x, y))
        }
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

fn f32_block(x: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
}

fn f16_block(x: &[u8], y: &mut [f32]) {
    y[0] = f16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32();
}

fn bf16_block(x: &[u8], y: &mut [f32]) {
    y[0] = bf16::from_bits(u16::from_le_bytes([x[0], x[1]])).to_f32();
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
