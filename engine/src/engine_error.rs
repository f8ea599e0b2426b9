//! Errors a caller of the engine can meet. `Display` is a client-facing
//! message; `is_client_error` says whether it is the request's fault (400).
//!
//! The server-side faults (`Load`, `Device`, `Internal`) show only a short
//! context and keep what went wrong below it as their `source()`, so nothing
//! is stringified away: [`error_chain`] writes the whole chain for logs and
//! 500 bodies, and [`EngineContext`] is the one way to turn another error
//! (an `anyhow::Error` from the backend, an `io::Error`, ...) into one.

use crate::sampling_params::SamplingParamsError;
use crate::structured_output::StructuredOutputError;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidParams(SamplingParamsError),
    /// A structured-output constraint that does not compile.
    #[error("{0}")]
    InvalidStructuredOutput(StructuredOutputError),
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, your prompt has \
         {prompt_len} tokens, which leaves no room for a completion."
    )]
    PromptTooLong {
        prompt_len: usize,
        max_model_len: usize,
    },
    #[error("The prompt is empty.")]
    EmptyPrompt,
    #[error("Token id {token_id} is out of vocabulary (size {vocab_size}).")]
    TokenOutOfVocab { token_id: u32, vocab_size: usize },
    #[error("The server is overloaded: too many requests are waiting. Retry later.")]
    QueueFull,
    #[error("The engine is shutting down.")]
    Shutdown,
    #[error("Failed to load the model: {context}")]
    Load {
        context: String,
        #[source]
        cause: Option<ErrorCause>,
    },
    #[error("Device error: {context}")]
    Device {
        context: String,
        #[source]
        cause: Option<ErrorCause>,
    },
    #[error("Internal engine error: {context}")]
    Internal {
        context: String,
        #[source]
        cause: Option<ErrorCause>,
    },
}

impl EngineError {
    /// A load failure with no underlying error (a bad flag, a check).
    pub fn load(context: impl Into<String>) -> Self {
        EngineError::Load {
            context: context.into(),
            cause: None,
        }
    }

    /// A device failure with no underlying error.
    pub fn device(context: impl Into<String>) -> Self {
        EngineError::Device {
            context: context.into(),
            cause: None,
        }
    }

    /// An engine bug or broken invariant with no underlying error.
    pub fn internal(context: impl Into<String>) -> Self {
        EngineError::Internal {
            context: context.into(),
            cause: None,
        }
    }

    /// The request itself is at fault (HTTP 400).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            EngineError::InvalidParams(_)
                | EngineError::InvalidStructuredOutput(_)
                | EngineError::PromptTooLong { .. }
                | EngineError::EmptyPrompt
                | EngineError::TokenOutOfVocab { .. }
        )
    }

    /// The request field at fault, for OpenAI's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            EngineError::InvalidParams(e) => Some(e.param),
            EngineError::InvalidStructuredOutput(_) => Some("structured_outputs"),
            EngineError::PromptTooLong { .. }
            | EngineError::EmptyPrompt
            | EngineError::TokenOutOfVocab { .. } => Some("prompt"),
            _ => None,
        }
    }
}

/// The error below a `Load`, `Device` or `Internal` error. Shared behind an
/// `Arc` so `EngineError` stays `Clone` (one failure may end many streams);
/// two causes are equal only when they are the same error.
#[derive(Clone)]
pub struct ErrorCause(Arc<dyn Error + Send + Sync>);

impl ErrorCause {
    pub fn new(e: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self(Arc::from(e.into()))
    }
}

impl fmt::Debug for ErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

/// Transparent: the chain goes on with the wrapped error's own source.
impl Error for ErrorCause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for ErrorCause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Turns any error (an `anyhow::Error`, an `io::Error`, a cudarc error) into
/// an [`EngineError`] that keeps it as its source, under a short context.
pub trait EngineContext<T> {
    /// `EngineError::Load`: the model or its runner could not be set up.
    fn load_context(self, context: impl Into<String>) -> Result<T, EngineError>;
    /// `EngineError::Device`: the device failed while running.
    fn device_context(self, context: impl Into<String>) -> Result<T, EngineError>;
    /// `EngineError::Internal`: a fault of the engine itself.
    fn internal_context(self, context: impl Into<String>) -> Result<T, EngineError>;
}

impl<T, E: Into<Box<dyn Error + Send + Sync>>> EngineContext<T> for Result<T, E> {
    fn load_context(self, context: impl Into<String>) -> Result<T, EngineError> {
        self.map_err(|e| EngineError::Load {
            context: context.into(),
            cause: Some(ErrorCause::new(e)),
        })
    }

    fn device_context(self, context: impl Into<String>) -> Result<T, EngineError> {
        self.map_err(|e| EngineError::Device {
            context: context.into(),
            cause: Some(ErrorCause::new(e)),
        })
    }

    fn internal_context(self, context: impl Into<String>) -> Result<T, EngineError> {
        self.map_err(|e| EngineError::Internal {
            context: context.into(),
            cause: Some(ErrorCause::new(e)),
        })
    }
}

/// The error and every cause under it, joined with ": " (as anyhow's `{:#}`
/// writes them), for logs and 500 messages that must say what went wrong.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing_file() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "config.json is missing")
    }

    #[test]
    fn load_error_keeps_its_cause() {
        let err = Err::<(), _>(missing_file())
            .load_context("cannot open the model folder")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to load the model: cannot open the model folder"
        );
        let source = err.source().expect("the io::Error is the source");
        assert_eq!(source.to_string(), "config.json is missing");
        assert_eq!(
            error_chain(&err),
            "Failed to load the model: cannot open the model folder: config.json is missing"
        );
    }

    #[test]
    fn anyhow_chain_survives_the_conversion() {
        let inner = anyhow::Error::new(missing_file()).context("CUDA alloc of 8 MiB");
        let err = Err::<(), _>(inner)
            .device_context("the step failed")
            .unwrap_err();
        assert!(err.source().is_some());
        assert_eq!(
            error_chain(&err),
            "Device error: the step failed: CUDA alloc of 8 MiB: config.json is missing"
        );
    }

    #[test]
    fn clones_compare_equal_and_stay_send_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        let err = Err::<(), _>(missing_file())
            .internal_context("x")
            .unwrap_err();
        send_sync(&err);
        assert_eq!(err.clone(), err);
        assert!(EngineError::internal("x").source().is_none());
        assert_ne!(err, EngineError::internal("x"));
    }
}
