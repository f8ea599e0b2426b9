//! Mixture-of-experts routing, in one pass over the batch: each token's
//! softmax over its router logits, its top-k experts (weights renormalized
//! to sum to 1 when asked), and the grouping of the chosen (token, expert)
//! pairs by expert, so the experts run one matmul each over the rows
//! gathered for them (vLLM's `fused_topk` + `moe_align_block_size`, on the
//! host).
//!
//! The order follows HF transformers' `MixtralTopKRouter` /
//! `Qwen3MoeTopKRouter`: softmax over all experts first, then top-k, then
//! the optional renormalization (top-k of the logits would pick the same
//! experts, but the weights differ without the full softmax).

/// Where each token's chosen experts are, and which rows each expert takes.
/// Buffers are reused from step to step (`route` clears them).
#[derive(Debug, Default, Clone)]
pub struct ExpertRouting {
    pub num_experts: usize,
    pub top_k: usize,
    /// `[tokens * top_k]`: each token's chosen experts, ascending expert id
    /// (the order HF's `index_add_` sums them in).
    pub expert_ids: Vec<u32>,
    /// `[tokens * top_k]`: the routing weight of each choice.
    pub weights: Vec<f32>,
    /// `[tokens * top_k]`: the gathered row of each choice.
    pub gathered_row: Vec<u32>,
    /// `[num_experts + 1]`: expert `e` takes gathered rows
    /// `expert_offsets[e]..expert_offsets[e + 1]`.
    pub expert_offsets: Vec<usize>,
    /// `[tokens * top_k]`: the token each gathered row copies (rows of one
    /// expert in ascending token order).
    pub row_token: Vec<u32>,
}

impl ExpertRouting {
    /// Routes `tokens = logits.len() / num_experts` rows of router logits.
    ///
    /// # Panics
    /// If `top_k` is 0 or above `num_experts`, or the logits are not whole rows.
    pub fn route(&mut self, logits: &[f32], num_experts: usize, top_k: usize, renormalize: bool) {
        assert!(
            (1..=num_experts).contains(&top_k),
            "route: top_k {top_k} of {num_experts} experts"
        );
        assert!(
            logits.len().is_multiple_of(num_experts),
            "route: logits are not rows of {num_experts}"
        );
        let tokens = logits.len() / num_experts;
        self.num_experts = num_experts;
        self.top_k = top_k;
        self.expert_ids.clear();
        self.weights.clear();
        let mut probs = vec![0f32; num_experts];
        let mut order: Vec<u32> = Vec::with_capacity(num_experts);
        for row in logits.chunks_exact(num_experts) {
            softmax_into(row, &mut probs);
            order.clear();
            order.extend(0..num_experts as u32);
            // Highest probability first; equal ones by lower id (torch.topk
            // on CPU keeps the lower index first among ties).
            order.select_nth_unstable_by(top_k - 1, |&a, &b| {
                probs[b as usize]
                    .total_cmp(&probs[a as usize])
                    .then(a.cmp(&b))
            });
            let chosen = &mut order[..top_k];
            chosen.sort_unstable_by(|&a, &b| {
                probs[b as usize]
                    .total_cmp(&probs[a as usize])
                    .then(a.cmp(&b))
            });
            // Summed in rank order, as torch sums the top-k values.
            let sum: f32 = chosen.iter().map(|&e| probs[e as usize]).sum();
            chosen.sort_unstable();
            for &e in chosen.iter() {
                self.expert_ids.push(e);
                let w = probs[e as usize];
                self.weights.push(if renormalize { w / sum } else { w });
            }
        }
        self.group(tokens);
    }

    /// Counting sort of the choices by expert: `expert_offsets`,
    /// `row_token` and `gathered_row`.
    fn group(&mut self, tokens: usize) {
        let e = self.num_experts;
        self.expert_offsets.clear();
        self.expert_offsets.resize(e + 1, 0);
        for &id in &self.expert_ids {
            self.expert_offsets[id as usize + 1] += 1;
        }
        let mut running = 0;
        for offset in self.expert_offsets.iter_mut() {
            running += *offset;
            *offset = running;
        }
        let n = tokens * self.top_k;
        self.row_token.clear();
        self.row_token.resize(n, 0);
        self.gathered_row.clear();
        self.gathered_row.resize(n, 0);
        let mut next: Vec<usize> = self.expert_offsets[..e].to_vec();
        for (choice, &id) in self.expert_ids.iter().enumerate() {
            let row = next[id as usize];
            next[id as usize] += 1;
            self.row_token[row] = (choice / self.top_k) as u32;
            self.gathered_row[choice] = row as u32;
        }
    }

    /// Number of (token, expert) pairs: the rows gathered.
    pub fn num_rows(&self) -> usize {
        self.row_token.len()
    }

    /// The experts that got at least one token, with their row ranges.
    pub fn active_experts(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        (0..self.num_experts).filter_map(|e| {
            let r = self.expert_offsets[e]..self.expert_offsets[e + 1];
            (!r.is_empty()).then_some((e, r))
        })
    }
}

