//! Pagoda benches: the client side of `pagoda bench serve | throughput |
//! latency | perplexity`, compatible with `vllm bench` (same flags, same printed table,
//! same saved JSON), so one tool compares Pagoda with other servers.

pub mod cli;
pub mod latency;
pub mod perplexity;
pub mod random_prompts;
pub mod serve;
pub mod stats;
pub mod throughput;

use anyhow::Context;
use pagoda_engine::{EngineArgs, EngineConfig};

/// The engine configuration of `bench throughput` and `bench latency`: the
/// shared engine flags, with `--model` required (clap already refuses a
/// command line without it).
pub(crate) fn bench_engine_config(args: &EngineArgs) -> anyhow::Result<EngineConfig> {
    let model = args.model.clone().context("--model is required")?;
    Ok(args.engine_config(model, None))
}
