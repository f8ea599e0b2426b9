//! Softmax and log-softmax over one row of logits (the sampler's), in f32 with
//! the max subtracted first. As torch, a row whose maximum is not finite
//! (all `-inf`, or holding `+inf`/NaN) comes out NaN.

use super::simd::{dispatch, exp, hsum, max, LANES};

/// `row = softmax(row)`.
pub fn softmax_inplace(row: &mut [f32]) {
    softmax_row(row, false);
}

/// `row = log_softmax(row)`.
pub fn log_softmax_inplace(row: &mut [f32]) {
    softmax_row(row, true);
}

dispatch! {
    fn softmax_row / softmax_row_with(row: &mut [f32], log: bool) = softmax_body;
}

#[inline(always)]
fn softmax_body<const ISA: u8>(row: &mut [f32], log: bool) {
    let m = max(row);
    if !m.is_finite() {
        row.fill(f32::NAN);
        return;
    }
    // Lane-wise partial sums so the exp loop vectorizes; a NaN entry makes
    // the sum NaN and with it the whole row.
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp::<ISA>(c[i] - m);
            if !log {
                c[i] = e;
            }
            acc[i] += e;
        }
    }
    let mut sum = hsum::<ISA>(acc);
    for v in chunks.into_remainder() {
        let e = exp::<ISA>(*v - m);
        if !log {
            *v = e;
        }
        sum += e;
    }
    if log {
        let shift = m + sum.ln();
        for v in row.iter_mut() {
            *v -= shift;
        }
    } else {
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::Isa;
    use crate::cpu::test_util::{assert_close, random_vec};

    fn naive(row: &[f32], log: bool) -> Vec<f64> {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, v| a.max(*v as f64));
        let lse = m + row.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
        row.iter()
            .map(|v| {
                if log {
                    *v as f64 - lse
                } else {
                    (*v as f64 - lse).exp()
                }
            })
            .collect()
    }

    #[test]
    fn matches_f64_on_vocab_sized_rows() {
        for (n, scale) in [
            (1, 1.0),
            (7, 3.0),
            (100, 20.0),
            (49152, 15.0),
            (151_936, 8.0),
        ] {
            let row: Vec<f32> = random_vec(n, n as u64).iter().map(|v| v * scale).collect();
            let mut p = row.clone();
            softmax_inplace(&mut p);
            assert_close(
                &p,
                &naive(&row, false),
                1e-5,
                1e-9,
                &format!("softmax n={n}"),
            );
            let mut lp = row.clone();
            log_softmax_inplace(&mut lp);
            assert_close(
                &lp,
                &naive(&row, true),
                1e-5,
                1e-5,
                &format!("log_softmax n={n}"),
            );
        }
    }

    #[test]
    fn every_isa_matches_f64_with_masked_entries() {
        let mut row: Vec<f32> = random_vec(1000, 5).iter().map(|v| v * 40.0).collect();
        for v in row.iter_mut().step_by(3) {
            *v = f32::NEG_INFINITY;
        }
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            for log in [false, true] {
                let mut r = row.clone();
                softmax_row_with(isa, &mut r, log);
                let want = naive(&row, log);
                for (i, (g, w)) in r.iter().zip(&want).enumerate() {
                    if w.is_infinite() {
                        assert!(
                            *g == f32::NEG_INFINITY || (*g == 0.0 && !log),
                            "{isa:?} {i}: {g}"
                        );
                    } else {
                        assert!(
                            (*g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-6,
                            "{isa:?} log={log} {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn degenerate_rows() {
        let mut e: [f32; 0] = [];
        softmax_inplace(&mut e);
        let mut all_masked = [f32::NEG_INFINITY; 3];
        softmax_inplace(&mut all_masked);
        assert!(all_masked.iter().all(|v| v.is_nan()));
        let mut one = [f32::NEG_INFINITY, 2.0];
        log_softmax_inplace(&mut one);
        assert_eq!(one, [f32::NEG_INFINITY, 0.0]);
        let mut nan = [1.0, f32::NAN];
        softmax_inplace(&mut nan);
        assert!(nan[0].is_nan());
    }
}
