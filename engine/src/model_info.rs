//! Facts about the loaded model and its KV cache that callers need.

use pagoda_scheduler::SchedulingPolicy;

#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The name clients use (`--served-model-name`).
    pub name: String,
    pub architecture: String,
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub num_kv_blocks: usize,
    pub block_size: usize,
    /// Tokens the KV cache holds (`num_kv_blocks * block_size`, null block excluded).
    pub kv_cache_tokens: usize,
    /// How many requests of `max_model_len` tokens fit at once.
    pub max_concurrency: f64,
    pub device: String,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    /// Requests may carry a priority only under `Priority`.
    pub scheduling_policy: SchedulingPolicy,
    /// The KV cache's element type (`bfloat16`, `float16`, `float32`).
    pub kv_cache_dtype: &'static str,
}
