//! Structured outputs on SmolLM2's vocabulary (49,152 tokens): the time to
//! compute one grammar bitmask and advance the matcher, per token of a
//! valid document under a large JSON schema, and the compile time of that
//! schema (what the grammar cache saves on a repeat).
//!
//! `PAGODA_SMOLLM2_GGUF=... cargo bench -p pagoda-benches --bench structured_outputs`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pagoda_engine::structured_output::{StructuredOutputCompiler, StructuredOutputsParams};
use pagoda_engine::tokenizer::Tokenizer;
use pagoda_engine::weights::gguf::GgufFile;
use serde_json::{json, Value};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

/// A schema of the size extraction pipelines send: 24 typed fields,
/// nested objects, arrays of objects, enums and bounds.
fn large_schema() -> Value {
    let mut props = serde_json::Map::new();
    for i in 0..8 {
        props.insert(
            format!("name_{i}"),
            json!({"type": "string", "maxLength": 40}),
        );
        props.insert(
            format!("count_{i}"),
            json!({"type": "integer", "minimum": 0}),
        );
        props.insert(
            format!("kind_{i}"),
            json!({"enum": ["alpha", "beta", "gamma", "delta"]}),
        );
    }
    props.insert(
        "address".into(),
        json!({"type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"},
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["street", "city", "zip"], "additionalProperties": false}),
    );
    props.insert(
        "items".into(),
        json!({"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string"}, "price": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["sku", "price", "tags"], "additionalProperties": false}}),
    );
    let required: Vec<String> = props.keys().cloned().collect();
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// A document valid under `large_schema`, in the schema's key order.
fn document() -> String {
    let mut doc = serde_json::Map::new();
    for i in 0..8 {
        doc.insert(format!("name_{i}"), json!(format!("Entry number {i}")));
        doc.insert(format!("count_{i}"), json!(i * 37));
        doc.insert(format!("kind_{i}"), json!("gamma"));
    }
    doc.insert(
        "address".into(),
        json!({"street": "1 Main Street", "city": "Springfield", "zip": "12345"}),
    );
    doc.insert(
        "items".into(),
        json!([{"sku": "A-1", "price": 9.5, "tags": ["x", "y"]},
               {"sku": "B-22", "price": 120.25, "tags": []}]),
    );
    Value::Object(doc).to_string()
}

fn tokenizer() -> Option<Tokenizer> {
    let p = PathBuf::from(std::env::var("PAGODA_SMOLLM2_GGUF").ok()?);
    Tokenizer::from_gguf(&GgufFile::open(&p).ok()?).ok()
}

fn structured_outputs(c: &mut Criterion) {
    let Some(tok) = tokenizer() else {
        eprintln!("SKIPPED: set PAGODA_SMOLLM2_GGUF (scripts/fetch-smollm2.sh)");
        return;
    };
    let vocab = tok.vocab_size();
    let eos = tok.token_to_id("<|im_end|>").unwrap_or(2);
    let params = StructuredOutputsParams::Json(large_schema());
    let doc = tok.encode(&document(), false).unwrap();
    let compiler = StructuredOutputCompiler::new(Some(tok.clone()), vocab, vec![eos]);
    let grammar = compiler.compile(&params).expect("the schema compiles");
    // The document is valid: every token passes the mask.
    let m = grammar.matcher();
    for &t in &doc {
        assert!(m.fill_bitmask().is_allowed(t), "token {t} refused");
        m.accept_tokens(&[t]).unwrap();
    }

    let mut g = c.benchmark_group("structured_outputs_49152");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    g.throughput(Throughput::Elements(doc.len() as u64));
    g.bench_function(format!("mask_and_advance_{}_tokens", doc.len()), |b| {
        b.iter(|| {
            let m = grammar.matcher();
            for &t in &doc {
                black_box(m.fill_bitmask());
                m.accept_tokens(&[t]).unwrap();
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("compile_large_schema_cold", |b| {
        // A fresh compiler per iteration, its trie and factory built (and
        // its cache warmed with another grammar) outside the timing.
        b.iter_batched(
            || {
                let fresh = StructuredOutputCompiler::new(Some(tok.clone()), vocab, vec![eos]);
                fresh.compile(&StructuredOutputsParams::JsonObject).unwrap();
                fresh
            },
            |fresh| black_box(fresh.compile(&params).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("compile_large_schema_cached", |b| {
        b.iter(|| black_box(compiler.compile(&params).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, structured_outputs);
criterion_main!(benches);
