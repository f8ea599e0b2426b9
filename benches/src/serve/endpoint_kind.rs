//! Which OpenAI API a bench endpoint speaks: what the request body holds
//! and where each streamed chunk carries its text.

/// Which OpenAI API the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// `/v1/completions`: `prompt`, `max_tokens`, chunks carry `choices[0].text`.
    Completions,
    /// `/v1/chat/completions`: `messages`, chunks carry `choices[0].delta.content`.
    ChatCompletions,
}

impl EndpointKind {
    /// vLLM's backend name for this endpoint (`--backend openai|openai-chat`).
    pub fn backend_name(self) -> &'static str {
        match self {
            EndpointKind::Completions => "openai",
            EndpointKind::ChatCompletions => "openai-chat",
        }
    }

    /// Chat when the path ends with `chat/completions`, else completions.
    pub fn from_endpoint(endpoint: &str) -> Self {
        if endpoint.trim_end_matches('/').ends_with("chat/completions") {
            EndpointKind::ChatCompletions
        } else {
            EndpointKind::Completions
        }
    }
}
