//! The KV-cache manager: a request's view of the block pool (vLLM's
//! `KVCacheManager` with its hybrid `KVCacheCoordinator`). Finds prefix-cache
//! hits, grows a request's block tables as its tokens are scheduled,
//! registers blocks in the prefix cache as soon as they are full, frees
//! what a sliding window can no longer read, and frees a request's blocks.
//!
//! A model's layers form KV-cache groups (`KvCacheSpec` each: full
//! attention or one window size); every group has its own block table per
//! request, drawn from the one shared pool. A plain model has one
//! full-attention group and behaves as before groups existed.
//!
//! The block tables and block hashes live in the `Request` (as in
//! nano-vllm), so no per-request map lookup sits on the hot path.

use crate::block_hash::BlockHasher;
use crate::block_pool::{BlockPool, NULL_BLOCK_ID};
use crate::kv_cache_spec::KvCacheSpec;
use crate::request::Request;
use crate::single_type_manager::SingleTypeKvCacheManager;

/// A prefix-cache hit: leading blocks whose KV is already cached, per group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComputedBlocks {
    /// Per KV-cache group, the hit's block ids (the null block where the
    /// group's window no longer reads); every group's list has the same length.
    pub block_ids: Vec<Vec<u32>>,
    /// Hit blocks times `block_size`.
    pub num_computed_tokens: usize,
}

#[derive(Debug)]
pub struct KvCacheManager {
    block_size: usize,
    enable_caching: bool,
    pool: BlockPool,
    hasher: BlockHasher,
    /// One per KV-cache group, in group order.
    groups: Vec<SingleTypeKvCacheManager>,
    prefix_cache_queries: u64,
    prefix_cache_hits: u64,
}

impl KvCacheManager {
    /// One full-attention group. `num_blocks` includes the null block (see
    /// `SchedulerConfig::validate`).
    pub fn new(block_size: usize, num_blocks: usize, enable_caching: bool) -> Self {
        Self::with_groups(
            block_size,
            num_blocks,
            enable_caching,
            &[KvCacheSpec::FullAttention],
        )
    }

    /// One group per entry of `specs` (at least one), sharing the pool.
    pub fn with_groups(
        block_size: usize,
        num_blocks: usize,
        enable_caching: bool,
        specs: &[KvCacheSpec],
    ) -> Self {
        let groups = specs
            .iter()
            .enumerate()
            .map(|(g, &spec)| SingleTypeKvCacheManager {
                spec,
                group: g as u32,
                block_size,
            })
            .collect();
        Self {
            block_size,
            enable_caching,
            pool: BlockPool::new(num_blocks, enable_caching),
            hasher: BlockHasher::new(),
            groups,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn enable_caching(&self) -> bool {
        self.enable_caching
    }

    /// The KV-cache groups' specs, in group order.
    pub fn kv_cache_specs(&self) -> impl Iterator<Item = KvCacheSpec> + '_ {
        self.groups.iter().map(|g| g.spec)
    }

    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    pub fn block_pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free_blocks()
    }

    /// Fraction of usable blocks held by requests (0..=1).
    pub fn usage(&self) -> f64 {
        self.pool.usage()
    }

    /// Tokens looked up in the prefix cache by admitted requests.
    pub fn prefix_cache_queries(&self) -> u64 {
        self.prefix_cache_queries
    }

    /// Of those, tokens found cached.
    pub fn prefix_cache_hits(&self) -> u64 {
        self.prefix_cache_hits
    }

    /// The longest cached prefix of a request that holds no blocks yet
    /// which every group can use (a windowed group needs only the blocks
    /// its window reads from the hit's end; see `SingleTypeKvCacheManager::
    /// longest_hit`). Never covers the last token: its logits must be
    /// computed, so at most `num_tokens - 1` tokens (rounded down to whole
    /// blocks) can hit. Takes no reference: pass the result to
    /// `allocate_slots_with_prefix`.
    pub fn get_computed_blocks(&mut self, request: &mut Request) -> ComputedBlocks {
        if !self.enable_caching || request.holds_blocks() {
            return ComputedBlocks::default();
        }
        let max_hit_blocks = request.num_tokens().saturating_sub(1) / self.block_size;
        self.ensure_block_hashes(request, max_hit_blocks);
        let hashes = &request.block_hashes[..max_hit_blocks];
        // Each group shortens the hit to what it can use, until all agree
        // (vLLM's hybrid coordinator); a hit valid for every group is never
        // longer than any group's answer, so the fixed point is the longest.
        let mut num_blocks = max_hit_blocks;
        loop {
            let agreed = self
                .groups
                .iter()
                .fold(num_blocks, |n, g| g.longest_hit(&self.pool, hashes, n));
            if agreed == num_blocks {
                break;
            }
            num_blocks = agreed;
        }
        if num_blocks == 0 {
            return ComputedBlocks::default();
        }
        let block_ids = self
            .groups
            .iter()
            .map(|g| {
                let mut ids = Vec::with_capacity(num_blocks);
                g.hit_blocks(&self.pool, hashes, num_blocks, &mut ids);
                ids
            })
            .collect();
        ComputedBlocks {
            block_ids,
            num_computed_tokens: num_blocks * self.block_size,
        }
    }

