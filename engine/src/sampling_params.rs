//! Per-request sampling parameters, with vLLM's field names and defaults.
//!
//! `validate` is the single place where bad values are refused; its message
//! is what the server returns in a 400 body, so it names the field.

use std::collections::HashMap;

use crate::structured_output::StructuredOutputsParams;

/// Largest `logprobs` / `prompt_logprobs` a request may ask for (vLLM's default cap).
pub const MAX_LOGPROBS: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Number of independent samples (parallel sampling).
    pub n: usize,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 or -1 disables top-k.
    pub top_k: i32,
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub repetition_penalty: f32,
    /// Makes this request's samples reproducible whatever it is batched with.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub include_stop_str_in_output: bool,
    pub ignore_eos: bool,
    /// `None`: up to the model's context length.
    pub max_tokens: Option<usize>,
    pub min_tokens: usize,
    /// Top-k logprobs per generated token (the sampled token is always added).
    pub logprobs: Option<usize>,
    pub prompt_logprobs: Option<usize>,
    pub logit_bias: HashMap<u32, f32>,
    pub skip_special_tokens: bool,
    /// The output's grammar (JSON schema, regex, choice, Lark), if any.
    pub structured_outputs: Option<StructuredOutputsParams>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            include_stop_str_in_output: false,
            ignore_eos: false,
            max_tokens: Some(16),
            min_tokens: 0,
            logprobs: None,
            prompt_logprobs: None,
            logit_bias: HashMap::new(),
            skip_special_tokens: true,
            structured_outputs: None,
        }
    }
}

/// A refused parameter: the field name and a message for the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SamplingParamsError {
    pub param: &'static str,
    pub message: String,
}

fn refuse(param: &'static str, message: String) -> Result<(), SamplingParamsError> {
    Err(SamplingParamsError { param, message })
}

impl SamplingParams {
    /// Greedy decoding of `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens: Some(max_tokens),
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-5
    }

    /// Checks every field; `vocab_size` bounds token ids in logit_bias and stop_token_ids.
    pub fn validate(&self, vocab_size: usize) -> Result<(), SamplingParamsError> {
        if self.n == 0 || self.n > 128 {
            return refuse("n", format!("n must be between 1 and 128, got {}.", self.n));
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 || self.temperature > 100.0 {
            return refuse(
                "temperature",
                format!("temperature must be in [0, 100], got {}.", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return refuse(
                "top_p",
                format!("top_p must be in (0, 1], got {}.", self.top_p),
            );
        }
        if self.top_k < -1 {
            return refuse(
                "top_k",
                format!(
                    "top_k must be -1 (disable), 0 (disable) or at least 1, got {}.",
                    self.top_k
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return refuse(
                "min_p",
                format!("min_p must be in [0, 1], got {}.", self.min_p),
            );
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return refuse(name, format!("{name} must be in [-2, 2], got {v}."));
            }
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 2.0) {
            return refuse(
                "repetition_penalty",
                format!(
                    "repetition_penalty must be in (0, 2], got {}.",
                    self.repetition_penalty
                ),
            );
        }
        if self.max_tokens == Some(0) {
            return refuse("max_tokens", "max_tokens must be at least 1, got 0.".into());
        }
        if let Some(max) = self.max_tokens {
            if self.min_tokens > max {
                return refuse(
                    "min_tokens",
                    format!(
                        "min_tokens ({}) must not exceed max_tokens ({max}).",
                        self.min_tokens
                    ),
                );
            }
        }
        for (name, k) in [
            ("logprobs", self.logprobs),
            ("prompt_logprobs", self.prompt_logprobs),
        ] {
            if let Some(k) = k {
                if k > MAX_LOGPROBS {
                    return refuse(
                        name,
                        format!("{name} must be at most {MAX_LOGPROBS}, got {k}."),
                    );
                }
            }
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return refuse("stop", "stop strings must not be empty.".into());
        }
        if let Some(&id) = self
            .stop_token_ids
            .iter()
            .find(|&&id| id as usize >= vocab_size)
        {
            return refuse(
                "stop_token_ids",
                format!(
                    "stop_token_ids has token id {id}, outside the vocabulary of {vocab_size}."
                ),
            );
        }
        for (&id, &bias) in &self.logit_bias {
            if id as usize >= vocab_size {
                return refuse(
                    "logit_bias",
                    format!(
                        "logit_bias has token id {id}, outside the vocabulary of {vocab_size}."
                    ),
                );
            }
            if !(-100.0..=100.0).contains(&bias) {
                return refuse(
                    "logit_bias",
                    format!("logit_bias values must be in [-100, 100], got {bias} for token {id}."),
                );
            }
        }
        Ok(())
    }

    /// Whether any logits processor other than temperature/top-k/top-p/min-p applies.
    pub fn has_penalties(&self) -> bool {
        self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
            || self.repetition_penalty != 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_vllm() {
        let p = SamplingParams::default();
        assert!(p.validate(100).is_ok());
        assert_eq!(p.n, 1);
        assert_eq!(p.temperature, 1.0);
        assert_eq!(p.max_tokens, Some(16));
        assert!(p.skip_special_tokens);
        assert!(!p.is_greedy());
        assert!(SamplingParams::greedy(4).is_greedy());
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams {
                    n: 0,
                    ..Default::default()
                },
                "n",
            ),
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_k: -2,
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingParams {
                    min_p: 1.5,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    presence_penalty: 3.0,
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplingParams {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                SamplingParams {
                    min_tokens: 20,
                    max_tokens: Some(5),
                    ..Default::default()
                },
                "min_tokens",
            ),
            (
                SamplingParams {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "logprobs",
            ),
            (
                SamplingParams {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "stop",
            ),
            (
                SamplingParams {
                    stop_token_ids: vec![100],
                    ..Default::default()
                },
                "stop_token_ids",
            ),
            (
                SamplingParams {
                    logit_bias: HashMap::from([(5, 200.0)]),
                    ..Default::default()
                },
                "logit_bias",
            ),
        ];
        for (p, field) in cases {
            let err = p.validate(100).unwrap_err();
            assert_eq!(err.param, field, "{err}");
        }
    }
}
