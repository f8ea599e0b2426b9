//! Errors returned instead of panics: a bad configuration at start-up, a
//! request the scheduler refuses at admission.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("block_size must be at least 1")]
    ZeroBlockSize,
    #[error(
        "num_blocks is {num_blocks}, but the pool needs the null block plus at least one more"
    )]
    TooFewBlocks { num_blocks: usize },
    #[error("num_blocks is {num_blocks}, more than block ids (u32) can address")]
    TooManyBlocks { num_blocks: usize },
    #[error("max_num_seqs must be at least 1")]
    ZeroMaxNumSeqs,
    #[error("max_num_batched_tokens must be at least 1")]
    ZeroMaxNumBatchedTokens,
    #[error("max_model_len must be at least 1")]
    ZeroMaxModelLen,
    #[error(
        "the KV cache holds {capacity_tokens} tokens, fewer than one sequence of \
         max_model_len = {max_model_len}; add KV-cache memory or lower max_model_len"
    )]
    KvCacheTooSmall {
        max_model_len: usize,
        capacity_tokens: usize,
    },
    #[error(
        "one request of max_model_len = {max_model_len} needs up to {needed_blocks} KV-cache \
         blocks over its layer groups, but the pool has {usable_blocks}; add KV-cache memory \
         or lower max_model_len"
    )]
    KvCacheTooSmallForGroups {
        max_model_len: usize,
        needed_blocks: usize,
        usable_blocks: usize,
    },
    #[error("kv_cache_specs is empty: a model has at least one KV-cache group")]
    NoKvCacheGroups,
    #[error("a sliding window must cover at least the token itself (window >= 1)")]
    ZeroSlidingWindow,
}
