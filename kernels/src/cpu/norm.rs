//! RMSNorm, plain, in place (Qwen3's per-head q/k norm) and fused with the
//! residual add (vLLM's `fused_add_rms_norm`), in HF's order of operations:
//! `weight * (x * rsqrt(mean(x²) + eps))`.

use rayon::prelude::*;

use super::min_rows_per_task;
use super::simd::{dispatch, sum_squares};

/// `out[r] = rms_norm(x[r]) * weight` for every row of `weight.len()`.
///
/// # Panics
/// If `x` is not whole rows or `out` differs in length from `x`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = check_rows("rms_norm", x.len(), weight);
    assert_eq!(out.len(), x.len(), "rms_norm: out and x differ in length");
    if d == 0 {
        return;
    }
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(min_rows_per_task(d))
        .for_each(|(o, x)| norm_row(x, weight, eps, o));
}

/// `x[r] = rms_norm(x[r]) * weight` in place, rows of `weight.len()`.
///
/// # Panics
/// If `x` is not whole rows.
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    let d = check_rows("rms_norm_inplace", x.len(), weight);
    if d == 0 {
        return;
    }
    x.par_chunks_mut(d)
        .with_min_len(min_rows_per_task(d))
        .for_each(|x| norm_row_inplace(x, weight, eps));
}

/// vLLM's fused residual add + RMSNorm: `residual += x; x = rms_norm(residual) * weight`.
///
/// # Panics
/// If `x` is not whole rows or `residual` differs in length from `x`.
pub fn fused_add_rms_norm(x: &mut [f32], residual: &mut [f32], weight: &[f32], eps: f32) {
    let d = check_rows("fused_add_rms_norm", x.len(), weight);
    assert_eq!(
        residual.len(),
        x.len(),
        "fused_add_rms_norm: residual and x differ in length"
    );
    if d == 0 {
        return;
    }
    x.par_chunks_mut(d)
        .zip(residual.par_chunks_mut(d))
        .with_min_len(min_rows_per_task(d))
        .for_each(|(x, r)| add_norm_row(x, r, weight, eps));
}

fn check_rows(name: &str, len: usize, weight: &[f32]) -> usize {
    let d = weight.len();
    assert!(
        if d == 0 {
            len == 0
        } else {
            len.is_multiple_of(d)
        },
        "{name}: length {len} is not a whole number of rows of {d}"
    );
    d
}

#[inline(always)]
fn inv_rms<const ISA: u8>(row: &[f32], eps: f32) -> f32 {
    1.0 / (sum_squares::<ISA>(row) / row.len() as f32 + eps).sqrt()
}

dispatch! {
    fn norm_row / norm_row_with(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) = norm_row_body;
}

#[inline(always)]
fn norm_row_body<const ISA: u8>(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = inv_rms::<ISA>(x, eps);
    for ((o, x), w) in out.iter_mut().zip(x).zip(w) {
        *o = w * (x * inv);
    }
}

dispatch! {
    fn norm_row_inplace / norm_row_inplace_with(x: &mut [f32], w: &[f32], eps: f32) = norm_row_inplace_body;
}

#[inline(always)]
fn norm_row_inplace_body<const ISA: u8>(x: &mut [f32], w: &[f32], eps: f32) {
    let inv = inv_rms::<ISA>(x, eps);
    for (x, w) in x.iter_mut().zip(w) {
        *x = w * (*x * inv);
    }
}

dispatch! {
    fn add_norm_row / add_norm_row_with(x: &mut [f32], r: &mut [f32], w: &[f32], eps: f32) = add_norm_row_body;
}

#[inline(always)]
fn add_norm_row_body<const ISA: u8>(x: &mut [f32], r: &mut [f32], w: &[f32], eps: f32) {
    for (r, x) in r.iter_mut().zip(x.iter()) {
        *r += x;
    }
    let inv = inv_rms::<ISA>(r, eps);
    for ((x, r), w) in x.iter_mut().zip(r.iter()).zip(w) {
        *x = w * (r * inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::Isa;
    use crate::cpu::test_util::{assert_close, random_vec};

    fn naive(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
        let d = w.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(d) {
            let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            out.extend(row.iter().zip(w).map(|(v, w)| *v as f64 * inv * *w as f64));
        }
        out
    }

    const SHAPES: [(usize, usize); 6] = [(1, 1), (3, 7), (5, 64), (64, 576), (2, 1000), (300, 128)];

    #[test]
    fn rms_norm_matches_f64() {
        for (rows, d) in SHAPES {
            let x = random_vec(rows * d, 1);
            let w = random_vec(d, 2);
            let mut out = vec![f32::NAN; rows * d];
            rms_norm(&x, &w, 1e-5, &mut out);
            assert_close(
                &out,
                &naive(&x, &w, 1e-5),
                1e-5,
                1e-6,
                &format!("rms_norm {rows}x{d}"),
            );
            let mut inplace = x.clone();
            rms_norm_inplace(&mut inplace, &w, 1e-5);
            assert_eq!(inplace, out, "in-place differs from out-of-place");
        }
    }

    #[test]
    fn eps_matters_for_tiny_rows() {
        let x = vec![1e-4f32; 8];
        let w = vec![1.0f32; 8];
        let mut out = vec![0.0; 8];
        rms_norm(&x, &w, 1e-6, &mut out);
        assert_close(&out, &naive(&x, &w, 1e-6), 1e-5, 0.0, "eps 1e-6");
        assert!((out[0] - 0.0995).abs() < 1e-3);
    }

    #[test]
    fn fused_add_matches_f64_on_every_isa() {
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            for (rows, d) in SHAPES {
                let x = random_vec(rows * d, 3);
                let res = random_vec(rows * d, 4);
                let w = random_vec(d, 5);
                let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
                let (mut xo, mut ro) = (x.clone(), res.clone());
                for (xr, rr) in xo.chunks_mut(d).zip(ro.chunks_mut(d)) {
                    add_norm_row_with(isa, xr, rr, &w, 1e-6);
                }
                assert_eq!(ro, sum, "{isa:?}: residual must hold x + residual");
                assert_close(
                    &xo,
                    &naive(&sum, &w, 1e-6),
                    1e-5,
                    1e-6,
                    &format!("{isa:?} {rows}x{d}"),
                );
                let (mut xp, mut rp) = (x.clone(), res.clone());
                fused_add_rms_norm(&mut xp, &mut rp, &w, 1e-6);
                assert_close(
                    &xp,
                    &naive(&sum, &w, 1e-6),
                    1e-5,
                    1e-6,
                    "public fused_add_rms_norm",
                );
            }
        }
    }

    #[test]
    fn every_isa_matches_f64() {
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            let x = random_vec(80, 9);
            let w = random_vec(80, 8);
            let mut out = vec![0.0; 80];
            norm_row_with(isa, &x, &w, 1e-5, &mut out);
            assert_close(&out, &naive(&x, &w, 1e-5), 1e-5, 1e-6, &format!("{isa:?}"));
            let mut xi = x.clone();
            norm_row_inplace_with(isa, &mut xi, &w, 1e-5);
            assert_eq!(xi, out);
        }
    }

    #[test]
    #[should_panic(expected = "whole number of rows")]
    fn ragged_rows_panic() {
        rms_norm(&[1.0; 5], &[1.0; 2], 1e-6, &mut [0.0; 5]);
    }
}
