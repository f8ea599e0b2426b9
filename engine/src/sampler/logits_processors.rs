//! Logit edits applied before sampling, in vLLM's order: logit bias and
//! min_tokens masking, then repetition / frequency / presence penalties.
//!
//! The engine applies them through `SamplingRow` (merged into per-id
//! edits); the `apply_*` functions here, one processor at a time, are the
//! test oracle those rows are held to.

use crate::sampling_params::SamplingParams;
#[cfg(test)]
use std::collections::HashMap;

/// Everything a row's processors need besides its logits.
pub struct ProcessorContext<'a> {
    pub params: &'a SamplingParams,
    pub prompt_token_ids: &'a [u32],
    pub output_token_ids: &'a [u32],
    /// Tokens that end generation (EOS ids and stop_token_ids): masked until min_tokens.
    pub stop_ids: &'a [u32],
}

#[cfg(test)]
pub(crate) fn apply_logit_bias(logits: &mut [f32], bias: &HashMap<u32, f32>) {
    for (&id, &b) in bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += b;
        }
    }
}

/// Forbids ending before `min_tokens` tokens were generated.
#[cfg(test)]
pub(crate) fn apply_min_tokens(logits: &mut [f32], ctx: &ProcessorContext) {
    if ctx.output_token_ids.len() < ctx.params.min_tokens {
        for &id in ctx.stop_ids {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// vLLM's penalties: repetition over prompt and output (divide positive
/// logits, multiply negative ones), frequency and presence over the output.
#[cfg(test)]
pub(crate) fn apply_penalties(logits: &mut [f32], ctx: &ProcessorContext) {
    let p = ctx.params;
    if p.repetition_penalty != 1.0 {
        let rp = p.repetition_penalty;
        let mut seen = vec![false; logits.len()];
        for &id in ctx.prompt_token_ids.iter().chain(ctx.output_token_ids) {
            let i = id as usize;
            if i < logits.len() && !seen[i] {
                seen[i] = true;
                logits[i] = if logits[i] > 0.0 {
                    logits[i] / rp
                } else {
                    logits[i] * rp
                };
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &id in ctx.output_token_ids {
            *counts.entry(id).or_default() += 1;
        }
        for (id, c) in counts {
            if let Some(l) = logits.get_mut(id as usize) {
                *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
}

/// Whether `apply_all` would leave the logits unchanged.
pub fn is_noop(ctx: &ProcessorContext) -> bool {
    let min_tokens_active =
        ctx.output_token_ids.len() < ctx.params.min_tokens && !ctx.stop_ids.is_empty();
    ctx.params.logit_bias.is_empty() && !min_tokens_active && !ctx.params.has_penalties()
}

/// All processors, in order.
#[cfg(test)]
pub(crate) fn apply_all(logits: &mut [f32], ctx: &ProcessorContext) {
    if !ctx.params.logit_bias.is_empty() {
        apply_logit_bias(logits, &ctx.params.logit_bias);
    }
    apply_min_tokens(logits, ctx);
    if ctx.params.has_penalties() {
        apply_penalties(logits, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        params: &'a SamplingParams,
        prompt: &'a [u32],
        output: &'a [u32],
    ) -> ProcessorContext<'a> {
        ProcessorContext {
            params,
            prompt_token_ids: prompt,
            output_token_ids: output,
            stop_ids: &[3],
        }
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_once() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut logits = vec![4.0, -4.0, 4.0, 1.0];
        apply_penalties(&mut logits, &ctx(&params, &[0, 0, 1], &[0]));
        assert_eq!(logits, vec![2.0, -8.0, 4.0, 1.0]);
    }

    #[test]
    fn frequency_and_presence_count_output_only() {
        let params = SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: 1.0,
            ..Default::default()
        };
        let mut logits = vec![0.0; 4];
        apply_penalties(&mut logits, &ctx(&params, &[1, 1, 1], &[2, 2, 0]));
        assert_eq!(logits, vec![-1.5, 0.0, -2.0, 0.0]);
    }

    #[test]
    fn min_tokens_masks_stop_ids_until_reached() {
        let params = SamplingParams {
            min_tokens: 2,
            ..Default::default()
        };
        let mut logits = vec![0.0; 4];
        apply_min_tokens(&mut logits, &ctx(&params, &[], &[1]));
        assert_eq!(logits[3], f32::NEG_INFINITY);
        let mut logits = vec![0.0; 4];
        apply_min_tokens(&mut logits, &ctx(&params, &[], &[1, 2]));
        assert_eq!(logits[3], 0.0);
    }

    #[test]
    fn logit_bias_adds() {
        let mut logits = vec![0.0; 3];
        apply_logit_bias(&mut logits, &HashMap::from([(1, 5.0), (7, 1.0)]));
        assert_eq!(logits, vec![0.0, 5.0, 0.0]);
    }
}
