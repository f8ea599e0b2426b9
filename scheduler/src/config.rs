//! Scheduler limits: the token budget, the sequence cap and the KV-cache
//! geometry. Checked once by [`SchedulerConfig::validate`] so the hot path
//! never has to re-check them.

use crate::error::ConfigError;
use crate::kv_cache_spec::KvCacheSpec;

/// Which request loses when memory runs out, and in which order waiting
/// requests are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedulingPolicy {
    /// First come, first served: admit in arrival order; preempt the request
    /// that started running last.
    #[default]
    Fcfs,
    /// Lower `priority` value first, then earlier arrival; preempt the running
    /// request with the highest value (then the latest arrival).
    Priority,
}

impl std::str::FromStr for SchedulingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fcfs" => Ok(Self::Fcfs),
            "priority" => Ok(Self::Priority),
            other => Err(format!(
                "unknown scheduling policy {other:?}: expected fcfs or priority"
            )),
        }
    }
}

impl std::fmt::Display for SchedulingPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Fcfs => "fcfs",
            Self::Priority => "priority",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Tokens per KV-cache block.
    pub block_size: usize,
    /// Blocks in the pool, including the reserved null block 0.
    pub num_blocks: usize,
    /// Most requests running at once.
    pub max_num_seqs: usize,
    /// Token budget of one step (prefill chunks plus decodes).
    pub max_num_batched_tokens: usize,
    /// Longest sequence (prompt + output) a request may reach.
    pub max_model_len: usize,
    /// Caps one request's prefill chunk per step so long prompts cannot hog
    /// the budget; 0 = no cap beyond the budget.
    pub long_prefill_token_threshold: usize,
    pub enable_prefix_caching: bool,
    pub policy: SchedulingPolicy,
    /// One entry per KV-cache group (the model's layers grouped by
    /// attention type); each request holds a block table per group, all
    /// from the one pool. A plain model: one `FullAttention` group.
    pub kv_cache_specs: Vec<KvCacheSpec>,
}

impl Default for SchedulerConfig {
    /// vLLM-like defaults: 16-token blocks, 256 sequences, 8192-token budget,
    /// and a pool (64 Ki tokens) that holds one 4096-token sequence 16 times.
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 4097,
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            max_model_len: 4096,
            long_prefill_token_threshold: 0,
            enable_prefix_caching: true,
            policy: SchedulingPolicy::Fcfs,
            kv_cache_specs: vec![KvCacheSpec::FullAttention],
        }
    }
}

impl SchedulerConfig {
    /// Tokens the pool can hold (the null block holds none).
    pub fn kv_capacity_tokens(&self) -> usize {
        self.num_blocks
            .saturating_sub(1)
            .saturating_mul(self.block_size)
    }

    /// Blocks one request can hold at once over all KV-cache groups: a
    /// full group its whole `max_model_len` sequence, a windowed group its
    /// window plus one step (`KvCacheSpec::max_blocks_per_request`).
    pub fn max_blocks_per_request(&self) -> usize {
        self.kv_cache_specs
            .iter()
            .map(|spec| {
                spec.max_blocks_per_request(
                    self.max_model_len,
                    self.max_num_batched_tokens,
                    self.block_size,
                )
            })
            .sum()
    }

