//! All KV-cache blocks, preallocated: ref counts, the free queue (LRU
//! eviction order) and the prefix cache (block hash -> block id).
//!
//! A block with ref count 0 sits in the free queue. If it has a hash it is
//! still in the prefix cache and can be revived by a hit (`touch`) until
//! `get_new_blocks` pops it for reuse — that pop is its eviction.
//! Block 0 is the null block: never queued, never handed out.
//!
//! With several KV-cache groups (hybrid models) the pool is shared and a
//! block holds one group's KV at a time, so the prefix cache is keyed by
//! (hash, group), vLLM's `BlockHashWithGroupId`. KV-cache events describe
//! group 0's cache only (the first full-attention group when there is one):
//! a router follows one prefix set per replica.

use std::collections::HashMap;

use crate::block::KvCacheBlock;
use crate::block_hash::{BlockHash, BuildBlockHashHasher};
use crate::free_block_queue::FreeBlockQueue;
use crate::kv_events::{KvCacheEvent, KvEventLog};

pub const NULL_BLOCK_ID: u32 = 0;

#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<KvCacheBlock>,
    free_queue: FreeBlockQueue,
    /// One block per hash. When two requests fill identical blocks, the
    /// second is hashed but not registered (block tables are append-only, so
    /// it cannot be swapped for the first); it registers itself on free if
    /// the first has been evicted meanwhile.
    cached: HashMap<(BlockHash, u32), u32, BuildBlockHashHasher>,
    enable_caching: bool,
    /// Changes of `cached`, for KV-cache event consumers (off by default).
    events: KvEventLog,
}

impl BlockPool {
    /// `num_blocks` includes the null block; callers validate `num_blocks >= 2`
    /// and that it fits `u32` (see `SchedulerConfig::validate`).
    pub fn new(num_blocks: usize, enable_caching: bool) -> Self {
        let mut free_queue = FreeBlockQueue::new(num_blocks);
        for id in 1..num_blocks {
            free_queue.append(id as u32);
        }
        Self {
            blocks: vec![KvCacheBlock::default(); num_blocks],
            free_queue,
            // Sized for every block up front: no rehash on the hot path.
            cached: if enable_caching {
                HashMap::with_capacity_and_hasher(num_blocks, Default::default())
            } else {
                HashMap::default()
            },
            enable_caching,
            events: KvEventLog::default(),
        }
    }

    /// Starts (or stops) recording `KvCacheEvent`s.
    pub fn set_kv_events(&mut self, enabled: bool) {
        self.events.set_enabled(enabled);
    }

    /// The events since the last call, oldest first.
    pub fn take_kv_events(&mut self) -> Vec<KvCacheEvent> {
        self.events.take()
    }

    /// Records that `hash` entered the cache; the caller knows the tokens.
    pub(crate) fn log_stored(
        &mut self,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) {
        self.events.stored(hash, parent, tokens);
    }

