//! GET /metrics: Prometheus exposition (open even with an API key).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::metrics::{StatsSnapshot, METRICS_CONTENT_TYPE};
use crate::state::SharedState;

pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    let s = state.engine.stats();
    state.metrics.update_from_stats(&StatsSnapshot {
        num_running: s.num_running,
        num_waiting: s.num_waiting,
        kv_cache_usage: s.kv_cache_usage,
        num_preemptions_total: s.num_preemptions_total,
        prefix_cache_queries: s.prefix_cache_queries,
        prefix_cache_hits: s.prefix_cache_hits,
        prompt_tokens_total: s.prompt_tokens_total,
        generation_tokens_total: s.generation_tokens_total,
    });
    if let Some(gpu) = &state.gpu {
        // NVML calls take microseconds: fine on the async thread.
        state.metrics.update_gpu(gpu.read().as_ref());
    }
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
}
