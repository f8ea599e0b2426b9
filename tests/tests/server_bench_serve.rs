//! Smoke test: `pagoda bench serve` (the vLLM-compatible load generator)
//! against `pagoda serve`: every request succeeds and vLLM's table prints.

mod server_common;

use std::process::Command;

use server_common::{model_or_skip, pagoda_bin, small_server_args, TestServer};

#[test]
fn bench_serve_against_pagoda_serve() {
    let Some(model) = model_or_skip("bench_serve_against_pagoda_serve") else {
        return;
    };
    let server = TestServer::start(&small_server_args(&model), &[]);
    let out = Command::new(pagoda_bin())
        .args(["bench", "serve", "--base-url", &server.base])
        .args([
            "--num-prompts",
            "6",
            "--random-input-len",
            "16",
            "--random-output-len",
            "8",
        ])
        .args(["--max-concurrency", "3", "--ignore-eos", "--disable-tqdm"])
        .output()
        .expect("running pagoda bench serve");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` line in\n{stdout}"))
            .split(':')
            .nth(1)
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(line("Successful requests"), "6", "{stdout}");
    assert_eq!(line("Total generated tokens"), "48", "{stdout}");
    for name in [
        "Mean TTFT (ms)",
        "Mean TPOT (ms)",
        "Output token throughput (tok/s)",
    ] {
        let v: f64 = line(name).parse().unwrap();
        assert!(v > 0.0, "{name} = {v}");
    }
    server
        .wait_idle(std::time::Duration::from_secs(10))
        .unwrap();
}