    /// Frees what no window can read any more, then grows every group's
    /// table so that `num_computed_tokens + num_new_tokens +
    /// num_lookahead_tokens` tokens fit, then caches the blocks that will be
    /// full once the new tokens are computed. Returns the number of fresh
    /// blocks appended over all groups, or `None` if the pool cannot supply
    /// them (then only the dead window blocks were freed).
    pub fn allocate_slots(
        &mut self,
        request: &mut Request,
        num_new_tokens: usize,
        num_lookahead_tokens: usize,
    ) -> Option<usize> {
        // A running request's later steps are not prefix-cache queries: its
        // tokens were counted once, when it was admitted.
        self.allocate(
            request,
            num_new_tokens,
            num_lookahead_tokens,
            &ComputedBlocks::default(),
        )
    }

    /// `allocate_slots` for a request being admitted with a prefix hit from
    /// `get_computed_blocks` (called just before, with no pool change in
    /// between). `num_new_tokens` counts tokens after the hit. On success the
    /// admission is recorded in the prefix-cache counters: its tokens once
    /// as queries, its hit as hits (vLLM counts at admission too).
    pub fn allocate_slots_with_prefix(
        &mut self,
        request: &mut Request,
        num_new_tokens: usize,
        num_lookahead_tokens: usize,
        computed: &ComputedBlocks,
    ) -> Option<usize> {
        let num_new_blocks =
            self.allocate(request, num_new_tokens, num_lookahead_tokens, computed)?;
        if self.enable_caching {
            self.prefix_cache_queries += request.num_tokens() as u64;
            self.prefix_cache_hits += computed.num_computed_tokens as u64;
        }
        Some(num_new_blocks)
    }

    fn allocate(
        &mut self,
        request: &mut Request,
        num_new_tokens: usize,
        num_lookahead_tokens: usize,
        computed: &ComputedBlocks,
    ) -> Option<usize> {
        let num_hit = computed.num_computed_tokens / self.block_size;
        if num_hit > 0 && (request.holds_blocks() || request.num_computed_tokens != 0) {
            return None; // a hit only applies to a request holding nothing
        }
        let no_hit: &[u32] = &[];
        let hit = |g: usize| computed.block_ids.get(g).map_or(no_hit, Vec::as_slice);
        if (0..self.groups.len()).any(|g| hit(g).len() != num_hit) {
            return None; // not a hit of this manager's groups
        }
        request
            .block_tables
            .resize_with(self.groups.len(), Vec::new);
        // Blocks behind every window go back first: they are what makes
        // room for a windowed sequence's new blocks.
        let mut registered = Vec::new();
        for g in 0..self.groups.len() {
            let group = self.groups[g];
            group.remove_skipped_blocks(
                &mut self.pool,
                &mut request.block_tables[g],
                request.num_computed_tokens,
                &mut registered,
            );
            if g == 0 {
                for &i in &registered {
                    self.log_stored(request, i);
                }
            }
            registered.clear();
        }
        let num_computed = request.num_computed_tokens + computed.num_computed_tokens;
        let num_required =
            (num_computed + num_new_tokens + num_lookahead_tokens).div_ceil(self.block_size);
        let num_new = |table: &[u32]| num_required.saturating_sub(table.len() + num_hit);
        let mut num_needed = 0;
        for (g, table) in request.block_tables.iter().enumerate() {
            // Hit blocks sitting in the free queue stop being free once touched.
            let num_revived = hit(g)
                .iter()
                .filter(|&&id| id != NULL_BLOCK_ID && self.pool.ref_cnt(id) == 0)
                .count();
            num_needed += num_new(table) + num_revived;
        }
        if num_needed > self.pool.num_free_blocks() {
            return None;
        }

        // Every group's hit is taken before any fresh block is popped: a
        // pop would evict a free hit block of a later group.
        for (g, table) in request.block_tables.iter_mut().enumerate() {
            for &id in hit(g) {
                if id != NULL_BLOCK_ID {
                    self.pool.touch(&[id]);
                }
            }
            table.extend_from_slice(hit(g));
        }
        let mut num_new_blocks = 0;
        for table in request.block_tables.iter_mut() {
            let n = num_required.saturating_sub(table.len());
            if n > 0 && !self.pool.get_new_blocks(n, table) {
                return None; // unreachable: free count checked above
            }
            num_new_blocks += n;
        }
        if num_hit > 0 {
            request.num_cached_blocks = num_hit;
        }
        if self.enable_caching {
            // Cache what is full once this step has run, so a request admitted
            // later in the same step (e.g. a parallel-sampling sibling) hits it.
            let num_tokens_to_cache = (num_computed + num_new_tokens).min(request.num_tokens());
            self.cache_full_blocks(request, num_tokens_to_cache / self.block_size);
        }
        Some(num_new_blocks)
    }

