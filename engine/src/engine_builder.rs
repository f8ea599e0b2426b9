//! From an `EngineConfig` to a ready engine: open the model, pick the
//! device, size the KV cache, load the weights, build the tokenizer.

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::engine_config::{default_cpu_kv_cache_bytes, Device, EngineConfig, KvCacheDtype};
use crate::engine_error::{error_chain, EngineContext, EngineError};
use crate::llm_engine::LlmEngine;
use crate::model::{DecoderModel, DecoderWeights, KvCache, KvCacheLayout, ModelDims, Workspace};
use crate::model_info::ModelInfo;
use crate::model_runner::{ModelRunner, Runner};
use crate::tokenizer::{ChatTemplate, Tokenizer, TokenizerConfig};
use crate::weights::{open_model, DummyWeights, LoadFormat, ModelSource};
use pagoda_kernels::cpu;
use pagoda_scheduler::{Scheduler, SchedulerConfig};
use std::time::Instant;

/// What the builder hands back besides the engine.
pub struct BuiltEngine {
    pub engine: LlmEngine,
    pub chat_template: Option<ChatTemplate>,
}

pub fn build_engine(config: &EngineConfig) -> Result<BuiltEngine, EngineError> {
    let started = Instant::now();
    let mut source =
        open_model(&config.model, config.load_format).load_context("cannot open the model")?;
    if let Some(q) = config.quantization {
        if config.load_format != LoadFormat::Dummy {
            return Err(EngineError::load(
                "--quantization only applies to --load-format dummy: a checkpoint's own quantization is read from it",
            ));
        }
        source.weights =
            Box::new(DummyWeights::new(source.config.clone(), 0).with_quantization(Some(q)));
    }
    let (tokenizer, tokenizer_config) = open_tokenizer(&source);
    let mc = &source.config;
    let dims = ModelDims::from_config(mc);
    // Sliding windows run at any length on both backends; their layers form
    // KV-cache groups whose blocks behind the window go back to the pool.
    let max_model_len = config.max_model_len.unwrap_or(mc.max_position_embeddings);
    let layout = KvCacheLayout::new(mc, max_model_len);
    let device = choose_device(config.device, &dims)?;
    let block_size = config.block_size;
    if block_size == 0 || !block_size.is_power_of_two() || block_size > 256 {
        return Err(EngineError::load(format!(
            "--block-size must be a power of two up to 256, got {block_size}"
        )));
    }
    let plan = Plan {
        config,
        source: &source,
        dims,
        max_model_len,
        block_size,
        layout,
    };
    let (runner, scheduler, info) = match device {
        ChosenDevice::Cpu => {
            let kv_bytes = config
                .kv_cache_memory
                .unwrap_or_else(default_cpu_kv_cache_bytes);
            let kv_dtype = cpu_kv_cache_dtype(config.kv_cache_dtype, &source);
            build_runner(
                CpuBackend::with_matmul_mode(cpu_matmul_mode(config, &source))
                    .with_kv_cache_dtype(kv_dtype),
                &plan,
                2048,
                KvBudget::Bytes(kv_bytes),
                &[],
            )?
        }
        #[cfg(feature = "cuda")]
        ChosenDevice::Cuda(kernels) => {
            if !matches!(
                config.kv_cache_dtype,
                KvCacheDtype::Auto | KvCacheDtype::Bfloat16
            ) {
                return Err(EngineError::load(format!(
                    "--kv-cache-dtype {:?} is not supported on CUDA (its KV cache is bfloat16)",
                    config.kv_cache_dtype
                )));
            }
            build_cuda_runner(*kernels, &plan)?
        }
    };
    tracing::info!(
        "loaded {} ({}) on {} in {:.1}s",
        source.name,
        info.architecture,
        info.device,
        started.elapsed().as_secs_f64()
    );
    let chat_template = tokenizer_config.as_ref().and_then(|tc| {
        let src = tc.chat_template.as_deref()?;
        match ChatTemplate::new(src, tc.bos_token.clone(), tc.eos_token.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("the model's chat template does not compile: {e}");
                None
            }
        }
    });
    let engine = LlmEngine::new(
        scheduler,
        runner,
        tokenizer,
        info,
        config.seed,
        config.max_waiting_requests,
    );
    Ok(BuiltEngine {
        engine,
        chat_template,
    })
}

