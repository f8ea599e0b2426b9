//! `--quantization` for `--load-format dummy`: random weights stored as GGUF
//! blocks, so a model shape we have no file for (an 8B in Q4_K_M) can be
//! loaded, sized and timed as the real file would be.
//!
//! A block's quant bytes are random; its f16 scale fields are set so that
//! values stay within about ±0.05 (finite, the size of real weights): the
//! kernels and bytes are those of a real file, the numbers are noise.

use half::f16;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{HostTensor, QuantType, TensorData};

/// The block type of dummy weight matrices: one GGUF type, or llama.cpp's
/// `_M` mixes.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum DummyQuantization {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for `lm_head` and for `v_proj`
    /// and `down_proj` in a share of the layers (`use_more_bits`).
    Q4_K_M,
    /// As Q4_K_M with Q5_K.
    Q5_K_M,
}

impl DummyQuantization {
    /// The block type of tensor `name` in a model of `num_layers` layers, or
    /// `None` for tensors that stay float (norms, biases, rows that are not
    /// whole blocks).
    pub fn type_for(self, name: &str, shape: &[usize], num_layers: usize) -> Option<QuantType> {
        use DummyQuantization as D;
        use QuantType as Q;
        if shape.len() != 2 || name.contains("norm") {
            return None;
        }
        let ty = match self {
            D::Q4_0 => Q::Q4_0,
            D::Q4_1 => Q::Q4_1,
            D::Q5_0 => Q::Q5_0,
            D::Q5_1 => Q::Q5_1,
            D::Q8_0 => Q::Q8_0,
            D::Q2_K => Q::Q2_K,
            D::Q3_K => Q::Q3_K,
            D::Q4_K => Q::Q4_K,
            D::Q5_K => Q::Q5_K,
            D::Q6_K => Q::Q6_K,
            D::Q4_K_M | D::Q5_K_M => {
                let base = if self == D::Q4_K_M { Q::Q4_K } else { Q::Q5_K };
                let more_bits = |name: &str| {
                    layer_of(name).is_some_and(|i| use_more_bits(i, num_layers))
                        && (name.contains("v_proj") || name.contains("down_proj"))
                };
                if name.starts_with("lm_head") || more_bits(name) {
                    Q::Q6_K
                } else {
                    base
                }
            }
        };
        shape[1].is_multiple_of(ty.block_size()).then_some(ty)
    }
}

/// `model.layers.{i}.…` → `i`.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// llama.cpp's choice of layers that keep more bits in its `_M` mixes: the
/// first and last eighth, and every third layer between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Byte offsets of a block's f16 scale fields and the value each gets (ggml's
/// block layouts), so that dequantized values stay within about ±0.05.
fn scale_fields(ty: QuantType) -> &'static [(usize, f32)] {
    use QuantType::*;
    match ty {
        Q4_0 => &[(0, 0.05 / 8.0)],
        Q4_1 => &[(0, 0.1 / 15.0), (2, -0.05)],
        Q5_0 => &[(0, 0.05 / 16.0)],
        Q5_1 => &[(0, 0.1 / 31.0), (2, -0.05)],
        Q8_0 => &[(0, 0.05 / 127.0)],
        // d, dmin after 16 scale bytes and 64 quant bytes.
        Q2_K => &[(80, 0.05 / 45.0), (82, 0.05 / 15.0)],
        // d after hmask, quants and 12 scale bytes.
        Q3_K => &[(108, 0.05 / 128.0)],
        Q4_K | Q5_K => &[(0, 0.05 / 63.0 / 31.0), (2, 0.05 / 63.0 / 2.0)],
        // d after ql, qh and 16 scales.
        Q6_K => &[(208, 0.05 / 128.0 / 32.0)],
    }
}

/// `rows x cols` values of random blocks of `ty`, seeded.
pub fn random_blocks(ty: QuantType, shape: &[usize], seed: u64) -> HostTensor {
    let blocks = shape.iter().product::<usize>() / ty.block_size();
    let size = ty.type_size();
    let mut bytes = vec![0u8; blocks * size];
    const BLOCKS_PER_TASK: usize = 1024;
    bytes
        .par_chunks_mut(BLOCKS_PER_TASK * size)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng =
                SmallRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            rng.fill(chunk);
            for block in chunk.chunks_exact_mut(size) {
                for &(at, v) in scale_fields(ty) {
                    block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
                }
            }
        });
    HostTensor {
        shape: shape.to_vec(),
        data: TensorData::Quant { ty, bytes },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_finite_and_small() {
        for ty in QuantType::ALL {
            let t = random_blocks(ty, &[4, 512], 3);
            assert_eq!(t.data.bytes(), 4 * ty.row_bytes(512), "{ty}");
            let v = t.to_f32();
            assert_eq!(v.len(), 4 * 512);
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                max.is_finite() && max < 0.2 && max > 1e-3,
                "{ty}: max |w| {max}"
            );
        }
    }

    #[test]
    fn q4_k_m_keeps_more_bits_where_llama_cpp_does() {
        let q = DummyQuantization::Q4_K_M;
        let ty = |name: &str| q.type_for(name, &[4096, 4096], 32);
        assert_eq!(
            ty("model.layers.0.self_attn.v_proj.weight"),
            Some(QuantType::Q6_K)
        );
        assert_eq!(
            ty("model.layers.5.self_attn.v_proj.weight"),
            Some(QuantType::Q4_K)
        );
        assert_eq!(
            ty("model.layers.6.mlp.down_proj.weight"),
            Some(QuantType::Q6_K)
        );
        assert_eq!(
            ty("model.layers.7.mlp.down_proj.weight"),
            Some(QuantType::Q4_K)
        );
        assert_eq!(
            ty("model.layers.31.mlp.down_proj.weight"),
            Some(QuantType::Q6_K)
        );
        assert_eq!(
            ty("model.layers.6.self_attn.q_proj.weight"),
            Some(QuantType::Q4_K)
        );
        assert_eq!(ty("lm_head.weight"), Some(QuantType::Q6_K));
        assert_eq!(ty("model.embed_tokens.weight"), Some(QuantType::Q4_K));
        assert_eq!(q.type_for("model.norm.weight", &[4096], 32), None);
        // Rows that are not whole blocks stay float.
        assert_eq!(q.type_for("x.weight", &[8, 100], 32), None);
        // 16 of 32 layers (llama.cpp's count for Llama-3-8B's v_proj).
        let n = (0..32).filter(|&i| use_more_bits(i, 32)).count();
        assert_eq!(n, 16);
    }
}
