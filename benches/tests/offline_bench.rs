//! `bench throughput` and `bench latency` through the real engine on CPU,
//! with a tiny test model from tests/fixtures (random weights, two layers),
//! so they run in seconds. They check the counting and the output files,
//! not the speed.

use std::path::PathBuf;

use clap::Parser;
use pagoda_benches::latency::{run_latency, LatencyArgs};
use pagoda_benches::throughput::{run_throughput, ThroughputArgs};
use serde_json::Value;

fn fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/models/llama_mha_f32")
        .display()
        .to_string()
}

fn out_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pagoda-{name}-{}.json", std::process::id()))
}

#[derive(Parser)]
struct ThroughputCli {
    #[command(flatten)]
    args: ThroughputArgs,
}

#[derive(Parser)]
struct LatencyCli {
    #[command(flatten)]
    args: LatencyArgs,
}

const ENGINE_FLAGS: [&str; 6] = [
    "--device",
    "cpu",
    "--kv-cache-memory",
    "16M",
    "--max-num-seqs",
    "16",
];

#[test]
fn throughput_generates_every_requested_token() {
    let model = fixture();
    let json = out_file("throughput");
    let mut argv = vec![
        "t",
        "--model",
        &model,
        "--num-prompts",
        "12",
        "--input-len",
        "24",
        "--output-len",
        "6",
    ];
    argv.extend(ENGINE_FLAGS);
    argv.extend([
        "--random-range-ratio",
        "0.5",
        "--output-json",
        json.to_str().unwrap(),
    ]);
    let args = ThroughputCli::try_parse_from(argv).unwrap().args;
    let r = run_throughput(&args).unwrap();
    assert_eq!(r.num_requests, 12);
    // ignore_eos and max_tokens: each request makes exactly its output length,
    // 3..=9 tokens; prompts are 12..=36 tokens.
    assert!(
        (12 * 3..=12 * 9).contains(&r.total_output_tokens),
        "{}",
        r.total_output_tokens
    );
    assert!((12 * 12..=12 * 36).contains(&r.total_prompt_tokens));
    assert!(r.elapsed_time > 0.0);
    let saved: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(saved["num_requests"], 12);
    assert_eq!(saved["total_num_tokens"], r.total_num_tokens());
    assert!(saved["output_tokens_per_second"].as_f64().unwrap() > 0.0);
    std::fs::remove_file(&json).unwrap();

    // Fixed lengths: the totals are exact.
    let mut argv = vec![
        "t",
        "--model",
        &model,
        "--num-prompts",
        "5",
        "--input-len",
        "10",
        "--output-len",
        "4",
    ];
    argv.extend(ENGINE_FLAGS);
    let r = run_throughput(&ThroughputCli::try_parse_from(argv).unwrap().args).unwrap();
    assert_eq!((r.total_prompt_tokens, r.total_output_tokens), (50, 20));
}

#[test]
fn throughput_refuses_requests_longer_than_the_context() {
    let model = fixture();
    let mut argv = vec![
        "t",
        "--model",
        &model,
        "--num-prompts",
        "2",
        "--input-len",
        "600",
        "--output-len",
        "4",
    ];
    argv.extend(ENGINE_FLAGS);
    let err = run_throughput(&ThroughputCli::try_parse_from(argv).unwrap().args).unwrap_err();
    assert!(err.to_string().contains("max_model_len"), "{err}");
}

#[test]
fn latency_times_the_batch_and_its_decode_steps() {
    let model = fixture();
    let json = out_file("latency");
    let mut argv = vec![
        "t",
        "--model",
        &model,
        "--batch-size",
        "3",
        "--input-len",
        "16",
        "--output-len",
        "8",
        "--num-iters-warmup",
        "1",
        "--num-iters",
        "3",
    ];
    argv.extend(ENGINE_FLAGS);
    argv.extend(["--output-json", json.to_str().unwrap()]);
    let r = run_latency(&LatencyCli::try_parse_from(argv).unwrap().args).unwrap();
    assert_eq!(r.latencies.len(), 3);
    assert_eq!(r.prefill_latencies.len(), 3);
    assert!(r.latencies.iter().all(|&l| l > 0.0));
    assert!(r.mean_decode_step().is_some());
    let saved: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(saved["latencies"].as_array().unwrap().len(), 3);
    for p in ["10", "25", "50", "75", "90", "99"] {
        assert!(saved["percentiles"][p].as_f64().unwrap() > 0.0);
    }
    std::fs::remove_file(&json).unwrap();
}
