//! `pagoda`: serve a model over an OpenAI-compatible API, generate offline,
//! or benchmark. The top of the crate graph: `serve` and `generate` come from
//! pagoda-server, `bench` from pagoda-benches, and every command that runs an
//! engine takes the same engine flags (`pagoda_engine::EngineArgs`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use pagoda_benches::cli::BenchCommand;
use pagoda_server::cli::{GenerateArgs, ServeArgs};
use pagoda_server::generate::{ordered_prompts, GenPrompt};
use pagoda_server::{generate, serve};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "pagoda",
    bin_name = "pagoda",
    version,
    about = "An LLM serving engine in the family of vLLM"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace. [default: RUST_LOG if
    /// set, else info]
    #[arg(long, global = true, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// Parsed once at start: the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve a model over an OpenAI-compatible HTTP API (/v1/completions,
    /// /v1/chat/completions, /v1/models, /tokenize, /detokenize, /health,
    /// /metrics, /version).
    Serve(ServeArgs),
    /// Generate offline for the given prompts, batched together.
    Generate(GenerateArgs),
    /// Benchmarks: `serve` (load-test a server), `throughput`, `latency`,
    /// `perplexity`.
    #[command(subcommand)]
    Bench(BenchCommand),
}

fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `--prompt` and `--prompt-ids` values in command-line order.
fn generate_prompts(matches: &ArgMatches, args: &GenerateArgs) -> Vec<GenPrompt> {
    let indices = |id: &str| -> Vec<usize> {
        matches
            .subcommand_matches("generate")
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let texts = indices("prompts")
        .into_iter()
        .zip(args.prompts.iter().cloned())
        .collect();
    let ids = indices("prompt_ids")
        .into_iter()
        .zip(args.prompt_ids.iter().map(|t| t.0.clone()))
        .collect();
    ordered_prompts(texts, ids)
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.log_level.as_deref());
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Generate(args) => {
            let prompts = generate_prompts(&matches, &args);
            generate::run(args, prompts)
        }
        Command::Bench(cmd) => pagoda_benches::cli::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pagoda").chain(args.iter().copied()))
    }

    fn kv_cache_memory(args: &[&str]) -> Option<u64> {
        match parse(args).unwrap().command {
            Command::Serve(a) => a.engine.kv_cache_memory,
            Command::Generate(a) => a.engine.kv_cache_memory,
            Command::Bench(BenchCommand::Throughput(a)) => a.engine.kv_cache_memory,
            Command::Bench(BenchCommand::Latency(a)) => a.engine.kv_cache_memory,
            Command::Bench(BenchCommand::Perplexity(a)) => a.engine.kv_cache_memory,
            Command::Bench(BenchCommand::Serve(_)) => unreachable!(),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_reads_sizes_the_same_way() {
        for (size, bytes) in [
            ("512MB", 512u64 << 20),
            ("512m", 512_000_000),
            ("1GiB", 1 << 30),
        ] {
            let flag = ["--kv-cache-memory", size];
            let runs: [&[&str]; 4] = [
                &["serve"],
                &["generate"],
                &["bench", "throughput", "--model", "m"],
                &["bench", "latency", "--model", "m"],
            ];
            for cmd in runs {
                let args: Vec<&str> = cmd.iter().chain(flag.iter()).copied().collect();
                assert_eq!(kv_cache_memory(&args), Some(bytes), "{args:?}");
            }
        }
    }

    #[test]
    fn benches_need_a_model_serve_does_not() {
        assert!(parse(&["serve"]).is_ok());
        assert!(parse(&["bench", "throughput"]).is_err());
        assert!(parse(&["bench", "latency"]).is_err());
        let cli = parse(&[
            "bench",
            "latency",
            "--model",
            "m",
            "--enable-prefix-caching",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::Bench(BenchCommand::Latency(a)) if a.engine.enable_prefix_caching)
        );
    }
}
