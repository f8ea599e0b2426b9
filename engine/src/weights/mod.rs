//! Model weights: where a checkpoint's tensors come from, whatever the format.
//!
//! `open_model` turns a path (an HF folder, a `.gguf` file, or a folder with
//! one `.gguf`) into a `ModelSource`: the `ModelConfig` and a `WeightSource`
//! that hands out tensors by their HF name (`model.layers.3.self_attn.q_proj.weight`),
//! row-major, linear weights as [out_features, in_features], in the format
//! the file stores them (safetensors f32/f16/bf16; GGUF f32/f16/bf16 or
//! quantized blocks, kept as blocks), with llama's Q/K permutation undone.
//!
//! Loading is lazy: `open_model` maps the files and reads headers; each `get`
//! reads (and dequantizes) one tensor. Wrap the loop over `get` in a
//! `LoadProgress` (`ModelSource::progress`) for a progress bar on long loads.

mod dummy;
mod dummy_quant;
pub mod error;
mod ggml_type;
pub mod gguf;
mod gguf_config;
pub mod gguf_dequant;
mod gguf_gemma;
mod gguf_moe;
pub mod gguf_names;
mod gguf_phi3;
mod gguf_split;
mod gguf_weights;
#[doc(hidden)]
pub mod gguf_writer;
mod progress;
pub mod safetensors;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
pub use pagoda_kernels::cpu::QuantType;

use crate::config::ModelConfig;

pub use self::safetensors::SafetensorsWeights;
pub use dummy::DummyWeights;
pub use dummy_quant::DummyQuantization;
pub use error::LoadError;
pub use gguf::{GgmlType, GgufFile, GgufTensorInfo, GgufValue};
pub use gguf_weights::GgufWeights;
pub use progress::LoadProgress;

/// A tensor's values in the format the checkpoint stores them in.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// GGUF blocks, row-major: every row is whole blocks of `ty` (checked
    /// where the tensor is made).
    Quant {
        ty: QuantType,
        bytes: Vec<u8>,
    },
}

impl TensorData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::Quant { ty, bytes } => bytes.len() / ty.type_size() * ty.block_size(),
        }
    }

    /// Bytes the values take in this format.
    pub fn bytes(&self) -> usize {
        match self {
            TensorData::F32(v) => 4 * v.len(),
            TensorData::F16(v) => 2 * v.len(),
            TensorData::BF16(v) => 2 * v.len(),
            TensorData::Quant { bytes, .. } => bytes.len(),
        }
    }

    /// The format's name, as llama.cpp prints it (F32, BF16, Q4_K, ...).
    pub fn format_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F16(_) => "F16",
            TensorData::BF16(_) => "BF16",
            TensorData::Quant { ty, .. } => ty.name(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whole blocks of `ty` as f32.
fn dequantize_blocks(ty: QuantType, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / ty.type_size() * ty.block_size()];
    pagoda_kernels::cpu::quant::dequantize_row(ty, bytes, &mut out);
    out
}

