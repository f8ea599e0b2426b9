//! `/v1/chat/completions`: OpenAI's chat API with vLLM's extras.

use serde::{Deserialize, Serialize};

use crate::json_body::WithSampling;
use crate::request_fields::Endpoint;
use crate::sampling::SamplingRequest;

use super::common::{ChatMessage, PromptLogprobs, StopReasonValue, StreamOptions, Usage};
use super::tools::{ChatTool, DeltaToolCall, ToolCall, ToolChoice};

/// A chat completions request, read with
/// [`SampledJson`](crate::json_body::SampledJson). Fields it does not
/// declare are held to [`crate::request_fields`]'s table.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// Deprecated by OpenAI in favour of `max_completion_tokens`; both work.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Whether to return logprobs of the output tokens.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// How many alternatives per token (0..=20); needs `logprobs: true`.
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
    /// Functions the model may call, rendered by the chat template.
    #[serde(default)]
    pub tools: Option<Vec<ChatTool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// False: at most one call per choice.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    // vLLM extras.
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Leave the final message open for the model to continue (HF's and
    /// vLLM's); `add_generation_prompt` then defaults to false.
    #[serde(default)]
    pub continue_final_message: Option<bool>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub cache_salt: Option<String>,
    /// The sampling fields shared with completions, filled by `SampledJson`.
    #[serde(skip)]
    pub sampling: SamplingRequest,
}

impl WithSampling for ChatCompletionRequest {
    const ENDPOINT: Endpoint = Endpoint::ChatCompletions;

    fn sampling_mut(&mut self) -> &mut SamplingRequest {
        &mut self.sampling
    }
}

/// One alternative token in chat logprobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// One generated token in chat logprobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// OpenAI's chat logprobs: `{"content": [...], "refusal": null}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Option<Vec<ChatTokenLogprob>>,
}

/// `content` is null when the message is only tool calls; `tool_calls`
/// is always present (`[]` without calls), as vLLM writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponseMessage {
    pub role: &'static str,
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReasonValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// vLLM's `prompt_logprobs` of the rendered prompt (null unless asked for).
    pub prompt_logprobs: Option<PromptLogprobs>,
}

/// The delta of a chunk: `role` only in a choice's first chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<DeltaToolCall>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReasonValue>,
}

/// One SSE chunk; `usage` as in completions chunks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

pub const CHAT_COMPLETION: &str = "chat.completion";
pub const CHAT_COMPLETION_CHUNK: &str = "chat.completion.chunk";
pub const ASSISTANT: &str = "assistant";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parses() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model": "m", "messages": [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_completion_tokens": 5, "logprobs": true, "top_logprobs": 2,
                "stop": ["x"], "tools": [], "tool_choice": "none"}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].content.as_deref(), Some("hi"));
        assert_eq!(r.max_completion_tokens, Some(5));
        assert_eq!(r.tools, Some(vec![]));
        assert_eq!(r.tool_choice, Some(ToolChoice::None));
        let r: ChatCompletionRequest = crate::json_body::parse_sampled_json(
            br#"{"messages": [], "logprobs": true, "top_logprobs": 2, "stop": ["x"]}"#,
        )
        .unwrap();
        assert_eq!((r.logprobs, r.top_logprobs), (Some(true), Some(2)));
        assert_eq!(r.sampling.stop, Some(vec!["x".to_string()]));
        assert_eq!(r.sampling.logprobs, None);
        assert!(serde_json::from_str::<ChatCompletionRequest>(r#"{"model": "m"}"#).is_err());
        assert!(serde_json::from_str::<ChatCompletionRequest>(r#"{"messages": "hi"}"#).is_err());
    }

    #[test]
    fn first_chunk_carries_role_and_empty_content() {
        let chunk = ChatCompletionChunk {
            id: "chatcmpl-1".into(),
            object: CHAT_COMPLETION_CHUNK,
            created: 1,
            model: "m".into(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some(ASSISTANT),
                    content: Some(String::new()),
                    tool_calls: None,
                },
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            }],
            usage: None,
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v["choices"][0]["delta"]["content"], "");
        let empty = serde_json::to_value(ChatDelta::default()).unwrap();
        assert_eq!(empty, serde_json::json!({}));
    }
}
