//! Property tests: random workloads (arrivals of random lengths with shared
//! prefixes and salts, parallel-sampling groups, aborts, stop-string
//! finishes, eos) on pools small enough to force preemption, with every
//! invariant checked after every step.
//!
//! The model runner is simulated by a shadow KV cache: each scheduled token
//! writes a fingerprint of (salt, token prefix up to it) into its slot, and
//! every scheduled request then checks that all slots of its context hold
//! its own fingerprints. A prefix hit on the wrong tokens or salt, a block
//! reused while still held, or a lost block shows up as a mismatch.
//!
//! Configs also draw KV-cache groups (full attention, sliding windows, and
//! hybrids of both): each group's table is checked on its own, over the
//! positions its window reads, and a freed (null) entry must lie wholly
//! before the window of the step's first token.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use pagoda_scheduler::{
    BlockHash, BlockHasher, FinishReason, KvCacheEvent, KvCacheSpec, Request, RequestId,
    RequestStatus, RequestUpdate, Scheduler, SchedulerConfig, SchedulerOutput, SchedulingPolicy,
    StopConditions, NULL_BLOCK_ID,
};
use proptest::prelude::*;

const EOS: u32 = 0;
const VOCAB: u32 = 6;

/// SplitMix64: the workload's randomness, driven by a proptest seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the test knows about a live request, independently of the scheduler.
#[derive(Debug, Clone)]
struct Expected {
    arrival: u64,
    salt: Option<String>,
    tokens: Vec<u32>,
    num_prompt: usize,
    stop: StopConditions,
}

impl Expected {
    /// Fingerprint of the KV at every position: (salt, tokens[..=p]).
    fn fingerprints(&self, len: usize) -> Vec<u64> {
        let mut h = DefaultHasher::new();
        self.salt.hash(&mut h);
        self.tokens[..len]
            .iter()
            .map(|&t| {
                h.write_u32(t);
                h.finish()
            })
            .collect()
    }
}

struct Harness {
    s: Scheduler,
    cfg: SchedulerConfig,
    rng: Rng,
    live: HashMap<RequestId, Expected>,
    next_id: RequestId,
    next_arrival: u64,
    /// Shadow KV: fingerprint per slot (`block_id * block_size + offset`).
    kv: Vec<Option<u64>>,
    prefixes: Vec<Vec<u32>>,
    steps: u64,
    log: Vec<(Vec<RequestId>, Vec<RequestId>, Vec<RequestUpdate>)>,
    /// The prefix cache as a KV-event consumer (a router) rebuilds it.
    replayed: HashSet<BlockHash>,
}

impl Harness {
    fn new(cfg: SchedulerConfig, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let prefixes = (0..3)
            .map(|_| {
                let len = 1 + rng.below(3 * cfg.block_size as u64) as usize;
                (0..len).map(|_| rng.below(VOCAB as u64) as u32).collect()
            })
            .collect();
        let mut s = Scheduler::new(cfg.clone()).expect("valid config");
        s.set_kv_events(true);
        Self {
            s,
            kv: vec![None; cfg.num_blocks * cfg.block_size],
            cfg,
            rng,
            live: HashMap::new(),
            next_id: 0,
            next_arrival: 0,
            prefixes,
            steps: 0,
            log: Vec::new(),
            replayed: HashSet::new(),
        }
    }

