//! When each request is sent: vLLM's `get_request`. At an infinite rate all
//! requests go at once; otherwise the gaps between them are drawn from a
//! gamma distribution with shape `burstiness` and mean `1 / rate` (burstiness
//! 1 is a Poisson process; below 1 burstier, above 1 more uniform), and the
//! schedule is rescaled so the last request goes out at `n / rate` exactly,
//! which keeps throughput figures stable across seeds.

use rand::{Rng, RngCore};

/// Send times, in seconds from the start of the run, for `num_requests` requests.
pub fn arrival_times(
    num_requests: usize,
    request_rate: f64,
    burstiness: f64,
    rng: &mut impl RngCore,
) -> anyhow::Result<Vec<f64>> {
    if request_rate.is_nan() || request_rate <= 0.0 {
        anyhow::bail!("--request-rate must be positive, got {request_rate}");
    }
    if burstiness.is_nan() || burstiness <= 0.0 {
        anyhow::bail!("--burstiness must be positive, got {burstiness}");
    }
    if request_rate.is_infinite() {
        return Ok(vec![0.0; num_requests]);
    }
    let mut delays: Vec<f64> = (0..num_requests)
        .map(|_| {
            if burstiness.is_infinite() {
                1.0 / request_rate
            } else {
                let theta = 1.0 / (request_rate * burstiness);
                sample_gamma(burstiness, rng) * theta
            }
        })
        .collect();
    for i in 1..delays.len() {
        delays[i] += delays[i - 1];
    }
    if let Some(&last) = delays.last() {
        if last > 0.0 {
            let factor = (num_requests as f64 / request_rate) / last;
            delays.iter_mut().for_each(|d| *d *= factor);
        }
    }
    Ok(delays)
}

/// A Gamma(shape, 1) draw by Marsaglia and Tsang's method; shapes below 1
/// use the boost `G(a) = G(a + 1) * U^(1/a)`.
pub fn sample_gamma(shape: f64, rng: &mut impl RngCore) -> f64 {
    if shape < 1.0 {
        let u: f64 = open01(rng);
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = open01(rng);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A uniform draw in (0, 1), never 0, so its logarithm is finite.
fn open01(rng: &mut impl RngCore) -> f64 {
    loop {
        let u: f64 = rng.random();
        if u > 0.0 {
            return u;
        }
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut impl RngCore) -> f64 {
    let u1 = open01(rng);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn gaps(times: &[f64]) -> Vec<f64> {
        let mut prev = 0.0;
        times
            .iter()
            .map(|&t| {
                let g = t - prev;
                prev = t;
                g
            })
            .collect()
    }

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            arrival_times(5, f64::INFINITY, 1.0, &mut rng).unwrap(),
            vec![0.0; 5]
        );
    }

    #[test]
    fn schedule_ends_at_n_over_rate_and_is_sorted() {
        let mut rng = StdRng::seed_from_u64(1);
        let t = arrival_times(1000, 20.0, 1.0, &mut rng).unwrap();
        assert!((t[999] - 50.0).abs() < 1e-9);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert!(t[0] > 0.0);
    }

    #[test]
    fn poisson_gaps_have_mean_and_cv_of_an_exponential() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = 20_000;
        let t = arrival_times(n, 10.0, 1.0, &mut rng).unwrap();
        let g = gaps(&t);
        let mean = crate::stats::mean(&g);
        let cv = crate::stats::std(&g) / mean;
        // The rate is exact after rescaling; an exponential has CV 1.
        assert!((mean - 0.1).abs() < 1e-9, "mean gap {mean}");
        assert!((cv - 1.0).abs() < 0.05, "cv {cv}");
    }

    #[test]
    fn burstiness_sets_the_spread_of_gaps() {
        // Gamma(k) gaps have CV 1/sqrt(k).
        for (k, want_cv) in [(0.25, 2.0), (4.0, 0.5)] {
            let mut rng = StdRng::seed_from_u64(3);
            let g = gaps(&arrival_times(40_000, 5.0, k, &mut rng).unwrap());
            let cv = crate::stats::std(&g) / crate::stats::mean(&g);
            assert!((cv - want_cv).abs() < 0.08 * want_cv, "k {k}: cv {cv}");
        }
        let mut rng = StdRng::seed_from_u64(4);
        let g = gaps(&arrival_times(10, 4.0, f64::INFINITY, &mut rng).unwrap());
        assert!(g.iter().all(|&x| (x - 0.25).abs() < 1e-12));
    }

    #[test]
    fn gamma_draws_have_the_right_mean() {
        let mut rng = StdRng::seed_from_u64(5);
        for shape in [0.3, 1.0, 2.5, 9.0] {
            let xs: Vec<f64> = (0..50_000).map(|_| sample_gamma(shape, &mut rng)).collect();
            let mean = crate::stats::mean(&xs);
            assert!(
                (mean - shape).abs() < 0.03 * shape.max(1.0),
                "shape {shape}: {mean}"
            );
        }
    }

    #[test]
    fn bad_rates_are_errors() {
        let mut rng = StdRng::seed_from_u64(0);
        assert!(arrival_times(3, 0.0, 1.0, &mut rng).is_err());
        assert!(arrival_times(3, f64::NAN, 1.0, &mut rng).is_err());
        assert!(arrival_times(3, 1.0, 0.0, &mut rng).is_err());
    }
}
