//! The step boundary between the engine and the model runner, typed: what
//! each scheduled request needs from the step's logits going in, and what
//! comes back (vLLM's `ModelRunnerOutput`). The runner decides where the
//! sampling happens; the engine never sees logits unless it asked for
//! every row (prompt logprobs).

use crate::sampler::{Sampled, SamplingRow};
use rayon::prelude::*;
use std::ops::Range;

/// What one scheduled request needs from the step's logits.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsNeed {
    /// Nothing: a prefill chunk that does not end its prompt.
    None,
    /// A token sampled from its last row.
    Sample(SamplingRow),
    /// Every new token's logits on the host (prompt logprobs), and a token
    /// sampled from the last row when this chunk ends the prompt.
    AllRows(Option<SamplingRow>),
}

impl LogitsNeed {
    /// The sampling row, if the request samples this step.
    pub fn sampling_row(&self) -> Option<&SamplingRow> {
        match self {
            LogitsNeed::Sample(row) | LogitsNeed::AllRows(Some(row)) => Some(row),
            LogitsNeed::None | LogitsNeed::AllRows(None) => None,
        }
    }

    pub fn wants_all_rows(&self) -> bool {
        matches!(self, LogitsNeed::AllRows(_))
    }

    /// Whether the request needs a logits row at all.
    pub fn has_rows(&self) -> bool {
        !matches!(self, LogitsNeed::None)
    }
}

/// Logits copied to the host: `[rows, vocab_size]`, and each scheduled
/// request's rows in it (empty for requests that did not ask for them).
#[derive(Debug, Default)]
pub struct HostLogits {
    pub vocab_size: usize,
    pub logits: Vec<f32>,
    pub rows: Vec<Range<usize>>,
}

impl HostLogits {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.logits[r * self.vocab_size..(r + 1) * self.vocab_size]
    }
}

/// What one step gives back.
#[derive(Debug, Default)]
pub struct ModelRunnerOutput {
    /// Per scheduled request, in order: its token when it sampled.
    pub sampled: Vec<Option<Sampled>>,
    /// The rows of `LogitsNeed::AllRows` requests, when any asked.
    pub prompt_logits: Option<HostLogits>,
}

/// Samples, in parallel, every request that samples from its last row of
/// `logits` (steps whose logits came to the host).
pub fn sample_on_host(logits: &HostLogits, needs: &[LogitsNeed]) -> Vec<Option<Sampled>> {
    needs
        .par_iter()
        .zip(logits.rows.par_iter())
        .map(|(need, rows)| {
            let row = need.sampling_row()?;
            (rows.start < rows.end).then(|| row.sample(logits.row(rows.end - 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sampling_takes_each_request_last_row() {
        let logits = HostLogits {
            vocab_size: 3,
            // rows: 0 [.., argmax 2], 1 [argmax 0], 2 [argmax 1]
            logits: vec![0.0, 1.0, 2.0, 5.0, 1.0, 0.0, 0.0, 3.0, 1.0],
            rows: vec![0..2, 2..2, 2..3],
        };
        let needs = vec![
            LogitsNeed::AllRows(Some(SamplingRow::greedy())),
            LogitsNeed::None,
            LogitsNeed::Sample(SamplingRow::greedy()),
        ];
        let tokens: Vec<Option<u32>> = sample_on_host(&logits, &needs)
            .into_iter()
            .map(|s| s.map(|s| s.token_id))
            .collect();
        assert_eq!(tokens, vec![Some(0), None, Some(1)]);
        // A prompt chunk that does not end the prompt samples nothing.
        let needs = vec![
            LogitsNeed::AllRows(None),
            LogitsNeed::None,
            LogitsNeed::None,
        ];
        assert!(sample_on_host(&logits, &needs).iter().all(Option::is_none));
    }
}
