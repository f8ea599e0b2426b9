//! One scheduler step — `schedule()` + `update_from_output()` — at scale:
//! 1,024 running decode requests and 256 waiting, on a pool of 65,536
//! blocks of 16 tokens, prefix caching on (issue 2, section 4).
//!
//! Steady state: every running request has a few hundred tokens of context
//! (prompts of 200..400 tokens, a shared 64-token system prompt), ignores
//! eos and has a large `max_tokens`, so none finishes inside the bench;
//! `max_num_seqs = 1024` keeps the 256 waiting requests waiting (they are
//! examined and refused every step). Sampled tokens are random. Every 256
//! steps the state is rebuilt outside the timed region, so contexts stay in
//! the 200..650-token range and the pool never fills (no preemption).
//!
//! `step_with_kv_events` is the same step with KV-cache events recorded
//! and drained every step (as a publisher would), against
//! `step_1024_running_256_waiting` without them.
//!
//! `cargo bench -p pagoda-benches --bench scheduler`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pagoda_scheduler::{
    Request, RequestUpdate, Scheduler, SchedulerConfig, SchedulerOutput, SchedulingPolicy,
    StopConditions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NUM_RUNNING: u64 = 1024;
const NUM_WAITING: u64 = 256;
const VOCAB: u32 = 32_000;
const STEPS_PER_EPISODE: usize = 256;

struct Bench {
    scheduler: Scheduler,
    rng: StdRng,
    sampled: Vec<Option<u32>>,
    out: SchedulerOutput,
    updates: Vec<RequestUpdate>,
    steps: usize,
    kv_events: bool,
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        block_size: 16,
        num_blocks: 65_536,
        max_num_seqs: 1024,
        max_num_batched_tokens: 8192,
        max_model_len: 8192,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        policy: SchedulingPolicy::Fcfs,
        ..SchedulerConfig::default()
    }
}

fn request(id: u64, system_prompt: &[u32], rng: &mut StdRng) -> Request {
    let len = rng.random_range(200..400);
    let mut prompt = system_prompt.to_vec();
    prompt.extend((system_prompt.len()..len).map(|_| rng.random_range(0..VOCAB)));
    let stop = StopConditions {
        eos_token_ids: vec![2],
        stop_token_ids: vec![],
        max_tokens: 4096,
        min_tokens: 0,
        ignore_eos: true,
    };
    Request::new(id, prompt, stop, 0, id as f64, None)
}

impl Bench {
    fn new(seed: u64, kv_events: bool) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut scheduler = Scheduler::new(config()).expect("valid config");
        scheduler.set_kv_events(kv_events);
        let system_prompt: Vec<u32> = (0..64).map(|_| rng.random_range(0..VOCAB)).collect();
        for id in 0..NUM_RUNNING {
            let r = request(id, &system_prompt, &mut rng);
            scheduler.add_request(r);
        }
        let mut bench = Self {
            scheduler,
            rng,
            sampled: Vec::new(),
            out: SchedulerOutput::new(),
            updates: Vec::new(),
            steps: 0,
            kv_events,
        };
        // Prefill everything, then add the waiting requests.
        while bench.scheduler.num_waiting() > 0
            || bench
                .scheduler
                .running_requests()
                .any(|r| r.num_computed_tokens() + 1 < r.num_tokens())
        {
            let out = bench.scheduler.schedule();
            bench.sample(&out);
            bench.scheduler.update_from_output(&out, &bench.sampled);
            bench.scheduler.take_kv_events();
        }
        for id in NUM_RUNNING..NUM_RUNNING + NUM_WAITING {
            let r = request(id, &system_prompt, &mut bench.rng);
            bench.scheduler.add_request(r);
        }
        assert_eq!(bench.scheduler.num_running(), NUM_RUNNING as usize);
        bench
    }

    fn sample(&mut self, out: &SchedulerOutput) {
        let rng = &mut self.rng;
        self.sampled.clear();
        self.sampled.extend(
            out.requests()
                .iter()
                .map(|r| r.sample.then(|| rng.random_range(0..VOCAB))),
        );
    }

    fn next_episode_if_due(&mut self) {
        if self.steps == STEPS_PER_EPISODE {
            *self = Self::new(self.rng.random(), self.kv_events);
        }
        self.steps += 1;
    }

    /// Outside the timed region: the step really is the workload described.
    fn check(&self, out: &SchedulerOutput, updates: &[RequestUpdate]) {
        assert_eq!(out.requests().len(), NUM_RUNNING as usize);
        assert_eq!(out.num_batched_tokens(), NUM_RUNNING as usize);
        assert_eq!(updates.len(), NUM_RUNNING as usize);
        assert!(out.preempted().is_empty());
        assert!(updates.iter().all(|u| u.finish_reason.is_none()));
        assert_eq!(self.scheduler.num_waiting(), NUM_WAITING as usize);
    }
}

/// Times `schedule` (fresh output) and/or `update_from_output` per step.
fn timed_steps(bench: &mut Bench, iters: u64, time_schedule: bool, time_update: bool) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        bench.next_episode_if_due();
        let t = Instant::now();
        let out = bench.scheduler.schedule();
        if time_schedule {
            total += t.elapsed();
        }
        bench.sample(&out);
        let t = Instant::now();
        let updates = bench.scheduler.update_from_output(&out, &bench.sampled);
        let events = bench.scheduler.take_kv_events();
        if time_update {
            total += t.elapsed();
        }
        // Outside the timed region: events exist only when enabled (with
        // 1,024 decodes about 64 blocks fill each step).
        assert!(bench.kv_events || events.is_empty());
        bench.check(&out, &updates);
    }
    total
}

fn scheduler_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    let mut bench = Bench::new(0, false);
    group.bench_function("step_1024_running_256_waiting", |b| {
        b.iter_custom(|iters| timed_steps(&mut bench, iters, true, true))
    });
    let mut with_events = Bench::new(0, true);
    group.bench_function("step_with_kv_events", |b| {
        b.iter_custom(|iters| timed_steps(&mut with_events, iters, true, true))
    });
    group.bench_function("schedule_only", |b| {
        b.iter_custom(|iters| timed_steps(&mut bench, iters, true, false))
    });
    group.bench_function("update_only", |b| {
        b.iter_custom(|iters| timed_steps(&mut bench, iters, false, true))
    });
    // The allocation-free variant: `schedule_into` and
    // `update_from_output_into` reuse the previous step's buffers.
    group.bench_function("step_reused_buffers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bench.next_episode_if_due();
                let mut out = std::mem::take(&mut bench.out);
                let mut updates = std::mem::take(&mut bench.updates);
                let t = Instant::now();
                bench.scheduler.schedule_into(&mut out);
                total += t.elapsed();
                bench.sample(&out);
                let t = Instant::now();
                bench
                    .scheduler
                    .update_from_output_into(&out, &bench.sampled, &mut updates);
                total += t.elapsed();
                bench.check(&out, &updates);
                (bench.out, bench.updates) = (out, updates);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, scheduler_step);
criterion_main!(benches);