    fn add_random_requests(&mut self) {
        let rng = &mut self.rng;
        let mut prompt: Vec<u32> = if rng.chance(70) {
            self.prefixes[rng.below(3) as usize].clone()
        } else {
            Vec::new()
        };
        let extra = rng.below(self.cfg.max_model_len as u64 + 1) as usize;
        prompt.extend((0..extra).map(|_| rng.below(VOCAB as u64) as u32));
        prompt.truncate(self.cfg.max_model_len);
        if prompt.is_empty() {
            prompt.push(1);
        }
        let salt = match rng.below(4) {
            0 => Some("a".to_string()),
            1 => Some("b".to_string()),
            _ => None,
        };
        let max_tokens = 1 + rng.below(12) as usize;
        let stop = StopConditions {
            eos_token_ids: vec![EOS],
            stop_token_ids: if rng.chance(30) { vec![5] } else { vec![] },
            max_tokens,
            min_tokens: rng.below(max_tokens as u64 + 1) as usize,
            ignore_eos: rng.chance(20),
        };
        let priority = rng.below(3) as i32;
        // Parallel sampling: n children of one prompt.
        let n = if rng.chance(15) { 2 + rng.below(3) } else { 1 };
        for _ in 0..n {
            let id = self.next_id;
            self.next_id += 1;
            let request = Request::new(
                id,
                prompt.clone(),
                stop.clone(),
                priority,
                self.steps as f64,
                salt.clone(),
            );
            self.s.add_request(request);
            self.live.insert(
                id,
                Expected {
                    arrival: self.next_arrival,
                    salt: salt.clone(),
                    tokens: prompt.clone(),
                    num_prompt: prompt.len(),
                    stop: stop.clone(),
                },
            );
            self.next_arrival += 1;
        }
    }

    fn random_live_id(&mut self) -> Option<RequestId> {
        let mut ids: Vec<_> = self.live.keys().copied().collect();
        ids.sort_unstable();
        (!ids.is_empty()).then(|| ids[self.rng.below(ids.len() as u64) as usize])
    }

    fn random_events(&mut self) {
        if self.rng.chance(35) {
            self.add_random_requests();
        }
        if self.rng.chance(6) {
            if let Some(id) = self.random_live_id() {
                assert!(self.s.abort_request(id));
                self.live.remove(&id);
            }
        }
        if self.rng.chance(4) {
            if let Some(id) = self.random_live_id() {
                assert!(self.s.finish_request(id, FinishReason::Stop));
                self.live.remove(&id);
            }
        }
    }

    fn oldest_live(&self) -> Option<RequestId> {
        self.live
            .iter()
            .min_by_key(|(_, e)| e.arrival)
            .map(|(&id, _)| id)
    }

    fn step(&mut self) {
        self.steps += 1;
        let oldest = self.oldest_live();
        let out = self.s.schedule();
        self.check_output(&out, oldest);
        self.check_blocks();
        self.run_model(&out);
        let sampled: Vec<Option<u32>> = out
            .requests()
            .iter()
            .map(|r| r.sample.then(|| self.rng.below(VOCAB as u64) as u32))
            .collect();
        let updates = self.s.update_from_output(&out, &sampled);
        self.check_updates(&out, &sampled, &updates);
        self.check_blocks();
        self.check_kv_events();
        let ids = out.requests().iter().map(|r| r.request_id).collect();
        self.log.push((ids, out.preempted().to_vec(), updates));
    }

