//! `fused_moe` on the CPU: one routing pass over the batch
//! (`pagoda_kernels::cpu::ExpertRouting`), the chosen rows gathered by
//! expert, one `linear` call per active expert for gate/up and one for down
//! (each expert's matrices stay in their checkpoint format, so bf16 and
//! GGUF-block experts stay compact), SiLU-and-mul once over all gathered
//! rows, then the weighted scatter-add back to each token. Scratch buffers
//! live in the backend and grow to the largest step once.

use pagoda_kernels::cpu::{self, ExpertRouting};
use rayon::prelude::*;

use super::cpu::{CpuBackend, CpuWeight};
use super::cpu_moe_scratch::at_least;
use super::moe::{ExpertWeights, MoeWeights};

impl CpuBackend {
    pub(super) fn fused_moe_cpu(
        &self,
        hidden: &mut [f32],
        moe: &MoeWeights<CpuWeight>,
        rows: usize,
    ) {
        if rows == 0 {
            return;
        }
        let mode = self.matmul_mode();
        let (h, inter, e, k) = (moe.hidden, moe.intermediate, moe.num_experts(), moe.top_k);
        let mut guard = self
            .moe_scratch()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let s = &mut *guard;
        let x = &hidden[..rows * h];

        // Routing: one matmul for every row, then softmax / top-k / grouping.
        let logits = at_least(&mut s.router_logits, rows * e);
        moe.router.matmul(x, logits, rows, mode);
        s.routing.route(logits, e, k, moe.renormalize);

        // Gather each expert's rows, contiguous by expert.
        let n = s.routing.num_rows();
        let gathered = at_least(&mut s.gathered, n * h);
        cpu::moe_gather(x, &s.routing, gathered, h);

        // Gate/up per active expert, SiLU-and-mul over all rows, down per expert.
        let gate_up = at_least(&mut s.gate_up, n * 2 * inter);
        grouped_matmul(
            &s.routing,
            &moe.experts,
            |x| &x.gate_up,
            gathered,
            gate_up,
            h,
            2 * inter,
            mode,
        );
        let act = at_least(&mut s.act, n * inter);
        cpu::silu_and_mul(gate_up, act, inter);
        let expert_out = at_least(&mut s.expert_out, n * h);
        grouped_matmul(
            &s.routing,
            &moe.experts,
            |x| &x.down,
            act,
            expert_out,
            inter,
            h,
            mode,
        );

        // The shared expert reads the input rows before they are overwritten.
        if let Some(shared) = &moe.shared {
            let si = shared.intermediate;
            let gate_logit = at_least(&mut s.shared_gate, rows);
            shared.gate.matmul(x, gate_logit, rows, mode);
            let sgu = at_least(&mut s.gate_up, rows * 2 * si);
            shared.mlp.gate_up.matmul(x, sgu, rows, mode);
            let sact = at_least(&mut s.act, rows * si);
            cpu::silu_and_mul(sgu, sact, si);
            // Expert outputs are done with `gathered`: reuse it for the shared one.
            let sout = at_least(&mut s.gathered, rows * h);
            shared.mlp.down.matmul(sact, sout, rows, mode);
            cpu::moe_scatter_weighted(
                &s.expert_out[..n * h],
                &s.routing,
                &mut hidden[..rows * h],
                h,
            );
            hidden[..rows * h]
                .par_chunks_mut(h)
                .zip(sout.par_chunks(h))
                .zip(gate_logit.par_iter())
                .for_each(|((out, sh), &g)| {
                    let gate = 1.0 / (1.0 + (-g).exp());
                    for (o, &v) in out.iter_mut().zip(sh) {
                        *o += gate * v;
                    }
                });
        } else {
            cpu::moe_scatter_weighted(
                &s.expert_out[..n * h],
                &s.routing,
                &mut hidden[..rows * h],
                h,
            );
        }
    }
}

