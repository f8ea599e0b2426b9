//! vLLM's `/tokenize` and `/detokenize`.

use serde::{Deserialize, Serialize};

use super::common::ChatMessage;
use super::tools::ChatTool;

/// Either `prompt` (text) or `messages` (rendered with the chat template).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    /// Rendered into the chat template with `messages`, as vLLM does.
    #[serde(default)]
    pub tools: Option<Vec<ChatTool>>,
    /// Default: true for `prompt`, false for `messages` (the template adds BOS).
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
    /// Leave the final message open for the model to continue (HF's and
    /// vLLM's); `add_generation_prompt` then defaults to false.
    #[serde(default)]
    pub continue_final_message: Option<bool>,
    #[serde(default)]
    pub return_token_strs: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_strs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r: TokenizeRequest = serde_json::from_str(r#"{"prompt": "hi"}"#).unwrap();
        assert_eq!(r.prompt.as_deref(), Some("hi"));
        let r: TokenizeRequest =
            serde_json::from_str(r#"{"messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(r.messages.unwrap().len(), 1);
        let r: DetokenizeRequest = serde_json::from_str(r#"{"tokens": [1, 2]}"#).unwrap();
        assert_eq!(r.tokens, vec![1, 2]);
        assert!(serde_json::from_str::<DetokenizeRequest>(r#"{"tokens": [-1]}"#).is_err());
    }
}
