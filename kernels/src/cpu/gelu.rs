//! GELU(tanh)-and-multiply, the GeGLU MLP's activation (Gemma 2/3's
//! `gelu_pytorch_tanh`): `gelu_tanh(gate) * up`.

use rayon::prelude::*;

use super::min_rows_per_task;

/// `sqrt(2 / pi)`, torch's `kBeta`.
const BETA: f32 = 0.797_884_6;
const KAPPA: f32 = 0.044_715;

/// torch's `gelu(x, approximate="tanh")` in f32:
/// `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    let inner = BETA * (x + KAPPA * x * x * x);
    0.5 * x * (1.0 + inner.tanh())
}

/// Rows of `gate_up` are `[gate (intermediate) | up (intermediate)]`; rows of
/// `out` get `gelu_tanh(gate) * up`.
///
/// # Panics
/// If `gate_up` and `out` are not the same number of rows.
pub fn gelu_tanh_and_mul(gate_up: &[f32], out: &mut [f32], intermediate: usize) {
    if intermediate == 0 {
        assert!(
            gate_up.is_empty() && out.is_empty(),
            "gelu_tanh_and_mul: intermediate is 0"
        );
        return;
    }
    assert_eq!(
        out.len() % intermediate,
        0,
        "gelu_tanh_and_mul: out is not rows of {intermediate}"
    );
    assert_eq!(
        gate_up.len(),
        2 * out.len(),
        "gelu_tanh_and_mul: gate_up is not [rows, 2 * {intermediate}]"
    );
    out.par_chunks_mut(intermediate)
        .zip(gate_up.par_chunks(2 * intermediate))
        .with_min_len(min_rows_per_task(intermediate))
        .for_each(|(o, gu)| {
            let (gate, up) = gu.split_at(intermediate);
            for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                *o = gelu_tanh(*g) * u;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_util::{assert_close, random_vec};

    #[test]
    fn matches_the_tanh_formula_in_f64() {
        let inter = 37;
        let gate_up: Vec<f32> = random_vec(5 * 2 * inter, 3)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        let mut out = vec![0f32; 5 * inter];
        gelu_tanh_and_mul(&gate_up, &mut out, inter);
        let want: Vec<f64> = gate_up
            .chunks(2 * inter)
            .flat_map(|row| {
                (0..inter).map(move |i| {
                    let g = row[i] as f64;
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    0.5 * g
                        * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh())
                        * row[inter + i] as f64
                })
            })
            .collect();
        assert_close(&out, &want, 1e-5, 1e-6, "gelu_tanh_and_mul");
        // Known points of torch.nn.functional.gelu(approximate="tanh").
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-6);
        assert!((gelu_tanh(-3.0) - -0.003_637_433).abs() < 1e-7);
    }
}