/// The CPU KV cache's element type: as asked, or for `auto` the
/// checkpoint's (f16 for GGUF files, as llama.cpp's default cache type).
fn cpu_kv_cache_dtype(asked: KvCacheDtype, source: &ModelSource) -> cpu::KvCacheDtype {
    use crate::config::DType;
    match asked {
        KvCacheDtype::Bfloat16 => cpu::KvCacheDtype::BF16,
        KvCacheDtype::Float16 => cpu::KvCacheDtype::F16,
        KvCacheDtype::Float32 => cpu::KvCacheDtype::F32,
        KvCacheDtype::Auto => match (source.gguf.is_some(), source.config.dtype) {
            (_, DType::BF16) => cpu::KvCacheDtype::BF16,
            (true, _) | (false, DType::F16) => cpu::KvCacheDtype::F16,
            (false, DType::F32) => cpu::KvCacheDtype::F32,
        },
    }
}

/// `--cpu-matmul`, `auto` resolved: integer kernels for GGUF blocks.
fn cpu_matmul_mode(config: &EngineConfig, source: &ModelSource) -> pagoda_kernels::cpu::MatmulMode {
    let quantized = source.gguf.is_some() || config.quantization.is_some();
    let mode = config.cpu_matmul.resolve(quantized);
    tracing::info!(
        "CPU matmul: {mode:?} (--cpu-matmul {:?})",
        config.cpu_matmul
    );
    mode
}

/// The device the engine runs on.
enum ChosenDevice {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Box<pagoda_kernels::cuda::CudaKernels>),
}

/// `--device cuda` opens GPU 0 or fails with the reason; `auto` tries GPU 0
/// and falls back to the CPU, logging why; `cpu` is the CPU.
fn choose_device(device: Device, dims: &ModelDims) -> Result<ChosenDevice, EngineError> {
    match device {
        Device::Cpu => Ok(ChosenDevice::Cpu),
        Device::Cuda => match open_cuda(dims) {
            Ok(d) => {
                warn_unvalidated_cuda();
                Ok(d)
            }
            Err(reason) => {
                Err(reason).device_context("the CUDA engine path cannot start (use --device cpu)")
            }
        },
        Device::CudaEmu => open_cuda_emu(dims)
            .device_context("the emulated CUDA device cannot start (use --device cpu)"),
        Device::Auto => match open_cuda(dims) {
            Ok(d) => {
                tracing::info!("--device auto: using CUDA device 0");
                warn_unvalidated_cuda();
                Ok(d)
            }
            Err(reason) => {
                tracing::info!("--device auto: using the CPU ({reason:#})");
                Ok(ChosenDevice::Cpu)
            }
        },
    }
}

/// The CUDA path compiles and is unit-tested on the host, but no GPU run has
/// checked it against the CPU yet: say so wherever it is chosen.
fn warn_unvalidated_cuda() {
    tracing::warn!(
        "the CUDA engine path has not yet been validated on a GPU against the CPU reference; \
         use --device cpu for the checked path"
    );
}

/// Opens GPU 0, compiling attention for the model's head size only.
#[cfg(feature = "cuda")]
fn open_cuda(dims: &ModelDims) -> anyhow::Result<ChosenDevice> {
    use anyhow::Context as _;
    pagoda_kernels::cuda::CudaKernels::with_head_dims(0, &[dims.head_dim])
        .map(|k| ChosenDevice::Cuda(Box::new(k)))
        .context("cannot open CUDA device 0")
}

/// The CUDA backend on the CPU emulator (`--device cuda-emu`, a test
/// device): the same checks and kernels as GPU 0, over host memory.
#[cfg(feature = "cuda-emu")]
fn open_cuda_emu(dims: &ModelDims) -> anyhow::Result<ChosenDevice> {
    use anyhow::Context as _;
    tracing::warn!(
        "--device cuda-emu: the CUDA backend on the CPU emulator, a test device thousands of \
         times slower than --device cpu; not for serving"
    );
    let config = pagoda_kernels::cuda::EmuConfig {
        head_dims: vec![dims.head_dim],
        ..Default::default()
    };
    pagoda_kernels::cuda::CudaKernels::emulated_with(config)
        .map(|k| ChosenDevice::Cuda(Box::new(k)))
        .context("cannot open the emulated CUDA device")
}

