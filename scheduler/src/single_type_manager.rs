//! One KV-cache group's rules (vLLM's `SingleTypeKVCacheManager`:
//! `FullAttentionManager`, `SlidingWindowManager`): which cached prefix a
//! request may reuse, and which of its blocks are dead and go back to the
//! pool as the sequence moves on. The block table itself lives in the
//! `Request`; a dead block's entry becomes the null block, so positions
//! keep their table index.

use crate::block_hash::BlockHash;
use crate::block_pool::{BlockPool, NULL_BLOCK_ID};
use crate::kv_cache_spec::KvCacheSpec;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SingleTypeKvCacheManager {
    pub(crate) spec: KvCacheSpec,
    /// This group's index: its cached blocks are keyed by (hash, group).
    pub(crate) group: u32,
    pub(crate) block_size: usize,
}

impl SingleTypeKvCacheManager {
    /// The longest hit of at most `max_blocks` blocks this group can use:
    /// full attention needs every block of the prefix; a window only the
    /// last `hit_run_blocks` before the hit's end (or all of them from the
    /// start), found scanning right to left as vLLM's
    /// `find_longest_cache_hit`. Returns the hit's length in blocks.
    pub(crate) fn longest_hit(
        &self,
        pool: &BlockPool,
        hashes: &[BlockHash],
        max_blocks: usize,
    ) -> usize {
        let cached = |i: usize| pool.get_cached_block(hashes[i], self.group).is_some();
        match self.spec.hit_run_blocks(self.block_size) {
            None => (0..max_blocks).take_while(|&i| cached(i)).count(),
            Some(run) => {
                let mut contiguous = 0;
                for i in (0..max_blocks).rev() {
                    if contiguous >= run {
                        return i + 1 + run;
                    }
                    if cached(i) {
                        contiguous += 1;
                    } else {
                        contiguous = 0;
                    }
                }
                // No run long enough ends later: only the one from the start
                // (shorter than the window is fine there).
                contiguous
            }
        }
    }

    /// The block ids of a hit of `num_blocks` blocks (valid for this group:
    /// see `longest_hit`): null for blocks no later token can read.
    pub(crate) fn hit_blocks(
        &self,
        pool: &BlockPool,
        hashes: &[BlockHash],
        num_blocks: usize,
        out: &mut Vec<u32>,
    ) {
        let num_skipped = self.num_skipped_blocks(num_blocks * self.block_size);
        for (i, &hash) in hashes[..num_blocks].iter().enumerate() {
            let id = if i < num_skipped {
                NULL_BLOCK_ID
            } else {
                pool.get_cached_block(hash, self.group)
                    .unwrap_or(NULL_BLOCK_ID)
            };
            out.push(id);
        }
    }

    /// Leading blocks wholly before what the next token can read.
    fn num_skipped_blocks(&self, num_computed: usize) -> usize {
        self.spec.num_skipped_tokens(num_computed) / self.block_size
    }