    /// Checks the limits. The pool must hold at least one request at its
    /// largest (`max_blocks_per_request`): otherwise a lone request could
    /// never finish and recompute-preemption would loop forever.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_size == 0 {
            return Err(ConfigError::ZeroBlockSize);
        }
        if self.num_blocks < 2 {
            return Err(ConfigError::TooFewBlocks {
                num_blocks: self.num_blocks,
            });
        }
        if self.num_blocks > u32::MAX as usize {
            return Err(ConfigError::TooManyBlocks {
                num_blocks: self.num_blocks,
            });
        }
        if self.max_num_seqs == 0 {
            return Err(ConfigError::ZeroMaxNumSeqs);
        }
        if self.max_num_batched_tokens == 0 {
            return Err(ConfigError::ZeroMaxNumBatchedTokens);
        }
        if self.max_model_len == 0 {
            return Err(ConfigError::ZeroMaxModelLen);
        }
        if self.kv_cache_specs.is_empty() {
            return Err(ConfigError::NoKvCacheGroups);
        }
        if self
            .kv_cache_specs
            .contains(&KvCacheSpec::SlidingWindow { window: 0 })
        {
            return Err(ConfigError::ZeroSlidingWindow);
        }
        if self.kv_cache_specs == [KvCacheSpec::FullAttention] {
            let capacity = self.kv_capacity_tokens();
            if capacity < self.max_model_len {
                return Err(ConfigError::KvCacheTooSmall {
                    max_model_len: self.max_model_len,
                    capacity_tokens: capacity,
                });
            }
        }
        let needed = self.max_blocks_per_request();
        if self.num_blocks - 1 < needed {
            return Err(ConfigError::KvCacheTooSmallForGroups {
                max_model_len: self.max_model_len,
                needed_blocks: needed,
                usable_blocks: self.num_blocks - 1,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(SchedulerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_each_bad_limit() {
        let ok = SchedulerConfig::default();
        let cases = [
            (
                SchedulerConfig {
                    block_size: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroBlockSize,
            ),
            (
                SchedulerConfig {
                    num_blocks: 1,
                    ..ok.clone()
                },
                ConfigError::TooFewBlocks { num_blocks: 1 },
            ),
            (
                SchedulerConfig {
                    max_num_seqs: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroMaxNumSeqs,
            ),
            (
                SchedulerConfig {
                    max_num_batched_tokens: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroMaxNumBatchedTokens,
            ),
            (
                SchedulerConfig {
                    max_model_len: 0,
                    ..ok.clone()
                },
                ConfigError::ZeroMaxModelLen,
            ),
            (
                SchedulerConfig {
                    num_blocks: 11,
                    block_size: 16,
                    max_model_len: 161,
                    ..ok.clone()
                },
                ConfigError::KvCacheTooSmall {
                    max_model_len: 161,
                    capacity_tokens: 160,
                },
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), Err(expected));
        }
        // Exactly one max_model_len sequence fits: accepted.
        let exact = SchedulerConfig {
            num_blocks: 11,
            block_size: 16,
            max_model_len: 160,
            ..ok
        };
        assert_eq!(exact.validate(), Ok(()));
    }

    #[test]
    fn windowed_groups_need_only_their_window() {
        // 64-token max_model_len, 4-token blocks: full attention needs 16
        // blocks; a window of 8 with a 4-token budget needs
        // ceil((7 + 4) / 4) + 1 = 4.
        let cfg = |specs: Vec<KvCacheSpec>, num_blocks| SchedulerConfig {
            block_size: 4,
            num_blocks,
            max_num_batched_tokens: 4,
            max_model_len: 64,
            kv_cache_specs: specs,
            ..SchedulerConfig::default()
        };
        let window = KvCacheSpec::SlidingWindow { window: 8 };
        assert_eq!(cfg(vec![window], 5).validate(), Ok(()));
        assert_eq!(
            cfg(vec![window], 4).validate(),
            Err(ConfigError::KvCacheTooSmallForGroups {
                max_model_len: 64,
                needed_blocks: 4,
                usable_blocks: 3
            })
        );
        let hybrid = vec![KvCacheSpec::FullAttention, window];
        assert_eq!(cfg(hybrid.clone(), 21).validate(), Ok(()));
        assert!(cfg(hybrid, 20).validate().is_err());
        assert_eq!(
            cfg(vec![], 100).validate(),
            Err(ConfigError::NoKvCacheGroups)
        );
        assert_eq!(
            cfg(vec![KvCacheSpec::SlidingWindow { window: 0 }], 100).validate(),
            Err(ConfigError::ZeroSlidingWindow)
        );
    }

    #[test]
    fn policy_parses_and_prints() {
        for p in [SchedulingPolicy::Fcfs, SchedulingPolicy::Priority] {
            assert_eq!(p.to_string().parse::<SchedulingPolicy>(), Ok(p));
        }
        assert!("lifo".parse::<SchedulingPolicy>().is_err());
    }
}
