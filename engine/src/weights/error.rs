//! The one error type of model loading. Every variant names the file it is
//! about (and the tensor, where there is one), because "shape mismatch" without
//! a file and a tensor name is useless to someone holding a folder of shards.

use std::path::{Path, PathBuf};

#[derive(thiserror::Error, Debug)]
pub enum LoadError {
    #[error("{}: not found ({what})", path.display())]
    NotFound { path: PathBuf, what: String },

    #[error("{}: cannot read", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{}: invalid model config: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    #[error("{}: unsupported architecture {arch:?} (supported: {supported})", path.display())]
    UnsupportedArchitecture {
        path: PathBuf,
        arch: String,
        supported: &'static str,
    },

    #[error("{}: tensor {tensor:?} has unsupported dtype {dtype} (supported: F32, F16, BF16)", path.display())]
    UnsupportedDType {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },

    #[error("{}: tensor {tensor:?} has ggml type {ggml_type}, which Pagoda cannot dequantize (supported: {supported})", path.display())]
    UnsupportedQuant {
        path: PathBuf,
        tensor: String,
        ggml_type: String,
        supported: &'static str,
    },

    #[error("{}: corrupt or truncated GGUF file: {msg}", path.display())]
    Gguf { path: PathBuf, msg: String },

    #[error("{}: corrupt or truncated safetensors file: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },

    #[error("{}: tensor {tensor:?} not found", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    #[error("{}: tensor {tensor:?} has shape {found:?}, the model config expects {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

impl LoadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return LoadError::NotFound {
                path: path.to_path_buf(),
                what: "no such file or directory".into(),
            };
        }
        LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn config(path: &Path, msg: impl Into<String>) -> Self {
        LoadError::Config {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub(crate) fn gguf(path: &Path, msg: impl Into<String>) -> Self {
        LoadError::Gguf {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
