//! `pagoda bench throughput`: offline generation of random prompts through
//! the engine, timed from the first request in to the last token out.

pub mod args;

use std::time::Instant;

use anyhow::Context;
use pagoda_engine::{generate_all, EngineHandle, FinalOutput, SamplingParams};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::json;

pub use args::ThroughputArgs;

use crate::random_prompts::{allowed_token_ids, random_token_prompts};
use crate::serve::dataset::sample_lengths;

/// What a throughput run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputResult {
    pub elapsed_time: f64,
    pub num_requests: usize,
    pub total_prompt_tokens: usize,
    pub total_output_tokens: usize,
}

impl ThroughputResult {
    /// Totals over finished requests.
    pub fn from_outputs(outputs: &[FinalOutput], elapsed_time: f64) -> Self {
        Self {
            elapsed_time,
            num_requests: outputs.len(),
            total_prompt_tokens: outputs.iter().map(|o| o.prompt_token_ids.len()).sum(),
            total_output_tokens: outputs
                .iter()
                .flat_map(|o| o.samples.iter())
                .map(|s| s.token_ids.len())
                .sum(),
        }
    }

    pub fn total_num_tokens(&self) -> usize {
        self.total_prompt_tokens + self.total_output_tokens
    }

    /// vLLM's summary lines.
    pub fn summary(&self) -> String {
        let t = self.elapsed_time;
        format!(
            "Throughput: {:.2} requests/s, {:.2} total tokens/s, {:.2} output tokens/s\n\
             Total num prompt tokens:  {}\nTotal num output tokens:  {}",
            self.num_requests as f64 / t,
            self.total_num_tokens() as f64 / t,
            self.total_output_tokens as f64 / t,
            self.total_prompt_tokens,
            self.total_output_tokens,
        )
    }

    /// vLLM's `--output-json` fields, plus the output-token figures.
    pub fn to_json(&self) -> serde_json::Value {
        let t = self.elapsed_time;
        json!({
            "elapsed_time": t,
            "num_requests": self.num_requests,
            "total_num_tokens": self.total_num_tokens(),
            "total_prompt_tokens": self.total_prompt_tokens,
            "total_output_tokens": self.total_output_tokens,
            "requests_per_second": self.num_requests as f64 / t,
            "tokens_per_second": self.total_num_tokens() as f64 / t,
            "output_tokens_per_second": self.total_output_tokens as f64 / t,
        })
    }
}

/// Starts the engine, runs the benchmark, prints vLLM's lines, writes --output-json.
pub fn run_throughput(args: &ThroughputArgs) -> anyhow::Result<ThroughputResult> {
    if args.num_prompts == 0 {
        anyhow::bail!("--num-prompts must be greater than 0");
    }
    if args.input_len == 0 {
        anyhow::bail!("--input-len must be greater than 0");
    }
    let handle = EngineHandle::start(crate::bench_engine_config(&args.engine)?)
        .context("starting the engine")?;
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
pub fn run_on(handle: &EngineHandle, args: &ThroughputArgs) -> anyhow::Result<ThroughputResult> {
    let info = handle.model_info();
    eprintln!(
        "Model {} ({}) on {}: KV cache {} tokens, max_num_seqs {}",
        info.name, info.architecture, info.device, info.kv_cache_tokens, info.max_num_seqs
    );
    let mut rng = StdRng::seed_from_u64(args.engine.seed_or_default());
    let (input_lens, output_lens) = sample_lengths(
        &mut rng,
        args.num_prompts,
        args.random_range_ratio,
        args.input_len,
        args.output_len,
    )?;
    let input_lens: Vec<usize> = input_lens.into_iter().map(|n| n.max(1)).collect();
    if let Some(i) =
        (0..input_lens.len()).find(|&i| input_lens[i] + output_lens[i] > info.max_model_len)
    {
        anyhow::bail!(
            "a request of {} prompt + {} output tokens exceeds max_model_len {}: lower the lengths or raise --max-model-len",
            input_lens[i],
            output_lens[i],
            info.max_model_len
        );
    }
    let allowed = allowed_token_ids(info, handle.tokenizer());
    let prompts = random_token_prompts(&mut rng, &allowed, &input_lens)?;
    let requests: Vec<(Vec<u32>, SamplingParams)> = prompts
        .into_iter()
        .zip(&output_lens)
        .map(|(p, &out)| (p, bench_sampling_params(out)))
        .collect();
    let start = Instant::now();
    let outputs = generate_all(handle, requests).context("generation failed")?;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(ThroughputResult::from_outputs(&outputs, elapsed))
}

/// vLLM's bench sampling: temperature 1, top-p 1, exactly `output_len` tokens.
pub fn bench_sampling_params(output_len: usize) -> SamplingParams {
    SamplingParams {
        n: 1,
        temperature: 1.0,
        top_p: 1.0,
        ignore_eos: true,
        max_tokens: Some(output_len),
        ..SamplingParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagoda_engine::FinalSample;

    #[test]
    fn totals_and_rates() {
        let out = |p: usize, o: usize| FinalOutput {
            prompt_token_ids: vec![5; p],
            num_cached_tokens: 0,
            samples: vec![FinalSample {
                token_ids: vec![7; o],
                ..Default::default()
            }],
            metrics: None,
            prompt_logprobs: None,
        };
        let r = ThroughputResult::from_outputs(&[out(10, 4), out(6, 4)], 2.0);
        assert_eq!(
            (
                r.total_prompt_tokens,
                r.total_output_tokens,
                r.total_num_tokens()
            ),
            (16, 8, 24)
        );
        assert_eq!(
            r.summary().lines().next().unwrap(),
            "Throughput: 1.00 requests/s, 12.00 total tokens/s, 4.00 output tokens/s"
        );
        let j = r.to_json();
        assert_eq!(j["requests_per_second"], 1.0);
        assert_eq!(j["tokens_per_second"], 12.0);
        assert_eq!(j["output_tokens_per_second"], 4.0);
        assert_eq!(j["total_num_tokens"], 24);
        let p = bench_sampling_params(9);
        assert!(p.ignore_eos && p.max_tokens == Some(9));
    }
}