#[cfg(not(feature = "cuda-emu"))]
fn open_cuda_emu(_dims: &ModelDims) -> anyhow::Result<ChosenDevice> {
    anyhow::bail!(
        "this build of Pagoda has no emulated CUDA device: it was built without the `cuda-emu` feature"
    )
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_dims: &ModelDims) -> anyhow::Result<ChosenDevice> {
    anyhow::bail!(
        "this build of Pagoda has no CUDA support: it was built without the `cuda` feature"
    )
}

/// What every device's build shares.
struct Plan<'a> {
    config: &'a EngineConfig,
    source: &'a ModelSource,
    dims: ModelDims,
    max_model_len: usize,
    block_size: usize,
    /// The layers' KV-cache groups (one full group for a plain model).
    layout: KvCacheLayout,
}

/// The KV cache's size: fixed bytes (checked before the weights load), or
/// computed by the device once the weights and the workspace are resident.
enum KvBudget<B> {
    Bytes(u64),
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    AfterLoad(MeasureKv<B>),
}

/// Measures the KV cache's bytes on the loaded backend.
type MeasureKv<B> = Box<dyn FnOnce(&B) -> anyhow::Result<u64>>;

/// The CUDA runner: bf16 weights on GPU 0; the KV cache gets what is left
/// of the memory budget once the weights and the workspace are loaded
/// (see [`cuda_kv_cache_bytes`]), unless `--kv-cache-memory` fixes it.
#[cfg(feature = "cuda")]
fn build_cuda_runner(
    kernels: pagoda_kernels::cuda::CudaKernels,
    plan: &Plan<'_>,
) -> Result<(Box<dyn Runner>, Scheduler, ModelInfo), EngineError> {
    use crate::backend::cuda::CudaBackend;
    use pagoda_kernels::cuda::graphs::{cudagraph_capture_sizes, default_max_capture_size};
    let max_num_seqs = plan.config.max_num_seqs;
    let capture_sizes = if plan.config.enforce_eager {
        Vec::new()
    } else {
        cudagraph_capture_sizes(max_num_seqs, default_max_capture_size(max_num_seqs))
    };
    let max_seqs = capture_sizes.iter().copied().fold(max_num_seqs, usize::max);
    let attn = plan.dims.attention_dims(plan.block_size);
    let norm_style = if plan.source.config.variant.gemma_norms {
        pagoda_kernels::cuda::NormStyle::Gemma
    } else {
        pagoda_kernels::cuda::NormStyle::Llama
    };
    let backend = CudaBackend::new(kernels, attn, max_seqs, plan.max_model_len)
        .load_context("cannot allocate the CUDA attention workspace")?
        .with_norm_style(norm_style);
    let utilization = plan.config.gpu_memory_utilization;
    let budget = match plan.config.kv_cache_memory {
        Some(bytes) => KvBudget::Bytes(bytes),
        None => KvBudget::AfterLoad(Box::new(move |b: &CudaBackend| {
            use anyhow::Context as _;
            b.kernels().synchronize().context("CUDA synchronize")?;
            let (free, total) = b.kernels().mem_get_info().context("CUDA memory info")?;
            cuda_kv_cache_bytes(free as u64, total as u64, utilization).map_err(anyhow::Error::msg)
        })),
    };
    build_runner(backend, plan, 8192, budget, &capture_sizes)
}

/// Headroom kept out of the KV cache on a GPU for what is allocated after
/// start-up and not profiled: cuBLAS workspaces, each step's uploaded batch
/// metadata, allocator fragmentation.
#[cfg(feature = "cuda")]
const CUDA_HEADROOM_BYTES: u64 = 512 << 20;

/// The KV cache's bytes on a GPU, measured after a profiling forward pass
/// at the largest step: the budget `total × gpu_memory_utilization`, minus
/// what is in use then (`total − free`: the weights, the workspace, the
/// CUDA context, what the pass allocated, other processes), minus
/// [`CUDA_HEADROOM_BYTES`] for what comes later (graphs, per-step uploads).
#[cfg(feature = "cuda")]
fn cuda_kv_cache_bytes(free: u64, total: u64, utilization: f32) -> Result<u64, String> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(format!(
            "--gpu-memory-utilization must be in (0, 1], got {utilization}"
        ));
    }
    let budget = (total as f64 * utilization as f64) as u64;
    let used = total.saturating_sub(free);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    budget
        .checked_sub(used + CUDA_HEADROOM_BYTES)
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            format!(
                "no GPU memory left for the KV cache: {:.2} GiB are in use after loading the \
                 model and the budget ({utilization} of {:.2} GiB) is {:.2} GiB; raise \
                 --gpu-memory-utilization or lower --max-num-batched-tokens / --max-model-len",
                gib(used),
                gib(total),
                gib(budget)
            )
        })
}

