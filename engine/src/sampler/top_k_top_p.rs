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

/// The tokens min-p, top-k and top-p keep, with their unnormalized
/// probabilities `exp(l - max)`; sorted most likely first whenever top-k or
/// top-p sorted them, else in id order.
struct Kept {
    ids: Vec<u32>,
    weights: Vec<f32>,
    /// The largest logit (the weights are relative to it).
    max: f32,
}

fn kept(logits: &[f32], top_k: i32, top_p: f32, min_p: f32) -> Kept {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The whole vocabulary's mass, needed only to judge top-p's prefix: one
    // `exp` per token, as much as the draw itself, so not computed otherwise.
    let total = || -> f32 { logits.iter().map(|&l| (l - max).exp()).sum() };
    let mut cand: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize] > f32::NEG_INFINITY)
        .collect();
    if cand.is_empty() {
        return Kept {
            ids: vec![0],
            weights: vec![1.0],
            max: 0.0,
        };
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
                / total();
            if mass < top_p {
                head = select_sorted(&cand, logits, k);
            }
        }
        head
    } else {
        cand
    };
    // Probabilities renormalized over the kept set, cut at top-p mass.
    let mut weights: Vec<f32> = sorted
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
    let mut ids = sorted;
    ids.truncate(n);
    weights.truncate(n);
    Kept { ids, weights, max }
}

/// Draws one token with uniform `u` in [0, 1) by walking the CDF of the
/// kept tokens (the draw the device kernel mirrors).
pub fn sample(logits: &[f32], top_k: i32, top_p: f32, min_p: f32, u: f32) -> u32 {
    let Kept { ids, weights, .. } = kept(logits, top_k, top_p, min_p);
    let norm: f32 = weights.iter().sum();
    let target = u * norm;
    let mut acc = 0.0;
    for (j, w) in weights.iter().enumerate() {
        acc += w;
        if target < acc {
            return ids[j];
        }
    }
    ids[ids.len() - 1]
}

/// Draws one token by the exponential race (the Gumbel-max trick, as
/// vLLM's `random_sample` does with `probs / Exp(1)`): each kept token gets
/// its own noise from `key` and its id, and the largest
/// `l - ln(-ln u)` wins, which picks token i with probability p_i.
///
/// Why seeded requests use it: a walk along the CDF lands on a token whose
/// interval is narrower than the rounding noise of the running sum, so the
/// same seed drew different tokens when the logits were recomputed with
/// last-bit differences (after a preemption). Here a change needs two
/// tokens' scores to tie within that noise, which almost never happens.
pub fn sample_race(logits: &[f32], top_k: i32, top_p: f32, min_p: f32, key: u64) -> u32 {
    let Kept { ids, weights, max } = kept(logits, top_k, top_p, min_p);
    let mut best = ids[0];
    // Scores relative to `max`; `bound` = exp(-best score).
    let mut best_score = f64::NEG_INFINITY;
    let mut bound = f64::INFINITY;
    for (&id, &w) in ids.iter().zip(&weights) {
        let u = noise_uniform(key, id);
        // -ln u >= 1 - u, so the score is at most ln w - ln(1 - u): a token
        // that cannot beat the best is skipped without its two logs (about
        // one token per row is scored; the margin covers exp's rounding).
        if 1.0 - u >= f64::from(w) * bound * (1.0 + 1e-5) {
            continue;
        }
        let score = f64::from(logits[id as usize] - max) - (-u.ln()).ln();
        if score > best_score {
            best_score = score;
            best = id;
            bound = (-best_score).exp();
        }
    }
    best
}

