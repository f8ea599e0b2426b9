//! Batch invariance: 64 different requests batched together, with chunked
//! prefill forced by a small token budget and preemption forced by a small
//! KV cache, give the same greedy tokens as each run alone; on the default
//! model and on a sliding-window model (Gemma 2: windows of 8, soft-capping),
//! whose prompts outgrow the window.

use pagoda_engine::model::KvCacheLayout;
use pagoda_engine::weights::{open_model, LoadFormat};
use pagoda_engine::{
    generate_all, Device, EngineConfig, EngineHandle, KvCacheDtype, SamplingParams,
};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const NUM_REQUESTS: usize = 64;
const MAX_TOKENS: usize = 12;
const MAX_MODEL_LEN: usize = 128;

fn model_path() -> PathBuf {
    match std::env::var("PAGODA_SMOLLM2_GGUF")
        .ok()
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        Some(p) => p,
        None => {
            eprintln!(
                "PAGODA_SMOLLM2_GGUF not set: running batch invariance on a tiny fixture model"
            );
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/llama_gqa_tied_bias_f16")
        }
    }
}

fn start(
    model: &Path,
    max_num_batched_tokens: usize,
    kv_bytes: u64,
    max_num_seqs: usize,
) -> EngineHandle {
    EngineHandle::start(EngineConfig {
        model: model.to_path_buf(),
        device: Device::Cpu,
        max_num_seqs,
        max_num_batched_tokens: Some(max_num_batched_tokens),
        max_model_len: Some(MAX_MODEL_LEN),
        kv_cache_memory: Some(kv_bytes),
        // A 16-bit cache (the default for this f16 checkpoint), pinned: the
        // block count below is sized for 2-byte elements.
        kv_cache_dtype: KvCacheDtype::Float16,
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
fn batched_equals_alone_under_chunking_and_preemption() {
    check_batch_invariance(&model_path());
}

#[test]
fn sliding_window_model_is_batch_invariant() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/gemma2_window8_softcap_f32");
    let config = open_model(&model, LoadFormat::Auto).unwrap().config;
    assert_eq!(config.layer_window(0), Some(8));
    check_batch_invariance(&model);
}

fn check_batch_invariance(model: &Path) {
    let model = model.to_path_buf();
    let config = open_model(&model, LoadFormat::Auto).unwrap().config;
    // A block spans one KV-cache group's layers (all of them for a plain
    // model; one of Gemma 2's three layers here, each its own group).
    let layers_per_block = KvCacheLayout::new(&config, MAX_MODEL_LEN).group_size;
    let kv_bytes_per_block =
        2 * layers_per_block * config.num_key_value_heads * config.head_dim * 2 * 16;
    let vocab = config.vocab_size as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let prompts: Vec<Vec<u32>> = (0..NUM_REQUESTS)
        .map(|_| {
            let len = rng.random_range(3..90);
            (0..len).map(|_| rng.random_range(0..vocab)).collect()
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(MAX_TOKENS),
        ignore_eos: true,
        ..SamplingParams::default()
    };

    let alone_engine = start(&model, 512, (kv_bytes_per_block * 64) as u64, 4);
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let out = generate_all(&alone_engine, vec![(p.clone(), params.clone())]).unwrap();
            out[0].samples[0].token_ids.clone()
        })
        .collect();
    alone_engine.shutdown();

    // 40 blocks hold 640 tokens: far less than 64 requests need at once.
    let batched_engine = start(&model, 64, (kv_bytes_per_block * 41) as u64, 64);
    let batched = generate_all(
        &batched_engine,
        prompts
            .iter()
            .map(|p| (p.clone(), params.clone()))
            .collect(),
    )
    .unwrap();
    // Stats are published after each step: wait for the last one.
    let mut stats = batched_engine.stats();
    for _ in 0..100 {
        if stats.num_running + stats.num_waiting == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        stats = batched_engine.stats();
    }
    assert!(
        stats.num_preemptions_total > 0,
        "the small KV cache should force preemption"
    );
    assert_eq!(stats.num_running + stats.num_waiting, 0);
    assert_eq!(stats.kv_cache_usage, 0.0, "blocks leaked");
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(a.len(), MAX_TOKENS);
        assert_eq!(
            a, &b.samples[0].token_ids,
            "request {i} differs between alone and batched"
        );
    }
    batched_engine.shutdown();
}