/// Blocks of `per_block` bytes in `kv_bytes`, checked to hold one request
/// of `max_model_len` tokens, which needs `blocks_per_request` blocks over
/// its KV-cache groups (block 0 is the null block).
fn kv_blocks(
    kv_bytes: u64,
    per_block: usize,
    block_size: usize,
    max_model_len: usize,
    blocks_per_request: usize,
    hint: &str,
) -> Result<(usize, usize), EngineError> {
    let num_blocks = (kv_bytes as usize / per_block).max(1);
    let usable_tokens = (num_blocks - 1) * block_size;
    if num_blocks - 1 < blocks_per_request {
        return Err(EngineError::load(format!(
            "the KV cache ({kv_bytes} bytes = {} blocks of {block_size} tokens) cannot hold one \
             request of max_model_len = {max_model_len} tokens ({blocks_per_request} blocks); \
             {hint}",
            num_blocks - 1
        )));
    }
    Ok((num_blocks, usable_tokens))
}

/// Loads the model on `backend` and builds its runner, scheduler and info.
/// `default_batched_tokens` is the step token budget when the config gives
/// none; `capture_sizes` are the decode batch sizes to record graphs for
/// (empty: none).
fn build_runner<B: Backend>(
    backend: B,
    plan: &Plan<'_>,
    default_batched_tokens: usize,
    kv_budget: KvBudget<B>,
    capture_sizes: &[usize],
) -> Result<(Box<dyn Runner>, Scheduler, ModelInfo), EngineError> {
    let config = plan.config;
    let kv_dtype = backend.kv_cache_dtype_name();
    let max_num_batched_tokens = config
        .max_num_batched_tokens
        .unwrap_or(default_batched_tokens);
    let largest_capture = capture_sizes.iter().copied().max().unwrap_or(0);
    let step = StepSizes {
        max_num_batched_tokens,
        max_seqs: config.max_num_seqs.max(largest_capture),
        per_block: KvCache::<B>::bytes_per_block(
            &plan.dims,
            &plan.layout,
            plan.block_size,
            backend.kv_cache_element_bytes(),
        ),
    };
    // A fixed size is checked (and the scheduler built) before the weights
    // load, so a bad flag fails fast; a measured one needs them resident.
    let kv_size = match kv_budget {
        KvBudget::Bytes(kv_bytes) => Ok(size_kv_cache(
            plan,
            &step,
            kv_bytes,
            "raise --kv-cache-memory or lower --max-model-len",
        )?),
        KvBudget::AfterLoad(measure) => Err(measure),
    };
    let model = load_model(&backend, plan)?;
    let max_logits_rows = step.max_seqs.min(max_num_batched_tokens).max(1);
    let ws = Workspace::new(
        &backend,
        &plan.dims,
        max_num_batched_tokens,
        max_logits_rows,
    )
    .load_context("cannot allocate the forward workspace")?;
    let (mut runner, kv_size) = match kv_size {
        Ok(kv_size) => {
            let kv = KvCache::new(
                &backend,
                &plan.dims,
                &plan.layout,
                kv_size.num_blocks,
                plan.block_size,
            )
            .load_context("cannot allocate the KV cache")?;
            let runner =
                ModelRunner::new(backend, model, ws, kv, step.max_seqs, plan.max_model_len)
                    .load_context("cannot build the model runner")?;
            (runner, kv_size)
        }
        Err(measure) => profile_and_size_kv_cache(backend, model, ws, plan, &step, measure)?,
    };
    if !capture_sizes.is_empty() {
        capture_decode_graphs(&mut runner, capture_sizes, plan.max_model_len);
    }
    tracing::info!(
        "KV cache: {} blocks of {} tokens, {} ({} MiB); KV-cache groups {:?} of {} layers each",
        kv_size.num_blocks,
        plan.block_size,
        kv_dtype,
        (kv_size.num_blocks * step.per_block) >> 20,
        plan.layout.specs,
        plan.layout.group_size,
    );
    let info = model_info(plan, &kv_size, &step, runner.device_name(), kv_dtype);
    Ok((Box::new(runner), kv_size.scheduler, info))
}

