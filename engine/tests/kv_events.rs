//! KV-cache events from a running engine: the blocks a prompt fills reach
//! the sink as `BlockStored`, chained, with their tokens.

mod engine_common;

use engine_common::{tiny_model, wait_idle};
use pagoda_engine::engine_builder::build_engine;
use pagoda_engine::kv_events::{KvCacheEvent, KvEventSink};
use pagoda_engine::{Device, EngineConfig, EngineHandle, RequestOptions, SamplingParams};

#[test]
fn a_prompt_s_full_blocks_are_published_as_one_chain() {
    let built = build_engine(&EngineConfig {
        model: tiny_model(),
        device: Device::Cpu,
        max_model_len: Some(128),
        kv_cache_memory: Some(32 << 20),
        ..EngineConfig::default()
    })
    .unwrap();
    let mut engine = built.engine;
    let (sink, mut rx) = KvEventSink::channel(64);
    engine.set_kv_event_sink(sink);
    let h = EngineHandle::from_engine(engine, built.chat_template).unwrap();

    // 40 prompt tokens + 3 generated: two full 16-token blocks.
    let prompt: Vec<u32> = (1..=40).collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(3),
        ignore_eos: true,
        ..Default::default()
    };
    let mut stream = h
        .add_request(prompt.clone(), params, RequestOptions::default())
        .unwrap();
    while let Some(out) = stream.blocking_next() {
        if out.unwrap().finished {
            break;
        }
    }
    wait_idle(&h);

    let mut stored = Vec::new();
    while let Ok(batch) = rx.try_recv() {
        assert!(batch.ts > 1.6e9, "ts is Unix time: {}", batch.ts);
        stored.extend(batch.events);
    }
    let [KvCacheEvent::BlockStored {
        block_hashes,
        parent_block_hash,
        token_ids,
        block_size,
    }] = &stored[..]
    else {
        panic!("expected one BlockStored, got {stored:?}");
    };
    assert_eq!(*block_size, 16);
    assert_eq!(block_hashes.len(), 2);
    assert_eq!(*parent_block_hash, None);
    assert_eq!(token_ids[..], prompt[..32]);
    h.shutdown();
}
