//! Summary statistics with numpy's semantics, so figures match `vllm bench`
//! to the last digit: population std (ddof = 0), and percentiles by numpy's
//! default "linear" method. An empty sample reads as `[0]`, as vLLM's
//! `np.mean(xs or 0)` does.

/// Arithmetic mean; 0 for an empty sample.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population standard deviation (numpy's `np.std`, ddof = 0); 0 for an empty sample.
pub fn std(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
    var.sqrt()
}

/// The median: numpy's 50th percentile.
pub fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// numpy's `np.percentile(xs, p)` with the default linear interpolation:
/// the value at fractional rank `p / 100 * (n - 1)` of the sorted sample.
/// `p` is clamped to [0, 100]; NaNs sort last.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    lerp(sorted[lo], sorted[hi], rank - lo as f64)
}

/// numpy's `_lerp`: computed from the nearer end so that t = 1 gives `b` exactly.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sample_reads_as_zero() {
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(std(&[]), 0.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn mean_and_population_std() {
        // np.std([2, 4, 4, 4, 5, 5, 7, 9]) == 2.0 exactly.
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), 5.0);
        assert_eq!(std(&xs), 2.0);
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // np.percentile([1, 2, 3, 4], [0, 25, 50, 75, 99, 100])
        //   -> [1.0, 1.75, 2.5, 3.25, 3.97, 4.0]
        let xs = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert!((percentile(&xs, 25.0) - 1.75).abs() < 1e-12);
        assert_eq!(median(&xs), 2.5);
        assert!((percentile(&xs, 75.0) - 3.25).abs() < 1e-12);
        assert!((percentile(&xs, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&xs, 100.0), 4.0);
        // np.percentile([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 99) -> 99.1
        let ys: Vec<f64> = (1..=10).map(|i| i as f64 * 10.0).collect();
        assert!((percentile(&ys, 99.0) - 99.1).abs() < 1e-9);
        // np.median([3, 1, 2]) -> 2.0; a single value is every percentile.
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&[7.5], 10.0), 7.5);
    }
}