/// The step bounds a runner is built for.
struct StepSizes {
    max_num_batched_tokens: usize,
    /// Sequences per step: `max_num_seqs`, or the largest captured decode
    /// batch if larger (the metadata buffers must hold it).
    max_seqs: usize,
    /// Bytes of one KV-cache block on the backend.
    per_block: usize,
}

/// The KV cache once its size is known, and the scheduler over its blocks.
struct KvSize {
    num_blocks: usize,
    usable_tokens: usize,
    scheduler: Scheduler,
}

/// Turns `kv_bytes` into blocks (checked to hold one full-length request)
/// and builds the scheduler over them; `hint` names the flags to change.
fn size_kv_cache(
    plan: &Plan<'_>,
    step: &StepSizes,
    kv_bytes: u64,
    hint: &str,
) -> Result<KvSize, EngineError> {
    let config = plan.config;
    let mut scheduler_config = SchedulerConfig {
        block_size: plan.block_size,
        num_blocks: 0,
        max_num_seqs: config.max_num_seqs,
        max_num_batched_tokens: step.max_num_batched_tokens,
        max_model_len: plan.max_model_len,
        long_prefill_token_threshold: config.long_prefill_token_threshold,
        enable_prefix_caching: config.enable_prefix_caching,
        policy: config.scheduling_policy,
        kv_cache_specs: plan.layout.specs.clone(),
    };
    let (num_blocks, usable_tokens) = kv_blocks(
        kv_bytes,
        step.per_block,
        plan.block_size,
        plan.max_model_len,
        scheduler_config.max_blocks_per_request(),
        hint,
    )?;
    scheduler_config.num_blocks = num_blocks;
    let scheduler =
        Scheduler::new(scheduler_config).load_context("invalid scheduler configuration")?;
    Ok(KvSize {
        num_blocks,
        usable_tokens,
        scheduler,
    })
}

/// Loads the weights onto `backend`, with a progress bar per layer.
fn load_model<B: Backend>(backend: &B, plan: &Plan<'_>) -> Result<DecoderModel<B>, EngineError> {
    let source = plan.source;
    let progress = progress_bar(plan.dims.num_layers + 3);
    let weights = DecoderWeights::load(
        backend,
        &source.config,
        source.weights.as_ref(),
        plan.max_model_len,
        |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        },
    )
    .load_context("cannot load the weights")?;
    progress.finish_and_clear();
    Ok(DecoderModel {
        dims: plan.dims,
        weights,
    })
}

/// vLLM's memory profiling: run the largest step over a one-block cache so
/// the device reaches its high-water mark, measure what is left, then
/// allocate the real cache in place of the probe.
fn profile_and_size_kv_cache<B: Backend>(
    backend: B,
    model: DecoderModel<B>,
    ws: Workspace<B>,
    plan: &Plan<'_>,
    step: &StepSizes,
    measure: MeasureKv<B>,
) -> Result<(ModelRunner<B>, KvSize), EngineError> {
    let max_model_len = plan.max_model_len;
    let kv = KvCache::new(&backend, &plan.dims, &plan.layout, 1, plan.block_size)
        .load_context("cannot allocate the profiling KV cache")?;
    let mut runner = ModelRunner::new(backend, model, ws, kv, step.max_seqs, max_model_len)
        .load_context("cannot build the model runner")?;
    runner
        .profile_run(
            step.max_num_batched_tokens,
            plan.config.max_num_seqs,
            max_model_len,
        )
        .load_context("the profiling forward pass failed")?;
    let kv_bytes = measure(runner.backend()).load_context("cannot size the KV cache")?;
    let kv_size = size_kv_cache(
        plan,
        step,
        kv_bytes,
        "raise --gpu-memory-utilization, set --kv-cache-memory or lower --max-model-len",
    )?;
    runner
        .replace_kv_cache(kv_size.num_blocks)
        .load_context("cannot allocate the KV cache")?;
    Ok((runner, kv_size))
}

