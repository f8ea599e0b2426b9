//! The sampling fields an OpenAI request shares between completions and
//! chat, and their conversion to the engine's `SamplingParams`, refusing
//! bad values with a 400 that names the field.

use std::collections::HashMap;

use pagoda_engine::SamplingParams;
use serde::Deserialize;

use crate::error::ApiError;
use crate::protocol::common::deserialize_stop;
use crate::protocol::structured_outputs::{
    ConstraintFields, ResponseFormat, StructuredOutputsRequest,
};
use serde_json::Value;

/// The sampling fields common to completions and chat requests, read from
/// the request body by [`crate::json_body::SampledJson`] (why not
/// `#[serde(flatten)]`: see there). Every field of the body is held to
/// [`crate::request_fields`]'s table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SamplingRequest {
    /// Set by the endpoint, not read from the body: completions default it
    /// to 16, chat also takes `max_completion_tokens`. `None`: up to the
    /// context limit.
    #[serde(skip)]
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    #[serde(deserialize_with = "deserialize_stop")]
    pub stop: Option<Vec<String>>,
    pub seed: Option<u64>,
    /// Top logprobs per generated token, when asked for. Set by the
    /// endpoint: completions send a number, chat a bool and `top_logprobs`.
    #[serde(skip)]
    pub logprobs: Option<u32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string key) -> bias added to its logit.
    pub logit_bias: Option<HashMap<String, f32>>,
    // vLLM extras.
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub min_tokens: Option<u32>,
    pub ignore_eos: Option<bool>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub skip_special_tokens: Option<bool>,
    pub include_stop_str_in_output: Option<bool>,
    /// vLLM's: top logprobs for every prompt token (non-streaming only).
    pub prompt_logprobs: Option<u32>,
    // Structured outputs (both endpoints, as vLLM): see `protocol::structured_outputs`.
    pub response_format: Option<ResponseFormat>,
    pub structured_outputs: Option<StructuredOutputsRequest>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<String>,
    pub guided_choice: Option<Vec<String>>,
    pub guided_grammar: Option<String>,
    /// vLLM's older top-level form of `structured_outputs.structural_tag`.
    pub structural_tag: Option<Value>,
}

impl SamplingRequest {
    /// The engine's parameters; `vocab_size` bounds token ids.
    pub fn to_sampling_params(&self, vocab_size: usize) -> Result<SamplingParams, ApiError> {
        let d = SamplingParams::default();
        let logit_bias = match &self.logit_bias {
            None => HashMap::new(),
            Some(map) => parse_logit_bias(map)?,
        };
        let params = SamplingParams {
            n: self.n.map_or(d.n, |n| n as usize),
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: self.top_k.unwrap_or(d.top_k),
            min_p: self.min_p.unwrap_or(d.min_p),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            seed: self.seed,
            stop: self.stop.clone().unwrap_or_default(),
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            include_stop_str_in_output: self
                .include_stop_str_in_output
                .unwrap_or(d.include_stop_str_in_output),
            ignore_eos: self.ignore_eos.unwrap_or(d.ignore_eos),
            max_tokens: self.max_tokens.map(|m| m as usize),
            min_tokens: self.min_tokens.map_or(d.min_tokens, |m| m as usize),
            logprobs: self.logprobs.map(|k| k as usize),
            prompt_logprobs: self.prompt_logprobs.map(|k| k as usize),
            logit_bias,
            skip_special_tokens: self.skip_special_tokens.unwrap_or(d.skip_special_tokens),
            structured_outputs: self.constraints().to_params()?,
        };
        params
            .validate(vocab_size)
            .map_err(|e| ApiError::invalid_param(e.param, e.message))?;
        Ok(params)
    }
}

impl SamplingRequest {
    /// The field the output constraint comes from, if any (a grammar that
    /// does not compile is a 400 naming it).
    pub fn constraint_param(&self) -> Result<Option<String>, ApiError> {
        Ok(self.constraints().param()?.map(str::to_string))
    }

