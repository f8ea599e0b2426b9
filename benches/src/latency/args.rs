//! `pagoda bench latency` flags, as `vllm bench latency`'s.

use std::path::PathBuf;

use crate::engine_args::EngineArgs;

/// The end-to-end time of one batch of requests, repeated.
#[derive(Debug, Clone, clap::Args)]
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
    /// Keep prefix caching on (off by default: the batch repeats, and cache
    /// hits would hide the prefill, as vLLM's latency bench notes).
    #[arg(long)]
    pub enable_prefix_caching: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub output_json: Option<PathBuf>,
}
