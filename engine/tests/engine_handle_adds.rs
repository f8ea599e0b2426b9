//! `EngineHandle::add_request` never waits for the engine loop: these tests
//! add requests while no loop runs at all (the old handle, which waited for
//! the loop's reply, would hang here), then start it and read the streams.

mod engine_common;
use engine_common::{tiny_model, wait_idle};
use pagoda_engine::engine_builder::build_engine;
use pagoda_engine::{
    Device, EngineConfig, EngineError, EngineHandle, EngineRequest, RequestOptions, RequestStream,
    SamplingParams,
};

fn unstarted(max_waiting_requests: usize) -> (EngineHandle, pagoda_engine::EngineLoop) {
    let built = build_engine(&EngineConfig {
        model: tiny_model(),
        device: Device::Cpu,
        max_num_seqs: 16,
        max_model_len: Some(128),
        kv_cache_memory: Some(32 << 20),
        max_waiting_requests: Some(max_waiting_requests),
        ..EngineConfig::default()
    })
    .unwrap();
    EngineHandle::unstarted(built.engine, built.chat_template)
}

fn params(n: usize) -> SamplingParams {
    SamplingParams {
        n,
        temperature: 0.0,
        max_tokens: Some(3),
        ignore_eos: true,
        ..Default::default()
    }
}

fn request(prompt: Vec<u32>, n: usize) -> EngineRequest {
    EngineRequest {
        prompt_token_ids: prompt,
        params: params(n),
        opts: RequestOptions::default(),
    }
}

/// Reads a stream to its end; the tokens of each sample.
fn read_all(stream: &mut RequestStream, n: usize) -> Vec<Vec<u32>> {
    let mut samples = vec![Vec::new(); n];
    while let Some(item) = stream.blocking_next() {
        let out = item.unwrap();
        for d in out.outputs {
            samples[d.index].extend(d.token_ids);
        }
        if out.finished {
            break;
        }
    }
    samples
}

#[test]
fn adds_return_at_once_and_refusals_come_through_the_stream() {
    // Three waiting sequences at most.
    let (h, engine_loop) = unstarted(3);
    let mut a = h
        .add_request(vec![5, 6, 7], params(2), RequestOptions::default())
        .unwrap();
    // Dropped before the engine saw it: added, then aborted, nothing leaks.
    drop(
        h.add_request(vec![14, 15], params(1), RequestOptions::default())
            .unwrap(),
    );
    // A group: the first fits (3 waiting), the second finds the queue full,
    // so neither runs and both streams get the refusal.
    let mut group = h
        .add_requests(vec![request(vec![8, 9], 1), request(vec![10, 11], 1)])
        .unwrap();
    // The group's sequence was aborted: b fits again.
    let mut b = h
        .add_request(vec![12, 13], params(1), RequestOptions::default())
        .unwrap();
    // What needs no engine state is still refused at once.
    assert_eq!(
        h.add_request(vec![], params(1), RequestOptions::default())
            .err(),
        Some(EngineError::EmptyPrompt)
    );
    // Each request takes one id per sample, so no two ranges overlap.
    let ids = [
        a.request_id(),
        group[0].request_id(),
        group[1].request_id(),
        b.request_id(),
    ];
    assert!(
        ids[1].get() >= ids[0].get() + 2,
        "{ids:?}: a has two samples"
    );
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");

    let thread = std::thread::spawn(move || engine_loop.run());
    for stream in &mut group {
        assert_eq!(stream.blocking_next(), Some(Err(EngineError::QueueFull)));
        assert_eq!(stream.blocking_next(), None);
    }
    let a_samples = read_all(&mut a, 2);
    assert!(a_samples.iter().all(|s| s.len() == 3), "{a_samples:?}");
    assert_eq!(read_all(&mut b, 1)[0].len(), 3);
    let stats = wait_idle(&h);
    assert_eq!(stats.num_running + stats.num_waiting, 0);
    assert_eq!(
        stats.kv_cache_usage, 0.0,
        "refused or dropped requests leaked blocks"
    );
    // As vLLM counts prompt tokens: once prefilled, so only a's and b's.
    assert_eq!(stats.prompt_tokens_total, 3 + 2);
    h.shutdown();
    thread.join().unwrap();
    assert!(!h.is_alive());
}

#[test]
fn a_loop_that_never_runs_refuses_as_shut_down() {
    let (h, engine_loop) = unstarted(8);
    let mut early = h
        .add_request(vec![1, 2], params(1), RequestOptions::default())
        .unwrap();
    assert!(h.is_alive());
    drop(engine_loop);
    assert!(!h.is_alive());
    // Queued before the loop went away: the stream says so once, then ends.
    assert_eq!(early.blocking_next(), Some(Err(EngineError::Shutdown)));
    assert_eq!(early.blocking_next(), None);
    assert_eq!(
        h.add_request(vec![1, 2], params(1), RequestOptions::default())
            .err(),
        Some(EngineError::Shutdown)
    );
}
