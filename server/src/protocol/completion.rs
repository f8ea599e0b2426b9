//! `/v1/completions`: OpenAI's legacy completions API with vLLM's extras.

use serde::{Deserialize, Serialize};

use crate::json_body::WithSampling;
use crate::request_fields::Endpoint;
use crate::sampling::SamplingRequest;

use super::common::{Prompt, PromptLogprobs, StopReasonValue, StreamOptions, Usage};

/// A completions request, read with
/// [`SampledJson`](crate::json_body::SampledJson). Fields it does not
/// declare are held to [`crate::request_fields`]'s table.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Top logprobs per token (OpenAI: 0..=5; vLLM allows up to 20).
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub best_of: Option<u32>,
    #[serde(default)]
    pub suffix: Option<String>,
    // vLLM extras.
    #[serde(default)]
    pub add_special_tokens: Option<bool>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub cache_salt: Option<String>,
    /// The sampling fields shared with chat, filled by `SampledJson`.
    #[serde(skip)]
    pub sampling: SamplingRequest,
}

impl WithSampling for CompletionRequest {
    const ENDPOINT: Endpoint = Endpoint::Completions;

    fn sampling_mut(&mut self) -> &mut SamplingRequest {
        &mut self.sampling
    }
}

/// OpenAI's completions logprobs: parallel lists, one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub text_offset: Vec<usize>,
    pub token_logprobs: Vec<Option<f32>>,
    pub tokens: Vec<String>,
    pub top_logprobs: Vec<Option<TopLogprobs>>,
}

/// One token's alternatives as a JSON object from token text to logprob,
/// most likely first (OpenAI's and vLLM's order; a sorted map would order
/// them by text). A text shared by several tokens keeps its likeliest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobs(Vec<(String, f32)>);

impl TopLogprobs {
    /// From `(text, logprob)` pairs in any order.
    pub fn new(mut entries: Vec<(String, f32)>) -> Self {
        entries.sort_by(|a, b| b.1.total_cmp(&a.1));
        // At most 21 entries: a linear look-back beats hashing copies.
        let mut kept: Vec<(String, f32)> = Vec::with_capacity(entries.len());
        for (text, logprob) in entries {
            if !kept.iter().any(|(t, _)| *t == text) {
                kept.push((text, logprob));
            }
        }
        Self(kept)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, text: &str) -> Option<f32> {
        self.0.iter().find(|(t, _)| t == text).map(|&(_, lp)| lp)
    }

    pub fn entries(&self) -> &[(String, f32)] {
        &self.0
    }
}

impl Serialize for TopLogprobs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (text, logprob) in &self.0 {
            map.serialize_entry(text, logprob)?;
        }
        map.end()
    }
}

impl CompletionLogprobs {
    pub fn extend(&mut self, other: CompletionLogprobs) {
        self.text_offset.extend(other.text_offset);
        self.token_logprobs.extend(other.token_logprobs);
        self.tokens.extend(other.tokens);
        self.top_logprobs.extend(other.top_logprobs);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReasonValue>,
    /// vLLM's `prompt_logprobs` (null unless asked for), as vLLM sends it.
    pub prompt_logprobs: Option<PromptLogprobs>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

/// One SSE chunk; `usage` is absent unless `include_usage`, then null until
/// the last chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionStreamResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

pub const TEXT_COMPLETION: &str = "text_completion";

#[cfg(test)]
mod tests {
    use super::*;

    use crate::json_body::parse_sampled_json;

    #[test]
    fn minimal_request_parses() {
        let r: CompletionRequest =
            parse_sampled_json(br#"{"model": "m", "prompt": "hi", "unknown_field": 1}"#).unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.sampling, SamplingRequest::default());
        assert!(parse_sampled_json::<CompletionRequest>(br#"{"model": "m"}"#).is_err());
    }

    #[test]
    fn full_request_parses() {
        let r: CompletionRequest = parse_sampled_json(
            br#"{"model": "m", "prompt": [[1, 2]], "max_tokens": 5, "temperature": 0, "top_p": 0.9,
                "n": 2, "stream": true, "stream_options": {"include_usage": true}, "logprobs": 3,
                "echo": false, "stop": "\n", "presence_penalty": 0.5, "frequency_penalty": 0.1,
                "logit_bias": {"5": -100}, "seed": 7, "user": "u", "top_k": 20, "min_p": 0.05,
                "repetition_penalty": 1.1, "min_tokens": 1, "ignore_eos": true,
                "stop_token_ids": [2], "skip_special_tokens": false,
                "include_stop_str_in_output": true, "priority": 1, "cache_salt": "s"}"#,
        )
        .unwrap();
        assert_eq!((r.max_tokens, r.logprobs), (Some(5), Some(3)));
        assert_eq!(r.sampling.n, Some(2));
        assert_eq!(r.sampling.stop, Some(vec!["\n".to_string()]));
        assert_eq!(r.sampling.logit_bias.unwrap()["5"], -100.0);
        assert_eq!(r.sampling.include_stop_str_in_output, Some(true));
        // Left to the endpoint, which knows its names and defaults.
        assert_eq!((r.sampling.max_tokens, r.sampling.logprobs), (None, None));
        assert_eq!(r.stream_options.unwrap().include_usage, Some(true));
    }

    #[test]
    fn chunk_usage_is_absent_null_or_set() {
        let mut chunk = CompletionStreamResponse {
            id: "cmpl-1".into(),
            object: TEXT_COMPLETION,
            created: 1,
            model: "m".into(),
            choices: vec![CompletionChoice {
                index: 0,
                text: "a".into(),
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
                prompt_logprobs: None,
            }],
            usage: None,
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert!(v.get("usage").is_none());
        assert!(v["choices"][0]["logprobs"].is_null());
        assert!(v["choices"][0]["finish_reason"].is_null());
        chunk.usage = Some(None);
        let v = serde_json::to_value(&chunk).unwrap();
        assert!(v["usage"].is_null() && v.get("usage").is_some());
        chunk.usage = Some(Some(Usage::new(1, 2, 0)));
        let v = serde_json::to_value(&chunk).unwrap();
        assert_eq!(v["usage"]["total_tokens"], 3);
    }
}
