//! Random HF checkpoints (config.json + model.safetensors) of shapes no
//! golden fixture has, for comparing two Pagoda backends on one model (the
//! CPU backend is the reference: it matches HF transformers on the golden
//! fixtures). Weights are seeded normals, bf16, scaled so greedy decoding
//! has clear margins; RMSNorm gains are drawn around 0 for Gemma (which
//! stores `w` for `1 + w`) and around 1 otherwise.

use std::path::{Path, PathBuf};

use half::bf16;
use pagoda_engine::config::ModelConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{serialize_to_file, Dtype, TensorView};

/// Writes `config_json` and random bf16 weights for every tensor it names
/// into a fresh folder `name` under the temp dir; returns the folder.
pub fn write_random_checkpoint(name: &str, config_json: &str, seed: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagoda-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json).unwrap();
    let config = ModelConfig::from_hf_json_str(config_json).unwrap();
    let gemma = config.variant.gemma_norms;
    let mut rng = StdRng::seed_from_u64(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = config
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (mean, std) = match () {
                _ if name.ends_with("norm.weight") => (if gemma { 0.0 } else { 1.0 }, 0.3),
                _ if name.contains("embed_tokens") => {
                    (0.0, 1.0 / (config.hidden_size as f32).sqrt())
                }
                _ => (0.0, 1.5 / (*shape.last().unwrap() as f32).sqrt()),
            };
            let bytes = (0..n)
                .flat_map(|_| bf16::from_f32(mean + std * normal(&mut rng)).to_le_bytes())
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, bytes)| {
        let view = TensorView::new(Dtype::BF16, shape.clone(), bytes).unwrap();
        (name.clone(), view)
    });
    serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = 1.0 - rng.random::<f32>();
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Removes a folder made by [`write_random_checkpoint`].
pub fn remove(dir: &Path) {
    std::fs::remove_dir_all(dir).ok();
}
