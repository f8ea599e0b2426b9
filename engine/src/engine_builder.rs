//! From an `EngineConfig` to a ready engine: open the model, pick the
//! device, size the KV cache, load the weights, build the tokenizer.

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::engine_config::{default_cpu_kv_cache_bytes, Device, EngineConfig};
use crate::engine_error::EngineError;
use crate::llm_engine::LlmEngine;
use crate::model::{DecoderModel, DecoderWeights, KvCache, ModelDims, Workspace};
use crate::model_info::ModelInfo;
use crate::model_runner::ModelRunner;
use crate::tokenizer::{ChatTemplate, Tokenizer, TokenizerConfig};
use crate::weights::{open_model, ModelSource};
use pagoda_scheduler::{Scheduler, SchedulerConfig};
use std::time::Instant;

/// What the builder hands back besides the engine.
pub struct BuiltEngine {
    pub engine: LlmEngine,
    pub chat_template: Option<ChatTemplate>,
}

pub fn build_engine(config: &EngineConfig) -> Result<BuiltEngine, EngineError> {
    let load = |e: String| EngineError::Load(e);
    let started = Instant::now();
    let source = open_model(&config.model, config.load_format).map_err(|e| load(e.to_string()))?;
    let (tokenizer, tokenizer_config) = open_tokenizer(&source);
    match config.device {
        Device::Cpu | Device::Auto => {}
        Device::Cuda => return Err(EngineError::Device(
            "the CUDA engine path is not wired in yet (the CUDA kernels exist in pagoda-kernels, \
                 the engine runs on CPU only in this version); use --device cpu"
                .into(),
        )),
    }
    let backend = CpuBackend::new();
    let mc = &source.config;
    let dims = ModelDims::from_config(mc);
    let mut max_model_len = config.max_model_len.unwrap_or(mc.max_position_embeddings);
    if let Some(window) = mc.sliding_window {
        if window < max_model_len {
            tracing::warn!("sliding-window attention is not implemented: max_model_len capped at the window ({window})");
            max_model_len = window;
        }
    }
    let max_num_batched_tokens = config.max_num_batched_tokens.unwrap_or(2048);
    let block_size = config.block_size;
    if block_size == 0 || !block_size.is_power_of_two() || block_size > 256 {
        return Err(load(format!(
            "--block-size must be a power of two up to 256, got {block_size}"
        )));
    }
    let kv_bytes = config
        .kv_cache_memory
        .unwrap_or_else(default_cpu_kv_cache_bytes);
    let per_block =
        KvCache::<CpuBackend>::bytes_per_block(&dims, block_size, backend.element_bytes());
    let num_blocks = (kv_bytes as usize / per_block).max(1);
    let usable_tokens = (num_blocks - 1) * block_size;
    if usable_tokens < max_model_len {
        return Err(load(format!(
            "the KV cache ({kv_bytes} bytes = {usable_tokens} tokens) cannot hold one request of \
             max_model_len = {max_model_len} tokens; raise --kv-cache-memory or lower --max-model-len"
        )));
    }
    let name = config
        .served_model_name
        .clone()
        .unwrap_or_else(|| source.name.clone());
    let info = ModelInfo {
        name,
        architecture: format!("{:?}", mc.architecture),
        max_model_len,
        vocab_size: mc.vocab_size,
        eos_token_ids: mc.eos_token_ids.clone(),
        bos_token_id: mc.bos_token_id,
        num_kv_blocks: num_blocks,
        block_size,
        kv_cache_tokens: usable_tokens,
        max_concurrency: usable_tokens as f64 / max_model_len as f64,
        device: backend.device_name(),
        max_num_seqs: config.max_num_seqs,
        max_num_batched_tokens,
    };
    let scheduler = Scheduler::new(SchedulerConfig {
        block_size,
        num_blocks,
        max_num_seqs: config.max_num_seqs,
        max_num_batched_tokens,
        max_model_len,
        long_prefill_token_threshold: config.long_prefill_token_threshold,
        enable_prefix_caching: config.enable_prefix_caching,
        policy: config.scheduling_policy,
    })
    .map_err(|e| load(e.to_string()))?;
    let progress = progress_bar(dims.num_layers + 3);
    let weights = DecoderWeights::load(
        &backend,
        mc,
        source.weights.as_ref(),
        max_model_len,
        |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        },
    )
    .map_err(|e| load(format!("{e:#}")))?;
    progress.finish_and_clear();
    let model = DecoderModel { dims, weights };
    let max_logits_rows = config.max_num_seqs.min(max_num_batched_tokens).max(1);
    let ws = Workspace::new(&backend, &dims, max_num_batched_tokens, max_logits_rows)
        .map_err(|e| load(format!("{e:#}")))?;
    let kv = KvCache::new(&backend, &dims, num_blocks, block_size)
        .map_err(|e| load(format!("{e:#}")))?;
    let runner = ModelRunner::new(backend, model, ws, kv);
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
        Box::new(runner),
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

/// The tokenizer and its config, from the GGUF metadata or the HF folder.
/// A model without tokenizer files still runs on token ids.
fn open_tokenizer(source: &ModelSource) -> (Option<Tokenizer>, Option<TokenizerConfig>) {
    if let Some(g) = &source.gguf {
        return match Tokenizer::from_gguf(g) {
            Ok(t) => (Some(t), Some(TokenizerConfig::from_gguf(g))),
            Err(e) => {
                tracing::warn!(
                    "no usable tokenizer in the GGUF file ({e}); running on token ids only"
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
            tracing::warn!("{}: {e}; running on token ids only", path.display());
            None
        }
    };
    let config = TokenizerConfig::from_dir(dir).unwrap_or_else(|e| {
        tracing::warn!("{}: {e}", dir.display());
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