    fn check_output(&self, out: &SchedulerOutput, oldest: Option<RequestId>) {
        let cfg = &self.cfg;
        assert!(out.num_batched_tokens() <= cfg.max_num_batched_tokens);
        assert!(out.requests().len() <= cfg.max_num_seqs);
        assert!(self.s.num_running() <= cfg.max_num_seqs);
        let total: usize = out.requests().iter().map(|r| r.num_tokens).sum();
        assert_eq!(total, out.num_batched_tokens());
        for (i, r) in out.requests().iter().enumerate() {
            let req = self.s.request(r.request_id).expect("scheduled is live");
            assert_eq!(req.status(), RequestStatus::Running);
            assert_eq!(r.start_position, req.num_computed_tokens());
            assert!(r.num_tokens >= 1);
            let end = r.start_position + r.num_tokens;
            assert!(end <= req.num_tokens() && end <= cfg.max_model_len);
            assert_eq!(r.sample, end == req.num_tokens());
            assert_eq!(
                out.token_ids(i),
                &req.all_token_ids()[r.start_position..end]
            );
            assert_eq!(out.num_groups(), cfg.kv_cache_specs.len());
            for (g, spec) in cfg.kv_cache_specs.iter().enumerate() {
                let table = out.group_block_table(g, i);
                assert_eq!(table, req.group_block_table(g));
                assert!(table.len() * cfg.block_size >= end);
                // Null entries lie wholly before what the step's first token
                // reads; every block it or a later token reads is present.
                let skipped = first_key_read(*spec, r.start_position);
                for (b, &id) in table.iter().enumerate() {
                    if id == NULL_BLOCK_ID {
                        assert!(
                            (b + 1) * cfg.block_size <= skipped,
                            "group {g} block {b} freed but in the window of {}",
                            r.start_position
                        );
                    }
                }
                let held = table.iter().filter(|&&id| id != NULL_BLOCK_ID).count();
                let bound = spec.max_blocks_per_request(
                    cfg.max_model_len,
                    cfg.max_num_batched_tokens,
                    cfg.block_size,
                );
                assert!(held <= bound, "group {g} holds {held} > {bound} blocks");
            }
            assert_eq!(r.num_prompt_tokens, self.live[&r.request_id].num_prompt);
            if cfg.long_prefill_token_threshold > 0 {
                assert!(r.num_tokens <= cfg.long_prefill_token_threshold);
            }
            assert!(!out.preempted().contains(&r.request_id));
        }
        for id in out.preempted() {
            let req = self.s.request(*id).expect("preempted stays live");
            assert_eq!(req.status(), RequestStatus::Preempted);
            assert_eq!(req.num_computed_tokens(), 0);
            for g in 0..cfg.kv_cache_specs.len() {
                assert!(req.group_block_table(g).is_empty());
            }
        }
        if cfg.policy == SchedulingPolicy::Fcfs {
            // No starvation: the oldest unfinished request runs every step
            // (so it finishes within max_model_len steps of becoming oldest).
            if let Some(oldest) = oldest {
                assert!(
                    out.requests().iter().any(|r| r.request_id == oldest),
                    "oldest request {oldest} not scheduled"
                );
            }
            // Running then waiting is in arrival order.
            let arrivals: Vec<u64> = self
                .s
                .running_requests()
                .chain(self.s.waiting_requests())
                .map(|r| self.live[&r.request_id()].arrival)
                .collect();
            assert!(arrivals.windows(2).all(|w| w[0] < w[1]), "{arrivals:?}");
        }
    }

