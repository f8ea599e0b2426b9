//! The continuous-batching scheduler (vLLM v1's `Scheduler`).
//!
//! There are no prefill and decode phases: each request has
//! `num_computed_tokens` and `num_tokens`, and every step tops requests up
//! within a token budget and a cap on running requests — running requests
//! first (a decode takes one token, an unfinished prefill its next chunk),
//! then waiting ones (prefix hit first, then chunked to the budget). When the
//! pool runs dry for a running request, another running request is
//! preempted by recompute. Waiting requests never cause preemption.

use crate::config::{SchedulerConfig, SchedulingPolicy};
use crate::error::ConfigError;
use crate::kv_cache_manager::KvCacheManager;
use crate::output::{RequestUpdate, ScheduledRequest, SchedulerOutput};
use crate::request::{FinishReason, Request, RequestId, RequestStatus};
use crate::request_queue::{QueueKey, RequestQueue};
use crate::request_table::RequestTable;
use crate::stats::SchedulerStats;

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv_cache_manager: KvCacheManager,
    requests: RequestTable,
    waiting: RequestQueue,
    /// Slots in the order they started running (fcfs preempts the last).
    running: Vec<usize>,
    num_preemptions_total: u64,
    next_arrival_seq: u64,
    /// This step's decisions as (slot, num_new_tokens); reused across steps.
    scheduled: Vec<(usize, usize)>,
    /// Slots finished in `update_from_output`; reused across steps.
    finished: Vec<usize>,
    /// Sizes of the last output, to pre-size the next one.
    last_output_size: (usize, usize, usize),
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            kv_cache_manager: KvCacheManager::with_groups(
                config.block_size,
                config.num_blocks,
                config.enable_prefix_caching,
                &config.kv_cache_specs,
            ),
            requests: RequestTable::default(),
            waiting: RequestQueue::new(config.policy),
            running: Vec::with_capacity(config.max_num_seqs),
            num_preemptions_total: 0,
            next_arrival_seq: 0,
            scheduled: Vec::with_capacity(config.max_num_seqs),
            finished: Vec::new(),
            last_output_size: (0, 0, 0),
            config,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn kv_cache_manager(&self) -> &KvCacheManager {
        &self.kv_cache_manager
    }

    /// Queues a request. The engine validated it once (`ValidRequest`), so
    /// the limits are invariants here, checked only in debug builds.
    pub fn add_request(&mut self, mut request: Request) {
        let prompt_len = request.num_prompt_tokens;
        debug_assert!(prompt_len > 0, "empty prompt reached the scheduler");
        debug_assert!(
            prompt_len <= self.config.max_model_len,
            "prompt of {prompt_len} tokens exceeds max_model_len {}",
            self.config.max_model_len
        );
        debug_assert!(request.stop.max_tokens > 0, "max_tokens = 0");
        debug_assert!(request.stop.min_tokens <= request.stop.max_tokens);
        debug_assert!(
            !self.requests.contains_id(request.request_id),
            "request id {} is already live",
            request.request_id
        );
        request.arrival_seq = self.next_arrival_seq;
        self.next_arrival_seq += 1;
        request.status = RequestStatus::Waiting;
        let key = QueueKey::of(&request);
        let slot = self.requests.insert(request);
        self.waiting.add(key, slot);
    }

    /// Aborts a queued or running request and frees its blocks; false if
    /// the id is unknown (e.g. already finished).
    pub fn abort_request(&mut self, id: RequestId) -> bool {
        self.finish_request(id, FinishReason::Abort)
    }

    /// Ends a request for a reason found outside the scheduler (a stop
    /// string, an abort) and frees its blocks; false if the id is unknown.
    pub fn finish_request(&mut self, id: RequestId, reason: FinishReason) -> bool {
        let Some(slot) = self.requests.slot_of(id) else {
            return false;
        };
        if let Some(pos) = self.running.iter().position(|&s| s == slot) {
            self.running.remove(pos);
        } else {
            self.waiting.remove(slot);
        }
        if let Some(mut request) = self.requests.remove(slot) {
            request.status = RequestStatus::Finished(reason);
            self.kv_cache_manager.free(&mut request);
        }
        true
    }

    pub fn has_unfinished_requests(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// A live (waiting, running or preempted) request. Finished requests are
    /// dropped at once, so this is `None` for them.
    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(self.requests.slot_of(id)?)
    }

    /// Running requests, in the order they started running.
    pub fn running_requests(&self) -> impl Iterator<Item = &Request> + '_ {
        self.running.iter().filter_map(|&s| self.requests.get(s))
    }

    /// Waiting and preempted requests, in admission order.
    pub fn waiting_requests(&self) -> impl Iterator<Item = &Request> + '_ {
        self.waiting.slots().filter_map(|s| self.requests.get(s))
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn stats(&self) -> SchedulerStats {
        let kv = &self.kv_cache_manager;
        SchedulerStats {
            num_running: self.running.len(),
            num_waiting: self.waiting.len(),
            num_preemptions_total: self.num_preemptions_total,
            kv_cache_usage: kv.usage(),
            prefix_cache_queries: kv.prefix_cache_queries(),
            prefix_cache_hits: kv.prefix_cache_hits(),
            num_free_blocks: kv.num_free_blocks(),
        }
    }

    /// Drops the prefix cache; false while any request holds blocks.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.kv_cache_manager.reset_prefix_cache()
    }

    /// Starts (or stops) recording KV-cache events (for routers that follow
    /// which prefixes this replica holds).
    pub fn set_kv_events(&mut self, enabled: bool) {
        self.kv_cache_manager.set_kv_events(enabled);
    }

    /// The KV-cache events since the last call, oldest first; empty unless
    /// `set_kv_events(true)`.
    pub fn take_kv_events(&mut self) -> Vec<crate::KvCacheEvent> {
        self.kv_cache_manager.take_kv_events()
    }

    /// Decides the next step. See `schedule_into` to reuse an output's buffers.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let (r, t, b) = self.last_output_size;
        let mut out = SchedulerOutput::with_capacity(r, t, b);
        self.schedule_into(&mut out);
        out
    }

    /// Decides the next step into `out` (cleared first).
    pub fn schedule_into(&mut self, out: &mut SchedulerOutput) {
        out.clear();
        out.num_groups = self.kv_cache_manager.num_groups();
        self.scheduled.clear();
        let mut budget = self.config.max_num_batched_tokens;

        // Running requests first.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let slot = self.running[i];
            let Some(request) = self.requests.get(slot) else {
                self.running.remove(i); // unreachable: running slots are live
                continue;
            };
            let remaining = request.num_tokens() - request.num_computed_tokens;
            let num_new = cap_chunk(remaining, budget, self.config.long_prefill_token_threshold);
            if num_new == 0 {
                i += 1;
                continue;
            }
            let mut can_schedule = true;
            while !self.try_allocate(slot, num_new) {
                let victim_idx = self.pick_victim();
                let victim = self.running.remove(victim_idx);
                if let Some(pos) = self.scheduled.iter().position(|&(s, _)| s == victim) {
                    budget += self.scheduled.remove(pos).1;
                }
                self.preempt(victim, out);
                if victim == slot {
                    can_schedule = false;
                    break;
                }
                if victim_idx < i {
                    i -= 1;
                }
            }
            if !can_schedule {
                break;
            }
            self.scheduled.push((slot, num_new));
            budget -= num_new;
            i += 1;
        }

        // Then waiting ones, unless this step already had to preempt.
        if out.preempted.is_empty() {
            while budget > 0 && self.running.len() < self.config.max_num_seqs {
                let Some(slot) = self.waiting.peek() else {
                    break;
                };
                if !self.try_admit(slot, &mut budget) {
                    break; // no blocks: later arrivals wait too (fcfs)
                }
            }
        }

        for &(slot, num_new) in &self.scheduled {
            let Some(request) = self.requests.get(slot) else {
                continue;
            };
            let start = request.num_computed_tokens;
            let end = start + num_new;
            let scheduled = ScheduledRequest {
                request_id: request.request_id,
                start_position: start,
                num_tokens: num_new,
                sample: end >= request.num_tokens(),
                num_prompt_tokens: request.num_prompt_tokens,
            };
            out.push(
                slot,
                scheduled,
                &request.all_token_ids[start..end],
                &request.block_tables,
            );
        }
        self.last_output_size = (
            out.requests.len(),
            out.token_ids.len(),
            out.block_tables.len(),
        );
    }

    /// Applies one step's results: advances `num_computed_tokens`, appends
    /// sampled tokens (`sampled[i]` belongs to `output.requests()[i]`),
    /// applies stop conditions and frees finished requests. A request that
    /// was due a token but got `None` is finished as `Abort` rather than left
    /// stuck. Entries that no longer match (aborted since `schedule`) are
    /// skipped.
    pub fn update_from_output(
        &mut self,
        output: &SchedulerOutput,
        sampled: &[Option<u32>],
    ) -> Vec<RequestUpdate> {
        let mut updates = Vec::with_capacity(output.requests.len());
        self.update_from_output_into(output, sampled, &mut updates);
        updates
    }

    /// `update_from_output` into a reused vector: its entries (and their
    /// `new_token_ids` buffers) are overwritten, so a steady decode loop
    /// allocates nothing.
    pub fn update_from_output_into(
        &mut self,
        output: &SchedulerOutput,
        sampled: &[Option<u32>],
        updates: &mut Vec<RequestUpdate>,
    ) {
        let max_model_len = self.config.max_model_len;
        let mut num_updates = 0;
        self.finished.clear();
        for (i, (scheduled, &slot)) in output.requests.iter().zip(&output.slots).enumerate() {
            let Some(request) = self.requests.get_mut(slot) else {
                continue;
            };
            if request.request_id != scheduled.request_id
                || request.status != RequestStatus::Running
                || request.num_computed_tokens != scheduled.start_position
            {
                continue;
            }
            request.num_computed_tokens += scheduled.num_tokens;
            if !scheduled.sample {
                continue;
            }
            let token = sampled.get(i).copied().flatten();
            let finish_reason = match token {
                Some(token) => {
                    request.append_output_token(token);
                    request.check_stop(max_model_len)
                }
                None => Some(FinishReason::Abort),
            };
            if let Some(reason) = finish_reason {
                request.status = RequestStatus::Finished(reason);
                self.finished.push(slot);
            }
            if num_updates == updates.len() {
                updates.push(RequestUpdate {
                    request_id: 0,
                    new_token_ids: Vec::with_capacity(1),
                    finish_reason: None,
                    num_prompt_tokens: 0,
                    num_cached_tokens: 0,
                });
            }
            let update = &mut updates[num_updates];
            num_updates += 1;
            update.request_id = request.request_id;
            update.new_token_ids.clear();
            update.new_token_ids.extend(token);
            update.finish_reason = finish_reason;
            update.num_prompt_tokens = request.num_prompt_tokens;
            update.num_cached_tokens = request.num_cached_tokens();
        }
        updates.truncate(num_updates);
        if !self.finished.is_empty() {
            let requests = &self.requests;
            self.running
                .retain(|&s| requests.get(s).is_some_and(|r| !r.is_finished()));
            for &slot in &self.finished {
                if let Some(mut request) = self.requests.remove(slot) {
                    self.kv_cache_manager.free(&mut request);
                }
            }
        }
    }

    fn try_allocate(&mut self, slot: usize, num_new: usize) -> bool {
        match self.requests.get_mut(slot) {
            Some(request) => self
                .kv_cache_manager
                .allocate_slots(request, num_new, 0)
                .is_some(),
            None => false,
        }
    }

    /// Admits the waiting request in `slot` with its prefix hit, if blocks
    /// allow; false leaves it waiting.
    fn try_admit(&mut self, slot: usize, budget: &mut usize) -> bool {
        let Some(request) = self.requests.get_mut(slot) else {
            self.waiting.pop_front(); // unreachable: waiting slots are live
            return true;
        };
        let computed = self.kv_cache_manager.get_computed_blocks(request);
        let num_computed = computed.num_computed_tokens;
        let remaining = request.num_tokens() - num_computed;
        let num_new = cap_chunk(remaining, *budget, self.config.long_prefill_token_threshold);
        if self
            .kv_cache_manager
            .allocate_slots_with_prefix(request, num_new, 0, &computed)
            .is_none()
        {
            return false;
        }
        request.status = RequestStatus::Running;
        request.num_computed_tokens = num_computed;
        request.num_cached_tokens.get_or_insert(num_computed);
        self.waiting.pop_front();
        self.running.push(slot);
        self.scheduled.push((slot, num_new));
        *budget -= num_new;
        true
    }

    /// Index in `running` of the request to preempt.
    fn pick_victim(&self) -> usize {
        let last = self.running.len().saturating_sub(1);
        match self.config.policy {
            SchedulingPolicy::Fcfs => last,
            SchedulingPolicy::Priority => {
                let key = |i: usize| self.requests.get(self.running[i]).map(QueueKey::of);
                let mut worst = last;
                for i in 0..self.running.len() {
                    if let (Some(k), Some(w)) = (key(i), key(worst)) {
                        if k.cmp(&w).is_gt() {
                            worst = i;
                        }
                    }
                }
                worst
            }
        }
    }

    /// Preemption by recompute: drop the KV, keep the tokens, requeue first.
    fn preempt(&mut self, slot: usize, out: &mut SchedulerOutput) {
        let Some(request) = self.requests.get_mut(slot) else {
            return;
        };
        self.kv_cache_manager.free(request);
        request.status = RequestStatus::Preempted;
        request.num_computed_tokens = 0;
        request.num_preemptions += 1;
        self.num_preemptions_total += 1;
        out.preempted.push(request.request_id);
        self.waiting.prepend(QueueKey::of(request), slot);
    }
}

