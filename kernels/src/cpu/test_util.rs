//! Random inputs and f64-reference comparisons for the kernel tests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `len` values uniform in [-1, 1), reproducible from `seed`.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise, naming the first miss.
pub fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w} (error {err:e})"
        );
    }
}
