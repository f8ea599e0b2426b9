//! The decode-graph path without a GPU: decode steps padded to fixed sizes
//! (what CUDA graph replay runs) give the logits of the unpadded steps, on
//! the CPU kernels, for requests finishing at different times (5, 4, 3, 2
//! and 1 running: padded to 8, 4, 4, 2 and 1); and the backend's sampler
//! picks the tokens the host picks.

use pagoda_engine::backend::cpu::CpuBackend;
use pagoda_engine::model::{
    DecoderModel, DecoderWeights, KvCache, KvCacheLayout, ModelDims, Workspace,
};
use pagoda_engine::model_runner::{ModelRunner, Runner};
use pagoda_engine::runner_io::{HostLogits, LogitsNeed};
use pagoda_engine::sampler::{argmax, SamplingRow};
use pagoda_engine::weights::{open_model, LoadFormat};
use pagoda_scheduler::{Request, Scheduler, SchedulerConfig, SchedulingPolicy, StopConditions};
use std::path::Path;

const BLOCK: usize = 16;
const MAX_LEN: usize = 96;

fn runner(model: &str) -> ModelRunner<CpuBackend> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models")
        .join(model);
    let source = open_model(&path, LoadFormat::Auto).unwrap();
    let dims = ModelDims::from_config(&source.config);
    let backend = CpuBackend::new();
    let weights = DecoderWeights::load(
        &backend,
        &source.config,
        source.weights.as_ref(),
        MAX_LEN,
        |_, _| {},
    )
    .unwrap();
    let model = DecoderModel { dims, weights };
    let ws = Workspace::new(&backend, &dims, 256, 8).unwrap();
    let layout = KvCacheLayout::new(&source.config, MAX_LEN);
    let kv = KvCache::new(&backend, &dims, &layout, 64, BLOCK).unwrap();
    ModelRunner::new(backend, model, ws, kv, 8, MAX_LEN).unwrap()
}

fn scheduler() -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        block_size: BLOCK,
        num_blocks: 64,
        max_num_seqs: 8,
        max_num_batched_tokens: 256,
        max_model_len: MAX_LEN,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        policy: SchedulingPolicy::Fcfs,
        ..SchedulerConfig::default()
    })
    .unwrap();
    // Prompts of 7..=27 tokens; request i stops after 3 + 4 * i tokens.
    for i in 0..5u64 {
        let prompt: Vec<u32> = (0..7 + 5 * i as u32).map(|t| (t * 37 + 11) % 97).collect();
        let stop = StopConditions {
            eos_token_ids: vec![],
            stop_token_ids: vec![],
            max_tokens: 3 + 4 * i as usize,
            min_tokens: 0,
            ignore_eos: true,
        };
        s.add_request(Request::new(i, prompt, stop, 0, 0.0, None));
    }
    s
}

fn assert_close(a: &HostLogits, b: &HostLogits, step: usize) {
    assert_eq!(a.rows.len(), b.rows.len());
    for (i, (ra, rb)) in a.rows.iter().zip(&b.rows).enumerate() {
        assert_eq!(ra.len(), rb.len(), "step {step} request {i}");
        for (x, y) in ra.clone().zip(rb.clone()) {
            let (x, y) = (a.row(x), b.row(y));
            assert_eq!(argmax(x), argmax(y), "step {step} request {i}");
            for (u, v) in x.iter().zip(y) {
                assert!(
                    (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                    "step {step} request {i}: {u} vs {v}"
                );
            }
        }
    }
}

fn check(model: &str) {
    let mut eager = runner(model);
    let mut padded = runner(model);
    padded.pad_decodes(&[1, 2, 4, 8], MAX_LEN);
    assert_eq!(padded.decode_sizes(), &[1, 2, 4, 8]);
    // Padded and sampling in the backend (greedy): tokens, no logits.
    let mut sampling = runner(model);
    sampling.pad_decodes(&[1, 2, 4, 8], MAX_LEN);
    let mut sched = scheduler();
    let mut decode_batches = Vec::new();
    for step in 0.. {
        let out = sched.schedule();
        if out.is_empty() {
            break;
        }
        let reqs = out.requests();
        if reqs.iter().all(|r| r.num_tokens == 1) {
            decode_batches.push(reqs.len());
        }
        // Every row's logits to the host, eager and padded.
        let all = vec![LogitsNeed::AllRows(None); reqs.len()];
        let a = eager.execute(&out, all.clone()).unwrap();
        let b = padded.execute(&out, all).unwrap();
        let (a, b) = (a.prompt_logits.unwrap(), b.prompt_logits.unwrap());
        assert_close(&a, &b, step);
        let tokens: Vec<Option<u32>> = reqs
            .iter()
            .zip(&a.rows)
            .map(|(r, rows)| r.sample.then(|| argmax(a.row(rows.end - 1))))
            .collect();
        // Greedy sampling in the backend: tokens, no logits.
        let greedy = reqs
            .iter()
            .map(|r| match r.sample {
                true => LogitsNeed::Sample(SamplingRow::greedy()),
                false => LogitsNeed::None,
            })
            .collect();
        let c = sampling.execute(&out, greedy).unwrap();
        assert!(c.prompt_logits.is_none());
        let got: Vec<Option<u32>> = c
            .sampled
            .iter()
            .map(|s| s.as_ref().map(|s| s.token_id))
            .collect();
        assert_eq!(got, tokens, "step {step}");
        sched.update_from_output(&out, &tokens);
        eager.recycle(a);
        padded.recycle(b);
    }
    for n in [5, 4, 3, 2, 1] {
        assert!(decode_batches.contains(&n), "{model}: {decode_batches:?}");
    }
}

#[test]
fn padded_decodes_match_eager_qwen2() {
    check("qwen2_bias_tied_bf16");
}

#[test]
fn padded_decodes_match_eager_llama_gqa() {
    check("llama_gqa_tied_bias_f16");
}

#[test]
fn padded_decodes_match_eager_qwen3_qk_norm() {
    check("qwen3_qknorm_hd32_f32");
}