    fn constraints(&self) -> ConstraintFields<'_> {
        ConstraintFields {
            response_format: self.response_format.as_ref(),
            structured_outputs: self.structured_outputs.as_ref(),
            guided_json: self.guided_json.as_ref(),
            guided_regex: self.guided_regex.as_ref(),
            guided_choice: self.guided_choice.as_ref(),
            guided_grammar: self.guided_grammar.as_ref(),
            structural_tag: self.structural_tag.as_ref(),
        }
    }
}

/// OpenAI sends `{"<token id>": bias}` with string keys.
fn parse_logit_bias(map: &HashMap<String, f32>) -> Result<HashMap<u32, f32>, ApiError> {
    map.iter()
        .map(|(k, &v)| {
            k.trim().parse::<u32>().map(|id| (id, v)).map_err(|_| {
                ApiError::invalid_param(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got `{k}`."),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_request_gives_engine_defaults_without_token_limit() {
        let p = SamplingRequest::default().to_sampling_params(100).unwrap();
        let d = SamplingParams::default();
        assert_eq!(p.max_tokens, None);
        assert_eq!(
            SamplingParams {
                max_tokens: d.max_tokens,
                ..p
            },
            d
        );
    }

    #[test]
    fn fields_are_carried_over() {
        let r = SamplingRequest {
            max_tokens: Some(5),
            temperature: Some(0.0),
            n: Some(3),
            stop: Some(vec!["x".into()]),
            seed: Some(9),
            logprobs: Some(2),
            logit_bias: Some(HashMap::from([("7".to_string(), -100.0)])),
            top_k: Some(4),
            ignore_eos: Some(true),
            stop_token_ids: Some(vec![1]),
            ..Default::default()
        };
        let p = r.to_sampling_params(100).unwrap();
        assert_eq!(p.max_tokens, Some(5));
        assert_eq!(p.n, 3);
        assert_eq!(p.stop, vec!["x".to_string()]);
        assert_eq!(p.seed, Some(9));
        assert_eq!(p.logprobs, Some(2));
        assert_eq!(p.logit_bias[&7], -100.0);
        assert_eq!(p.top_k, 4);
        assert!(p.ignore_eos && p.is_greedy());
        assert_eq!(p.stop_token_ids, vec![1]);
    }

    #[test]
    fn body_fields_are_read_and_endpoint_fields_left_alone() {
        let r: SamplingRequest = serde_json::from_str(
            r#"{"prompt": "x", "max_tokens": 5, "logprobs": true, "temperature": 0,
                "n": 2, "stop": "\n", "logit_bias": {"5": -100}, "top_k": 3,
                "unknown": [1, {"a": 2}]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            SamplingRequest {
                temperature: Some(0.0),
                n: Some(2),
                stop: Some(vec!["\n".into()]),
                logit_bias: Some(HashMap::from([("5".to_string(), -100.0)])),
                top_k: Some(3),
                ..Default::default()
            }
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                SamplingRequest {
                    temperature: Some(-1.0),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingRequest {
                    n: Some(0),
                    ..Default::default()
                },
                "n",
            ),
            (
                SamplingRequest {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                SamplingRequest {
                    logprobs: Some(50),
                    ..Default::default()
                },
                "logprobs",
            ),
            (
                SamplingRequest {
                    logit_bias: Some(HashMap::from([("abc".to_string(), 1.0)])),
                    ..Default::default()
                },
                "logit_bias",
            ),
            (
                SamplingRequest {
                    logit_bias: Some(HashMap::from([("1000".to_string(), 1.0)])),
                    ..Default::default()
                },
                "logit_bias",
            ),
            (
                SamplingRequest {
                    stop_token_ids: Some(vec![100]),
                    ..Default::default()
                },
                "stop_token_ids",
            ),
        ];
        for (r, field) in cases {
            let e = r.to_sampling_params(100).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.param.as_deref(), Some(field), "{}", e.message);
        }
    }
}