    /// Ref counts equal the number of block tables holding each block; a
    /// block is free exactly when nothing holds it; a block holds one
    /// group's KV at a time; the null block is never handed out (it only
    /// marks freed window entries).
    fn check_blocks(&self) {
        let pool = self.s.kv_cache_manager().block_pool();
        let mut holders = vec![0u32; pool.num_blocks()];
        let mut group_of = vec![None; pool.num_blocks()];
        let mut num_live = 0;
        for req in self.s.running_requests().chain(self.s.waiting_requests()) {
            num_live += 1;
            let mut all = Vec::new();
            for g in 0..self.cfg.kv_cache_specs.len() {
                let table = req.group_block_table(g);
                if req.status() != RequestStatus::Running {
                    assert!(table.is_empty());
                    assert_eq!(req.num_computed_tokens(), 0);
                }
                for &b in table.iter().filter(|&&b| b != NULL_BLOCK_ID) {
                    holders[b as usize] += 1;
                    all.push(b);
                    let owner = group_of[b as usize].get_or_insert(g);
                    assert_eq!(*owner, g, "block {b} in two groups");
                }
            }
            let num_held = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), num_held, "block twice in a request's tables");
        }
        assert_eq!(num_live, self.live.len());
        assert!(!pool.is_free(0));
        let mut num_free = 0;
        for b in 1..pool.num_blocks() as u32 {
            assert_eq!(pool.ref_cnt(b), holders[b as usize], "block {b}");
            assert_eq!(pool.is_free(b), holders[b as usize] == 0, "block {b}");
            num_free += usize::from(holders[b as usize] == 0);
        }
        assert_eq!(pool.num_free_blocks(), num_free);
        let stats = self.s.stats();
        assert_eq!(stats.num_free_blocks, num_free);
        assert_eq!(stats.num_running + stats.num_waiting, self.live.len());
        assert!(stats.prefix_cache_hits <= stats.prefix_cache_queries);
    }

    /// Replaying the KV-cache events gives exactly the pool's cached
    /// hashes, and each stored chain hashes to what it announces.
    fn check_kv_events(&mut self) {
        let mut hasher = BlockHasher::new();
        for event in self.s.take_kv_events() {
            match event {
                KvCacheEvent::BlockStored {
                    block_hashes,
                    parent_block_hash,
                    token_ids,
                    block_size,
                } => {
                    assert_eq!(block_size, self.cfg.block_size);
                    assert_eq!(token_ids.len(), block_hashes.len() * block_size);
                    let mut parent = parent_block_hash;
                    for (i, (hash, tokens)) in block_hashes
                        .iter()
                        .zip(token_ids.chunks(block_size))
                        .enumerate()
                    {
                        // A sequence's first block also hashes its salt,
                        // which the event does not carry.
                        if i > 0 || parent.is_some() {
                            assert_eq!(hasher.hash_block(parent, tokens, None), *hash);
                        }
                        assert!(self.replayed.insert(*hash), "stored twice");
                        parent = Some(*hash);
                    }
                }
                KvCacheEvent::BlockRemoved { block_hashes } => {
                    for hash in block_hashes {
                        assert!(self.replayed.remove(&hash), "removed unknown");
                    }
                }
                KvCacheEvent::AllBlocksCleared => self.replayed.clear(),
            }
        }
        let pool = self.s.kv_cache_manager().block_pool();
        let cached: HashSet<BlockHash> = pool.cached_hashes().collect();
        assert_eq!(cached, self.replayed, "KV events disagree with the cache");
    }

    /// Writes this step's KV, then checks every scheduled request reads its
    /// own tokens' KV over its whole context.
    /// Each KV-cache group is read only over its window: from what the
    /// step's first token sees to the step's end.
    fn run_model(&mut self, out: &SchedulerOutput) {
        let bs = self.cfg.block_size;
        let slot = |table: &[u32], p: usize| table[p / bs] as usize * bs + p % bs;
        let mut contexts = Vec::new();
        for (i, r) in out.requests().iter().enumerate() {
            let end = r.start_position + r.num_tokens;
            let fps = self.live[&r.request_id].fingerprints(end);
            for g in 0..out.num_groups() {
                let table = out.group_block_table(g, i);
                for (p, &fp) in fps.iter().enumerate().take(end).skip(r.start_position) {
                    self.kv[slot(table, p)] = Some(fp);
                }
            }
            contexts.push((i, fps));
        }
        for (i, fps) in contexts {
            let r = out.requests()[i];
            for (g, spec) in self.cfg.kv_cache_specs.iter().enumerate() {
                let table = out.group_block_table(g, i);
                let first = first_key_read(*spec, r.start_position);
                for (p, &fp) in fps.iter().enumerate().skip(first) {
                    assert_eq!(
                        self.kv[slot(table, p)],
                        Some(fp),
                        "request {} reads wrong KV at position {p} (group {g})",
                        r.request_id
                    );
                }
            }
        }
    }

    fn check_updates(
        &mut self,
        out: &SchedulerOutput,
        sampled: &[Option<u32>],
        updates: &[RequestUpdate],
    ) {
        let with_token: Vec<_> = out
            .requests()
            .iter()
            .zip(sampled)
            .filter_map(|(r, t)| t.map(|t| (r.request_id, t)))
            .collect();
        assert_eq!(updates.len(), with_token.len());
        for (u, &(id, token)) in updates.iter().zip(&with_token) {
            assert_eq!(u.request_id, id);
            assert_eq!(u.new_token_ids, vec![token]);
            let e = self.live.get_mut(&id).expect("live");
            e.tokens.push(token);
            let num_out = e.tokens.len() - e.num_prompt;
            let stop_token = (!e.stop.ignore_eos && e.stop.eos_token_ids.contains(&token))
                || e.stop.stop_token_ids.contains(&token);
            let expected = if num_out >= e.stop.min_tokens && stop_token {
                Some(FinishReason::Stop)
            } else if num_out >= e.stop.max_tokens || e.tokens.len() >= self.cfg.max_model_len {
                Some(FinishReason::Length)
            } else {
                None
            };
            assert_eq!(u.finish_reason, expected, "request {id}");
            if expected.is_some() {
                self.live.remove(&id);
                assert!(self.s.request(id).is_none());
            } else {
                let req = self.s.request(id).expect("unfinished stays live");
                assert_eq!(req.all_token_ids(), &self.live[&id].tokens[..]);
            }
        }
    }

    /// Runs `steps` random steps, then drains with no new events.
    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.random_events();
            self.step();
        }
        let bound = (self.live.len() + 1) * (self.cfg.max_model_len + 1) * 2;
        let mut drained = 0;
        while self.s.has_unfinished_requests() {
            assert!(drained < bound, "not drained in {bound} steps: livelock");
            self.step();
            drained += 1;
        }
        assert!(self.live.is_empty());
        let pool = self.s.kv_cache_manager().block_pool();
        assert_eq!(pool.num_used_blocks(), 0, "leaked blocks");
        assert_eq!(self.s.stats().kv_cache_usage, 0.0);
        assert!(self.s.reset_prefix_cache());
    }
}

