//! Errors a caller of the engine can meet. `Display` is a client-facing
//! message; `is_client_error` says whether it is the request's fault (400).

use crate::sampling_params::SamplingParamsError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidParams(SamplingParamsError),
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
    #[error("Failed to load the model: {0}")]
    Load(String),
    #[error("Device error: {0}")]
    Device(String),
    #[error("Internal engine error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The request itself is at fault (HTTP 400).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            EngineError::InvalidParams(_)
                | EngineError::PromptTooLong { .. }
                | EngineError::EmptyPrompt
                | EngineError::TokenOutOfVocab { .. }
        )
    }

    /// The request field at fault, for OpenAI's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            EngineError::InvalidParams(e) => Some(e.param),
            EngineError::PromptTooLong { .. }
            | EngineError::EmptyPrompt
            | EngineError::TokenOutOfVocab { .. } => Some("prompt"),
            _ => None,
        }
    }
}
