//! A snapshot of the scheduler for metrics and logs.

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SchedulerStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_preemptions_total: u64,
    /// Fraction of usable KV blocks held by requests (0..=1).
    pub kv_cache_usage: f64,
    /// Prompt tokens looked up in the prefix cache (vLLM counts tokens).
    pub prefix_cache_queries: u64,
    /// Of those, tokens found cached.
    pub prefix_cache_hits: u64,
    pub num_free_blocks: usize,
}
