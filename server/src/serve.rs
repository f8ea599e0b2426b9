//! `pagoda serve`: load the model, start the engine, serve HTTP until a
//! signal, then shut down gracefully.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pagoda_engine::engine_builder::build_engine;
use pagoda_engine::kv_events::{KvEventBatch, KvEventSink};
use pagoda_engine::{EngineConfig, EngineHandle, ModelInfo};
use tokio::sync::{mpsc, watch};

use crate::cli::ServeArgs;
use crate::default_model::{resolve_default_model, DEFAULT_MODEL_NAME};
use crate::gpu_metrics::GpuLabels;
use crate::gpu_metrics::GpuMonitor;
use crate::kv_events::{KvEventPublisher, KvEventsConfig};
use crate::metrics::{CacheConfigInfo, Metrics};
use crate::router::build_router;
use crate::shutdown::shutdown_signal;
use crate::state::{unix_time, AppState};

/// The model path, and the name to serve it under unless overridden.
pub fn resolve_model(model: Option<&Path>) -> Result<(PathBuf, String)> {
    match model {
        Some(path) => Ok((path.to_path_buf(), name_from_path(path))),
        None => Ok((resolve_default_model()?, DEFAULT_MODEL_NAME.to_string())),
    }
}

/// A folder's name or a file's stem (`SmolLM2-135M-Instruct.Q4_1.gguf` ->
/// `SmolLM2-135M-Instruct.Q4_1`).
pub fn name_from_path(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| path.display().to_string())
}

/// Logs the KV cache's capacity as vLLM does at start-up.
pub fn log_kv_cache(info: &ModelInfo) {
    let kind = if info.device.starts_with("cuda") {
        "GPU"
    } else {
        "CPU"
    };
    tracing::info!("{kind} KV cache size: {} tokens", info.kv_cache_tokens);
    tracing::info!(
        "Maximum concurrency for {} tokens per request: {:.2}x",
        info.max_model_len,
        info.max_concurrency
    );
}

pub fn run(args: ServeArgs) -> Result<()> {
    let (model, default_name) = resolve_model(args.engine.model.as_deref())?;
    let model_name = args.served_model_name.clone().unwrap_or(default_name);
    let config = args
        .engine
        .engine_config(model.clone(), Some(model_name.clone()));
    let enable_prefix_caching = config.enable_prefix_caching;
    tracing::info!("Loading model {} (served as {model_name})", model.display());
    let kv_events = match args.kv_events_config.as_deref() {
        Some(json) => KvEventsConfig::parse(json)?,
        None => None,
    };
    let (engine, kv_event_batches) = start_engine(config, kv_events.as_ref())?;
    let info = engine.model_info().clone();
    tracing::info!(
        "Model {} ({}) on {}: max_model_len {}, vocab {}, max_num_seqs {}, max_num_batched_tokens {}",
        info.name,
        info.architecture,
        info.device,
        info.max_model_len,
        info.vocab_size,
        info.max_num_seqs,
        info.max_num_batched_tokens
    );
    log_kv_cache(&info);
    let gpu = info
        .device
        .starts_with("cuda:")
        .then(GpuMonitor::open)
        .flatten();
    let gpu_labels = gpu.as_ref().map(|g| GpuLabels {
        gpu: g.index.clone(),
        gpu_name: g.name.clone(),
    });
    let state = Arc::new(AppState {
        engine: engine.clone(),
        metrics: Metrics::with_gpu(&model_name, gpu_labels).with_cache_config(CacheConfigInfo {
            block_size: info.block_size,
            num_gpu_blocks: info.num_kv_blocks,
            enable_prefix_caching,
            cache_dtype: info.kv_cache_dtype,
        }),
        gpu,
        model_name,
        model_root: model.display().to_string(),
        max_model_len: info.max_model_len,
        vocab_size: info.vocab_size,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        log_requests: !args.disable_log_requests,
        created: unix_time(),
        auto_tool_parser: args
            .enable_auto_tool_choice
            .then_some(args.tool_call_parser)
            .flatten(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pagoda-http")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        if let (Some(config), Some(batches)) = (kv_events, kv_event_batches) {
            let publisher = KvEventPublisher::open(config).await?;
            tokio::spawn(publisher.run(batches));
        }
        serve(state, &args).await
    });
    engine.shutdown();
    // Do not wait for stray blocking tasks (tokenization) at exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Starts the engine; with KV-cache events on, it first gets a sink whose
/// receiving end the publisher drains.
fn start_engine(
    config: EngineConfig,
    kv_events: Option<&KvEventsConfig>,
) -> Result<(EngineHandle, Option<mpsc::Receiver<KvEventBatch>>)> {
    let Some(kv_events) = kv_events else {
        let engine = EngineHandle::start(config)?;
        return Ok((engine, None));
    };
    let built = build_engine(&config)?;
    let mut engine = built.engine;
    let (sink, batches) = KvEventSink::channel(kv_events.max_queue_size);
    engine.set_kv_event_sink(sink);
    let engine = EngineHandle::from_engine(engine, built.chat_template)?;
    Ok((engine, Some(batches)))
}

async fn serve(state: Arc<AppState>, args: &ServeArgs) -> Result<()> {
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let router = build_router(state.clone());
    tracing::info!(
        "Serving {} on http://{addr} (OpenAI API under /v1)",
        state.model_name
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut graceful_rx = stop_rx.clone();
    // Token-sized SSE writes must leave at once, not wait on Nagle and the
    // client's delayed ACK (about 40 ms on loopback).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = graceful_rx.wait_for(|stop| *stop).await;
        })
        .into_future();
    tokio::pin!(server);

    let grace = Duration::from_secs_f64(args.shutdown_timeout.max(0.0));
    let mut deadline_rx = stop_rx;
    let deadline = async move {
        let _ = deadline_rx.wait_for(|stop| *stop).await;
        let stats = state.engine.stats();
        tracing::info!(
            "Shutting down: no new connections; {} running and {} waiting requests get up to {:.1}s to finish",
            stats.num_running,
            stats.num_waiting,
            grace.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            // A second signal: the operator does not want to wait.
            _ = shutdown_signal() => {}
        }
        state
    };
    tokio::select! {
        result = &mut server => result.context("the HTTP server failed")?,
        state = deadline => {
            tracing::warn!("Aborting the requests still in flight");
            state.engine.shutdown();
            if tokio::time::timeout(Duration::from_secs(5), &mut server).await.is_err() {
                tracing::warn!("Some connections did not close; exiting anyway");
            }
        }
    }
    tracing::info!("Server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_stem_or_folder() {
        assert_eq!(
            name_from_path(Path::new("/x/SmolLM2-135M-Instruct.Q4_1.gguf")),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        let dir = std::env::temp_dir();
        let expected = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name_from_path(&dir), expected);
    }
}
