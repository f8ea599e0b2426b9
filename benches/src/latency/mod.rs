//! `pagoda bench latency`: one batch of `--batch-size` random prompts, run
//! to completion `--num-iters` times after warm-up; prints the mean and
//! percentiles of its end-to-end time as vLLM does. It also times the same
//! batch generating one token, so that
//! `(latency(in + out) - latency(in + 1)) / (out - 1)` gives the mean time of
//! one decode step of the batch.

pub mod args;

use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use pagoda_engine::{generate_all, EngineHandle};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{json, Map, Value};

pub use args::LatencyArgs;

use crate::random_prompts::{allowed_token_ids, random_token_prompts};
use crate::stats;
use crate::throughput::bench_sampling_params;

/// vLLM's reported percentiles.
pub const PERCENTAGES: [u32; 6] = [10, 25, 50, 75, 90, 99];

/// What a latency run measured, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyResult {
    pub latencies: Vec<f64>,
    /// The batch's time to generate one token (prefill + first token).
    pub prefill_latencies: Vec<f64>,
    pub output_len: usize,
}

impl LatencyResult {
    pub fn avg_latency(&self) -> f64 {
        stats::mean(&self.latencies)
    }

    /// `(mean latency - mean one-token latency) / (output_len - 1)`, when
    /// the output has more than one token and both were measured.
    pub fn mean_decode_step(&self) -> Option<f64> {
        (self.output_len > 1 && !self.prefill_latencies.is_empty()).then(|| {
            (self.avg_latency() - stats::mean(&self.prefill_latencies))
                / (self.output_len - 1) as f64
        })
    }

    /// vLLM's lines, then the prefill and decode-step figures.
    pub fn summary(&self) -> String {
        let mut lines = vec![
            format!("Avg latency: {} seconds", self.avg_latency()),
            format!("Std latency: {} seconds", stats::std(&self.latencies)),
        ];
        for p in PERCENTAGES {
            lines.push(format!(
                "{p}% percentile latency: {} seconds",
                stats::percentile(&self.latencies, p as f64)
            ));
        }
        if !self.prefill_latencies.is_empty() {
            lines.push(format!(
                "Avg latency of one token (prefill): {} seconds",
                stats::mean(&self.prefill_latencies)
            ));
        }
        if let Some(step) = self.mean_decode_step() {
            lines.push(format!("Mean decode step time: {:.2} ms", step * 1000.0));
        }
        lines.join("\n")
    }

    /// vLLM's `--output-json` fields, plus the prefill and decode-step figures.
    pub fn to_json(&self) -> Value {
        let percentiles: Map<String, Value> = PERCENTAGES
            .iter()
            .map(|&p| {
                (
                    p.to_string(),
                    json!(stats::percentile(&self.latencies, p as f64)),
                )
            })
            .collect();
        json!({
            "avg_latency": self.avg_latency(),
            "std_latency": stats::std(&self.latencies),
            "latencies": self.latencies,
            "percentiles": percentiles,
            "avg_prefill_latency": (!self.prefill_latencies.is_empty()).then(|| stats::mean(&self.prefill_latencies)),
            "mean_decode_step_ms": self.mean_decode_step().map(|s| s * 1000.0),
        })
    }
}

/// Starts the engine, runs the benchmark, prints, writes --output-json.
pub fn run_latency(args: &LatencyArgs) -> anyhow::Result<LatencyResult> {
    if args.batch_size == 0 || args.input_len == 0 || args.output_len == 0 || args.num_iters == 0 {
        anyhow::bail!(
            "--batch-size, --input-len, --output-len and --num-iters must be greater than 0"
        );
    }
    let mut config = crate::bench_engine_config(&args.engine)?;
    // Off unless asked for: the batch repeats, and cache hits would hide the
    // prefill (as vLLM's latency bench notes).
    config.enable_prefix_caching = args.engine.enable_prefix_caching;
    let handle = EngineHandle::start(config).context("starting the engine")?;
    let result = run_on(&handle, args);
    handle.shutdown();
    let result = result?;
    println!("{}", result.summary());
    if let Some(path) = &args.output_json {
        let text = serde_json::to_string_pretty(&result.to_json())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}

/// The benchmark on a running engine.
pub fn run_on(handle: &EngineHandle, args: &LatencyArgs) -> anyhow::Result<LatencyResult> {
    let info = handle.model_info();
    if args.input_len + args.output_len > info.max_model_len {
        anyhow::bail!(
            "--input-len {} + --output-len {} exceeds max_model_len {}",
            args.input_len,
            args.output_len,
            info.max_model_len
        );
    }
    let mut rng = StdRng::seed_from_u64(args.engine.seed_or_default());
    let allowed = allowed_token_ids(info, handle.tokenizer());
    let prompts = random_token_prompts(&mut rng, &allowed, &vec![args.input_len; args.batch_size])?;
    let run_batch = |output_len: usize| -> anyhow::Result<f64> {
        let batch = prompts
            .iter()
            .map(|p| (p.clone(), bench_sampling_params(output_len)))
            .collect();
        let start = Instant::now();
        generate_all(handle, batch).context("generation failed")?;
        Ok(start.elapsed().as_secs_f64())
    };
    println!("Warming up...");
    let bar = ProgressBar::new(args.num_iters_warmup as u64);
    for _ in 0..args.num_iters_warmup {
        run_batch(args.output_len)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let bar = ProgressBar::new(args.num_iters as u64);
    let mut latencies = Vec::with_capacity(args.num_iters);
    let mut prefill_latencies = Vec::new();
    for _ in 0..args.num_iters {
        latencies.push(run_batch(args.output_len)?);
        if args.output_len > 1 {
            prefill_latencies.push(run_batch(1)?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(LatencyResult {
        latencies,
        prefill_latencies,
        output_len: args.output_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_by_hand() {
        let r = LatencyResult {
            latencies: vec![1.0, 2.0, 3.0, 4.0],
            prefill_latencies: vec![0.2, 0.3],
            output_len: 10,
        };
        assert_eq!(r.avg_latency(), 2.5);
        // (2.5 - 0.25) / 9 = 0.25 s per step.
        assert!((r.mean_decode_step().unwrap() - 0.25).abs() < 1e-12);
        let j = r.to_json();
        assert_eq!(j["percentiles"]["50"], 2.5);
        assert!((j["percentiles"]["99"].as_f64().unwrap() - 3.97).abs() < 1e-12);
        assert!((j["std_latency"].as_f64().unwrap() - 1.25f64.sqrt()).abs() < 1e-12);
        assert!((j["mean_decode_step_ms"].as_f64().unwrap() - 250.0).abs() < 1e-9);
        let s = r.summary();
        assert!(s.starts_with("Avg latency: 2.5 seconds\n"));
        assert!(s.contains("10% percentile latency: 1.3 seconds"));
        assert!(s.contains("Mean decode step time: 250.00 ms"));
        let one = LatencyResult {
            output_len: 1,
            prefill_latencies: vec![],
            ..r
        };
        assert_eq!(one.mean_decode_step(), None);
        assert_eq!(one.to_json()["mean_decode_step_ms"], Value::Null);
    }
}
