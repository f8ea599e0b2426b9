//! The engine seen from a caller: parallel sampling, seeds, aborts, stop
//! strings, logprobs and refused requests, on real checkpoints.

mod engine_common;
use engine_common::{tiny_model, wait_idle};
use pagoda_engine::outputs::StopReason;
use pagoda_engine::{
    generate_all, Device, EngineConfig, EngineError, EngineHandle, FinishReason, RequestOptions,
    SamplingParams,
};
use std::path::PathBuf;

fn smollm2() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var("PAGODA_SMOLLM2_GGUF").ok()?);
    p.exists().then_some(p)
}

fn start(model: PathBuf, max_model_len: usize) -> EngineHandle {
    EngineHandle::start(EngineConfig {
        model,
        device: Device::Cpu,
        max_num_seqs: 16,
        max_model_len: Some(max_model_len),
        kv_cache_memory: Some(32 << 20),
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
fn parallel_samples_are_seeded_and_distinct() {
    let h = start(tiny_model(), 256);
    let params = SamplingParams {
        n: 4,
        temperature: 1.0,
        seed: Some(11),
        max_tokens: Some(10),
        ignore_eos: true,
        ..Default::default()
    };
    let prompt = vec![5u32, 17, 99, 3, 42];
    let a = generate_all(&h, vec![(prompt.clone(), params.clone())]).unwrap();
    // The same seeded request batched with unrelated ones samples the same tokens.
    let other = SamplingParams {
        temperature: 0.7,
        max_tokens: Some(10),
        ignore_eos: true,
        ..Default::default()
    };
    let b = generate_all(
        &h,
        vec![
            (vec![1, 2, 3], other.clone()),
            (prompt.clone(), params),
            (vec![9; 30], other),
        ],
    )
    .unwrap();
    let samples = |o: &pagoda_engine::FinalOutput| {
        o.samples
            .iter()
            .map(|s| s.token_ids.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(samples(&a[0]), samples(&b[1]));
    let s = samples(&a[0]);
    assert_eq!(s.len(), 4);
    assert!(s.iter().all(|t| t.len() == 10));
    assert!(
        s.windows(2).any(|w| w[0] != w[1]),
        "the n samples should differ: {s:?}"
    );
    assert_eq!(wait_idle(&h).kv_cache_usage, 0.0);
}

#[test]
fn dropping_a_stream_aborts_and_frees_blocks() {
    let h = start(tiny_model(), 512);
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(400),
        ignore_eos: true,
        ..Default::default()
    };
    let mut streams: Vec<_> = (0..6)
        .map(|i| {
            h.add_request(vec![i + 1; 40], params.clone(), RequestOptions::default())
                .unwrap()
        })
        .collect();
    // Read one delta from each, then walk away.
    for s in &mut streams {
        assert!(s.blocking_next().unwrap().is_ok());
    }
    assert!(h.stats().kv_cache_usage > 0.0);
    drop(streams);
    let stats = wait_idle(&h);
    assert_eq!(stats.num_running + stats.num_waiting, 0);
    assert_eq!(stats.kv_cache_usage, 0.0, "aborted requests leaked blocks");
}

#[test]
fn prompt_logprobs_agree_with_generation_logprobs() {
    let h = start(tiny_model(), 256);
    let prompt = vec![7u32, 8, 9, 10, 200, 31];
    let gen = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(4),
        logprobs: Some(1),
        ignore_eos: true,
        ..Default::default()
    };
    let out = generate_all(&h, vec![(prompt.clone(), gen)])
        .unwrap()
        .remove(0);
    let sample = &out.samples[0];
    let mut extended = prompt.clone();
    extended.extend_from_slice(&sample.token_ids[..3]);
    let with_prompt_lp = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(1),
        prompt_logprobs: Some(2),
        ..Default::default()
    };
    let mut stream = h
        .add_request(extended.clone(), with_prompt_lp, RequestOptions::default())
        .unwrap();
    let first = stream.blocking_next().unwrap().unwrap();
    let plp = first
        .prompt_logprobs
        .expect("prompt logprobs on the first output");
    assert_eq!(plp.len(), extended.len());
    assert!(plp[0].is_none());
    for i in 0..3 {
        let got = plp[prompt.len() + i].as_ref().unwrap();
        assert_eq!(got.token_id, sample.token_ids[i]);
        assert!(
            (got.logprob - sample.logprobs[i].logprob).abs() < 1e-4,
            "{got:?} vs {:?}",
            sample.logprobs[i]
        );
        assert_eq!(got.top.len(), 2);
    }
}

#[test]
fn refuses_bad_requests_with_clear_errors() {
    let h = start(tiny_model(), 64);
    let vocab = h.model_info().vocab_size as u32;
    let err = |prompt: Vec<u32>, p: SamplingParams| {
        h.add_request(prompt, p, RequestOptions::default())
            .err()
            .unwrap()
    };
    let e = err(vec![1; 64], SamplingParams::default());
    assert!(
        matches!(
            e,
            EngineError::PromptTooLong {
                prompt_len: 64,
                max_model_len: 64
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("64"));
    assert!(matches!(
        err(vec![], SamplingParams::default()),
        EngineError::EmptyPrompt
    ));
    assert!(matches!(
        err(vec![vocab], SamplingParams::default()),
        EngineError::TokenOutOfVocab { .. }
    ));
    let e = err(
        vec![1],
        SamplingParams {
            top_p: 2.0,
            ..Default::default()
        },
    );
    assert_eq!(e.param(), Some("top_p"));
    // Without max_tokens a request runs to the context limit.
    let out = generate_all(
        &h,
        vec![(
            vec![1; 60],
            SamplingParams {
                max_tokens: None,
                ignore_eos: true,
                ..Default::default()
            },
        )],
    )
    .unwrap();
    assert_eq!(out[0].samples[0].token_ids.len(), 4);
    assert_eq!(out[0].samples[0].finish_reason, Some(FinishReason::Length));
}

#[test]
fn stop_strings_end_generation_and_are_cut_from_the_text() {
    let Some(model) = smollm2() else {
        eprintln!("SKIPPED: PAGODA_SMOLLM2_GGUF not set");
        return;
    };
    let h = start(model, 256);
    let tok = h.tokenizer().expect("SmolLM2 has a tokenizer").clone();
    let prompt = tok.encode("The capital of France is", false).unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(20),
        stop: vec![".".to_string()],
        ..Default::default()
    };
    let mut stream = h
        .add_request(prompt.clone(), params.clone(), RequestOptions::default())
        .unwrap();
    let mut text = String::new();
    let mut last = None;
    while let Some(o) = stream.blocking_next() {
        let o = o.unwrap();
        for d in &o.outputs {
            text.push_str(&d.text);
            if d.finish_reason.is_some() {
                last = Some(d.clone());
            }
        }
        if o.finished {
            break;
        }
    }
    let last = last.unwrap();
    assert_eq!(text, " Paris");
    assert_eq!(last.finish_reason, Some(FinishReason::Stop));
    assert_eq!(last.stop_reason, Some(StopReason::Text(".".into())));
    let incl = SamplingParams {
        include_stop_str_in_output: true,
        ..params
    };
    let out = generate_all(&h, vec![(prompt, incl)]).unwrap();
    assert_eq!(out[0].samples[0].text, " Paris.");
    assert_eq!(wait_idle(&h).kv_cache_usage, 0.0);
}

/// `min_tokens` above the context a prompt leaves (max_tokens unset, so it
/// is cut to that context) is not an engine failure: the request runs to
/// max_model_len. It once reached the scheduler as an internal error.
#[test]
fn min_tokens_beyond_the_context_left_runs_to_max_model_len() {
    let h = start(tiny_model(), 64);
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: None,
        min_tokens: 40,
        ..Default::default()
    };
    let prompt: Vec<u32> = (1..=50).collect();
    let out = generate_all(&h, vec![(prompt, params)]).unwrap();
    let sample = &out[0].samples[0];
    assert_eq!(sample.token_ids.len(), 14, "64 - 50 tokens");
    assert_eq!(sample.finish_reason, Some(FinishReason::Length));
    assert_eq!(wait_idle(&h).kv_cache_usage, 0.0);
}
