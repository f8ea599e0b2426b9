//! The metric names the routers and dashboards of the vLLM ecosystem
//! scrape (the Gateway API Inference Extension's endpoint picker, the
//! production-stack router, `vllm-router`, vLLM's Grafana dashboard).
//!
//! Served by default, beside the `pagoda:` names: a router pointed at a
//! Pagoda replica must work without configuration, and each alias is the
//! same metric object registered twice (no extra bookkeeping, one more
//! block of text per scrape). The names follow vLLM 0.11's v1 metrics
//! (`vllm/v1/metrics/loggers.py`), plus the v0 names routers still read:
//! `gpu_cache_usage_perc`, `gpu_prefix_cache_{queries,hits}` and
//! `gpu_prefix_cache_hit_rate`.

use prometheus_client::registry::Registry;

use super::Metrics;

/// The KV-cache layout, as vLLM's `CacheConfig.metrics_info()` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfigInfo {
    pub block_size: usize,
    /// KV blocks (vLLM's name, whatever the device).
    pub num_gpu_blocks: usize,
    pub enable_prefix_caching: bool,
    /// The KV cache's element type (vLLM's `cache_dtype` label).
    pub cache_dtype: &'static str,
}

impl CacheConfigInfo {
    pub(super) fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("block_size", self.block_size.to_string()),
            ("num_gpu_blocks", self.num_gpu_blocks.to_string()),
            ("num_cpu_blocks", "0".to_string()),
            ("cache_dtype", self.cache_dtype.to_string()),
            (
                "enable_prefix_caching",
                if self.enable_prefix_caching {
                    "True"
                } else {
                    "False"
                }
                .to_string(),
            ),
        ]
    }
}

/// Registers the `vllm:` aliases of `m`'s metrics in `r` (the registry
/// that adds the `model_name` label). Help texts are vLLM's.
pub(super) fn register(r: &mut Registry, m: &Metrics) {
    r.register(
        "vllm:num_requests_running",
        "Number of requests in model execution batches",
        m.num_requests_running.clone(),
    );
    r.register(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed",
        m.num_requests_waiting.clone(),
    );
    r.register(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage",
        m.kv_cache_usage_perc.clone(),
    );
    r.register(
        "vllm:gpu_cache_usage_perc",
        "GPU KV-cache usage. 1 means 100 percent usage (legacy name of vllm:kv_cache_usage_perc)",
        m.kv_cache_usage_perc.clone(),
    );
    // Counters: the encoder appends `_total`.
    r.register(
        "vllm:prompt_tokens",
        "Number of prefill tokens processed",
        m.prompt_tokens.clone(),
    );
    r.register(
        "vllm:generation_tokens",
        "Number of generation tokens processed",
        m.generation_tokens.clone(),
    );
    r.register(
        "vllm:request_success",
        "Count of successfully processed requests",
        m.request_success.clone(),
    );
    r.register(
        "vllm:num_preemptions",
        "Cumulative number of preemptions from the engine",
        m.num_preemptions.clone(),
    );
    for (name, legacy, help, counter) in [
        (
            "vllm:prefix_cache_queries",
            "vllm:gpu_prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens",
            &m.prefix_cache_queries,
        ),
        (
            "vllm:prefix_cache_hits",
            "vllm:gpu_prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens",
            &m.prefix_cache_hits,
        ),
    ] {
        r.register(name, help, counter.clone());
        r.register(legacy, help, counter.clone());
    }
    r.register(
        "vllm:gpu_prefix_cache_hit_rate",
        "Prefix cache hit rate since start: cached tokens over queried tokens (legacy)",
        m.prefix_cache_hit_rate.clone(),
    );
    r.register(
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        m.cache_config_info.clone(),
    );
    r.register(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds",
        m.time_to_first_token.clone(),
    );
    r.register(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds",
        m.inter_token_latency.clone(),
    );
    r.register(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds",
        m.e2e_request_latency.clone(),
    );
    r.register(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request",
        m.request_queue_time.clone(),
    );
}