/// A uniform in (0, 1) from the row's key and a token id: SplitMix64's
/// mixer over the pair, 53 bits, never 0 or 1 (so both logs are finite).
fn noise_uniform(key: u64, id: u32) -> f64 {
    let mut z = key ^ (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
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

    fn race_histogram(logits: &[f32], top_k: i32, top_p: f32, min_p: f32) -> Vec<f64> {
        let n = 40000;
        let mut h = vec![0.0; logits.len()];
        for key in 0..n {
            h[sample_race(logits, top_k, top_p, min_p, key) as usize] += 1.0 / n as f64;
        }
        h
    }

    #[test]
    fn race_follows_the_same_distributions() {
        let logits = [0.0f32, 1.0, 2.0, f32::NEG_INFINITY];
        let h = race_histogram(&logits, 0, 1.0, 0.0);
        let z: f64 = logits[..3].iter().map(|&l| (l as f64).exp()).sum();
        for (i, &l) in logits[..3].iter().enumerate() {
            let p = (l as f64).exp() / z;
            assert!((h[i] - p).abs() < 0.01, "token {i}: {} vs {p}", h[i]);
        }
        assert_eq!(h[3], 0.0);
        // top-k, top-p and min-p keep the same sets as the CDF walk.
        let h = race_histogram(&[0.0, 1.0, 2.0, 3.0], 2, 1.0, 0.0);
        assert_eq!(h[0] + h[1], 0.0);
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let h = race_histogram(&logits, 0, 0.6, 0.0);
        assert_eq!(h[2], 0.0);
        assert!((h[0] - 0.625).abs() < 0.01);
        let h = race_histogram(&[0.5f32.ln(), 0.3f32.ln(), 0.04f32.ln()], 0, 1.0, 0.1);
        assert_eq!(h[2], 0.0);
    }

    /// The race without the pruning: every kept token scored.
    fn race_unpruned(logits: &[f32], key: u64) -> u32 {
        let Kept { ids, max, .. } = kept(logits, 0, 1.0, 0.0);
        let score =
            |id: u32| f64::from(logits[id as usize] - max) - (-noise_uniform(key, id).ln()).ln();
        ids.into_iter()
            .fold((0, f64::NEG_INFINITY), |(b, bs), id| {
                let s = score(id);
                if s > bs {
                    (id, s)
                } else {
                    (b, bs)
                }
            })
            .0
    }

    /// The failure the race fixes: logits recomputed with last-bit noise
    /// (as after a preemption), a peaked distribution over a 32k vocabulary
    /// with a long tail. The CDF walk lands elsewhere now and then (5 of
    /// 1,000 draws here; over a 64-token seeded completion that is a
    /// divergence about every third request, as seen through the server);
    /// the race keeps its token, and its pruning changes nothing.
    #[test]
    fn race_is_robust_to_last_bit_noise_where_the_cdf_walk_is_not() {
        let vocab = 32000;
        let mut rng_state = 0x1234_5678u64;
        let mut next = || {
            rng_state = rng_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng_state >> 40) as f32 / (1u64 << 24) as f32
        };
        let (mut walk_changed, mut race_changed) = (0, 0);
        let draws = 1000;
        for d in 0..draws {
            let logits: Vec<f32> = (0..vocab)
                .map(|i| {
                    let tail = (next() + next() + next() + next() - 2.0) * 1.5;
                    tail + if i % 5000 == 7 { 12.0 } else { 0.0 }
                })
                .collect();
            let noisy: Vec<f32> = logits
                .iter()
                .map(|&l| {
                    let bits = l.to_bits() as i32 + (next() * 5.0) as i32 - 2;
                    f32::from_bits(bits as u32)
                })
                .collect();
            let u = next();
            if sample(&logits, 0, 1.0, 0.0, u) != sample(&noisy, 0, 1.0, 0.0, u) {
                walk_changed += 1;
            }
            let key = d as u64 * 7919;
            let raced = sample_race(&logits, 0, 1.0, 0.0, key);
            if raced != sample_race(&noisy, 0, 1.0, 0.0, key) {
                race_changed += 1;
            }
            if d % 50 == 0 {
                assert_eq!(raced, race_unpruned(&logits, key), "draw {d}");
            }
        }
        assert!(
            walk_changed >= 2,
            "the CDF walk changed only {walk_changed} draws: the test lost its contrast"
        );
        assert!(
            race_changed <= 1,
            "the race changed {race_changed} of {draws} draws"
        );
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