    /// Group 0's hashes in the prefix cache, in no order.
    pub fn cached_hashes(&self) -> impl Iterator<Item = BlockHash> + '_ {
        self.cached
            .keys()
            .filter(|(_, group)| *group == 0)
            .map(|&(hash, _)| hash)
    }

    /// Blocks in the pool, including the null block.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.free_queue.len()
    }

    /// Blocks held by at least one request.
    pub fn num_used_blocks(&self) -> usize {
        self.blocks.len() - 1 - self.free_queue.len()
    }

    /// Fraction of the usable blocks (the null block excluded) held by requests.
    pub fn usage(&self) -> f64 {
        self.num_used_blocks() as f64 / (self.blocks.len() - 1) as f64
    }

    pub fn block(&self, block_id: u32) -> Option<&KvCacheBlock> {
        self.blocks.get(block_id as usize)
    }

    pub fn ref_cnt(&self, block_id: u32) -> u32 {
        self.block(block_id).map_or(0, |b| b.ref_cnt)
    }

    pub fn is_free(&self, block_id: u32) -> bool {
        self.free_queue.contains(block_id)
    }

    pub fn free_queue(&self) -> &FreeBlockQueue {
        &self.free_queue
    }

    /// The block registered for `hash` in `group`, if any (cache hit).
    pub fn get_cached_block(&self, hash: BlockHash, group: u32) -> Option<u32> {
        self.cached.get(&(hash, group)).copied()
    }

    /// Number of (hash, group) entries in the prefix cache.
    pub fn num_cached_hashes(&self) -> usize {
        self.cached.len()
    }

    /// Pops `n` blocks off the free queue (evicting their cached hashes),
    /// sets their ref counts to 1 and appends them to `out`. Returns false,
    /// changing nothing, if fewer than `n` are free.
    pub fn get_new_blocks(&mut self, n: usize, out: &mut Vec<u32>) -> bool {
        if n > self.free_queue.len() {
            return false;
        }
        out.reserve(n);
        for _ in 0..n {
            let Some(id) = self.free_queue.popleft() else {
                return false; // unreachable: length checked above
            };
            self.evict(id);
            self.blocks[id as usize].ref_cnt = 1;
            out.push(id);
        }
        true
    }

    /// Takes a reference on prefix-hit blocks, reviving free ones.
    pub fn touch(&mut self, block_ids: &[u32]) {
        for &id in block_ids {
            let block = &mut self.blocks[id as usize];
            if block.ref_cnt == 0 {
                self.free_queue.remove(id);
            }
            block.ref_cnt += 1;
        }
    }

    /// Drops one reference. At zero the block goes to the tail of the free
    /// queue; it keeps its hash only if `keep_hash` (its KV was written), so
    /// a block cached for a step that never ran cannot be hit. Returns true
    /// if that made its hash newly registered (its twin had been evicted).
    pub fn free_block(&mut self, block_id: u32, keep_hash: bool) -> bool {
        let Some(block) = self.blocks.get_mut(block_id as usize) else {
            return false;
        };
        if block_id == NULL_BLOCK_ID || block.ref_cnt == 0 {
            return false;
        }
        block.ref_cnt -= 1;
        if block.ref_cnt > 0 {
            return false;
        }
        let mut registered = false;
        if keep_hash {
            if let Some(hash) = block.block_hash {
                let group = block.group;
                registered = self.register(hash, group, block_id);
            }
        } else {
            self.evict(block_id);
        }
        self.free_queue.append(block_id);
        registered
    }

    /// Marks a full block of `group` as holding `hash` and registers it
    /// unless another block of the group already holds that hash; true if it
    /// was registered.
    pub fn cache_block(&mut self, block_id: u32, hash: BlockHash, group: u32) -> bool {
        if !self.enable_caching {
            return false;
        }
        let block = &mut self.blocks[block_id as usize];
        block.block_hash = Some(hash);
        block.group = group;
        self.register(hash, group, block_id)
    }

    fn register(&mut self, hash: BlockHash, group: u32, block_id: u32) -> bool {
        match self.cached.entry((hash, group)) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(block_id);
                true
            }
        }
    }

    /// Forgets a block's hash (and its registration, if it is the
    /// registered block for that hash).
    fn evict(&mut self, block_id: u32) {
        let block = &mut self.blocks[block_id as usize];
        if let Some(hash) = block.block_hash.take() {
            let key = (hash, block.group);
            if self.cached.get(&key) == Some(&block_id) {
                self.cached.remove(&key);
                if key.1 == 0 {
                    self.events.removed(hash);
                }
            }
        }
    }

    /// Drops every cached hash. Only possible when no request holds a block
    /// (a held block's hash may still be needed to cache its successors).
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.num_used_blocks() != 0 {
            return false;
        }
        self.cached.clear();
        for block in &mut self.blocks {
            block.block_hash = None;
        }
        self.events.cleared();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_block_is_never_handed_out() {
        let mut pool = BlockPool::new(4, true);
        assert_eq!(pool.num_free_blocks(), 3);
        let mut got = Vec::new();
        assert!(pool.get_new_blocks(3, &mut got));
        assert_eq!(got, vec![1, 2, 3]);
        assert!(!got.contains(&NULL_BLOCK_ID));
        assert!(!pool.get_new_blocks(1, &mut got), "pool exhausted");
        assert_eq!(got.len(), 3, "a failed allocation changes nothing");
        assert_eq!(pool.usage(), 1.0);
        pool.free_block(NULL_BLOCK_ID, true);
        assert!(!pool.is_free(NULL_BLOCK_ID));
    }

    #[test]
    fn freed_block_keeps_hash_until_reused() {
        let mut pool = BlockPool::new(3, true);
        let mut got = Vec::new();
        pool.get_new_blocks(2, &mut got);
        let h = BlockHash(42);
        pool.cache_block(got[0], h, 0);
        pool.free_block(got[0], true);
        assert_eq!(pool.get_cached_block(h, 0), Some(got[0]), "still hittable");
        assert!(pool.is_free(got[0]));
        // A hit revives it: out of the free queue, ref count 1.
        pool.touch(&[got[0]]);
        assert!(!pool.is_free(got[0]));
        assert_eq!(pool.ref_cnt(got[0]), 1);
        pool.free_block(got[0], true);
        pool.free_block(got[1], true);
        // Reuse pops it (it is at the head): that is its eviction.
        let mut again = Vec::new();
        pool.get_new_blocks(1, &mut again);
        assert_eq!(again, vec![got[0]]);
        assert_eq!(pool.get_cached_block(h, 0), None);
        assert_eq!(pool.block(got[0]).unwrap().block_hash(), None);
    }

    #[test]
    fn duplicate_hash_registers_on_free_after_the_original_is_evicted() {
        let mut pool = BlockPool::new(4, true);
        let mut got = Vec::new();
        pool.get_new_blocks(2, &mut got);
        let h = BlockHash(7);
        pool.cache_block(got[0], h, 0);
        pool.cache_block(got[1], h, 0);
        assert_eq!(pool.get_cached_block(h, 0), Some(got[0]));
        pool.free_block(got[0], true);
        let mut other = Vec::new();
        pool.get_new_blocks(2, &mut other); // pops block 3, then evicts got[0]
        assert_eq!(pool.get_cached_block(h, 0), None);
        pool.free_block(got[1], true);
        assert_eq!(pool.get_cached_block(h, 0), Some(got[1]));
    }

    #[test]
    fn unwritten_block_loses_hash_on_free_and_reset_needs_an_idle_pool() {
        let mut pool = BlockPool::new(3, true);
        let mut got = Vec::new();
        pool.get_new_blocks(2, &mut got);
        pool.cache_block(got[0], BlockHash(1), 0);
        pool.cache_block(got[1], BlockHash(2), 0);
        pool.free_block(got[1], false);
        assert_eq!(pool.get_cached_block(BlockHash(2), 0), None);
        assert!(!pool.reset_prefix_cache(), "block still held");
        pool.free_block(got[0], true);
        assert!(pool.reset_prefix_cache());
        assert_eq!(pool.num_cached_hashes(), 0);
        assert_eq!(pool.block(got[0]).unwrap().block_hash(), None);
    }

    #[test]
    fn caching_disabled_registers_nothing() {
        let mut pool = BlockPool::new(3, false);
        let mut got = Vec::new();
        pool.get_new_blocks(1, &mut got);
        pool.cache_block(got[0], BlockHash(9), 0);
        assert_eq!(pool.get_cached_block(BlockHash(9), 0), None);
        assert_eq!(pool.block(got[0]).unwrap().block_hash(), None);
    }
}