/// The first key position a token at `pos` attends to (transformers'
/// sliding-window mask: itself and the `window - 1` before it), written
/// here independently of the scheduler's own rule.
fn first_key_read(spec: KvCacheSpec, pos: usize) -> usize {
    match spec {
        KvCacheSpec::FullAttention => 0,
        KvCacheSpec::SlidingWindow { window } => (pos + 1).saturating_sub(window),
    }
}

/// KV-cache groups: a plain model (most often), one window for every
/// layer (Mistral), or full and windowed groups mixed (Gemma).
fn specs_strategy() -> impl Strategy<Value = Vec<KvCacheSpec>> {
    let window = (1usize..24).prop_map(|window| KvCacheSpec::SlidingWindow { window });
    prop_oneof![
        2 => Just(vec![KvCacheSpec::FullAttention]),
        1 => window.clone().prop_map(|w| vec![w]),
        1 => window.clone().prop_map(|w| vec![KvCacheSpec::FullAttention, w]),
        1 => (window.clone(), window).prop_map(|(a, b)| vec![a, KvCacheSpec::FullAttention, b]),
    ]
}

fn config_strategy() -> impl Strategy<Value = SchedulerConfig> {
    (
        (
            prop::sample::select(vec![1usize, 2, 4, 8]),
            4usize..40,
            0usize..6,
            1usize..7,
            1usize..48,
        ),
        prop::sample::select(vec![0usize, 0, 3, 9]),
        any::<bool>(),
        prop::sample::select(vec![SchedulingPolicy::Fcfs, SchedulingPolicy::Priority]),
        specs_strategy(),
    )
        .prop_map(
            |(
                (block_size, max_model_len, spare, seqs, budget),
                threshold,
                caching,
                policy,
                kv_cache_specs,
            )| {
                let mut cfg = SchedulerConfig {
                    block_size,
                    num_blocks: 0,
                    max_num_seqs: seqs,
                    max_num_batched_tokens: budget,
                    max_model_len,
                    long_prefill_token_threshold: threshold,
                    enable_prefix_caching: caching,
                    policy,
                    kv_cache_specs,
                };
                // Just enough for one request at its largest, plus a few.
                cfg.num_blocks = cfg.max_blocks_per_request() + 1 + spare;
                cfg
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn invariants_hold_after_every_step(cfg in config_strategy(), seed in any::<u64>()) {
        Harness::new(cfg, seed).run(200);
    }

    #[test]
    fn same_workload_same_outputs(cfg in config_strategy(), seed in any::<u64>()) {
        let mut a = Harness::new(cfg.clone(), seed);
        let mut b = Harness::new(cfg, seed);
        a.run(40);
        b.run(40);
        prop_assert_eq!(a.log, b.log);
    }
}

/// Guards against a vacuous property run: the chosen workload really
/// preempts, hits the prefix cache, and shares blocks between requests.
#[test]
fn workload_exercises_preemption_and_prefix_hits() {
    let cfg = SchedulerConfig {
        block_size: 4,
        num_blocks: 12,
        max_num_seqs: 6,
        max_num_batched_tokens: 24,
        max_model_len: 32,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        policy: SchedulingPolicy::Fcfs,
        ..SchedulerConfig::default()
    };
    let mut preemptions = 0;
    let mut hits = 0;
    let mut shared = 0;
    for seed in 0..8 {
        let mut h = Harness::new(cfg.clone(), seed);
        for _ in 0..150 {
            h.random_events();
            h.step();
            let pool = h.s.kv_cache_manager().block_pool();
            shared += (1..pool.num_blocks() as u32)
                .filter(|&b| pool.ref_cnt(b) > 1)
                .count();
        }
        let stats = h.s.stats();
        preemptions += stats.num_preemptions_total;
        hits += stats.prefix_cache_hits;
        h.run(0);
    }
    assert!(preemptions > 0, "no preemption");
    assert!(hits > 0, "no prefix hit");
    assert!(shared > 0, "no shared block");
}

/// The windowed workload is not vacuous either: window blocks are freed
/// while requests run (null entries appear), windowed groups hit the prefix
/// cache, and a long windowed sequence holds far fewer blocks than its
/// length.
#[test]
fn windowed_workload_frees_blocks_and_hits() {
    let cfg = SchedulerConfig {
        block_size: 2,
        num_blocks: 40,
        max_num_seqs: 6,
        max_num_batched_tokens: 8,
        max_model_len: 40,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        policy: SchedulingPolicy::Fcfs,
        kv_cache_specs: vec![
            KvCacheSpec::FullAttention,
            KvCacheSpec::SlidingWindow { window: 5 },
        ],
    };
    let mut nulls = 0;
    let mut hits = 0;
    for seed in 0..8 {
        let mut h = Harness::new(cfg.clone(), seed);
        for _ in 0..150 {
            h.random_events();
            h.step();
            nulls +=
                h.s.running_requests()
                    .map(|r| r.group_block_table(1).iter().filter(|&&b| b == 0).count())
                    .sum::<usize>();
        }
        hits += h.s.stats().prefix_cache_hits;
        h.run(0);
    }
    assert!(nulls > 0, "no window block freed");
    assert!(hits > 0, "no prefix hit");

    // One 40-token sequence alone: the window group ends holding at most
    // ceil((4 + 1) / 2) + 1 blocks, the full group all 20.
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 1,
        ..cfg
    })
    .unwrap();
    let stop = StopConditions {
        eos_token_ids: vec![],
        stop_token_ids: vec![],
        max_tokens: 39,
        min_tokens: 0,
        ignore_eos: true,
    };
    s.add_request(Request::new(0, vec![1], stop, 0, 0.0, None));
    let mut most_window_blocks = 0;
    while s.has_unfinished_requests() {
        let out = s.schedule();
        if let Some(r) = s.running_requests().next() {
            let held = r.group_block_table(1).iter().filter(|&&b| b != 0).count();
            most_window_blocks = most_window_blocks.max(held);
        }
        let sampled: Vec<_> = out
            .requests()
            .iter()
            .map(|r| r.sample.then_some(3))
            .collect();
        s.update_from_output(&out, &sampled);
    }
    assert_eq!(most_window_blocks, 3);
    assert_eq!(s.kv_cache_manager().block_pool().num_used_blocks(), 0);
}

/// Equal prompts with different salts never share blocks, even when
/// scheduled in the same step.
#[test]
fn different_salts_never_share_blocks() {
    let cfg = SchedulerConfig {
        block_size: 2,
        num_blocks: 64,
        max_model_len: 64,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg).unwrap();
    let stop = StopConditions {
        eos_token_ids: vec![],
        stop_token_ids: vec![],
        max_tokens: 4,
        min_tokens: 0,
        ignore_eos: false,
    };
    let salts = [None, Some("x"), Some("y"), Some("x")];
    for (id, salt) in salts.iter().enumerate() {
        let r = Request::new(
            id as u64,
            vec![1; 9],
            stop.clone(),
            0,
            0.0,
            salt.map(Into::into),
        );
        s.add_request(r);
    }
    let out = s.schedule();
    let tables: BTreeMap<usize, &[u32]> = (0..4).map(|i| (i, out.block_table(i))).collect();
    for i in 0..4 {
        for j in 0..i {
            let share = tables[&i].iter().any(|b| tables[&j].contains(b));
            assert_eq!(share, salts[i] == salts[j], "requests {i} and {j}");
        }
    }
}
