//! KV-cache events: hashes entering and leaving the prefix cache, in the
//! order it happened (vLLM's `BlockStored`, `BlockRemoved` and
//! `AllBlocksCleared`). A router that replays them knows which prefixes a
//! replica holds. Recorded only when enabled (one branch per cache change
//! otherwise); the wire format belongs to whoever publishes them.
//!
//! Events follow the cache's registrations, not its blocks: a block filled
//! with a hash that another block already holds is not announced, and a
//! hash is removed only when it leaves the cache. Replaying the events from
//! the start therefore gives exactly the set of cached hashes.

use crate::block_hash::BlockHash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCacheEvent {
    /// Blocks of one sequence entered the cache, each the next in the
    /// chain: `token_ids` holds `block_size` tokens per hash, and
    /// `parent_block_hash` is the hash of the block before the first (None
    /// at the start of a sequence).
    BlockStored {
        block_hashes: Vec<BlockHash>,
        parent_block_hash: Option<BlockHash>,
        token_ids: Vec<u32>,
        block_size: usize,
    },
    /// Hashes that left the cache (their blocks were reused or never written).
    BlockRemoved { block_hashes: Vec<BlockHash> },
    /// The whole prefix cache was dropped (`reset_prefix_cache`).
    AllBlocksCleared,
}

/// The events since the last `take`, merged where a router cannot tell the
/// difference: consecutive removals form one event, and a stored block that
/// continues the previous event's chain joins it.
#[derive(Debug, Default)]
pub(crate) struct KvEventLog {
    enabled: bool,
    events: Vec<KvCacheEvent>,
}

impl KvEventLog {
    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
        if !enabled {
            self.events.clear();
        }
    }

    pub(crate) fn stored(&mut self, hash: BlockHash, parent: Option<BlockHash>, token_ids: &[u32]) {
        if !self.enabled {
            return;
        }
        if let Some(KvCacheEvent::BlockStored {
            block_hashes,
            token_ids: tokens,
            ..
        }) = self.events.last_mut()
        {
            if parent.is_some() && block_hashes.last() == parent.as_ref() {
                block_hashes.push(hash);
                tokens.extend_from_slice(token_ids);
                return;
            }
        }
        self.events.push(KvCacheEvent::BlockStored {
            block_hashes: vec![hash],
            parent_block_hash: parent,
            token_ids: token_ids.to_vec(),
            block_size: token_ids.len(),
        });
    }

    pub(crate) fn removed(&mut self, hash: BlockHash) {
        if !self.enabled {
            return;
        }
        if let Some(KvCacheEvent::BlockRemoved { block_hashes }) = self.events.last_mut() {
            block_hashes.push(hash);
        } else {
            self.events.push(KvCacheEvent::BlockRemoved {
                block_hashes: vec![hash],
            });
        }
    }

    pub(crate) fn cleared(&mut self) {
        if self.enabled {
            self.events.push(KvCacheEvent::AllBlocksCleared);
        }
    }

    pub(crate) fn take(&mut self) -> Vec<KvCacheEvent> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: u128) -> BlockHash {
        BlockHash(x)
    }

    #[test]
    fn a_chain_is_one_event_and_removals_merge() {
        let mut log = KvEventLog::default();
        log.stored(h(1), None, &[1, 2]);
        assert!(log.take().is_empty(), "nothing is recorded while disabled");
        log.set_enabled(true);
        log.stored(h(1), None, &[1, 2]);
        log.stored(h(2), Some(h(1)), &[3, 4]);
        // Another sequence's first block starts a new event.
        log.stored(h(9), None, &[5, 6]);
        log.removed(h(1));
        log.removed(h(2));
        log.cleared();
        assert_eq!(
            log.take(),
            vec![
                KvCacheEvent::BlockStored {
                    block_hashes: vec![h(1), h(2)],
                    parent_block_hash: None,
                    token_ids: vec![1, 2, 3, 4],
                    block_size: 2,
                },
                KvCacheEvent::BlockStored {
                    block_hashes: vec![h(9)],
                    parent_block_hash: None,
                    token_ids: vec![5, 6],
                    block_size: 2,
                },
                KvCacheEvent::BlockRemoved {
                    block_hashes: vec![h(1), h(2)],
                },
                KvCacheEvent::AllBlocksCleared,
            ]
        );
        assert!(log.take().is_empty(), "take drains");
    }
}
