//! What every handler shares: the engine, the served model's identity, the
//! metrics and the server's settings.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pagoda_engine::EngineHandle;

use crate::error::ApiError;
use crate::gpu_metrics::GpuMonitor;
use crate::metrics::Metrics;
use crate::tool_parsers::ToolParserKind;

pub struct AppState {
    pub engine: EngineHandle,
    /// The name clients send as `model`.
    pub model_name: String,
    /// Where the weights came from (shown in /v1/models).
    pub model_root: String,
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub metrics: Metrics,
    /// NVML on the engine's GPU, when it runs on one and NVML loads.
    pub gpu: Option<GpuMonitor>,
    /// When set, every route but /health and /metrics needs it.
    pub api_key: Option<String>,
    /// Largest request body accepted (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Log one line per finished request.
    pub log_requests: bool,
    /// Unix time the server started (the model card's `created`).
    pub created: u64,
    /// `--tool-call-parser` when `--enable-auto-tool-choice` is on: what
    /// `tool_choice: "auto"` reads the output with.
    pub auto_tool_parser: Option<ToolParserKind>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// 404 unless `requested` is absent or names the served model.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            Some(name) if name != self.model_name => Err(ApiError::model_not_found(name)),
            _ => Ok(()),
        }
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response id such as `cmpl-1f0c…` (32 random hex digits, as vLLM's).
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_unique() {
        let a = random_id("cmpl");
        let b = random_id("cmpl");
        assert!(a.starts_with("cmpl-"));
        assert_eq!(a.len(), "cmpl-".len() + 32);
        assert_ne!(a, b);
        assert!(unix_time() > 1_700_000_000);
    }
}
