//! `--load-format dummy`: random weights for a config, as vLLM's dummy loader
//! has, to benchmark shapes we have no checkpoint for.
//!
//! Values are N(0, 0.02), seeded by (seed, tensor name, chunk) so they are the
//! same on every run and every thread count; RMSNorm weights (`*norm.weight`)
//! are 1 + N(0, 0.02) so activations keep their scale through the layers.
//! The dtype is the config's; with `--quantization` weight matrices are
//! random GGUF blocks instead (`dummy_quant.rs`).

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::dummy_quant::{random_blocks, DummyQuantization};
use super::{check_shape, HostTensor, LoadError, TensorData, WeightSource};
use crate::config::{DType, ModelConfig};

const STD: f32 = 0.02;
const CHUNK: usize = 1 << 14;
const ORIGIN: &str = "<dummy weights>";

pub struct DummyWeights {
    config: ModelConfig,
    seed: u64,
    shapes: HashMap<String, Vec<usize>>,
    quantization: Option<DummyQuantization>,
}

impl DummyWeights {
    pub fn new(config: ModelConfig, seed: u64) -> Self {
        let shapes = config.tensor_shapes().into_iter().collect();
        DummyWeights {
            config,
            seed,
            shapes,
            quantization: None,
        }
    }

    /// Weight matrices as random blocks of `q` (norms and biases stay float).
    pub fn with_quantization(self, q: Option<DummyQuantization>) -> Self {
        DummyWeights {
            quantization: q,
            ..self
        }
    }
}

/// FNV-1a: a hash that is the same in every build, unlike std's.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn normal_chunk(seed: u64, out: &mut [f32], offset: f32) {
    let mut rng = SmallRng::seed_from_u64(seed);
    for pair in out.chunks_mut(2) {
        // Box-Muller; 1 - u keeps the log argument in (0, 1].
        let u1: f32 = 1.0 - rng.random::<f32>();
        let u2: f32 = rng.random::<f32>();
        let r = (-2.0 * u1.ln()).sqrt() * STD;
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        pair[0] = offset + r * c;
        if let Some(second) = pair.get_mut(1) {
            *second = offset + r * s;
        }
    }
}

impl WeightSource for DummyWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor, LoadError> {
        if let Some(expected) = self.shapes.get(name) {
            check_shape(Path::new(ORIGIN), name, shape, expected)?;
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                LoadError::config(
                    Path::new(ORIGIN),
                    format!("tensor {name:?}: shape {shape:?} overflows"),
                )
            })?;
        let offset = if name.ends_with("norm.weight") {
            1.0
        } else {
            0.0
        };
        let base = self.seed ^ fnv1a(name);
        let layers = self.config.num_hidden_layers;
        if let Some(ty) = self
            .quantization
            .and_then(|q| q.type_for(name, shape, layers))
        {
            return Ok(random_blocks(ty, shape, base));
        }
        let mut values = vec![0f32; numel];
        values
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| {
                let seed = base.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                normal_chunk(seed, chunk, offset);
            });
        let t = HostTensor {
            shape: shape.to_vec(),
            data: TensorData::F32(values),
        };
        let data = match self.config.dtype {
            DType::F32 => t.data,
            DType::F16 => TensorData::F16(t.to_f16()),
            DType::BF16 => TensorData::BF16(t.to_bf16()),
        };
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shapes.keys().cloned().collect();
        names.sort();
        names
    }

    fn describe(&self) -> String {
        let format = match self.quantization {
            Some(q) => format!("{q:?} blocks"),
            None => format!("{:?}", self.config.dtype),
        };
        format!(
            "dummy weights (N(0, {STD}), seed {}, {} tensors, {format})",
            self.seed,
            self.shapes.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig::from_hf_json_str(
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
                "vocab_size": 1000, "torch_dtype": "bfloat16"}"#,
        )
        .unwrap()
    }

    #[test]
    fn seeded_small_and_deterministic() {
        let w = DummyWeights::new(config(), 7);
        let a = w.get("model.embed_tokens.weight", &[1000, 64]).unwrap();
        assert!(matches!(a.data, TensorData::BF16(_)));
        let a = a.to_f32();
        let b = w
            .get("model.embed_tokens.weight", &[1000, 64])
            .unwrap()
            .to_f32();
        assert_eq!(a, b);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3,
            "mean {mean} std {std}"
        );
        let other = DummyWeights::new(config(), 8)
            .get("model.embed_tokens.weight", &[1000, 64])
            .unwrap()
            .to_f32();
        assert_ne!(a, other);
        let norm = w.get("model.norm.weight", &[64]).unwrap().to_f32();
        assert!(norm.iter().all(|&x| (x - 1.0).abs() < 0.2));
        // Unknown names are served too (any name, any shape).
        assert_eq!(w.get("extra", &[3, 5]).unwrap().numel(), 15);
        assert!(w.contains("lm_head.weight") && !w.contains("extra"));
        let err = w.get("model.norm.weight", &[65]).unwrap_err();
        assert!(matches!(err, LoadError::ShapeMismatch { .. }));
    }
}
