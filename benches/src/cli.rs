//! `pagoda bench ...`: the subcommands the `pagoda` binary mounts.

use crate::latency::{run_latency, LatencyArgs};
use crate::perplexity::{run_perplexity, PerplexityArgs};
use crate::serve::{run_benchmark, ServeArgs};
use crate::throughput::{run_throughput, ThroughputArgs};

/// Parsed once per process, so the size of `ServeArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Load-test a running OpenAI-compatible server (as `vllm bench serve`).
    Serve(ServeArgs),
    /// Offline throughput through the engine (as `vllm bench throughput`).
    Throughput(ThroughputArgs),
    /// Latency of one batch through the engine (as `vllm bench latency`).
    Latency(LatencyArgs),
    /// Perplexity over a text file, scored as llama.cpp's `llama-perplexity`.
    Perplexity(PerplexityArgs),
}

/// Runs a bench subcommand. It runs on a thread of its own, so it works
/// whether or not the caller is inside a tokio runtime, and the engine's
/// blocking calls never run on an async worker.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || run_here(cmd))
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the bench thread panicked")))
    })
}

fn run_here(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Serve(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_benchmark(&args))?;
        }
        BenchCommand::Throughput(args) => {
            run_throughput(&args)?;
        }
        BenchCommand::Latency(args) => {
            run_latency(&args)?;
        }
        BenchCommand::Perplexity(args) => {
            run_perplexity(&args)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        bench: BenchCommand,
    }

    #[test]
    fn subcommands_parse() {
        let c = Cli::try_parse_from(["bench", "serve", "--num-prompts", "5"]).unwrap();
        assert!(matches!(c.bench, BenchCommand::Serve(ref a) if a.num_prompts == 5));
        let c = Cli::try_parse_from(["bench", "throughput", "--model", "m", "--input-len", "8"])
            .unwrap();
        assert!(matches!(c.bench, BenchCommand::Throughput(ref a) if a.input_len == 8));
        let c =
            Cli::try_parse_from(["bench", "latency", "--model", "m", "--batch-size", "2"]).unwrap();
        assert!(matches!(c.bench, BenchCommand::Latency(ref a) if a.batch_size == 2));
        assert!(Cli::try_parse_from(["bench", "throughput"]).is_err());
    }

    #[test]
    fn a_bad_flag_value_is_an_error_not_a_panic() {
        let c = Cli::try_parse_from([
            "bench",
            "serve",
            "--base-url",
            "http://127.0.0.1:1",
            "--max-concurrency",
            "0",
        ])
        .unwrap();
        let err = run(c.bench).unwrap_err();
        assert!(err.to_string().contains("--max-concurrency"), "{err}");
    }
}