/// A tensor in host memory, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The values as f32 (exact for f16 and bf16; blocks dequantized as
    /// llama.cpp does).
    pub fn to_f32(self) -> Vec<f32> {
        use half::slice::HalfFloatSliceExt;
        match self.data {
            TensorData::F32(v) => v,
            TensorData::F16(v) => v.to_f32_vec(),
            TensorData::BF16(v) => v.to_f32_vec(),
            TensorData::Quant { ty, bytes } => dequantize_blocks(ty, &bytes),
        }
    }

    /// Stacks tensors along their first dimension: one matrix for what a
    /// checkpoint stores apart (q/k/v, gate/up). Parts of one format keep
    /// it (blocks stack as bytes: rows are whole blocks); mixed formats are
    /// widened to f32.
    pub fn concat_rows(parts: Vec<HostTensor>) -> HostTensor {
        let cols: usize = parts[0].shape[1..].iter().product();
        let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
        let mut shape = parts[0].shape.clone();
        shape[0] = rows;
        let first = &parts[0].data;
        let same = |p: &HostTensor| match (&p.data, first) {
            (TensorData::Quant { ty: a, .. }, TensorData::Quant { ty: b, .. }) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        };
        let data = if !parts.iter().all(same) {
            let mut out = Vec::with_capacity(rows * cols);
            for p in parts {
                out.extend(p.to_f32());
            }
            TensorData::F32(out)
        } else {
            let mut it = parts.into_iter().map(|p| p.data);
            let mut acc = it.next().expect("at least one part");
            for d in it {
                match (&mut acc, d) {
                    (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
                    (TensorData::F16(a), TensorData::F16(b)) => a.extend(b),
                    (TensorData::BF16(a), TensorData::BF16(b)) => a.extend(b),
                    (TensorData::Quant { bytes: a, .. }, TensorData::Quant { bytes: b, .. }) => {
                        a.extend(b)
                    }
                    _ => unreachable!("formats checked equal above"),
                }
            }
            acc
        };
        HostTensor { shape, data }
    }

    /// The values as bf16 (f32 and f16 rounded to nearest even).
    pub fn to_bf16(self) -> Vec<bf16> {
        use half::slice::HalfFloatSliceExt;
        match self.data {
            TensorData::BF16(v) => v,
            TensorData::F32(v) => {
                let mut out = vec![bf16::ZERO; v.len()];
                out.convert_from_f32_slice(&v);
                out
            }
            TensorData::F16(v) => v.iter().map(|x| bf16::from_f32(x.to_f32())).collect(),
            TensorData::Quant { ty, bytes } => {
                let v = dequantize_blocks(ty, &bytes);
                let mut out = vec![bf16::ZERO; v.len()];
                out.convert_from_f32_slice(&v);
                out
            }
        }
    }

    /// The values as f16 (f32 and bf16 rounded to nearest even).
    pub fn to_f16(self) -> Vec<f16> {
        use half::slice::HalfFloatSliceExt;
        match self.data {
            TensorData::F16(v) => v,
            TensorData::F32(v) => {
                let mut out = vec![f16::ZERO; v.len()];
                out.convert_from_f32_slice(&v);
                out
            }
            TensorData::BF16(v) => v.iter().map(|x| f16::from_f32(x.to_f32())).collect(),
            TensorData::Quant { ty, bytes } => {
                let v = dequantize_blocks(ty, &bytes);
                let mut out = vec![f16::ZERO; v.len()];
                out.convert_from_f32_slice(&v);
                out
            }
        }
    }
}

/// Hands out a checkpoint's tensors by HF name.
pub trait WeightSource: Send + Sync {
    /// Reads tensor `name` and checks that its shape is `shape`; the error
    /// names the file and the tensor (and expected and found shapes).
    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor, LoadError>;

    /// Whether the checkpoint has tensor `name` (e.g. `lm_head.weight`,
    /// absent when the embeddings are tied).
    fn contains(&self, name: &str) -> bool;

    /// The HF names of every tensor the checkpoint has, sorted.
    fn tensor_names(&self) -> Vec<String>;

    /// One line for logs: format, files, tensor count.
    fn describe(&self) -> String;
}

/// `--load-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoadFormat {
    /// Safetensors for an HF folder, GGUF for a .gguf file.
    #[default]
    Auto,
    /// The config only (config.json or GGUF metadata); random weights.
    Dummy,
}

/// Everything `open_model` found at a path.
pub struct ModelSource {
    pub config: ModelConfig,
    pub weights: Box<dyn WeightSource>,
    /// The parsed GGUF file, when the model is one (its metadata holds the
    /// tokenizer and chat template).
    pub gguf: Option<Arc<GgufFile>>,
    /// The HF folder (tokenizer.json, tokenizer_config.json live there);
    /// None for a GGUF model.
    pub dir: Option<PathBuf>,
    /// The model name as given (what the server reports in /v1/models).
    pub name: String,
}

impl ModelSource {
    /// A progress bar sized for every tensor the config names; tick it per
    /// `get`. Shown on stderr only when it is a terminal and the load has
    /// taken over a second.
    pub fn progress(&self) -> LoadProgress {
        LoadProgress::new(self.config.tensor_shapes().len() as u64)
    }
}

impl std::fmt::Debug for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSource")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("weights", &self.weights.describe())
            .field("dir", &self.dir)
            .finish()
    }
}

