//! Sampling from temperature-scaled logits under min-p, top-k and top-p.
//!
//! Only the candidates that can survive are sorted: top-k selects k first,
//! and top-p first tries the 1,024 largest, falling back to the whole
//! vocabulary only when they do not reach the mass p.

use std::cmp::Ordering;

const TOP_P_PREFIX: usize = 1024;

fn desc(logits: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |a, b| {
        logits[*b as usize]
            .partial_cmp(&logits[*a as usize])
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(b))
    }
}

/// Draws one token with uniform `u` in [0, 1).
pub fn sample(logits: &[f32], top_k: i32, top_p: f32, min_p: f32, u: f32) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut cand: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize] > f32::NEG_INFINITY)
        .collect();
    if cand.is_empty() {
        return 0;
    }
    // min-p: drop tokens whose probability is under min_p times the top one.
    if min_p > 0.0 {
        let floor = max + min_p.ln();
        cand.retain(|&i| logits[i as usize] >= floor);
    }
    let k = if top_k > 0 {
        (top_k as usize).min(cand.len())
    } else {
        cand.len()
    };
    let sorted = if k < cand.len() || top_p < 1.0 {
        let prefix = if top_p < 1.0 {
            k.min(TOP_P_PREFIX.max(1))
        } else {
            k
        };
        let mut head = select_sorted(&cand, logits, prefix);
        if top_p < 1.0 && prefix < k {
            let mass: f32 = head
                .iter()
                .map(|&i| (logits[i as usize] - max).exp())
                .sum::<f32>()
                / total;
            if mass < top_p {
                head = select_sorted(&cand, logits, k);
            }
        }
        head
    } else {
        cand
    };
    // Probabilities renormalized over the kept set, cut at top-p mass.
    let weights: Vec<f32> = sorted
        .iter()
        .map(|&i| (logits[i as usize] - max).exp())
        .collect();
    let kept_total: f32 = weights.iter().sum();
    let mut n = weights.len();
    if top_p < 1.0 {
        let mut acc = 0.0;
        for (j, w) in weights.iter().enumerate() {
            acc += w / kept_total;
            if acc >= top_p {
                n = j + 1;
                break;
            }
        }
    }
    let norm: f32 = weights[..n].iter().sum();
    let target = u * norm;
    let mut acc = 0.0;
    for j in 0..n {
        acc += weights[j];
        if target < acc {
            return sorted[j];
        }
    }
    sorted[n - 1]
}

/// The `k` candidates with the largest logits, largest first.
fn select_sorted(cand: &[u32], logits: &[f32], k: usize) -> Vec<u32> {
    let mut v = cand.to_vec();
    if k < v.len() {
        v.select_nth_unstable_by(k - 1, desc(logits));
        v.truncate(k);
    }
    v.sort_unstable_by(desc(logits));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(logits: &[f32], top_k: i32, top_p: f32, min_p: f32) -> Vec<f64> {
        let n = 20000;
        let mut h = vec![0.0; logits.len()];
        for s in 0..n {
            let u = (s as f32 + 0.5) / n as f32;
            h[sample(logits, top_k, top_p, min_p, u) as usize] += 1.0 / n as f64;
        }
        h
    }

    #[test]
    fn plain_sampling_follows_softmax() {
        let logits = [0.0, 1.0, 2.0];
        let h = histogram(&logits, 0, 1.0, 0.0);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            assert!((h[i] - (l as f64).exp() / z).abs() < 1e-3);
        }
    }

    #[test]
    fn top_k_keeps_k_and_renormalizes() {
        let h = histogram(&[0.0, 1.0, 2.0, 3.0], 2, 1.0, 0.0);
        assert_eq!(h[0] + h[1], 0.0);
        let p3 = 1.0 / (1.0 + (-1f64).exp());
        assert!((h[3] - p3).abs() < 1e-3);
    }

    #[test]
    fn top_p_cuts_at_mass() {
        // probabilities 0.5, 0.3, 0.2 (as logits): top_p 0.6 keeps the first two.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let h = histogram(&logits, 0, 0.6, 0.0);
        assert_eq!(h[2], 0.0);
        assert!((h[0] - 0.625).abs() < 1e-3);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.04f32.ln()];
        let h = histogram(&logits, 0, 1.0, 0.1);
        assert_eq!(h[2], 0.0);
    }

    #[test]
    fn large_vocab_top_p_matches_full_sort() {
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        for u in [0.0, 0.3, 0.77, 0.999] {
            // Reference: sort the whole vocabulary, cut at mass 0.95, walk the CDF.
            let mut all: Vec<u32> = (0..logits.len() as u32).collect();
            all.sort_by(desc(&logits));
            let w: Vec<f64> = all
                .iter()
                .map(|&i| (logits[i as usize] as f64).exp())
                .collect();
            let z: f64 = w.iter().sum();
            let mut acc = 0.0;
            let n = w
                .iter()
                .position(|x| {
                    acc += x / z;
                    acc >= 0.95
                })
                .unwrap()
                + 1;
            let kept: f64 = w[..n].iter().sum();
            let mut c = 0.0;
            let exact = all[(0..n)
                .find(|&j| {
                    c += w[j];
                    (u as f64) * kept < c
                })
                .unwrap_or(n - 1)];
            assert_eq!(sample(&logits, 0, 0.95, 0.0, u), exact);
        }
    }
}
