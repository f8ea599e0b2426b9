//! The device sampler's algorithm on the host, step for step: the same
//! order key, the same fixed-point masses, the same radix select (8-bit
//! digits, early exits). The GPU tests compare the kernel with it bit for
//! bit; the tests here compare it with a plain sort, so the select logic is
//! checked without a GPU.

/// 2^40: the fixed-point weight of the most likely token.
pub const FIXED_ONE: f64 = 1_099_511_627_776.0;

/// Orderable key of a float: larger float, larger key; -0 == +0.
pub fn float_key(f: f32) -> u32 {
    let b = if f == 0.0 { 0 } else { f.to_bits() };
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The sampler's total order: larger value first, then lower index.
pub fn rank_key(v: f32, i: u32) -> u64 {
    ((float_key(v) as u64) << 32) | (u32::MAX - i) as u64
}

pub fn key_index(k: u64) -> u32 {
    u32::MAX - (k & 0xffff_ffff) as u32
}

/// Among `keys[i] >= lb`, walked in descending key order, the key at which
/// the running weight first reaches `target` (>= 1); `lb` when the total is
/// below target. Mirrors `select_prefix` in sampling.cu.
pub fn select_prefix(keys: &[u64], weights: &[u64], lb: u64, target: u64, unit: bool) -> u64 {
    let mut prefix = 0u64;
    let mut above = 0u64;
    for level in 0..8 {
        let shift = 56 - 8 * level;
        let hi_mask = if level == 0 { 0 } else { !0u64 << (shift + 8) };
        let mut hist_w = [0u64; 256];
        let mut hist_c = [0u32; 256];
        for (i, &k) in keys.iter().enumerate() {
            if k >= lb && (k & hi_mask) == prefix {
                let d = ((k >> shift) & 255) as usize;
                hist_w[d] += if unit { 1 } else { weights[i] };
                hist_c[d] += 1;
            }
        }
        let mut cum = above;
        let mut chosen = None;
        for d in (0..256).rev() {
            if cum + hist_w[d] >= target {
                chosen = Some(d);
                break;
            }
            cum += hist_w[d];
        }
        let Some(d) = chosen else { return lb };
        let whole = hist_c[d] == 1 || (unit && cum + hist_c[d] as u64 == target);
        above = cum;
        prefix |= (d as u64) << shift;
        if whole {
            break;
        }
    }
    prefix.max(lb)
}

/// The token the device sampler picks for one row of logits.
pub fn sample(logits: &[f32], temperature: f32, top_k: i32, top_p: f32, min_p: f32, u: f32) -> u32 {
    let keys_of = |v: &dyn Fn(usize) -> f32| -> Vec<u64> {
        (0..logits.len())
            .map(|i| rank_key(v(i), i as u32))
            .collect()
    };
    if temperature < 1e-5 {
        let keys = keys_of(&|i| logits[i]);
        return keys.iter().copied().max().map(key_index).unwrap_or(0);
    }
    let inv_t = 1.0 / temperature;
    let s: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
    let mx = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if mx == f32::NEG_INFINITY {
        return 0;
    }
    let keys = keys_of(&|i| s[i]);
    let w: Vec<u64> = s
        .iter()
        .map(|&v| ((v - mx).exp() as f64 * FIXED_ONE) as u64)
        .collect();
    let mut lb = ((float_key(f32::NEG_INFINITY) + 1) as u64) << 32;
    if min_p > 0.0 {
        lb = lb.max((float_key(mx + min_p.ln()) as u64) << 32);
    }
    if top_k > 0 && (top_k as usize) < logits.len() {
        lb = select_prefix(&keys, &w, lb, top_k as u64, true);
    }
    let total = |lb: u64| {
        keys.iter()
            .zip(&w)
            .filter(|(&k, _)| k >= lb)
            .map(|(_, &w)| w)
            .sum::<u64>()
    };
    if top_p < 1.0 {
        let target = ((top_p as f64 * total(lb) as f64).ceil() as u64).max(1);
        lb = select_prefix(&keys, &w, lb, target, false);
    }
    let tot = total(lb);
    let target = (((u as f64) * tot as f64).floor() as u64 + 1).min(tot);
    let cut = select_prefix(&keys, &w, lb, target, false);
    keys.iter()
        .copied()
        .filter(|&k| k >= cut)
        .min()
        .map(key_index)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32) / (1u64 << 24) as f32
        }
    }

    /// The CPU sampler's semantics with a full sort, in f64 masses.
    fn naive(logits: &[f32], t: f32, top_k: i32, top_p: f32, min_p: f32, u: f32) -> u32 {
        let s: Vec<f32> = logits.iter().map(|&l| l * (1.0 / t)).collect();
        let mx = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut idx: Vec<u32> = (0..s.len() as u32)
            .filter(|&i| s[i as usize] > f32::NEG_INFINITY)
            .collect();
        if min_p > 0.0 {
            idx.retain(|&i| s[i as usize] >= mx + min_p.ln());
        }
        idx.sort_by(|&a, &b| {
            s[b as usize]
                .partial_cmp(&s[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        if top_k > 0 {
            idx.truncate(top_k as usize);
        }
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| ((s[i as usize] - mx) as f64).exp())
            .collect();
        let mut n = w.len();
        if top_p < 1.0 {
            let tot: f64 = w.iter().sum();
            let mut acc = 0.0;
            n = w
                .iter()
                .position(|x| {
                    acc += x;
                    acc >= top_p as f64 * tot
                })
                .map_or(w.len(), |p| p + 1);
        }
        let tot: f64 = w[..n].iter().sum();
        let mut acc = 0.0;
        idx[w[..n]
            .iter()
            .position(|x| {
                acc += x;
                acc > u as f64 * tot
            })
            .unwrap_or(n - 1)]
    }

    #[test]
    fn keys_order_like_floats_then_lower_index() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-30,
            2.0,
            f32::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(float_key(w[0]) <= float_key(w[1]), "{w:?}");
        }
        assert_eq!(float_key(-0.0), float_key(0.0));
        assert!(rank_key(1.0, 3) > rank_key(1.0, 4));
        assert!(rank_key(1.0, 4) > rank_key(0.5, 0));
        assert_eq!(key_index(rank_key(7.0, 12345)), 12345);
    }

    #[test]
    fn greedy_is_the_first_argmax() {
        assert_eq!(sample(&[1.0, 3.0, 3.0, -1.0], 0.0, 0, 1.0, 0.0, 0.5), 1);
        assert_eq!(sample(&[f32::NEG_INFINITY; 3], 1.0, 0, 1.0, 0.0, 0.5), 0);
    }

    #[test]
    fn select_prefix_counts_exactly_k_with_ties() {
        let vals = [1.0f32, 5.0, 5.0, 5.0, 2.0, 5.0, 0.0];
        let keys: Vec<u64> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| rank_key(v, i as u32))
            .collect();
        let w = vec![1u64; vals.len()];
        for k in 1..=vals.len() as u64 {
            let cut = select_prefix(&keys, &w, 0, k, true);
            assert_eq!(
                keys.iter().filter(|&&x| x >= cut).count() as u64,
                k,
                "k={k}"
            );
        }
        // Lower ids win ties: the top 2 of the four 5.0s are ids 1 and 2.
        let cut = select_prefix(&keys, &w, 0, 2, true);
        let kept: Vec<usize> = (0..vals.len()).filter(|&i| keys[i] >= cut).collect();
        assert_eq!(kept, vec![1, 2]);
        assert_eq!(
            select_prefix(&keys, &w, 0, 100, true),
            0,
            "below target keeps all"
        );
    }

    #[test]
    fn matches_a_full_sort_on_random_rows() {
        let mut rng = Lcg(42);
        let mut disagreements = 0;
        for case in 0..400 {
            let v = [2usize, 17, 300, 5000][case % 4];
            let spread = [0.5f32, 3.0, 10.0][case % 3];
            let mut logits: Vec<f32> = (0..v).map(|_| (rng.next() - 0.5) * spread).collect();
            if case % 5 == 0 {
                logits[case % v] = f32::NEG_INFINITY;
            }
            if case % 7 == 0 {
                // bf16-like coarse values: many ties
                logits
                    .iter_mut()
                    .for_each(|l| *l = (*l * 4.0).round() / 4.0);
            }
            let t = [1.0f32, 0.7, 1.3][case % 3];
            let top_k = [0, 1, 5, 50][(case / 3) % 4];
            let top_p = [1.0f32, 0.9, 0.5][(case / 2) % 3];
            let min_p = [0.0f32, 0.05][(case / 5) % 2];
            let u = rng.next();
            let got = sample(&logits, t, top_k, top_p, min_p, u);
            let want = naive(&logits, t, top_k, top_p, min_p, u);
            if got != want {
                disagreements += 1; // only at mass boundaries within float rounding
            }
        }
        assert!(
            disagreements <= 0,
            "{disagreements} of 400 differ from the full sort"
        );
    }

    #[test]
    fn follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY, (0.5f32).ln()];
        let n = 9000;
        let mut h = [0usize; 4];
        for i in 0..n {
            h[sample(&logits, 1.0, 0, 1.0, 0.0, (i as f32 + 0.5) / n as f32) as usize] += 1;
        }
        let p = |c: usize| c as f64 / n as f64;
        assert_eq!(h[2], 0);
        assert!(
            (p(h[1]) - 3.0 / 4.5).abs() < 1e-3
                && (p(h[0]) - 1.0 / 4.5).abs() < 1e-3
                && (p(h[3]) - 0.5 / 4.5).abs() < 1e-3
        );
        // top-p 0.6 keeps tokens 1 (0.667) only; top-k 2 keeps 1 and 0.
        assert!((0..50).all(|i| sample(&logits, 1.0, 0, 0.6, 0.0, i as f32 / 50.0) == 1));
        assert!((0..50).all(|i| sample(&logits, 1.0, 2, 1.0, 0.0, i as f32 / 50.0) != 3));
        // min-p 0.2: 0.5/3 < 0.2 drops token 3, 1/3 >= 0.2 keeps token 0.
        assert!((0..50).all(|i| sample(&logits, 1.0, 0, 1.0, 0.2, i as f32 / 50.0) != 3));
        assert!((0..50).any(|i| sample(&logits, 1.0, 0, 1.0, 0.2, i as f32 / 50.0) == 0));
    }
}
