//! Everything needed to start an engine: the model, the device, and the
//! scheduler's limits. Defaults follow vLLM's.

use std::path::PathBuf;

pub use crate::weights::LoadFormat;
pub use pagoda_scheduler::SchedulingPolicy;

/// Where the forward pass runs (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Device {
    /// The CPU kernels (f32).
    Cpu,
    /// GPU 0, or an error naming why it is unusable.
    Cuda,
    /// CUDA when a usable GPU is found, else CPU.
    #[default]
    Auto,
    /// TEST DEVICE, not for serving: the CUDA backend (bf16, its kernels,
    /// GEMMs, graphs) on the CPU emulator, no GPU needed; thousands of
    /// times slower than `cpu`. For tests of the CUDA path on any machine.
    CudaEmu,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            "cuda-emu" => Ok(Device::CudaEmu),
            other => Err(format!(
                "unknown device {other:?}: expected cpu, cuda, auto or cuda-emu"
            )),
        }
    }
}

/// How the CPU multiplies by GGUF block-quantized weights (`--cpu-matmul`).
/// f32 and 16-bit weights are multiplied exactly in every mode (16-bit
/// converts to f32 without rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CpuMatmul {
    /// `fast` for GGUF block-quantized weights (a GGUF file, or dummy
    /// weights made with `--quantization`): what llama.cpp computes on the
    /// same file, and what its users expect of a GGUF. `exact` for
    /// everything else (where the two modes are the same anyway).
    #[default]
    Auto,
    /// Activations quantized per row to 8-bit blocks, integer dot products
    /// against the weight blocks (as llama.cpp) for Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q4_K, Q5_K and Q6_K; other block types are dequantized per tile, as
    /// `exact`. Rounding the activations moves single logprobs by up to
    /// ~0.15 against HF transformers (perplexity by 0.5%, BENCHMARKS.md).
    Fast,
    /// Weights dequantized per tile to f32 inside the GEMM, f32 activations:
    /// the values of HF transformers on the dequantized file (what the
    /// golden tests hold token for token), at 6-8x the batch-1 decode
    /// time (SmolLM2, BENCHMARKS.md).
    Exact,
}

impl CpuMatmul {
    /// The mode `Auto` stands for, given whether the weights are GGUF blocks.
    pub fn resolve(self, quantized: bool) -> pagoda_kernels::cpu::MatmulMode {
        use pagoda_kernels::cpu::MatmulMode;
        match self {
            CpuMatmul::Auto if quantized => MatmulMode::Fast,
            CpuMatmul::Auto | CpuMatmul::Exact => MatmulMode::Exact,
            CpuMatmul::Fast => MatmulMode::Fast,
        }
    }
}

/// The KV cache's element type (`--kv-cache-dtype`, vLLM's flag and its
/// spellings: `bfloat16`; `float16` and `float32` are the CPU's additions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KvCacheDtype {
    /// The checkpoint's dtype: bf16 or f16 for 16-bit checkpoints, f16 for
    /// GGUF files (llama.cpp's default cache type), f32 for f32 ones.
    #[default]
    Auto,
    #[value(alias = "bf16")]
    Bfloat16,
    #[value(alias = "f16", alias = "half")]
    Float16,
    #[value(alias = "f32", alias = "float")]
    Float32,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// An HF folder, a .gguf file, or a folder holding one .gguf file.
    pub model: PathBuf,
    pub load_format: LoadFormat,
    pub device: Device,
    pub max_num_seqs: usize,
    /// `None`: 2048 on CPU (prefill chunks stay short so decodes keep flowing), 8192 on CUDA.
    pub max_num_batched_tokens: Option<usize>,
    /// `None`: the model's `max_position_embeddings`.
    pub max_model_len: Option<usize>,
    pub block_size: usize,
    /// Bytes of KV cache on CPU; `None`: a share of the available memory.
    pub kv_cache_memory: Option<u64>,
    pub gpu_memory_utilization: f32,
    pub enable_prefix_caching: bool,
    /// Requests allowed to wait before new ones are refused; `None`: unbounded.
    pub max_waiting_requests: Option<usize>,
    /// Caps one request's prefill chunk per step; 0 = no cap beyond the budget.
    pub long_prefill_token_threshold: usize,
    pub scheduling_policy: SchedulingPolicy,
    pub enforce_eager: bool,
    /// Seeds the random streams of requests that bring no seed of their own.
    pub seed: u64,
    pub served_model_name: Option<String>,
    /// How the CPU multiplies by block-quantized weights.
    pub cpu_matmul: CpuMatmul,
    pub kv_cache_dtype: KvCacheDtype,
    /// Block type of `--load-format dummy` weight matrices.
    pub quantization: Option<crate::weights::DummyQuantization>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            load_format: LoadFormat::Auto,
            device: Device::Auto,
            max_num_seqs: 256,
            max_num_batched_tokens: None,
            max_model_len: None,
            block_size: 16,
            kv_cache_memory: None,
            gpu_memory_utilization: 0.9,
            enable_prefix_caching: true,
            max_waiting_requests: None,
            long_prefill_token_threshold: 0,
            scheduling_policy: SchedulingPolicy::Fcfs,
            enforce_eager: false,
            seed: 0,
            served_model_name: None,
            cpu_matmul: CpuMatmul::Auto,
            kv_cache_dtype: KvCacheDtype::Auto,
            quantization: None,
        }
    }
}

/// Default CPU KV-cache size: 30% of available memory, between 256 MiB and 8 GiB.
pub fn default_cpu_kv_cache_bytes() -> u64 {
    let available = read_mem_available().unwrap_or(4 << 30);
    (available * 3 / 10).clamp(256 << 20, 8 << 30)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn read_mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parses() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("auto".parse::<Device>(), Ok(Device::Auto));
        assert!("tpu".parse::<Device>().is_err());
    }

    #[test]
    fn default_kv_cache_is_bounded() {
        let b = default_cpu_kv_cache_bytes();
        assert!((256 << 20..=8 << 30).contains(&b));
    }

    #[test]
    fn auto_matmul_is_fast_for_gguf_blocks_only() {
        use pagoda_kernels::cpu::MatmulMode;
        assert_eq!(EngineConfig::default().cpu_matmul, CpuMatmul::Auto);
        assert_eq!(CpuMatmul::Auto.resolve(true), MatmulMode::Fast);
        assert_eq!(CpuMatmul::Auto.resolve(false), MatmulMode::Exact);
        assert_eq!(CpuMatmul::Exact.resolve(true), MatmulMode::Exact);
        assert_eq!(CpuMatmul::Fast.resolve(false), MatmulMode::Fast);
    }
}
