//! Logit soft-capping (Gemma 2): `cap * tanh(x / cap)` squashes scores into
//! `(-cap, cap)` smoothly. Used on attention scores (inside the attention
//! kernel) and on the final logits (`final_logit_softcapping`).

use rayon::prelude::*;

use super::PAR_MIN_ELEMS;

/// `x = cap * tanh(x / cap)` elementwise, in f32 as transformers computes it
/// (divide, tanh, multiply).
pub fn softcap_inplace(x: &mut [f32], cap: f32) {
    if x.len() < PAR_MIN_ELEMS {
        softcap_serial(x, cap);
    } else {
        x.par_chunks_mut(PAR_MIN_ELEMS / 4)
            .for_each(|c| softcap_serial(c, cap));
    }
}

fn softcap_serial(x: &mut [f32], cap: f32) {
    for v in x {
        *v = (*v / cap).tanh() * cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squashes_into_the_cap_and_keeps_small_values() {
        let mut x = vec![0.0, 1e-3, -2.0, 50.0, 1e6, -1e6, f32::INFINITY];
        softcap_inplace(&mut x, 30.0);
        assert_eq!(x[0], 0.0);
        assert!((x[1] - 1e-3).abs() < 1e-9);
        assert!((x[2] - 30.0 * (-2.0f64 / 30.0).tanh() as f32).abs() < 1e-6);
        assert!((x[3] - 30.0 * (50.0f64 / 30.0).tanh() as f32).abs() < 1e-5);
        assert_eq!((x[4], x[5], x[6]), (30.0, -30.0, 30.0));
        // The parallel path computes the same values.
        let mut big: Vec<f32> = (0..3 * PAR_MIN_ELEMS)
            .map(|i| i as f32 * 0.01 - 100.0)
            .collect();
        let mut serial = big.clone();
        softcap_inplace(&mut big, 7.5);
        softcap_serial(&mut serial, 7.5);
        assert_eq!(big, serial);
    }
}
