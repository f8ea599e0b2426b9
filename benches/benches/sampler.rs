//! Host sampling of one row at SmolLM2's vocabulary (49,152): greedy, the
//! CDF walk of unseeded requests, and the exponential race of seeded ones
//! (reproducible across preemption), so the race's price is a number.
//!
//! `cargo bench -p pagoda-benches --bench sampler`

use criterion::{criterion_group, criterion_main, Criterion};
use pagoda_engine::sampler::{ProcessorContext, SamplingRow};
use pagoda_engine::SamplingParams;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;
use std::time::Duration;

const VOCAB: usize = 49152;

/// A peaked row with a long tail, as a language model's logits are.
fn logits() -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..VOCAB)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let tail = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0;
            tail + if i % 7000 == 3 { 12.0 } else { 0.0 }
        })
        .collect()
}

fn row(params: &SamplingParams, rng: &mut StdRng) -> SamplingRow {
    let ctx = ProcessorContext {
        params,
        prompt_token_ids: &[],
        output_token_ids: &[],
        stop_ids: &[],
    };
    SamplingRow::new(&ctx, rng)
}

fn sample_one_row(c: &mut Criterion) {
    let raw = logits();
    let mut g = c.benchmark_group("sample_row_49152");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let greedy = SamplingParams::greedy(16);
    let walk = SamplingParams {
        temperature: 1.0,
        ..SamplingParams::default()
    };
    let race = SamplingParams {
        seed: Some(7),
        ..walk.clone()
    };
    for (name, params) in [("greedy", greedy), ("walk", walk), ("race_seeded", race)] {
        let mut rng = StdRng::seed_from_u64(1);
        g.bench_function(name, |b| {
            b.iter(|| black_box(row(&params, &mut rng).sample(black_box(&raw)).token_id))
        });
    }
    g.finish();
}

criterion_group!(benches, sample_one_row);
criterion_main!(benches);