/// `out[rows of e] = x[rows of e] · W_eᵀ` for every active expert `e`
/// (`x` rows of `k`, `out` rows of `n`); experts run in parallel, each
/// matmul parallel over its weight rows as well.
#[allow(clippy::too_many_arguments)]
fn grouped_matmul(
    routing: &ExpertRouting,
    experts: &[ExpertWeights<CpuWeight>],
    pick: impl Fn(&ExpertWeights<CpuWeight>) -> &CpuWeight + Sync,
    x: &[f32],
    out: &mut [f32],
    k: usize,
    n: usize,
    mode: cpu::MatmulMode,
) {
    let mut jobs = Vec::new();
    let mut rest = out;
    let mut done = 0;
    for (e, range) in routing.active_experts() {
        let (_, tail) = rest.split_at_mut((range.start - done) * n);
        let (mine, tail) = tail.split_at_mut(range.len() * n);
        rest = tail;
        done = range.end;
        jobs.push((e, range, mine));
    }
    jobs.into_par_iter().for_each(|(e, range, out)| {
        let m = range.len();
        pick(&experts[e]).matmul(&x[range.start * k..range.end * k], out, m, mode);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::moe::SharedExpertWeights;
    use crate::backend::Backend;
    use crate::weights::{HostTensor, TensorData};
    use half::bf16;

    fn matrix(rows: usize, cols: usize, seed: usize, bf: bool) -> (CpuWeight, Vec<f32>) {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| (((i + 31 * seed) * 2654435761usize % 1000) as f32 / 1000.0 - 0.5) * 0.4)
            .collect();
        let data = if bf {
            TensorData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect())
        } else {
            TensorData::F32(v)
        };
        let t = HostTensor {
            shape: vec![rows, cols],
            data,
        };
        let dense = t.clone().to_f32();
        (CpuWeight::from_parts(vec![t]).unwrap(), dense)
    }

    /// `y = x · Wᵀ` in f64, token by token.
    fn naive(x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
        let k = x.len();
        (0..n)
            .map(|j| (0..k).map(|p| x[p] as f64 * w[j * k + p] as f64).sum())
            .collect()
    }

    fn silu(v: f64) -> f64 {
        v / (1.0 + (-v).exp())
    }

    /// A token's MLP through one expert, computed alone.
    fn mlp(x: &[f32], gate_up: &[f32], down: &[f32], inter: usize, h: usize) -> Vec<f64> {
        let gu = naive(x, gate_up, 2 * inter);
        let a: Vec<f32> = (0..inter)
            .map(|i| (silu(gu[i]) * gu[inter + i]) as f32)
            .collect();
        naive(&a, down, h)
    }

    fn check(bf: bool, shared: bool, renormalize: bool) {
        let (h, inter, e, k, tokens, si) = (16, 8, 6, 2, 23, 12);
        let (router, router_d) = matrix(e, h, 1, bf);
        let mut experts = Vec::new();
        let mut dense = Vec::new();
        for j in 0..e {
            let (gu, gu_d) = matrix(2 * inter, h, 10 + j, bf);
            let (dn, dn_d) = matrix(h, inter, 20 + j, bf);
            experts.push(ExpertWeights {
                gate_up: gu,
                down: dn,
            });
            dense.push((gu_d, dn_d));
        }
        let (sgu, sgu_d) = matrix(2 * si, h, 40, bf);
        let (sdn, sdn_d) = matrix(h, si, 41, bf);
        let (sg, sg_d) = matrix(1, h, 42, bf);
        let moe = MoeWeights {
            router,
            experts,
            shared: shared.then_some(SharedExpertWeights {
                intermediate: si,
                mlp: ExpertWeights {
                    gate_up: sgu,
                    down: sdn,
                },
                gate: sg,
            }),
            hidden: h,
            intermediate: inter,
            top_k: k,
            renormalize,
        };
        let x: Vec<f32> = (0..tokens * h)
            .map(|i| ((i as f32) * 0.731).sin())
            .collect();
        let backend = CpuBackend::new();
        let mut got = x.clone();
        got.resize(got.len() + 3 * h, 7.0); // rows past `tokens` stay untouched
        backend.fused_moe(&mut got, &moe, tokens);
        assert!(got[tokens * h..].iter().all(|&v| v == 7.0));
        for t in 0..tokens {
            let xt = &x[t * h..(t + 1) * h];
            let logits = naive(xt, &router_d, e);
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let probs: Vec<f64> = logits.iter().map(|l| (l - max).exp() / z).collect();
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let chosen = &order[..k];
            let sum: f64 = chosen.iter().map(|&j| probs[j]).sum();
            let mut want = vec![0f64; h];
            for &j in chosen {
                let w = if renormalize {
                    probs[j] / sum
                } else {
                    probs[j]
                };
                let y = mlp(xt, &dense[j].0, &dense[j].1, inter, h);
                for (o, v) in want.iter_mut().zip(y) {
                    *o += w * v;
                }
            }
            if shared {
                let g = naive(xt, &sg_d, 1)[0];
                let y = mlp(xt, &sgu_d, &sdn_d, si, h);
                for (o, v) in want.iter_mut().zip(y) {
                    *o += v / (1.0 + (-g).exp());
                }
            }
            for (i, (&a, &b)) in got[t * h..(t + 1) * h].iter().zip(&want).enumerate() {
                assert!(
                    (a as f64 - b).abs() < 1e-5,
                    "token {t} dim {i}: grouped {a}, token-by-token {b} (bf16 {bf}, shared {shared})"
                );
            }
        }
    }

    #[test]
    fn grouped_experts_equal_token_by_token_f32() {
        check(false, false, true);
        check(false, true, false);
    }

    #[test]
    fn grouped_experts_equal_token_by_token_bf16() {
        check(true, false, false);
        check(true, true, true);
    }
}