/// A chunk of at most `remaining` tokens, within the budget and the
/// long-prefill cap (0 = no cap).
fn cap_chunk(remaining: usize, budget: usize, long_prefill_token_threshold: usize) -> usize {
    let capped = match long_prefill_token_threshold {
        0 => remaining,
        threshold => remaining.min(threshold),
    };
    capped.min(budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::StopConditions;

    const EOS: u32 = 2;

    fn config(num_blocks: usize, max_num_seqs: usize, budget: usize) -> SchedulerConfig {
        SchedulerConfig {
            block_size: 4,
            num_blocks,
            max_num_seqs,
            max_num_batched_tokens: budget,
            // The pool must hold one max_model_len sequence.
            max_model_len: 64.min((num_blocks.max(1) - 1) * 4),
            long_prefill_token_threshold: 0,
            enable_prefix_caching: true,
            policy: SchedulingPolicy::Fcfs,
            ..SchedulerConfig::default()
        }
    }

    fn stop(max_tokens: usize) -> StopConditions {
        StopConditions {
            eos_token_ids: vec![EOS],
            stop_token_ids: vec![],
            max_tokens,
            min_tokens: 0,
            ignore_eos: false,
        }
    }

    fn req(id: RequestId, prompt_len: usize, max_tokens: usize) -> Request {
        let prompt = (0..prompt_len as u32).map(|t| 10 + t).collect();
        Request::new(id, prompt, stop(max_tokens), 0, id as f64, None)
    }

    /// One engine step sampling `token` for every request that needs one.
    fn step(s: &mut Scheduler, token: u32) -> (SchedulerOutput, Vec<RequestUpdate>) {
        let out = s.schedule();
        let sampled: Vec<_> = out
            .requests()
            .iter()
            .map(|r| r.sample.then_some(token))
            .collect();
        let updates = s.update_from_output(&out, &sampled);
        (out, updates)
    }

    fn ids(out: &SchedulerOutput) -> Vec<RequestId> {
        out.requests().iter().map(|r| r.request_id).collect()
    }

    #[test]
    fn a_prompt_of_exactly_max_model_len_is_queued() {
        let mut s = Scheduler::new(config(32, 4, 64)).unwrap();
        s.add_request(req(1, 64, 4));
        assert!(s.has_unfinished_requests());
        assert_eq!(
            Scheduler::new(config(1, 4, 64)).err(),
            Some(ConfigError::TooFewBlocks { num_blocks: 1 })
        );
    }

    /// The engine validates requests once; reaching the scheduler with a
    /// broken one is a bug, caught in debug builds.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "exceeds max_model_len")]
    fn an_overlong_prompt_is_a_bug() {
        let mut s = Scheduler::new(config(32, 4, 64)).unwrap();
        s.add_request(req(1, 65, 4));
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "already live")]
    fn a_duplicate_id_is_a_bug() {
        let mut s = Scheduler::new(config(32, 4, 64)).unwrap();
        s.add_request(req(1, 4, 4));
        s.add_request(req(1, 4, 4));
    }

    #[test]
    fn prefill_then_decode_until_max_tokens() {
        let mut s = Scheduler::new(config(32, 4, 64)).unwrap();
        s.add_request(req(7, 6, 3));
        let (out, updates) = step(&mut s, 50);
        let r = out.requests()[0];
        assert_eq!((r.start_position, r.num_tokens, r.sample), (0, 6, true));
        assert_eq!(out.token_ids(0), &[10, 11, 12, 13, 14, 15]);
        assert_eq!(out.block_table(0).len(), 2);
        assert_eq!(updates[0].new_token_ids, vec![50]);
        assert_eq!(updates[0].finish_reason, None);
        let (out, _) = step(&mut s, 51);
        assert_eq!(out.token_ids(0), &[50]);
        assert_eq!(out.requests()[0].start_position, 6);
        let (_, updates) = step(&mut s, 52);
        assert_eq!(updates[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(updates[0].num_prompt_tokens, 6);
        assert!(!s.has_unfinished_requests());
        assert!(s.request(7).is_none());
        assert_eq!(s.stats().kv_cache_usage, 0.0);
        assert!(s.schedule().is_empty());
    }

    #[test]
    fn eos_finishes_with_stop_and_frees_blocks() {
        let mut s = Scheduler::new(config(32, 4, 64)).unwrap();
        s.add_request(req(1, 5, 10));
        step(&mut s, 60);
        let (_, updates) = step(&mut s, EOS);
        assert_eq!(updates[0].new_token_ids, vec![EOS]);
        assert_eq!(updates[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(s.kv_cache_manager().block_pool().num_used_blocks(), 0);
    }

    #[test]
    fn long_prompt_is_chunked_to_the_budget_and_samples_once_complete() {
        let mut cfg = config(64, 4, 32);
        cfg.long_prefill_token_threshold = 12;
        let mut s = Scheduler::new(cfg).unwrap();
        s.add_request(req(1, 30, 4));
        s.add_request(req(2, 3, 4));
        let mut chunks = Vec::new();
        loop {
            let (out, _) = step(&mut s, 99);
            let r = out.requests()[0];
            assert_eq!(r.request_id, 1);
            assert!(out.num_batched_tokens() <= 32);
            chunks.push((r.start_position, r.num_tokens, r.sample));
            if r.sample {
                break;
            }
        }
        assert_eq!(chunks, vec![(0, 12, false), (12, 12, false), (24, 6, true)]);
        assert_eq!(s.request(1).unwrap().output_token_ids(), &[99]);
    }

    #[test]
    fn prefix_cache_counts_a_request_once_at_admission() {
        // Chunked prefill then decodes: 11 prompt tokens in 4-token chunks,
        // 5 output tokens. Only the admission is a prefix-cache query.
        let mut cfg = config(64, 4, 4);
        cfg.long_prefill_token_threshold = 4;
        let mut s = Scheduler::new(cfg).unwrap();
        s.add_request(req(1, 11, 5));
        while s.has_unfinished_requests() {
            step(&mut s, 99);
        }
        assert_eq!(s.stats().prefix_cache_queries, 11);
        assert_eq!(s.stats().prefix_cache_hits, 0);
        // The same prompt again hits its two full blocks, counted once too.
        s.add_request(req(2, 11, 5));
        while s.has_unfinished_requests() {
            step(&mut s, 99);
        }
        assert_eq!(s.stats().prefix_cache_queries, 22);
        assert_eq!(s.stats().prefix_cache_hits, 8);
    }

    #[test]
    fn budget_and_max_num_seqs_are_respected() {
        let mut s = Scheduler::new(config(64, 2, 10)).unwrap();
        for id in 0..4 {
            s.add_request(req(id, 4, 5));
        }
        let (out, _) = step(&mut s, 99);
        assert_eq!(ids(&out), vec![0, 1]);
        let (out, _) = step(&mut s, 99);
        assert_eq!(ids(&out), vec![0, 1], "cap holds while both run");
        assert_eq!(out.num_batched_tokens(), 2);
        assert_eq!(s.stats().num_waiting, 2);

        // Budget 5 with three 4-token prompts: the second gets a 1-token chunk.
        let mut s = Scheduler::new(config(64, 8, 5)).unwrap();
        for id in 0..3 {
            s.add_request(req(id, 4, 5));
        }
        let out = s.schedule();
        let got: Vec<_> = out
            .requests()
            .iter()
            .map(|r| (r.request_id, r.num_tokens))
            .collect();
        assert_eq!(got, vec![(0, 4), (1, 1)]);
    }

    #[test]
    fn fcfs_preempts_the_last_running_and_recomputes_it() {
        // 4 usable blocks of 4 tokens; two different 8-token prompts take 2
        // blocks each.
        let mut s = Scheduler::new(config(5, 4, 64)).unwrap();
        s.add_request(req(1, 8, 20));
        let other_prompt = (200..208).collect();
        s.add_request(Request::new(2, other_prompt, stop(20), 0, 1.0, None));
        step(&mut s, 90);
        let (out, _) = step(&mut s, 91);
        // Request 1 needs a third block: request 2 is preempted for it.
        assert_eq!(ids(&out), vec![1]);
        assert_eq!(out.preempted(), &[2]);
        let victim = s.request(2).unwrap();
        assert_eq!(victim.status(), RequestStatus::Preempted);
        assert_eq!(victim.num_computed_tokens(), 0);
        assert_eq!(victim.output_token_ids(), &[90], "output kept");
        assert_eq!(victim.num_preemptions(), 1);
        assert_eq!(s.stats().num_preemptions_total, 1);
        assert_eq!(s.waiting_requests().next().unwrap().request_id(), 2);

        // Once request 1 is gone, request 2 recomputes prompt + output and
        // samples only after the whole sequence is back in the cache. Its
        // tail block was freed first and so reused first; its first block
        // survived in the prefix cache and is hit.
        s.abort_request(1);
        let (out, updates) = step(&mut s, 92);
        let r = out.requests()[0];
        assert_eq!(r.request_id, 2);
        assert_eq!((r.start_position, r.num_tokens), (4, 5));
        assert!(r.sample);
        assert_eq!(updates[0].new_token_ids, vec![92]);
        assert_eq!(s.request(2).unwrap().output_token_ids(), &[90, 92]);
    }

    #[test]
    fn priority_policy_preempts_lowest_priority_then_latest_arrival() {
        let mut cfg = config(7, 4, 64); // 6 usable blocks
        cfg.policy = SchedulingPolicy::Priority;
        let mk = |id, len, priority, arrival| {
            let prompt = (0..len).map(|t| t + 100 * id as u32).collect();
            Request::new(id, prompt, stop(20), priority, arrival, None)
        };
        let mut s = Scheduler::new(cfg.clone()).unwrap();
        s.add_request(mk(1, 8, 5, 0.0));
        s.add_request(mk(2, 8, 9, 1.0));
        s.add_request(mk(3, 8, 0, 2.0));
        let (out, _) = step(&mut s, 5);
        assert_eq!(ids(&out), vec![3, 1, 2], "admitted by priority");
        // Each now needs a third block and none is free: priority 9 goes.
        let (out, _) = step(&mut s, 5);
        assert_eq!(out.preempted(), &[2]);
        assert_eq!(ids(&out), vec![3, 1]);

        // Equal priorities: the later arrival is the victim.
        let mut s = Scheduler::new(cfg.clone()).unwrap();
        s.add_request(mk(1, 12, 1, 3.0));
        s.add_request(mk(2, 12, 1, 4.0));
        step(&mut s, 5);
        let (out, _) = step(&mut s, 5);
        assert_eq!(out.preempted(), &[2]);

        // The victim may already be scheduled in this step: it is taken back
        // out of the batch and its tokens return to the budget.
        cfg.num_blocks = 5;
        cfg.max_model_len = 16;
        let mut s = Scheduler::new(cfg).unwrap();
        s.add_request(mk(1, 6, 9, 0.0));
        step(&mut s, 5);
        s.add_request(mk(2, 8, 5, 1.0));
        let (out, _) = step(&mut s, 5);
        assert_eq!(ids(&out), vec![1, 2]);
        // Request 1 decodes into its own block; request 2 needs a new one.
        let (out, _) = step(&mut s, 5);
        assert_eq!(out.preempted(), &[1]);
        assert_eq!(ids(&out), vec![2]);
        assert_eq!(out.num_batched_tokens(), 1);
        let waiting: Vec<_> = s.waiting_requests().map(|r| r.request_id()).collect();
        assert_eq!(waiting, vec![1]);
    }

    #[test]
    fn waiting_requests_never_preempt_and_block_later_arrivals() {
        let mut s = Scheduler::new(config(5, 4, 64)).unwrap(); // 4 usable blocks
        s.add_request(req(1, 12, 20)); // 3 blocks + room to decode
        step(&mut s, 90);
        s.add_request(req(2, 8, 20)); // needs 2 blocks: only 1 free
        s.add_request(req(3, 2, 20)); // would fit, but waits behind 2
        let (out, _) = step(&mut s, 91);
        assert_eq!(ids(&out), vec![1]);
        assert!(out.preempted().is_empty());
        assert_eq!(s.stats().num_waiting, 2);
        assert_eq!(s.stats().num_preemptions_total, 0);
    }

    #[test]
    fn parallel_sampling_children_share_the_prompt_blocks() {
        let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
        let n = 4;
        let prompt: Vec<u32> = (0..14).collect(); // 3 full blocks + 2 tokens
        for id in 0..n {
            let r = Request::new(id, prompt.clone(), stop(8), 0, 0.0, Some("s".into()));
            s.add_request(r);
        }
        let out = s.schedule();
        assert_eq!(out.requests().len(), n as usize);
        let shared = &out.block_table(0)[..3];
        let pool = s.kv_cache_manager().block_pool();
        for i in 0..n as usize {
            assert_eq!(&out.block_table(i)[..3], shared);
            assert_eq!(out.block_table(i).len(), 4);
        }
        for &b in shared {
            assert_eq!(pool.ref_cnt(b), n as u32);
        }
        // The prompt's full blocks are held once: 3 shared + one tail each.
        assert_eq!(pool.num_used_blocks(), 3 + n as usize);
        // Children after the first computed only the 2 uncached tokens.
        let r = out.requests()[1];
        assert_eq!((r.start_position, r.num_tokens), (12, 2));
        let sampled = vec![Some(5); n as usize];
        let updates = s.update_from_output(&out, &sampled);
        assert_eq!(updates[1].num_cached_tokens, 12);
        assert_eq!(updates[0].num_cached_tokens, 0);
        let stats = s.stats();
        assert_eq!(stats.prefix_cache_queries, 14 * n);
        assert_eq!(stats.prefix_cache_hits, 12 * (n - 1));
    }

    #[test]
    fn finished_prompt_is_hit_by_a_later_request_with_the_same_salt_only() {
        let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
        let prompt: Vec<u32> = (0..10).collect();
        let mk = |id, salt: Option<&str>| {
            Request::new(id, prompt.clone(), stop(1), 0, 0.0, salt.map(Into::into))
        };
        s.add_request(mk(1, Some("a")));
        step(&mut s, 3);
        assert!(!s.has_unfinished_requests());
        s.add_request(mk(2, Some("b")));
        s.add_request(mk(3, Some("a")));
        let out = s.schedule();
        let got: Vec<_> = out.requests().iter().map(|r| r.start_position).collect();
        assert_eq!(got, vec![0, 8]);
    }

    #[test]
    fn abort_and_finish_free_blocks_and_skip_stale_output() {
        let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
        s.add_request(req(1, 9, 10));
        s.add_request(req(2, 9, 10));
        s.add_request(req(3, 9, 10));
        let out = s.schedule();
        // Aborted between schedule and update: its entry is skipped.
        assert!(s.abort_request(2));
        assert!(!s.abort_request(2));
        assert!(!s.abort_request(77));
        let updates = s.update_from_output(&out, &[Some(1), Some(1), Some(1)]);
        let got: Vec<_> = updates.iter().map(|u| u.request_id).collect();
        assert_eq!(got, vec![1, 3]);
        assert!(s.finish_request(3, FinishReason::Stop));
        assert!(s.abort_request(1));
        assert!(!s.has_unfinished_requests());
        assert_eq!(s.kv_cache_manager().block_pool().num_used_blocks(), 0);
        // Applying the same output twice changes nothing.
        assert!(s.update_from_output(&out, &[Some(1); 3]).is_empty());
    }

    #[test]
    fn reused_buffers_give_the_same_results() {
        let mut a = Scheduler::new(config(16, 4, 12)).unwrap();
        let mut b = Scheduler::new(config(16, 4, 12)).unwrap();
        for id in 0..6 {
            a.add_request(req(id, 3 + id as usize * 3, 5));
            b.add_request(req(id, 3 + id as usize * 3, 5));
        }
        let (mut out, mut updates) = (SchedulerOutput::new(), Vec::new());
        let mut t = 0;
        while a.has_unfinished_requests() {
            t += 1;
            let fresh = a.schedule();
            b.schedule_into(&mut out);
            assert_eq!(fresh.requests(), out.requests());
            assert_eq!(fresh.all_token_ids(), out.all_token_ids());
            for i in 0..out.requests().len() {
                assert_eq!(fresh.block_table(i), out.block_table(i));
            }
            let sampled: Vec<_> = out
                .requests()
                .iter()
                .map(|r| r.sample.then_some(t % 4 + 1))
                .collect();
            let expected = a.update_from_output(&fresh, &sampled);
            b.update_from_output_into(&out, &sampled, &mut updates);
            assert_eq!(expected, updates);
            assert!(t < 100);
        }
        assert!(!b.has_unfinished_requests());
    }

    #[test]
    fn missing_sampled_token_aborts_instead_of_stalling() {
        let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
        s.add_request(req(1, 5, 10));
        let out = s.schedule();
        let updates = s.update_from_output(&out, &[None]);
        assert_eq!(updates[0].finish_reason, Some(FinishReason::Abort));
        assert!(updates[0].new_token_ids.is_empty());
        assert!(!s.has_unfinished_requests());
    }

    #[test]
    fn reset_prefix_cache_only_when_idle() {
        let mut s = Scheduler::new(config(64, 8, 256)).unwrap();
        s.add_request(req(1, 9, 2));
        step(&mut s, 3);
        assert!(!s.reset_prefix_cache(), "request 1 holds blocks");
        step(&mut s, 3);
        assert!(s.reset_prefix_cache());
        s.add_request(req(2, 9, 2));
        assert_eq!(s.schedule().requests()[0].start_position, 0);
    }

    #[test]
    fn same_calls_give_the_same_outputs() {
        let run = || {
            let mut s = Scheduler::new(config(12, 3, 16)).unwrap();
            let mut log = Vec::new();
            for id in 0..12u64 {
                s.add_request(req(id, 3 + (id as usize * 7) % 13, 6));
            }
            let mut out = SchedulerOutput::new();
            for t in 0..200u32 {
                s.schedule_into(&mut out);
                let sampled: Vec<_> = out
                    .requests()
                    .iter()
                    .map(|r| r.sample.then_some(t % 5 + 3))
                    .collect();
                let updates = s.update_from_output(&out, &sampled);
                log.push((
                    ids(&out),
                    out.preempted().to_vec(),
                    out.all_token_ids().to_vec(),
                    updates,
                ));
            }
            assert!(!s.has_unfinished_requests());
            log
        };
        assert_eq!(run(), run());
    }
}
