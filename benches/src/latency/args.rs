//! `pagoda bench latency` flags, as `vllm bench latency`'s.

use std::path::PathBuf;

use pagoda_engine::EngineArgs;

/// The end-to-end time of one batch of requests, repeated. Prefix caching
/// is off unless `--enable-prefix-caching` (the batch repeats, and cache hits
/// would hide the prefill, as vLLM's latency bench notes).
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("model", |a| a.required(true)))]
pub struct LatencyArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, default_value_t = 32)]
    pub input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 10)]
    pub num_iters_warmup: usize,
    #[arg(long, default_value_t = 30)]
    pub num_iters: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub output_json: Option<PathBuf>,
}
