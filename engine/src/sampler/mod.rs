//! Picks one token per row of logits: processors, then greedy argmax or
//! temperature / min-p / top-k / top-p sampling from the request's own
//! random stream, so a seeded request samples the same tokens whatever it
//! is batched with. Logprobs are those of the raw distribution, as vLLM
//! reports by default.

pub mod logits_processors;
mod logprobs;
pub mod sampling_row;
mod top_k_top_p;

pub use logits_processors::ProcessorContext;
pub use logprobs::{logsumexp, top_logprobs};
pub use sampling_row::{PenaltyRow, SamplingRow};

use crate::outputs::TokenLogprobs;
use crate::sampling_params::SamplingParams;
use rand::rngs::StdRng;
use rand::Rng;

/// One sampled token and, when asked, its logprobs.
#[derive(Debug, Clone)]
pub struct Sampled {
    pub token_id: u32,
    pub logprobs: Option<TokenLogprobs>,
}

/// Index of the largest value; the first on ties, as torch.argmax.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Samples one token from `raw` (left untouched) for one sequence, applying
/// the processors one by one: the reference `SamplingRow::sample` is tested
/// against (the engine samples through `SamplingRow`).
#[cfg(test)]
pub(crate) fn sample_row(raw: &[f32], ctx: &ProcessorContext, rng: &mut StdRng) -> Sampled {
    let params = ctx.params;
    if params.is_greedy() && logits_processors::is_noop(ctx) {
        let token_id = argmax(raw);
        let logprobs = params.logprobs.map(|k| top_logprobs(raw, token_id, k));
        return Sampled { token_id, logprobs };
    }
    let mut logits = raw.to_vec();
    logits_processors::apply_all(&mut logits, ctx);
    let token_id = if params.is_greedy() {
        argmax(&logits)
    } else {
        sample_scaled(
            &mut logits,
            params.temperature,
            params.top_k,
            params.top_p,
            params.min_p,
            Draw::next(params, rng),
        )
    };
    let logprobs = params.logprobs.map(|k| top_logprobs(raw, token_id, k));
    Sampled { token_id, logprobs }
}

/// The randomness of one sampled token, taken from the request's stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Draw {
    /// A uniform in [0, 1) for the CDF walk (unseeded requests; what the
    /// device kernel runs).
    Uniform(f32),
    /// The key of an exponential race (seeded requests: reproducible when
    /// the logits are recomputed, see `top_k_top_p::sample_race`).
    Race(u64),
}

impl Draw {
    /// One draw from `rng` for a non-greedy token of a request with `params`.
    pub fn next(params: &SamplingParams, rng: &mut StdRng) -> Self {
        if params.seed.is_some() {
            Draw::Race(rng.random())
        } else {
            Draw::Uniform(rng.random())
        }
    }
}

/// Temperature-scales `logits` in place, then draws one token under
/// min-p / top-k / top-p (a non-greedy row).
pub fn sample_scaled(
    logits: &mut [f32],
    temperature: f32,
    top_k: i32,
    top_p: f32,
    min_p: f32,
    draw: Draw,
) -> u32 {
    let inv_t = 1.0 / temperature;
    logits.iter_mut().for_each(|l| *l *= inv_t);
    match draw {
        Draw::Uniform(u) => top_k_top_p::sample(logits, top_k, top_p, min_p, u),
        Draw::Race(key) => top_k_top_p::sample_race(logits, top_k, top_p, min_p, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling_params::SamplingParams;
    use rand::SeedableRng;

    fn ctx(params: &SamplingParams) -> ProcessorContext<'_> {
        ProcessorContext {
            params,
            prompt_token_ids: &[],
            output_token_ids: &[],
            stop_ids: &[],
        }
    }

    #[test]
    fn greedy_takes_argmax_first_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        let p = SamplingParams::greedy(1);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(sample_row(&[0.0, 2.0, 1.0], &ctx(&p), &mut rng).token_id, 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_the_distribution() {
        let p = SamplingParams {
            temperature: 1.0,
            ..Default::default()
        };
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..4000)
                .map(|_| sample_row(&logits, &ctx(&p), &mut rng).token_id)
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(!a.contains(&2), "a token of probability 0 was sampled");
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "P(1) = {ones}, expected 0.75");
    }

    #[test]
    fn logprobs_come_from_the_raw_distribution() {
        let p = SamplingParams {
            temperature: 0.0,
            logprobs: Some(2),
            repetition_penalty: 1.5,
            ..Default::default()
        };
        let raw = [1.0f32, 2.0, 3.0];
        let mut rng = StdRng::seed_from_u64(0);
        let s = sample_row(&raw, &ctx(&p), &mut rng);
        let lp = s.logprobs.unwrap();
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
        assert_eq!(lp.token_id, 2);
        assert_eq!(lp.rank, 1);
        assert!((lp.logprob - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(lp.top.len(), 2);
        assert_eq!(lp.top[1].0, 1);
    }
}