    /// Returns a request's blocks to the pool, tail first: the tail of a
    /// sequence is the least likely to be shared, so it is evicted first.
    /// Blocks whose KV was never written (beyond `num_computed_tokens`) lose
    /// their hash so nobody can hit them.
    pub fn free(&mut self, request: &mut Request) {
        let num_written_blocks = request.num_computed_tokens / self.block_size;
        for g in 0..request.block_tables.len() {
            for i in (0..request.block_tables[g].len()).rev() {
                let id = request.block_tables[g][i];
                if self.pool.free_block(id, i < num_written_blocks) && g == 0 {
                    self.log_stored(request, i);
                }
            }
            request.block_tables[g].clear();
        }
        request.num_cached_blocks = 0;
    }

    /// Drops all cached hashes; false (nothing done) while any block is held.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }

    /// Registers every group's blocks `num_cached_blocks..num_full_blocks`.
    fn cache_full_blocks(&mut self, request: &mut Request, num_full_blocks: usize) {
        if num_full_blocks <= request.num_cached_blocks {
            return;
        }
        self.ensure_block_hashes(request, num_full_blocks);
        for g in 0..request.block_tables.len() {
            for i in request.num_cached_blocks..num_full_blocks {
                let id = request.block_tables[g][i];
                if id == NULL_BLOCK_ID {
                    continue; // already behind the window: nothing to share
                }
                let hash = request.block_hashes[i];
                if self.pool.cache_block(id, hash, g as u32) && g == 0 {
                    self.log_stored(request, i);
                }
            }
        }
        request.num_cached_blocks = num_full_blocks;
    }
    /// Announces the request's block `i` as cached (a KV-cache event).
    fn log_stored(&mut self, request: &Request, i: usize) {
        let bs = self.block_size;
        let parent = i.checked_sub(1).map(|p| request.block_hashes[p]);
        let tokens = &request.all_token_ids[i * bs..(i + 1) * bs];
        self.pool
            .log_stored(request.block_hashes[i], parent, tokens);
    }

    /// Starts (or stops) recording `KvCacheEvent`s.
    pub fn set_kv_events(&mut self, enabled: bool) {
        self.pool.set_kv_events(enabled);
    }

    /// The KV-cache events since the last call, oldest first.
    pub fn take_kv_events(&mut self) -> Vec<crate::kv_events::KvCacheEvent> {
        self.pool.take_kv_events()
    }

