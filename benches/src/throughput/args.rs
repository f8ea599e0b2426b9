//! `pagoda bench throughput` flags, as `vllm bench throughput`'s for the random dataset.

use std::path::PathBuf;

use pagoda_engine::EngineArgs;

/// Offline throughput: every request enters the engine at once (ignore_eos,
/// max_tokens = the output length), as vLLM's and nano-vllm's benches do.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("model", |a| a.required(true)))]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 1024)]
    pub input_len: usize,
    /// Generated tokens per request.
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Lengths are uniform in [len * (1 - r), len * (1 + r)]; r in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    pub output_json: Option<PathBuf>,
}
