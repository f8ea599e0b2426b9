//! Log-probabilities of a row of logits without materializing the whole
//! log-softmax: one log-sum-exp pass, then a partial selection of the top k.

use crate::outputs::TokenLogprobs;

/// `log(sum(exp(row)))`, stable.
pub fn logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f32 = row.iter().map(|&l| (l - max).exp()).sum();
    max + sum.ln()
}

/// The chosen token's logprob and rank, and the `k` most likely tokens
/// (highest first, lowest id first on ties).
pub fn top_logprobs(row: &[f32], token_id: u32, k: usize) -> TokenLogprobs {
    let lse = logsumexp(row);
    let chosen = row[token_id as usize];
    let rank = 1 + row.iter().filter(|&&l| l > chosen).count();
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by_logit_desc = |a: &u32, b: &u32| {
        row[*b as usize]
            .partial_cmp(&row[*a as usize])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    let k = k.min(row.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit_desc);
    }
    idx.truncate(k);
    idx.sort_unstable_by(by_logit_desc);
    TokenLogprobs {
        token_id,
        logprob: chosen - lse,
        rank,
        top: idx
            .into_iter()
            .map(|i| (i, row[i as usize] - lse))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_full_log_softmax() {
        let row: Vec<f32> = (0..50)
            .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.0)
            .collect();
        let lse = logsumexp(&row);
        let full: Vec<f64> = {
            let s: f64 = row.iter().map(|&l| (l as f64).exp()).sum();
            row.iter().map(|&l| l as f64 - s.ln()).collect()
        };
        let t = top_logprobs(&row, 3, 5);
        assert!((t.logprob as f64 - full[3]).abs() < 1e-5);
        let mut sorted: Vec<(usize, f64)> = full.iter().copied().enumerate().collect();
        sorted.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        for (got, want) in t.top.iter().zip(&sorted) {
            assert_eq!(got.0 as usize, want.0);
            assert!((got.1 as f64 - want.1).abs() < 1e-5);
        }
        assert_eq!(t.rank, 1 + row.iter().filter(|&&l| l > row[3]).count());
        assert!((lse - row.iter().map(|l| l.exp()).sum::<f32>().ln()).abs() < 1e-5);
    }
}