    /// Extends `request.block_hashes` to cover its first `num_blocks` blocks
    /// (all of which must be full of tokens).
    fn ensure_block_hashes(&mut self, request: &mut Request, num_blocks: usize) {
        let bs = self.block_size;
        while request.block_hashes.len() < num_blocks {
            let i = request.block_hashes.len();
            let parent = i.checked_sub(1).map(|p| request.block_hashes[p]);
            let salt = if i == 0 {
                request.cache_salt.as_deref().map(str::as_bytes)
            } else {
                None
            };
            let tokens = &request.all_token_ids[i * bs..(i + 1) * bs];
            let hash = self.hasher.hash_block(parent, tokens, salt);
            request.block_hashes.push(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::StopConditions;

    const BS: usize = 4;

    fn request(id: u64, prompt: Vec<u32>, salt: Option<&str>) -> Request {
        let stop = StopConditions {
            eos_token_ids: vec![],
            stop_token_ids: vec![],
            max_tokens: 100,
            min_tokens: 0,
            ignore_eos: true,
        };
        Request::new(id, prompt, stop, 0, 0.0, salt.map(str::to_owned))
    }

    /// Admits `r` with its prefix hit and marks the whole prompt computed, as
    /// the scheduler plus one finished step would.
    fn prefill(kv: &mut KvCacheManager, r: &mut Request) -> ComputedBlocks {
        let hit = kv.get_computed_blocks(r);
        let new = r.num_tokens() - hit.num_computed_tokens;
        kv.allocate_slots_with_prefix(r, new, 0, &hit).unwrap();
        r.num_computed_tokens = r.num_tokens();
        hit
    }

    #[test]
    fn full_blocks_are_cached_at_allocation_and_hit_by_the_next_request() {
        let mut kv = KvCacheManager::new(BS, 16, true);
        let mut a = request(1, (0..10).collect(), None);
        assert_eq!(prefill(&mut kv, &mut a).num_computed_tokens, 0);
        assert_eq!(a.block_table().len(), 3);
        assert_eq!(kv.block_pool().num_cached_hashes(), 2, "two full blocks");

        let mut b = request(2, (0..10).collect(), None);
        let hit = prefill(&mut kv, &mut b);
        assert_eq!(hit.block_ids, vec![a.block_table()[..2].to_vec()]);
        assert_eq!(b.block_table()[..2], a.block_table()[..2]);
        assert_ne!(
            b.block_table()[2],
            a.block_table()[2],
            "partial block is private"
        );
        for &id in &a.block_table()[..2] {
            assert_eq!(kv.block_pool().ref_cnt(id), 2);
        }
        assert_eq!((kv.prefix_cache_queries(), kv.prefix_cache_hits()), (20, 8));
    }

    /// A twin block (same hash, filled while the first was cached) is
    /// announced when it takes over the hash, after the first was evicted.
    #[test]
    fn kv_events_follow_a_twin_that_takes_over_its_hash() {
        use crate::kv_events::KvCacheEvent;
        // 4 usable blocks.
        let mut kv = KvCacheManager::new(BS, 5, true);
        kv.set_kv_events(true);
        let mut a = request(1, (0..8).collect(), None);
        prefill(&mut kv, &mut a);
        let stored = kv.take_kv_events();
        assert!(
            matches!(&stored[..], [KvCacheEvent::BlockStored { block_hashes, parent_block_hash: None, token_ids, block_size: BS }]
                if block_hashes[..] == a.block_hashes[..] && token_ids[..] == (0..8).collect::<Vec<u32>>()[..]),
            "{stored:?}"
        );
        // b hits a's first block only (its last token needs logits), so it
        // fills a twin of a's second block: not announced.
        let mut b = request(2, (0..8).collect(), None);
        prefill(&mut kv, &mut b);
        assert_eq!(kv.take_kv_events(), vec![]);
        // a goes; its blocks stay cached, then c's allocation evicts the
        // free one holding the second hash.
        kv.free(&mut a);
        let mut c = request(3, (100..108).collect(), None);
        prefill(&mut kv, &mut c);
        let events = kv.take_kv_events();
        assert_eq!(
            events[0],
            KvCacheEvent::BlockRemoved {
                block_hashes: vec![b.block_hashes[1]]
            },
            "{events:?}"
        );
        // b goes: its twin takes over the hash and is announced, chained to
        // the first block.
        kv.free(&mut b);
        assert_eq!(
            kv.take_kv_events(),
            vec![KvCacheEvent::BlockStored {
                block_hashes: vec![b.block_hashes[1]],
                parent_block_hash: Some(b.block_hashes[0]),
                token_ids: (4..8).collect(),
                block_size: BS,
            }]
        );
        let cached: std::collections::HashSet<_> = kv.block_pool().cached_hashes().collect();
        assert!(cached.contains(&b.block_hashes[1]));
    }

    #[test]
    fn hit_never_covers_the_last_token() {
        let mut kv = KvCacheManager::new(BS, 16, true);
        let mut a = request(1, (0..8).collect(), None);
        prefill(&mut kv, &mut a);
        assert_eq!(kv.block_pool().num_cached_hashes(), 2);
        let mut b = request(2, (0..8).collect(), None);
        // 8 tokens = 2 full cached blocks, but token 7's logits are needed.
        assert_eq!(kv.get_computed_blocks(&mut b).num_computed_tokens, 4);
        let mut one = request(3, vec![0], None);
        assert_eq!(kv.get_computed_blocks(&mut one).num_computed_tokens, 0);
    }

    #[test]
    fn salt_and_different_prefixes_do_not_hit() {
        let mut kv = KvCacheManager::new(BS, 32, true);
        let mut a = request(1, (0..9).collect(), Some("alice"));
        prefill(&mut kv, &mut a);
        for mut other in [
            request(2, (0..9).collect(), Some("bob")),
            request(3, (0..9).collect(), None),
            request(4, [vec![99], (1..9).collect()].concat(), Some("alice")),
        ] {
            assert_eq!(kv.get_computed_blocks(&mut other).num_computed_tokens, 0);
        }
        // A later block only hits behind an identical earlier block.
        let mut c = request(
            5,
            [(0..4).collect::<Vec<_>>(), vec![7; 5]].concat(),
            Some("alice"),
        );
        assert_eq!(kv.get_computed_blocks(&mut c).num_computed_tokens, 4);
    }

    #[test]
    fn free_returns_tail_first_so_it_is_evicted_first() {
        let mut kv = KvCacheManager::new(BS, 5, true);
        let mut a = request(1, (0..12).collect(), None);
        prefill(&mut kv, &mut a);
        let table = a.block_table().to_vec();
        kv.free(&mut a);
        assert!(a.block_table().is_empty());
        let queue: Vec<u32> = kv.block_pool().free_queue().iter().collect();
        // The never-used block 4 comes first, then a's blocks tail first.
        assert_eq!(queue, vec![4, table[2], table[1], table[0]]);
        assert_eq!(kv.usage(), 0.0);
        // Freed blocks keep their hashes: the same prompt hits them again.
        let mut b = request(2, (0..12).collect(), None);
        assert_eq!(
            kv.get_computed_blocks(&mut b).block_ids,
            vec![table[..2].to_vec()]
        );
    }

    #[test]
    fn allocation_failure_changes_nothing_and_counts_revived_hits() {
        let mut kv = KvCacheManager::new(BS, 4, true); // 3 usable blocks
        let mut a = request(1, (0..8).collect(), None);
        prefill(&mut kv, &mut a);
        kv.free(&mut a); // both blocks free but cached
        let mut b = request(2, (0..12).collect(), None);
        let hit = kv.get_computed_blocks(&mut b);
        assert_eq!(hit.block_ids[0].len(), 2);
        // 2 revived + 2 fresh > 3 free.
        assert_eq!(kv.allocate_slots_with_prefix(&mut b, 4, 4, &hit), None);
        assert!(b.block_table().is_empty());
        assert_eq!(kv.num_free_blocks(), 3);
        assert_eq!(kv.allocate_slots_with_prefix(&mut b, 4, 0, &hit), Some(1));
        assert_eq!(kv.num_free_blocks(), 0);
        assert_eq!(kv.prefix_cache_hits(), 8, "failed attempt not counted");
    }

    #[test]
    fn decode_allocates_a_block_only_when_the_last_one_is_full() {
        let mut kv = KvCacheManager::new(BS, 8, true);
        let mut r = request(1, (0..3).collect(), None);
        prefill(&mut kv, &mut r);
        let mut fresh = Vec::new();
        for t in 0..6 {
            r.append_output_token(100 + t);
            fresh.push(kv.allocate_slots(&mut r, 1, 0).unwrap());
            r.num_computed_tokens += 1;
        }
        // Tokens 4 and 8 open blocks 2 and 3.
        assert_eq!(fresh, vec![0, 1, 0, 0, 0, 1]);
        assert_eq!(r.block_table().len(), 3);
        assert_eq!(r.num_cached_blocks, 2);
        // Lookahead reserves extra slots without caching them.
        assert_eq!(kv.allocate_slots(&mut r, 0, 4), Some(1));
        assert_eq!(r.num_cached_blocks, 2);
    }

    #[test]
    fn blocks_cached_for_a_step_that_never_ran_are_not_hit_after_free() {
        let mut kv = KvCacheManager::new(BS, 8, true);
        let mut a = request(1, (0..9).collect(), None);
        let hit = kv.get_computed_blocks(&mut a);
        kv.allocate_slots_with_prefix(&mut a, 9, 0, &hit).unwrap();
        assert_eq!(kv.block_pool().num_cached_hashes(), 2);
        // Preempted before its step ran: num_computed_tokens is still 0.
        kv.free(&mut a);
        assert_eq!(kv.block_pool().num_cached_hashes(), 0);
        let mut b = request(2, (0..9).collect(), None);
        assert_eq!(kv.get_computed_blocks(&mut b).num_computed_tokens, 0);
    }

    #[test]
    fn caching_disabled_never_hits_and_reset_needs_an_idle_pool() {
        let mut kv = KvCacheManager::new(BS, 8, false);
        let mut a = request(1, (0..9).collect(), None);
        prefill(&mut kv, &mut a);
        let mut b = request(2, (0..9).collect(), None);
        assert_eq!(kv.get_computed_blocks(&mut b).num_computed_tokens, 0);
        assert_eq!(kv.prefix_cache_queries(), 0);

        let mut kv = KvCacheManager::new(BS, 8, true);
        let mut a = request(1, (0..9).collect(), None);
        prefill(&mut kv, &mut a);
        assert!(!kv.reset_prefix_cache());
        kv.free(&mut a);
        assert!(kv.reset_prefix_cache());
        let mut b = request(2, (0..9).collect(), None);
        assert_eq!(kv.get_computed_blocks(&mut b).num_computed_tokens, 0);
    }

    /// Gemma-style groups: full attention plus a 5-token window. A hit
    /// takes the full group's whole prefix but only the window's last
    /// blocks; a long decode keeps the window group at a few blocks.
    #[test]
    fn hybrid_groups_hit_and_free_by_their_own_rules() {
        let specs = [
            KvCacheSpec::FullAttention,
            KvCacheSpec::SlidingWindow { window: 5 },
        ];
        let mut kv = KvCacheManager::with_groups(2, 64, true, &specs);
        let mut a = request(1, (0..12).collect(), None);
        prefill(&mut kv, &mut a);
        assert_eq!(a.group_block_table(0).len(), 6);
        assert_eq!(a.group_block_table(1).len(), 6);
        assert_eq!(kv.block_pool().num_used_blocks(), 12);
        kv.free(&mut a);

        let mut b = request(2, (0..12).collect(), None);
        let hit = prefill(&mut kv, &mut b);
        // 10 tokens hit: token 10 sees 6..=10, so window blocks 0..3 are null.
        assert_eq!(hit.num_computed_tokens, 10);
        assert_eq!(&hit.block_ids[1][..3], &[0, 0, 0]);
        assert!(hit.block_ids[1][3..].iter().all(|&id| id != 0));
        assert!(hit.block_ids[0].iter().all(|&id| id != 0));
        // Decode 20 tokens: the window group never holds more than 3 blocks.
        for t in 0..20 {
            b.append_output_token(100 + t);
            kv.allocate_slots(&mut b, 1, 0).unwrap();
            let live = b.group_block_table(1).iter().filter(|&&id| id != 0).count();
            assert!(live <= 3, "{:?}", b.group_block_table(1));
            b.num_computed_tokens += 1;
        }
        assert_eq!(b.group_block_table(0).len(), 16);
        assert!(b.group_block_table(0).iter().all(|&id| id != 0));
        kv.free(&mut b);
        assert_eq!(kv.block_pool().num_used_blocks(), 0);

        // A hit the window group cannot use (its run was evicted) shortens
        // the full group's hit too: both groups agree on one length.
        let mut kv = KvCacheManager::with_groups(2, 64, true, &specs);
        let mut c = request(3, (0..12).collect(), None);
        prefill(&mut kv, &mut c);
        let window_tail = c.group_block_table(1)[4];
        kv.free(&mut c);
        // Evict the window group's block 4 alone.
        kv.pool.touch(&[window_tail]);
        kv.pool.free_block(window_tail, false);
        let mut d = request(4, (0..12).collect(), None);
        let hit = kv.get_computed_blocks(&mut d);
        // The window's latest run of 2 cached blocks now ends at block 4
        // (blocks 2 and 3): 8 tokens.
        assert_eq!(hit.num_computed_tokens, 8);
        assert_eq!(hit.block_ids[0].len(), 4);
        assert_eq!(&hit.block_ids[1][..2], &[0, 0]);
    }
}