/// Records the decode graphs. A failure is not fatal: decode steps then run
/// eagerly, as with `--enforce-eager`, and the log says why.
fn capture_decode_graphs<B: Backend>(
    runner: &mut ModelRunner<B>,
    capture_sizes: &[usize],
    max_model_len: usize,
) {
    let started = Instant::now();
    match runner.capture_decode_graphs(capture_sizes, max_model_len) {
        Ok(sizes) => tracing::info!(
            "captured {} decode graphs (batch sizes {:?}..={:?}) in {:.1}s",
            sizes.len(),
            sizes.first(),
            sizes.last(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => tracing::warn!(
            "CUDA graph capture failed ({e:#}); decode steps run eagerly (as with --enforce-eager)"
        ),
    }
}

/// What the server reports about the loaded model (`/v1/models`, logs).
fn model_info(
    plan: &Plan<'_>,
    kv: &KvSize,
    step: &StepSizes,
    device: String,
    kv_cache_dtype: &'static str,
) -> ModelInfo {
    let config = plan.config;
    let mc = &plan.source.config;
    let name = config
        .served_model_name
        .clone()
        .unwrap_or_else(|| plan.source.name.clone());
    ModelInfo {
        name,
        architecture: format!("{:?}", mc.architecture),
        max_model_len: plan.max_model_len,
        vocab_size: mc.vocab_size,
        eos_token_ids: mc.eos_token_ids.clone(),
        bos_token_id: mc.bos_token_id,
        num_kv_blocks: kv.num_blocks,
        block_size: plan.block_size,
        kv_cache_tokens: kv.usable_tokens,
        max_concurrency: kv.usable_tokens as f64 / plan.max_model_len as f64,
        device,
        max_num_seqs: config.max_num_seqs,
        max_num_batched_tokens: step.max_num_batched_tokens,
        scheduling_policy: config.scheduling_policy,
        kv_cache_dtype,
    }
}

/// The tokenizer and its config, from the GGUF metadata or the HF folder.
/// A model without tokenizer files still runs on token ids.
fn open_tokenizer(source: &ModelSource) -> (Option<Tokenizer>, Option<TokenizerConfig>) {
    if let Some(g) = &source.gguf {
        return match Tokenizer::from_gguf(g) {
            Ok(t) => (Some(t), Some(TokenizerConfig::from_gguf(g))),
            Err(e) => {
                tracing::warn!(
                    "no usable tokenizer in the GGUF file ({}); running on token ids only",
                    error_chain(&e)
                );
                (None, None)
            }
        };
    }
    let Some(dir) = &source.dir else {
        return (None, None);
    };
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        tracing::warn!(
            "{} has no tokenizer.json; running on token ids only (text fields stay empty)",
            dir.display()
        );
        return (None, None);
    }
    let tokenizer = match Tokenizer::from_file(&path) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(
                "{}: {}; running on token ids only",
                path.display(),
                error_chain(&e)
            );
            None
        }
    };
    let config = TokenizerConfig::from_dir(dir).unwrap_or_else(|e| {
        tracing::warn!("{}: {}", dir.display(), error_chain(&e));
        None
    });
    (tokenizer, config)
}

/// A load progress bar on stderr, shown only on a terminal and after a second.
fn progress_bar(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "loading weights {bar:40} {pos}/{len} layers {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_missing_model_is_a_load_error_that_keeps_its_cause() {
        let config = EngineConfig {
            model: "/nonexistent/pagoda-model".into(),
            device: Device::Cpu,
            ..EngineConfig::default()
        };
        let Err(err) = build_engine(&config) else {
            panic!("a missing model must not load");
        };
        assert!(matches!(err, EngineError::Load { .. }), "{err:?}");
        assert!(err.source().is_some(), "the LoadError is the source");
        let chain = error_chain(&err);
        assert!(chain.starts_with("Failed to load the model: "), "{chain}");
        assert!(chain.contains("/nonexistent/pagoda-model"), "{chain}");
    }
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;

    #[test]
    fn cuda_kv_budget_is_what_is_left_of_the_utilization() {
        let gib = 1u64 << 30;
        // 80 GiB card, 20 GiB in use after loading, 0.75 → 60 − 20 − 0.5 GiB.
        let b = cuda_kv_cache_bytes(60 * gib, 80 * gib, 0.75).unwrap();
        assert_eq!(b, 40 * gib - CUDA_HEADROOM_BYTES);
        assert!(cuda_kv_cache_bytes(gib, 80 * gib, 0.9).is_err());
        assert!(cuda_kv_cache_bytes(60 * gib, 80 * gib, 0.0).is_err());
        assert!(cuda_kv_cache_bytes(60 * gib, 80 * gib, 1.5).is_err());
    }
}
