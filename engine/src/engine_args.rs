//! The engine flags every `pagoda` command shares (`serve`, `generate`,
//! `bench throughput`, `bench latency`), named as vLLM names them. Unset
//! flags keep `EngineConfig`'s own (vLLM-like) defaults.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::byte_size::parse_byte_size;
use crate::engine_config::{
    CpuMatmul, Device, EngineConfig, KvCacheDtype, LoadFormat, SchedulingPolicy,
};

/// `--scheduling-policy` (the scheduler crate knows nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulingPolicyArg {
    /// First come, first served.
    Fcfs,
    /// Lower `priority` values first, then arrival order.
    Priority,
}

impl From<SchedulingPolicyArg> for SchedulingPolicy {
    fn from(p: SchedulingPolicyArg) -> Self {
        match p {
            SchedulingPolicyArg::Fcfs => SchedulingPolicy::Fcfs,
            SchedulingPolicyArg::Priority => SchedulingPolicy::Priority,
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct EngineArgs {
    /// The model: a Hugging Face folder (config.json, model.safetensors,
    /// tokenizer.json, ...), a .gguf file, or a folder holding one .gguf
    /// file. Without it, `serve` and `generate` use SmolLM2-135M-Instruct,
    /// fetched on first use into $PAGODA_HOME/models (default
    /// ~/.cache/pagoda/models); `bench throughput` and `bench latency`
    /// require it.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,

    /// `auto` reads the weights; `dummy` uses random weights of the
    /// checkpoint's shapes (benchmarking without real weights).
    #[arg(long, value_enum, default_value_t = LoadFormat::Auto)]
    pub load_format: LoadFormat,

    /// With `--load-format dummy`: store the random weight matrices as GGUF
    /// blocks of this type (or llama.cpp's `_M` mix), to load and time a
    /// quantized shape without its file. A real checkpoint's quantization
    /// is read from the checkpoint, so other load formats refuse this flag.
    #[arg(long, value_enum, value_name = "TYPE", ignore_case = true)]
    pub quantization: Option<crate::weights::DummyQuantization>,

    /// Where to run the model. `auto` picks CUDA device 0, else the CPU;
    /// models needing what the CUDA path lacks (Gemma, sliding windows past
    /// --max-model-len) run on the CPU, and `cuda` refuses them.
    /// `cuda-emu` is a TEST device, not for serving: the CUDA backend on the
    /// CPU emulator, thousands of times slower than `cpu`.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,

    /// Most sequences in one engine step (the running batch). [default: 256]
    #[arg(long, value_name = "N")]
    pub max_num_seqs: Option<usize>,

    /// Token budget of one engine step (prefill chunks + decodes).
    /// [default: 2048 on CPU, 8192 on CUDA]
    #[arg(long, value_name = "N")]
    pub max_num_batched_tokens: Option<usize>,

    /// Context length (prompt + output) per request.
    /// [default: the model's]
    #[arg(long, value_name = "N")]
    pub max_model_len: Option<usize>,

    /// Tokens per KV-cache block. [default: 16]
    #[arg(long, value_name = "N")]
    pub block_size: Option<usize>,

    /// KV-cache size, in bytes, as vLLM's `--kv-cache-memory-bytes` reads
    /// it: k/m/g/t are powers of 1000, K/M/G/T powers of 1024, a trailing B
    /// changes nothing, KiB/MiB/GiB/TiB are powers of 1024 (512m =
    /// 512000000; 512M = 512MB = 512MiB = 536870912). On CUDA it replaces
    /// the sizing by --gpu-memory-utilization. [default on CPU: 30% of
    /// available memory, 256 MiB to 8 GiB]
    #[arg(long, value_name = "BYTES", value_parser = parse_byte_size)]
    pub kv_cache_memory: Option<u64>,

    /// Fraction of GPU memory for weights, activations and KV cache (0, 1]:
    /// after a profiling pass at the largest step, the KV cache gets what
    /// is left of it (less 512 MiB of headroom). [default: 0.9]
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub gpu_memory_utilization: Option<f32>,

    /// Keep prefix caching on (vLLM's flag). It is on by default, except in
    /// `bench latency`, where this flag turns it on.
    #[arg(long, conflicts_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,

    /// Turn prefix caching off.
    #[arg(long)]
    pub no_enable_prefix_caching: bool,

    /// Most requests waiting for a slot; more are refused with 503.
    /// [default: unbounded]
    #[arg(long, value_name = "N")]
    pub max_waiting_requests: Option<usize>,

    /// How waiting requests are ordered. [default: fcfs]
    #[arg(long, value_enum)]
    pub scheduling_policy: Option<SchedulingPolicyArg>,

    /// Caps one request's prefill chunk per step (0: only the step budget
    /// caps it). [default: 0]
    #[arg(long, value_name = "N")]
    pub long_prefill_token_threshold: Option<usize>,

    /// Do not capture CUDA graphs: run every step eagerly (by default decode
    /// steps of up to max-num-seqs sequences, 512 at most, replay graphs).
    #[arg(long)]
    pub enforce_eager: bool,

    /// Seed of the random streams of requests that bring no seed of their
    /// own (in `generate`: the seed of every prompt; in `bench`: also the
    /// seed of the random prompts). [default: 0]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// On CPU, how GGUF block-quantized weights (Q4_K, Q8_0, ...) are
    /// multiplied: `fast` quantizes activations to 8 bits and uses integer
    /// dot products (llama.cpp's scheme; Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K,
    /// other block types as `exact`); `exact` dequantizes weight tiles to
    /// f32 in the GEMM (HF transformers' values, token for token, 6-8x
    /// slower at batch 1 on SmolLM2). f32/bf16/f16 weights are exact in
    /// every mode; weights stay in their format in memory in all. `auto` (default): `fast` for
    /// GGUF weights (perplexity within 0.5% of `exact` and 1% of llama.cpp
    /// on SmolLM2 Q4_1), `exact` otherwise.
    #[arg(long, value_enum, default_value_t = CpuMatmul::Auto)]
    pub cpu_matmul: CpuMatmul,

    /// Element type of the KV cache. `auto`: the checkpoint's dtype (bf16 or
    /// f16 for 16-bit checkpoints, f16 for GGUF files as llama.cpp, f32 for
    /// f32 ones). On CPU, 16-bit halves the cache's memory; attention still
    /// computes in f32. CUDA keeps bf16 (other values are refused there).
    #[arg(long, value_enum, default_value_t = KvCacheDtype::Auto)]
    pub kv_cache_dtype: KvCacheDtype,
}

fn parse_fraction(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("must be in (0, 1], got {v}"))
    }
}

impl EngineArgs {
    /// The engine configuration for `model` (already resolved), keeping the
    /// engine's defaults for every flag left unset.
    pub fn engine_config(&self, model: PathBuf, served_model_name: Option<String>) -> EngineConfig {
        let mut c = EngineConfig {
            model,
            served_model_name,
            load_format: self.load_format,
            device: self.device,
            ..EngineConfig::default()
        };
        if let Some(v) = self.max_num_seqs {
            c.max_num_seqs = v;
        }
        if self.max_num_batched_tokens.is_some() {
            c.max_num_batched_tokens = self.max_num_batched_tokens;
        }
        if self.max_model_len.is_some() {
            c.max_model_len = self.max_model_len;
        }
        if let Some(v) = self.block_size {
            c.block_size = v;
        }
        if self.kv_cache_memory.is_some() {
            c.kv_cache_memory = self.kv_cache_memory;
        }
        if let Some(v) = self.gpu_memory_utilization {
            c.gpu_memory_utilization = v;
        }
        if self.no_enable_prefix_caching {
            c.enable_prefix_caching = false;
        } else if self.enable_prefix_caching {
            c.enable_prefix_caching = true;
        }
        if self.max_waiting_requests.is_some() {
            c.max_waiting_requests = self.max_waiting_requests;
        }
        if let Some(p) = self.scheduling_policy {
            c.scheduling_policy = p.into();
        }
        if let Some(v) = self.long_prefill_token_threshold {
            c.long_prefill_token_threshold = v;
        }
        c.enforce_eager = self.enforce_eager;
        c.cpu_matmul = self.cpu_matmul;
        c.kv_cache_dtype = self.kv_cache_dtype;
        c.quantization = self.quantization;
        if let Some(v) = self.seed {
            c.seed = v;
        }
        c
    }

