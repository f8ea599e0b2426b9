//! What one KV-cache group's layers need from the cache (vLLM's
//! `kv_cache_interface`: `FullAttentionSpec`, `SlidingWindowSpec`).
//!
//! A model's layers are split into groups of one attention type; each group
//! has its own block table per request, drawn from the one shared pool. A
//! windowed group keeps only the blocks its window can still read.

/// The attention type of one KV-cache group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvCacheSpec {
    /// Every token sees every earlier token: all blocks stay.
    #[default]
    FullAttention,
    /// A token sees itself and the `window - 1` positions before it
    /// (transformers' mask), so blocks wholly before that are dead.
    SlidingWindow { window: usize },
}

impl KvCacheSpec {
    /// Leading tokens no future query of a request with `num_computed`
    /// tokens cached can read: the next token (position `num_computed`)
    /// sees back to `num_computed + 1 - window`.
    pub fn num_skipped_tokens(self, num_computed: usize) -> usize {
        match self {
            Self::FullAttention => 0,
            Self::SlidingWindow { window } => (num_computed + 1).saturating_sub(window),
        }
    }

    /// Most blocks one request holds in this group at once: a full group
    /// its whole sequence; a windowed one the window behind the step's first
    /// token plus the step's tokens (at most `max_num_batched_tokens`), one
    /// more for a window that straddles a block edge (vLLM's
    /// `SlidingWindowSpec.max_memory_usage_bytes`).
    pub fn max_blocks_per_request(
        self,
        max_model_len: usize,
        max_num_batched_tokens: usize,
        block_size: usize,
    ) -> usize {
        let full = max_model_len.div_ceil(block_size);
        match self {
            Self::FullAttention => full,
            Self::SlidingWindow { window } => {
                let tokens = (window - 1 + max_num_batched_tokens).min(max_model_len);
                (tokens.div_ceil(block_size) + 1).min(full)
            }
        }
    }

    /// Contiguous cached blocks a prefix hit must end with so the next token
    /// finds every key of its window (vLLM's `sliding_window_contiguous_blocks`).
    pub(crate) fn hit_run_blocks(self, block_size: usize) -> Option<usize> {
        match self {
            Self::FullAttention => None,
            Self::SlidingWindow { window } => Some((window - 1).div_ceil(block_size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_tokens_follow_the_window_mask() {
        let w = KvCacheSpec::SlidingWindow { window: 4 };
        // Token 3 sees 0..=3; token 4 sees 1..=4.
        assert_eq!(w.num_skipped_tokens(3), 0);
        assert_eq!(w.num_skipped_tokens(4), 1);
        assert_eq!(w.num_skipped_tokens(10), 7);
        assert_eq!(KvCacheSpec::FullAttention.num_skipped_tokens(1000), 0);
        let one = KvCacheSpec::SlidingWindow { window: 1 };
        assert_eq!(one.num_skipped_tokens(5), 5, "a token sees only itself");
    }

    #[test]
    fn max_blocks_bound_the_window_not_the_sequence() {
        let full = KvCacheSpec::FullAttention;
        assert_eq!(full.max_blocks_per_request(100, 8, 16), 7);
        let w = KvCacheSpec::SlidingWindow { window: 32 };
        // 31 keys behind + 8 new tokens = 39 tokens, 3 blocks, +1 straddle.
        assert_eq!(w.max_blocks_per_request(4096, 8, 16), 4);
        // Never more than the whole sequence.
        assert_eq!(w.max_blocks_per_request(20, 8, 16), 2);
        assert_eq!(w.hit_run_blocks(16), Some(2));
        assert_eq!(
            KvCacheSpec::SlidingWindow { window: 17 }.hit_run_blocks(16),
            Some(1)
        );
        assert_eq!(
            KvCacheSpec::SlidingWindow { window: 1 }.hit_run_blocks(16),
            Some(0)
        );
    }
}