/// Softmax of one row in f32 (max subtracted, as torch does).
fn softmax_into(row: &[f32], out: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (o, &x) in out.iter_mut().zip(row) {
        *o = (x - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// `gathered[r] = x[row_token[r]]` for rows of `dim`.
pub fn moe_gather(x: &[f32], routing: &ExpertRouting, gathered: &mut [f32], dim: usize) {
    use rayon::prelude::*;
    let n = routing.num_rows();
    gathered[..n * dim]
        .par_chunks_mut(dim)
        .with_min_len(super::min_rows_per_task(dim))
        .zip(&routing.row_token)
        .for_each(|(row, &t)| {
            let t = t as usize;
            row.copy_from_slice(&x[t * dim..(t + 1) * dim]);
        });
}

/// `out[t] = Σ_j weight(t, j) · expert_out[gathered_row(t, j)]` over each
/// token's choices in ascending expert order; rows of `dim`. Overwrites
/// `out`'s first `tokens` rows.
pub fn moe_scatter_weighted(
    expert_out: &[f32],
    routing: &ExpertRouting,
    out: &mut [f32],
    dim: usize,
) {
    use rayon::prelude::*;
    let k = routing.top_k;
    let tokens = routing.expert_ids.len() / k.max(1);
    out[..tokens * dim]
        .par_chunks_mut(dim)
        .with_min_len(super::min_rows_per_task(dim))
        .enumerate()
        .for_each(|(t, row)| {
            row.fill(0.0);
            let choices = t * k..(t + 1) * k;
            let weights = &routing.weights[choices.clone()];
            for (&w, &r) in weights.iter().zip(&routing.gathered_row[choices]) {
                let r = r as usize;
                for (o, &v) in row.iter_mut().zip(&expert_out[r * dim..(r + 1) * dim]) {
                    *o += v * w;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_then_top_k_then_renormalize() {
        // Two tokens, four experts.
        let logits = [1.0, 3.0, 2.0, 0.0, 0.5, 0.5, -1.0, 4.0];
        let mut r = ExpertRouting::default();
        r.route(&logits, 4, 2, false);
        let p = |row: &[f32], i: usize| {
            let s: f32 = row.iter().map(|x| x.exp()).sum();
            row[i].exp() / s
        };
        // Token 0 picks experts 1 and 2 (kept in ascending id order).
        assert_eq!(&r.expert_ids[..2], &[1, 2]);
        assert!((r.weights[0] - p(&logits[..4], 1)).abs() < 1e-6);
        assert!((r.weights[1] - p(&logits[..4], 2)).abs() < 1e-6);
        // Token 1: expert 3, then a tie between 0 and 1: the lower id wins.
        assert_eq!(&r.expert_ids[2..], &[0, 3]);
        r.route(&logits, 4, 2, true);
        let (a, b) = (p(&logits[..4], 1), p(&logits[..4], 2));
        assert!((r.weights[0] - a / (a + b)).abs() < 1e-6);
        assert!((r.weights[0] + r.weights[1] - 1.0).abs() < 1e-6);
        // Grouping: expert 0 takes token 1, expert 1 token 0, expert 2 token 0, expert 3 token 1.
        assert_eq!(r.expert_offsets, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.row_token, vec![1, 0, 0, 1]);
        assert_eq!(r.gathered_row, vec![1, 2, 0, 3]);
        assert_eq!(r.active_experts().count(), 4);
    }

    #[test]
    fn grouping_covers_every_choice_once() {
        let (tokens, e, k) = (37, 8, 3);
        let logits: Vec<f32> = (0..tokens * e)
            .map(|i| ((i * 7919) % 101) as f32 / 13.0)
            .collect();
        let mut r = ExpertRouting::default();
        r.route(&logits, e, k, true);
        assert_eq!(r.num_rows(), tokens * k);
        let mut seen = vec![false; tokens * k];
        for (c, &row) in r.gathered_row.iter().enumerate() {
            assert!(!seen[row as usize]);
            seen[row as usize] = true;
            assert_eq!(r.row_token[row as usize] as usize, c / k);
            let id = r.expert_ids[c] as usize;
            assert!((r.expert_offsets[id]..r.expert_offsets[id + 1]).contains(&(row as usize)));
        }
        for t in 0..tokens {
            let ids = &r.expert_ids[t * k..(t + 1) * k];
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
            // The chosen experts have the k largest logits of the row.
            let row = &logits[t * e..(t + 1) * e];
            let min_chosen = ids
                .iter()
                .map(|&i| row[i as usize])
                .fold(f32::MAX, f32::min);
            let above = row.iter().filter(|&&x| x > min_chosen).count();
            assert!(above < k, "token {t}");
        }
        // Scatter of gathered copies with weights summing to 1 gives x back.
        let dim = 5;
        let x: Vec<f32> = (0..tokens * dim).map(|i| i as f32 * 0.25).collect();
        let mut g = vec![0f32; tokens * k * dim];
        moe_gather(&x, &r, &mut g, dim);
        let mut out = vec![f32::NAN; tokens * dim];
        moe_scatter_weighted(&g, &r, &mut out, dim);
        for (a, b) in out.iter().zip(&x) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
