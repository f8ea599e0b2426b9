//! What the engine streams back to a caller: one `RequestOutput` per step in
//! which the request made progress, holding only the new tokens and text.

use crate::request_ids::ParentRequestId;
pub use pagoda_scheduler::FinishReason;

/// The top logprobs of one position, highest first, plus the chosen token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The sampled (or prompt) token and its logprob.
    pub token_id: u32,
    pub logprob: f32,
    /// 1-based rank of `token_id` in the distribution.
    pub rank: usize,
    /// The top-k `(token_id, logprob)` pairs, highest first.
    pub top: Vec<(u32, f32)>,
}

/// Why a finished sequence stopped, beyond the reason class (vLLM's `stop_reason`).
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// A stop string matched.
    Text(String),
    /// A `stop_token_ids` entry was sampled.
    Token(u32),
}

/// The progress of one sequence (one of the `n` samples) in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionDelta {
    /// Which of the `n` samples this is.
    pub index: usize,
    pub token_ids: Vec<u32>,
    pub text: String,
    /// One entry per token in `token_ids`, when logprobs were asked for.
    pub logprobs: Option<Vec<TokenLogprobs>>,
    pub finish_reason: Option<FinishReason>,
    pub stop_reason: Option<StopReason>,
}

/// Per-request timings, in seconds, sent with the final output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestMetrics {
    /// From arrival to first scheduling.
    pub queue_time: f64,
    /// From arrival to the first generated token.
    pub time_to_first_token: f64,
    /// From arrival to the end.
    pub e2e_latency: f64,
}

/// One streamed update of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub request_id: ParentRequestId,
    pub num_prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache (OpenAI `cached_tokens`).
    pub num_cached_tokens: usize,
    /// Logprobs of the prompt tokens (the first has none), sent once.
    pub prompt_logprobs: Option<Vec<Option<TokenLogprobs>>>,
    pub outputs: Vec<CompletionDelta>,
    /// True on the last output of the request (every sample finished).
    pub finished: bool,
    /// Set on the last output.
    pub metrics: Option<RequestMetrics>,
}