    /// vLLM's `remove_skipped_blocks`: frees the blocks no query after
    /// `num_computed` tokens can read and nulls their entries. Walks back
    /// from the last dead block and stops at the first null one (everything
    /// before it was freed earlier). Freed blocks keep their hash (their KV
    /// was written), so later requests can still hit them; the table
    /// indices whose free newly registered a hash (a twin taking it over)
    /// go to `registered`, for the KV-cache events.
    pub(crate) fn remove_skipped_blocks(
        &self,
        pool: &mut BlockPool,
        table: &mut [u32],
        num_computed: usize,
        registered: &mut Vec<usize>,
    ) {
        let num_skipped = self.num_skipped_blocks(num_computed).min(table.len());
        let first_live_dead = table[..num_skipped]
            .iter()
            .rposition(|&id| id == NULL_BLOCK_ID)
            .map_or(0, |i| i + 1);
        for (i, id) in table
            .iter_mut()
            .enumerate()
            .take(num_skipped)
            .skip(first_live_dead)
        {
            if pool.free_block(*id, true) {
                registered.push(i);
            }
            *id = NULL_BLOCK_ID;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_hash::BlockHash;

    fn pool_with(cached: &[bool], group: u32) -> (BlockPool, Vec<BlockHash>) {
        let mut pool = BlockPool::new(cached.len() + 1, true);
        let mut ids = Vec::new();
        pool.get_new_blocks(cached.len(), &mut ids);
        let hashes: Vec<BlockHash> = (0..cached.len() as u128).map(BlockHash).collect();
        for (i, &c) in cached.iter().enumerate() {
            if c {
                pool.cache_block(ids[i], hashes[i], group);
            }
            pool.free_block(ids[i], true);
        }
        (pool, hashes)
    }

    fn manager(spec: KvCacheSpec) -> SingleTypeKvCacheManager {
        SingleTypeKvCacheManager {
            spec,
            group: 1,
            block_size: 4,
        }
    }

    #[test]
    fn full_attention_hit_is_the_cached_prefix() {
        let (pool, h) = pool_with(&[true, true, false, true], 1);
        let m = manager(KvCacheSpec::FullAttention);
        assert_eq!(m.longest_hit(&pool, &h, 4), 2);
        assert_eq!(m.longest_hit(&pool, &h, 1), 1);
        // Another group's blocks are not this group's hits.
        let other = SingleTypeKvCacheManager { group: 0, ..m };
        assert_eq!(other.longest_hit(&pool, &h, 4), 0);
    }

    #[test]
    fn window_hit_needs_a_run_covering_the_window() {
        // Window 9 with 4-token blocks: the 8 keys behind the next token
        // span 2 blocks.
        let m = manager(KvCacheSpec::SlidingWindow { window: 9 });
        let (pool, h) = pool_with(&[false, true, true, false, true, true, false], 1);
        // Blocks 4..6 form the latest run of 2: the hit ends at block 6.
        assert_eq!(m.longest_hit(&pool, &h, 7), 6);
        assert_eq!(m.longest_hit(&pool, &h, 5), 3, "bounded: run 1..3");
        assert_eq!(m.longest_hit(&pool, &h, 2), 0, "run of 1 not at the start");
        let mut ids = Vec::new();
        m.hit_blocks(&pool, &h, 6, &mut ids);
        assert_eq!(
            &ids[..4],
            &[0, 0, 0, 0],
            "blocks behind the window are null"
        );
        assert!(ids[4] != 0 && ids[5] != 0);
        // A run from the start is a hit even when shorter than the window.
        let (pool, h) = pool_with(&[true, false, true], 1);
        assert_eq!(m.longest_hit(&pool, &h, 3), 1);
        let (pool, h) = pool_with(&[true, true, true, true], 1);
        assert_eq!(m.longest_hit(&pool, &h, 4), 4);
    }

    #[test]
    fn skipped_blocks_are_freed_once_and_nulled() {
        let m = manager(KvCacheSpec::SlidingWindow { window: 5 });
        let mut pool = BlockPool::new(8, true);
        let mut table = Vec::new();
        pool.get_new_blocks(4, &mut table);
        // 9 computed: token 9 sees 5..=9, so block 0 (tokens 0..4) is dead.
        m.remove_skipped_blocks(&mut pool, &mut table, 9, &mut Vec::new());
        assert_eq!(table[0], NULL_BLOCK_ID);
        assert_eq!(pool.num_free_blocks(), 4);
        m.remove_skipped_blocks(&mut pool, &mut table, 9, &mut Vec::new());
        assert_eq!(pool.num_free_blocks(), 4, "freed only once");
        m.remove_skipped_blocks(&mut pool, &mut table, 14, &mut Vec::new());
        assert_eq!(&table[..2], &[0, 0]);
        assert_eq!(pool.num_free_blocks(), 5);
        // Full attention frees nothing.
        let full = manager(KvCacheSpec::FullAttention);
        full.remove_skipped_blocks(&mut pool, &mut table, 1000, &mut Vec::new());
        assert_eq!(pool.num_free_blocks(), 5);
    }
}
