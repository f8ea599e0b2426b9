//! The engine flags `bench throughput` and `bench latency` share, named as
//! vLLM's engine arguments; unset flags keep `EngineConfig`'s defaults.

use std::path::PathBuf;

use pagoda_engine::engine_config::LoadFormat;
use pagoda_engine::{Device, EngineConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// HF model folder, .gguf file, or a folder holding one .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// auto: the real weights; dummy: random weights of the model's shape.
    #[arg(long, default_value = "auto", value_parser = ["auto", "dummy"])]
    pub load_format: String,
    #[arg(long, default_value = "auto", value_parser = ["cpu", "cuda", "auto"])]
    pub device: String,
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    #[arg(long)]
    pub max_model_len: Option<usize>,
    #[arg(long)]
    pub block_size: Option<usize>,
    /// CPU KV cache size in bytes (suffixes K, M, G, KiB, MiB, GiB allowed).
    #[arg(long, value_parser = parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    #[arg(long)]
    pub gpu_memory_utilization: Option<f32>,
    /// No CUDA graphs.
    #[arg(long)]
    pub enforce_eager: bool,
    #[arg(long)]
    pub no_enable_prefix_caching: bool,
    /// Seeds the engine and the random prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl EngineArgs {
    /// The engine configuration these flags describe.
    pub fn engine_config(&self) -> EngineConfig {
        let d = EngineConfig::default();
        EngineConfig {
            model: self.model.clone(),
            load_format: if self.load_format == "dummy" {
                LoadFormat::Dummy
            } else {
                LoadFormat::Auto
            },
            device: match self.device.as_str() {
                "cpu" => Device::Cpu,
                "cuda" => Device::Cuda,
                _ => Device::Auto,
            },
            max_num_seqs: self.max_num_seqs.unwrap_or(d.max_num_seqs),
            max_num_batched_tokens: self.max_num_batched_tokens.or(d.max_num_batched_tokens),
            max_model_len: self.max_model_len.or(d.max_model_len),
            block_size: self.block_size.unwrap_or(d.block_size),
            kv_cache_memory: self.kv_cache_memory.or(d.kv_cache_memory),
            gpu_memory_utilization: self
                .gpu_memory_utilization
                .unwrap_or(d.gpu_memory_utilization),
            enable_prefix_caching: !self.no_enable_prefix_caching && d.enable_prefix_caching,
            enforce_eager: self.enforce_eager || d.enforce_eager,
            seed: self.seed,
            ..d
        }
    }
}

/// `1073741824`, `512M`, `4GiB`, `1.5G` -> bytes (K/M/G are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid byte size {s:?}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("invalid byte size unit {other:?} in {s:?}")),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("byte size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert!(
            parse_bytes("x").is_err()
                && parse_bytes("0").is_err()
                && parse_bytes("3parsecs").is_err()
        );
    }

    #[test]
    fn flags_override_defaults_only_when_given() {
        let cli = Cli::try_parse_from([
            "t",
            "--model",
            "m",
            "--device",
            "cpu",
            "--max-num-seqs",
            "8",
            "--no-enable-prefix-caching",
            "--load-format",
            "dummy",
            "--kv-cache-memory",
            "64M",
        ])
        .unwrap();
        let c = cli.engine.engine_config();
        let d = EngineConfig::default();
        assert_eq!(c.device, Device::Cpu);
        assert_eq!(c.load_format, LoadFormat::Dummy);
        assert_eq!(c.max_num_seqs, 8);
        assert!(!c.enable_prefix_caching);
        assert_eq!(c.kv_cache_memory, Some(64 << 20));
        assert_eq!(c.block_size, d.block_size);
        assert_eq!(c.gpu_memory_utilization, d.gpu_memory_utilization);
        assert!(Cli::try_parse_from(["t"]).is_err(), "--model is required");
    }
}
