//! Collects the engine's deltas into OpenAI choices and usage.
//!
//! A request with P prompts and `n` samples has P * n choices; the choice of
//! sample `s` of prompt `p` has index `p * n + s`, as in vLLM and OpenAI.

use pagoda_engine::{RequestOutput, StopReason, TokenLogprobs};

use crate::protocol::common::{StopReasonValue, Usage};
use crate::request_tracker::finish_reason_str;

pub fn choice_index(prompt_idx: usize, n: usize, sample_idx: usize) -> usize {
    prompt_idx * n + sample_idx
}

pub fn stop_reason_value(reason: &StopReason) -> StopReasonValue {
    match reason {
        StopReason::Text(s) => StopReasonValue::Text(s.clone()),
        StopReason::Token(id) => StopReasonValue::Token(*id),
    }
}

/// Token counts over all prompts of a request.
#[derive(Debug, Clone, Default)]
pub struct UsageCounter {
    /// Per prompt: (prompt tokens, of which served from the prefix cache).
    prompts: Vec<(usize, usize)>,
    completion_tokens: usize,
}

impl UsageCounter {
    pub fn new(num_prompts: usize) -> Self {
        Self {
            prompts: vec![(0, 0); num_prompts],
            completion_tokens: 0,
        }
    }

    pub fn observe(&mut self, prompt_idx: usize, out: &RequestOutput) {
        if let Some(p) = self.prompts.get_mut(prompt_idx) {
            p.0 = out.num_prompt_tokens;
            p.1 = p.1.max(out.num_cached_tokens);
        }
        self.completion_tokens += out.outputs.iter().map(|d| d.token_ids.len()).sum::<usize>();
    }

    /// Prompt tokens count once per prompt, whatever `n`.
    pub fn usage(&self) -> Usage {
        let prompt: usize = self.prompts.iter().map(|p| p.0).sum();
        let cached: usize = self.prompts.iter().map(|p| p.1).sum();
        Usage::new(prompt, self.completion_tokens, cached)
    }
}

/// Everything one choice produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChoiceState {
    pub text: String,
    pub logprobs: Vec<TokenLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReasonValue>,
}

/// The choices and usage of a non-streaming request.
#[derive(Debug, Clone)]
pub struct ChoiceCollector {
    n: usize,
    pub choices: Vec<ChoiceState>,
    pub usage: UsageCounter,
    /// Per prompt: the engine's prompt logprobs, when they were asked for.
    pub prompt_logprobs: Vec<Option<Vec<Option<TokenLogprobs>>>>,
}

impl ChoiceCollector {
    pub fn new(num_prompts: usize, n: usize) -> Self {
        Self {
            n,
            choices: vec![ChoiceState::default(); num_prompts * n],
            usage: UsageCounter::new(num_prompts),
            prompt_logprobs: vec![None; num_prompts],
        }
    }

    pub fn add(&mut self, prompt_idx: usize, mut out: RequestOutput) {
        self.usage.observe(prompt_idx, &out);
        if let (Some(lps), Some(slot)) = (
            out.prompt_logprobs.take(),
            self.prompt_logprobs.get_mut(prompt_idx),
        ) {
            *slot = Some(lps);
        }
        for d in out.outputs {
            let Some(c) = self
                .choices
                .get_mut(choice_index(prompt_idx, self.n, d.index))
            else {
                continue;
            };
            c.text.push_str(&d.text);
            if let Some(lps) = d.logprobs {
                c.logprobs.extend(lps);
            }
            if let Some(r) = &d.finish_reason {
                c.finish_reason = Some(finish_reason_str(r));
            }
            if let Some(r) = &d.stop_reason {
                c.stop_reason = Some(stop_reason_value(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagoda_engine::{CompletionDelta, FinishReason};

    fn delta(
        index: usize,
        ids: &[u32],
        text: &str,
        finish: Option<FinishReason>,
    ) -> CompletionDelta {
        CompletionDelta {
            index,
            token_ids: ids.to_vec(),
            text: text.into(),
            logprobs: None,
            finish_reason: finish,
            stop_reason: None,
        }
    }

    fn output(prompt_tokens: usize, cached: usize, outputs: Vec<CompletionDelta>) -> RequestOutput {
        RequestOutput {
            request_id: pagoda_engine::ParentRequestId::new(1),
            num_prompt_tokens: prompt_tokens,
            num_cached_tokens: cached,
            prompt_logprobs: None,
            outputs,
            finished: false,
            metrics: None,
        }
    }

    #[test]
    fn choices_are_indexed_by_prompt_then_sample() {
        let mut c = ChoiceCollector::new(2, 2);
        c.add(
            1,
            output(
                3,
                0,
                vec![delta(1, &[5], "x", None), delta(0, &[6], "y", None)],
            ),
        );
        c.add(
            0,
            output(
                4,
                2,
                vec![delta(0, &[7, 8], "ab", Some(FinishReason::Length))],
            ),
        );
        c.add(
            1,
            output(3, 0, vec![delta(1, &[9], "z", Some(FinishReason::Stop))]),
        );
        assert_eq!(c.choices[0].text, "ab");
        assert_eq!(c.choices[0].finish_reason, Some("length"));
        assert_eq!(c.choices[2].text, "y");
        assert_eq!(c.choices[3].text, "xz");
        assert_eq!(c.choices[3].finish_reason, Some("stop"));
        let u = c.usage.usage();
        assert_eq!(u.prompt_tokens, 7);
        assert_eq!(u.completion_tokens, 5);
        assert_eq!(u.total_tokens, 12);
        assert_eq!(u.prompt_tokens_details.cached_tokens, 2);
    }

    #[test]
    fn out_of_range_sample_is_ignored_not_a_panic() {
        let mut c = ChoiceCollector::new(1, 1);
        c.add(0, output(1, 0, vec![delta(5, &[1], "q", None)]));
        assert_eq!(c.choices[0].text, "");
        assert_eq!(
            stop_reason_value(&StopReason::Token(3)),
            StopReasonValue::Token(3)
        );
    }
}