    /// `--seed`, or the engine's default seed.
    pub fn seed_or_default(&self) -> u64 {
        self.seed.unwrap_or(EngineConfig::default().seed)
    }
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

    fn parse(args: &[&str]) -> Result<EngineArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("pagoda").chain(args.iter().copied())).map(|c| c.engine)
    }

    #[test]
    fn unset_flags_keep_engine_defaults() {
        let args = parse(&[]).unwrap();
        let c = args.engine_config("m.gguf".into(), None);
        let d = EngineConfig::default();
        assert_eq!(c.max_num_seqs, d.max_num_seqs);
        assert_eq!(c.block_size, d.block_size);
        assert_eq!(c.enable_prefix_caching, d.enable_prefix_caching);
        assert_eq!(c.kv_cache_memory, d.kv_cache_memory);
        assert_eq!(c.gpu_memory_utilization, d.gpu_memory_utilization);
        assert_eq!(c.device, d.device);
        assert_eq!(c.load_format, d.load_format);
        assert_eq!(c.seed, d.seed);
        assert_eq!(args.seed_or_default(), d.seed);
        assert_eq!(c.model, PathBuf::from("m.gguf"));
    }

    #[test]
    fn kv_cache_dtype_and_dummy_quantization_parse_as_users_write_them() {
        use crate::weights::DummyQuantization;
        let c = parse(&["--kv-cache-dtype", "bfloat16", "--quantization", "Q4_K_M"])
            .unwrap()
            .engine_config("m".into(), None);
        assert_eq!(c.kv_cache_dtype, KvCacheDtype::Bfloat16);
        assert_eq!(c.quantization, Some(DummyQuantization::Q4_K_M));
        for (flag, want) in [
            ("bf16", KvCacheDtype::Bfloat16),
            ("f16", KvCacheDtype::Float16),
            ("float32", KvCacheDtype::Float32),
            ("auto", KvCacheDtype::Auto),
        ] {
            let args = parse(&["--kv-cache-dtype", flag]).unwrap();
            assert_eq!(args.kv_cache_dtype, want, "{flag}");
        }
        let q = parse(&["--quantization", "q6_k"]).unwrap().quantization;
        assert_eq!(q, Some(DummyQuantization::Q6_K));
        assert!(parse(&["--kv-cache-dtype", "fp8"]).is_err());
        assert!(parse(&["--quantization", "awq"]).is_err());
        let d = parse(&[]).unwrap().engine_config("m".into(), None);
        assert_eq!(
            (d.kv_cache_dtype, d.quantization),
            (KvCacheDtype::Auto, None)
        );
    }

    #[test]
    fn flags_reach_the_engine_config() {
        let args = parse(&[
            "--max-num-seqs",
            "4",
            "--max-num-batched-tokens",
            "256",
            "--max-model-len",
            "512",
            "--block-size",
            "32",
            "--kv-cache-memory",
            "256MiB",
            "--no-enable-prefix-caching",
            "--max-waiting-requests",
            "7",
            "--device",
            "cpu",
            "--load-format",
            "dummy",
            "--scheduling-policy",
            "priority",
            "--enforce-eager",
            "--seed",
            "3",
            "--gpu-memory-utilization",
            "0.5",
        ])
        .unwrap();
        let c = args.engine_config("m".into(), Some("name".into()));
        assert_eq!(c.max_num_seqs, 4);
        assert_eq!(c.max_num_batched_tokens, Some(256));
        assert_eq!(c.max_model_len, Some(512));
        assert_eq!(c.block_size, 32);
        assert_eq!(c.kv_cache_memory, Some(256 << 20));
        assert!(!c.enable_prefix_caching);
        assert_eq!(c.max_waiting_requests, Some(7));
        assert_eq!(c.device, Device::Cpu);
        assert_eq!(c.load_format, LoadFormat::Dummy);
        assert_eq!(c.scheduling_policy, SchedulingPolicy::Priority);
        assert!(c.enforce_eager);
        assert_eq!(c.seed, 3);
        assert_eq!(c.gpu_memory_utilization, 0.5);
        assert_eq!(c.served_model_name.as_deref(), Some("name"));
    }

    #[test]
    fn kv_cache_units_are_vllms() {
        let bytes = |v: &str| parse(&["--kv-cache-memory", v]).unwrap().kv_cache_memory;
        assert_eq!(bytes("512MB"), Some(512 << 20));
        assert_eq!(bytes("512M"), Some(512 << 20));
        assert_eq!(bytes("512m"), Some(512_000_000));
        assert_eq!(bytes("1.5GiB"), Some(3 << 29));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--kv-cache-memory", "lots"]).is_err());
        assert!(parse(&["--gpu-memory-utilization", "1.5"]).is_err());
        assert!(parse(&["--device", "tpu"]).is_err());
        assert_eq!(
            parse(&["--device", "cuda-emu"]).unwrap().device,
            Device::CudaEmu
        );
        assert!(parse(&["--load-format", "pt"]).is_err());
        assert!(parse(&["--enable-prefix-caching", "--no-enable-prefix-caching"]).is_err());
    }
}
