//! Structured outputs on the real SmolLM2 (its tokenizer is what the
//! grammar's token trie is built from): random samples under a regex, a
//! choice and a JSON schema are always valid, whatever else is batched
//! with them; bad constraints are refused before anything is enqueued.

#[allow(dead_code)]
mod engine_common;
use engine_common::wait_idle;
use pagoda_engine::{
    generate_all, Device, EngineConfig, EngineError, EngineHandle, FinishReason, SamplingParams,
    StructuredOutputsParams,
};
use std::path::PathBuf;

fn smollm2() -> Option<EngineHandle> {
    let p = PathBuf::from(std::env::var("PAGODA_SMOLLM2_GGUF").ok()?);
    if !p.exists() {
        return None;
    }
    Some(
        EngineHandle::start(EngineConfig {
            model: p,
            device: Device::Cpu,
            max_num_seqs: 16,
            max_model_len: Some(512),
            kv_cache_memory: Some(64 << 20),
            ..EngineConfig::default()
        })
        .unwrap(),
    )
}

fn constrained(so: StructuredOutputsParams, n: usize, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        n,
        temperature: 1.0,
        max_tokens: Some(max_tokens),
        structured_outputs: Some(so),
        ..Default::default()
    }
}

#[test]
fn constrained_samples_are_always_valid() {
    let Some(h) = smollm2() else {
        eprintln!("SKIPPED: PAGODA_SMOLLM2_GGUF not set");
        return;
    };
    let tok = h.tokenizer().unwrap().clone();
    let prompt = |s: &str| tok.encode(s, false).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 0, "maximum": 99}
        },
        "required": ["ok", "n"],
        "additionalProperties": false,
        // Compact separators: at temperature 1 flexible whitespace could
        // spend the token budget before the object closes.
        "x-guidance": {"whitespace_flexible": false}
    });
    let unconstrained = SamplingParams {
        temperature: 1.0,
        max_tokens: Some(24),
        ..Default::default()
    };
    let out = generate_all(
        &h,
        vec![
            (
                prompt("My number:"),
                constrained(
                    StructuredOutputsParams::Regex("[0-9]{2}x[a-c]{3}".into()),
                    4,
                    24,
                ),
            ),
            (prompt("Once upon a time"), unconstrained),
            (
                prompt("Pick one:"),
                constrained(
                    StructuredOutputsParams::Choice(vec!["red".into(), "green blue".into()]),
                    4,
                    24,
                ),
            ),
            (
                prompt("JSON:"),
                constrained(StructuredOutputsParams::Json(schema), 2, 120),
            ),
        ],
    )
    .unwrap();
    let is_regex = |t: &str| {
        let b = t.as_bytes();
        b.len() == 6
            && b[..2].iter().all(u8::is_ascii_digit)
            && b[2] == b'x'
            && b[3..].iter().all(|c| (b'a'..=b'c').contains(c))
    };
    for s in &out[0].samples {
        assert!(is_regex(&s.text), "{:?}", s.text);
        assert_eq!(s.finish_reason, Some(FinishReason::Stop), "ended by EOS");
    }
    assert_eq!(
        out[1].samples[0].token_ids.len(),
        24,
        "the unconstrained request ran free"
    );
    for s in &out[2].samples {
        assert!(s.text == "red" || s.text == "green blue", "{:?}", s.text);
    }
    for s in &out[3].samples {
        let v: serde_json::Value = serde_json::from_str(&s.text).unwrap_or_else(|e| {
            panic!("{:?} is not JSON: {e}", s.text);
        });
        assert!(
            v["ok"].is_boolean() && v["n"].as_u64().is_some_and(|n| n <= 99),
            "{v}"
        );
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    }
    assert_eq!(wait_idle(&h).kv_cache_usage, 0.0);
}

#[test]
fn bad_constraints_are_refused_before_enqueue() {
    let Some(h) = smollm2() else {
        eprintln!("SKIPPED: PAGODA_SMOLLM2_GGUF not set");
        return;
    };
    for so in [
        StructuredOutputsParams::Regex("(unclosed".into()),
        StructuredOutputsParams::Grammar("start: missing".into()),
        StructuredOutputsParams::Json(serde_json::json!({"type": 5})),
    ] {
        let kind = so.kind();
        match h.add_request(vec![1, 2, 3], constrained(so, 1, 4), Default::default()) {
            Err(EngineError::InvalidStructuredOutput(e)) => assert_eq!(e.kind, kind),
            other => panic!("{kind}: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(h.stats().num_waiting + h.stats().num_running, 0);
}
