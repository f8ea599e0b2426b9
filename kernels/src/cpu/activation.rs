//! SiLU-and-multiply, the gated MLP's activation: `silu(gate) * up`.

use rayon::prelude::*;

use super::min_rows_per_task;
use super::simd::{dispatch, exp};

/// Rows of `gate_up` are `[gate (intermediate) | up (intermediate)]`; rows of
/// `out` get `silu(gate) * up`, with `silu(x) = x / (1 + e^-x)` as torch.
///
/// # Panics
/// If `gate_up` and `out` are not the same number of rows.
pub fn silu_and_mul(gate_up: &[f32], out: &mut [f32], intermediate: usize) {
    if intermediate == 0 {
        assert!(
            gate_up.is_empty() && out.is_empty(),
            "silu_and_mul: intermediate is 0"
        );
        return;
    }
    assert_eq!(
        out.len() % intermediate,
        0,
        "silu_and_mul: out is not rows of {intermediate}"
    );
    assert_eq!(
        gate_up.len(),
        2 * out.len(),
        "silu_and_mul: gate_up is not [rows, 2 * {intermediate}]"
    );
    out.par_chunks_mut(intermediate)
        .zip(gate_up.par_chunks(2 * intermediate))
        .with_min_len(min_rows_per_task(intermediate))
        .for_each(|(o, gu)| silu_mul_row(gu, o));
}

dispatch! {
    fn silu_mul_row / silu_mul_row_with(gate_up: &[f32], out: &mut [f32]) = silu_mul_row_body;
}

#[inline(always)]
fn silu_mul_row_body<const ISA: u8>(gate_up: &[f32], out: &mut [f32]) {
    let (gate, up) = gate_up.split_at(out.len());
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp::<ISA>(-g)) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::Isa;
    use crate::cpu::test_util::{assert_close, random_vec};

    fn naive(gate_up: &[f32], inter: usize) -> Vec<f64> {
        gate_up
            .chunks(2 * inter)
            .flat_map(|row| {
                (0..inter).map(move |i| {
                    let g = row[i] as f64;
                    g / (1.0 + (-g).exp()) * row[inter + i] as f64
                })
            })
            .collect()
    }

    #[test]
    fn matches_f64_including_large_magnitudes() {
        for (rows, inter) in [(1, 1), (3, 17), (64, 1536), (5, 100)] {
            let mut gu = random_vec(rows * 2 * inter, 7);
            for (i, v) in gu.iter_mut().enumerate().step_by(5) {
                *v *= if i % 2 == 0 { 30.0 } else { 120.0 };
            }
            let mut out = vec![f32::NAN; rows * inter];
            silu_and_mul(&gu, &mut out, inter);
            assert_close(
                &out,
                &naive(&gu, inter),
                1e-5,
                1e-6,
                &format!("{rows}x{inter}"),
            );
        }
    }

    #[test]
    fn every_isa_matches_f64() {
        let gu = random_vec(2 * 77, 3)
            .iter()
            .map(|v| v * 12.0)
            .collect::<Vec<_>>();
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            let mut out = vec![0.0; 77];
            silu_mul_row_with(isa, &gu, &mut out);
            assert_close(&out, &naive(&gu, 77), 1e-5, 1e-6, &format!("{isa:?}"));
        }
    }

    #[test]
    #[should_panic(expected = "gate_up")]
    fn mismatched_rows_panic() {
        silu_and_mul(&[0.0; 6], &mut [0.0; 2], 1);
    }
}
