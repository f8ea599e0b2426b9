//! One row's sampling work in a form a backend can run without the host's
//! request state: parameters, the uniform draw, and the logits processors
//! flattened into per-token edits. This is what lets a backend sample where
//! the logits are (only token ids and requested logprobs come back).

use super::logits_processors::{is_noop, ProcessorContext};
use super::{argmax, sample_scaled, top_logprobs, Draw, Sampled};
use crate::structured_output::PendingMask;
use rand::rngs::StdRng;
use std::collections::BTreeMap;

/// vLLM's penalties for one row.
#[derive(Debug, Clone, PartialEq)]
pub struct PenaltyRow {
    pub repetition: f32,
    pub frequency: f32,
    pub presence: f32,
    /// Every distinct prompt or output token with its count in the output
    /// (repetition applies to all of them, frequency / presence where the
    /// count is positive).
    pub entries: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingRow {
    /// Below 1e-5: greedy.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    /// The row's draw from its request's stream (`Uniform(0.0)` when
    /// greedy): a uniform, or a race key for seeded requests, which the
    /// CUDA backend samples on the host.
    pub draw: Draw,
    /// Top logprobs wanted (the sampled token's always comes with them).
    pub logprobs: Option<usize>,
    /// Logit bias summed per id, and -inf for stop ids masked by
    /// min_tokens; ids unique and ascending.
    pub bias: Vec<(u32, f32)>,
    pub penalties: Option<PenaltyRow>,
    /// The structured-output grammar's token mask, being computed while
    /// the forward pass runs; applied first, to the raw logits too (as
    /// vLLM applies its bitmask before the sampler, so logprobs are of
    /// the allowed tokens).
    pub grammar_mask: Option<PendingMask>,
}

impl SamplingRow {
    /// A greedy row with no processors (for rows whose token is not used).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            draw: Draw::Uniform(0.0),
            logprobs: None,
            bias: Vec::new(),
            penalties: None,
            grammar_mask: None,
        }
    }

    /// The row of one sampling request. Draws the request's uniform exactly
    /// when the host sampler would (non-greedy rows), so a seeded request
    /// gives the same tokens wherever it is sampled.
    pub fn new(ctx: &ProcessorContext, rng: &mut StdRng) -> Self {
        let p = ctx.params;
        let mut row = Self {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            draw: Draw::Uniform(0.0),
            logprobs: p.logprobs,
            bias: Vec::new(),
            penalties: None,
            grammar_mask: None,
        };
        if !is_noop(ctx) {
            let mut bias: BTreeMap<u32, f32> = BTreeMap::new();
            for (&id, &b) in &p.logit_bias {
                *bias.entry(id).or_insert(0.0) += b;
            }
            if ctx.output_token_ids.len() < p.min_tokens {
                for &id in ctx.stop_ids {
                    bias.insert(id, f32::NEG_INFINITY);
                }
            }
            row.bias = bias.into_iter().collect();
            if p.has_penalties() {
                let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
                for &t in ctx.prompt_token_ids {
                    counts.entry(t).or_insert(0);
                }
                for &t in ctx.output_token_ids {
                    *counts.entry(t).or_insert(0) += 1;
                }
                row.penalties = Some(PenaltyRow {
                    repetition: p.repetition_penalty,
                    frequency: p.frequency_penalty,
                    presence: p.presence_penalty,
                    entries: counts.into_iter().collect(),
                });
            }
        }
        if !p.is_greedy() {
            row.draw = Draw::next(p, rng);
        }
        row
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-5
    }

    /// Applies the bias, the masks and the penalties to `logits` (one row),
    /// in the host processors' order and arithmetic.
    pub fn apply_edits(&self, logits: &mut [f32]) {
        for &(id, b) in &self.bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = if b == f32::NEG_INFINITY { b } else { *l + b };
            }
        }
        if let Some(p) = &self.penalties {
            for &(id, count) in &p.entries {
                let Some(l) = logits.get_mut(id as usize) else {
                    continue;
                };
                if p.repetition != 1.0 {
                    *l = if *l > 0.0 {
                        *l / p.repetition
                    } else {
                        *l * p.repetition
                    };
                }
                if count > 0 && (p.frequency != 0.0 || p.presence != 0.0) {
                    *l -= p.frequency * count as f32 + p.presence;
                }
            }
        }
    }

    /// Samples this row from `raw` on the host (what a backend that holds
    /// its logits in host memory runs); logprobs are of `raw`.
    pub fn sample(&self, raw: &[f32]) -> Sampled {
        let masked;
        let raw = match &self.grammar_mask {
            Some(pending) => {
                let mut l = raw.to_vec();
                pending.wait().apply(&mut l);
                masked = l;
                &masked[..]
            }
            None => raw,
        };
        let token_id = if self.bias.is_empty() && self.penalties.is_none() {
            if self.is_greedy() {
                argmax(raw)
            } else {
                sample_scaled(
                    &mut raw.to_vec(),
                    self.temperature,
                    self.top_k,
                    self.top_p,
                    self.min_p,
                    self.draw,
                )
            }
        } else {
            let mut l = raw.to_vec();
            self.apply_edits(&mut l);
            if self.is_greedy() {
                argmax(&l)
            } else {
                sample_scaled(
                    &mut l,
                    self.temperature,
                    self.top_k,
                    self.top_p,
                    self.min_p,
                    self.draw,
                )
            }
        };
        let logprobs = self.logprobs.map(|k| top_logprobs(raw, token_id, k));
        Sampled { token_id, logprobs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::sample_row;
    use crate::sampling_params::SamplingParams;
    use rand::{Rng, SeedableRng};

    fn logits(seed: u32) -> Vec<f32> {
        (0..64u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 125.0 - 4.0)
            .collect()
    }

    /// The row's sample equals the host sampler's, for every processor,
    /// greedy and random, with the same draws from the same streams.
    #[test]
    fn matches_the_host_sampler() {
        let base = SamplingParams::greedy(8);
        let mut cases = vec![base.clone()];
        let mut p = base.clone();
        p.temperature = 0.8;
        p.top_k = 10;
        p.top_p = 0.9;
        p.logprobs = Some(3);
        cases.push(p.clone());
        p.logit_bias = [(5u32, 3.0f32), (9, -100.0)].into_iter().collect();
        cases.push(p.clone());
        p.repetition_penalty = 1.3;
        p.frequency_penalty = 0.4;
        p.presence_penalty = 0.2;
        cases.push(p.clone());
        p.min_tokens = 4;
        cases.push(p.clone());
        // A seeded request draws a race key instead of a uniform.
        let mut seeded = p.clone();
        seeded.seed = Some(3);
        cases.push(seeded);
        p.temperature = 0.0;
        cases.push(p);
        let prompt = [1u32, 5, 7, 7, 40];
        let output = [5u32, 9, 9, 12];
        let stop_ids = [12u32, 13];
        for (i, params) in cases.iter().enumerate() {
            for seed in 0..20u64 {
                let ctx = ProcessorContext {
                    params,
                    prompt_token_ids: &prompt,
                    output_token_ids: &output,
                    stop_ids: &stop_ids,
                };
                let raw = logits(seed as u32 * 7 + i as u32);
                let mut host_rng = StdRng::seed_from_u64(seed);
                let mut row_rng = StdRng::seed_from_u64(seed);
                let want = sample_row(&raw, &ctx, &mut host_rng);
                let got = SamplingRow::new(&ctx, &mut row_rng).sample(&raw);
                assert_eq!(got.token_id, want.token_id, "case {i} seed {seed}");
                assert_eq!(got.logprobs, want.logprobs, "case {i} seed {seed}");
                assert_eq!(
                    host_rng.random::<u64>(),
                    row_rng.random::<u64>(),
                    "the streams advanced alike"
                );
            }
        }
    }

    #[test]
    fn edits_merge_bias_and_masks_and_count_output_tokens() {
        let mut p = SamplingParams::greedy(8);
        p.logit_bias = [(3u32, 1.5f32)].into_iter().collect();
        p.min_tokens = 5;
        p.presence_penalty = 0.5;
        let ctx = ProcessorContext {
            params: &p,
            prompt_token_ids: &[2, 3],
            output_token_ids: &[3, 3, 4],
            stop_ids: &[4],
        };
        let row = SamplingRow::new(&ctx, &mut StdRng::seed_from_u64(0));
        assert_eq!(row.bias, vec![(3, 1.5), (4, f32::NEG_INFINITY)]);
        let pen = row.penalties.unwrap();
        assert_eq!(pen.entries, vec![(2, 0), (3, 2), (4, 1)]);
        assert_eq!(row.draw, Draw::Uniform(0.0));
    }
}