/// Opens a model: `path` is an HF folder (config.json + safetensors), a
/// `.gguf` file (the first shard of a split one), or a folder holding
/// exactly one `.gguf` or the shards of one split model (and no config.json).
pub fn open_model(path: &Path, format: LoadFormat) -> Result<ModelSource, LoadError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
    if meta.is_file() {
        if !is_gguf(path) {
            return Err(LoadError::config(
                path,
                "expected an HF model folder (with config.json) or a .gguf file",
            ));
        }
        return open_gguf(path, format, name);
    }
    if path.join("config.json").is_file() {
        let config = ModelConfig::from_hf_dir(path)?;
        let weights: Box<dyn WeightSource> = match format {
            LoadFormat::Auto => Box::new(SafetensorsWeights::open_dir(path)?),
            LoadFormat::Dummy => Box::new(DummyWeights::new(config.clone(), 0)),
        };
        return Ok(ModelSource {
            config,
            weights,
            gguf: None,
            dir: Some(path.to_path_buf()),
            name,
        });
    }
    let ggufs = list_ggufs(path)?;
    if let Some(first) = gguf_split::first_shard_of(&ggufs) {
        return open_gguf(first, format, name);
    }
    match ggufs.as_slice() {
        [one] => open_gguf(one, format, name),
        [] => Err(LoadError::NotFound {
            path: path.join("config.json"),
            what: "the folder has neither config.json nor a .gguf file".into(),
        }),
        many => Err(LoadError::config(
            path,
            format!(
                "the folder holds {} .gguf files ({}); pass the one to load",
                many.len(),
                many.iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn list_ggufs(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))? {
        let p = entry.map_err(|e| LoadError::io(dir, e))?.path();
        if p.is_file() && is_gguf(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn open_gguf(path: &Path, format: LoadFormat, name: String) -> Result<ModelSource, LoadError> {
    let file = Arc::new(gguf_split::open_model(path)?);
    let config = ModelConfig::from_gguf(&file)?;
    let weights: Box<dyn WeightSource> = match format {
        LoadFormat::Auto => Box::new(GgufWeights::new(file.clone(), &config)),
        LoadFormat::Dummy => Box::new(DummyWeights::new(config.clone(), 0)),
    };
    Ok(ModelSource {
        config,
        weights,
        gguf: Some(file),
        dir: None,
        name,
    })
}

/// The shape check every `WeightSource::get` does.
pub(crate) fn check_shape(
    path: &Path,
    tensor: &str,
    expected: &[usize],
    found: &[usize],
) -> Result<(), LoadError> {
    if expected != found {
        return Err(LoadError::ShapeMismatch {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let t = HostTensor {
            shape: vec![3],
            data: TensorData::F32(vec![1.0, -2.5, 1.0 + 1.0 / 256.0]),
        };
        assert_eq!(t.numel(), 3);
        let b = t.clone().to_bf16();
        assert_eq!(b[1].to_f32(), -2.5);
        // 1 + 2^-8 is a tie between bf16 1.0 and 1.0078125: rounds to even (1.0).
        assert_eq!(b[2].to_f32(), 1.0);
        let back = HostTensor {
            shape: vec![3],
            data: TensorData::BF16(b),
        }
        .to_f32();
        assert_eq!(back, vec![1.0, -2.5, 1.0]);
        let h = t.to_f16();
        assert_eq!(h[2].to_f32(), 1.0 + 1.0 / 256.0);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pagoda-open-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn open_model_path_errors() {
        let missing = std::env::temp_dir().join("pagoda-definitely-missing-model");
        let err = open_model(&missing, LoadFormat::Auto).unwrap_err();
        assert!(matches!(err, LoadError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("pagoda-definitely-missing-model"));

        let empty = temp_dir("empty");
        let msg = open_model(&empty, LoadFormat::Auto)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("neither config.json nor a .gguf"), "{msg}");

        std::fs::write(empty.join("a.gguf"), b"GGUF").unwrap();
        std::fs::write(empty.join("b.gguf"), b"GGUF").unwrap();
        let msg = open_model(&empty, LoadFormat::Auto)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a.gguf, b.gguf"), "{msg}");

        let txt = empty.join("model.bin");
        std::fs::write(&txt, b"x").unwrap();
        let msg = open_model(&txt, LoadFormat::Auto).unwrap_err().to_string();
        assert!(msg.contains("model.bin"), "{msg}");

        // A truncated .gguf alone in a folder: an error naming the file.
        std::fs::remove_file(empty.join("b.gguf")).unwrap();
        let msg = open_model(&empty, LoadFormat::Auto)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a.gguf") && msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn dummy_format_needs_only_config_json() {
        let dir = temp_dir("dummy");
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 32,
                "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 100, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let err = open_model(&dir, LoadFormat::Auto).unwrap_err();
        assert!(matches!(err, LoadError::NotFound { .. }), "{err}");
        let src = open_model(&dir, LoadFormat::Dummy).unwrap();
        assert_eq!(src.dir.as_deref(), Some(dir.as_path()));
        assert!(src.weights.contains("model.layers.1.self_attn.q_proj.bias"));
        assert!(!src.weights.contains("lm_head.weight"));
        let t = src
            .weights
            .get("model.layers.0.self_attn.q_proj.weight", &[32, 32])
            .unwrap();
        assert_eq!(t.shape, vec![32, 32]);
        let err = src
            .weights
            .get("model.layers.0.self_attn.k_proj.weight", &[32, 32])
            .unwrap_err();
        assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err}");
    }
}
