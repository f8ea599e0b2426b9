//! End-to-end: a disconnect storm. Many clients stream (or wait) and half of
//! them go away midway — after a few chunks, while still queued, or during a
//! non-streaming request. Afterwards no request may be running or waiting,
//! the KV cache must be empty, and the server must still answer.

mod server_common;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_common::{
    drain, model_or_skip, parse_sse, read_events, set_flag, small_server_args, TestServer,
};

/// A request long enough that only an abort ends it within the test.
fn long_body(i: usize, stream: bool) -> Value {
    if i & 1 == 0 {
        json!({"prompt": format!("Story number {i}: once upon a time"), "max_tokens": 600,
               "ignore_eos": true, "stream": stream})
    } else {
        json!({"messages": [{"role": "user", "content": format!("Tell story {i}.")}],
               "max_tokens": 600, "ignore_eos": true, "stream": stream})
    }
}

fn path(i: usize) -> &'static str {
    if i & 1 == 0 {
        "/v1/completions"
    } else {
        "/v1/chat/completions"
    }
}

#[test]
fn disconnect_storm_frees_everything() {
    let Some(model) = model_or_skip("disconnect_storm_frees_everything") else {
        return;
    };
    let mut args = small_server_args(&model);
    set_flag(&mut args, "--max-num-seqs", "4");
    set_flag(&mut args, "--served-model-name", "storm");
    let server = TestServer::start(&args, &[]);
    let base = server.base.clone();
    let started = Instant::now();

    const CUT_STREAMS: usize = 8;
    const FULL_STREAMS: usize = 6;
    const CUT_WAITING: usize = 4;
    const CUT_NON_STREAMING: usize = 4;
    thread::scope(|scope| {
        let mut handles = Vec::new();
        // Streams cut after three chunks.
        for i in 0..CUT_STREAMS {
            let base = base.clone();
            handles.push(scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut r = client
                    .post(format!("{base}{}", path(i)))
                    .json(&long_body(i, true))
                    .send()
                    .expect("send");
                assert_eq!(r.status(), 200);
                assert_eq!(read_events(&mut r, 3), 3, "stream {i} ended early");
                drop(r);
                "cut".to_string()
            }));
        }
        // Streams read to the end.
        for i in 0..FULL_STREAMS {
            let base = base.clone();
            handles.push(scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut body = long_body(i, true);
                body["max_tokens"] = json!(6);
                let r = client
                    .post(format!("{base}{}", path(i)))
                    .json(&body)
                    .send()
                    .expect("send");
                assert_eq!(r.status(), 200);
                let chunks = parse_sse(&drain(r));
                let finished = chunks
                    .iter()
                    .filter(|c| c["choices"][0]["finish_reason"] == "length")
                    .count();
                assert_eq!(finished, 1, "stream {i}: {chunks:?}");
                "full".to_string()
            }));
        }
        // Clients that give up while their request may still be queued, and
        // non-streaming clients that give up midway.
        for i in 0..CUT_WAITING + CUT_NON_STREAMING {
            let base = base.clone();
            handles.push(scope.spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_millis(if i < CUT_WAITING {
                        300
                    } else {
                        1500
                    }))
                    .build()
                    .unwrap();
                let stream = i < CUT_WAITING;
                let result = client
                    .post(format!("{base}{}", path(i)))
                    .json(&long_body(i, stream))
                    .send();
                // The timeout fires while waiting for headers or the body.
                let finished = match result {
                    Ok(r) => r.text().is_ok(),
                    Err(_) => false,
                };
                assert!(
                    !finished,
                    "request {i} of 600 tokens finished within its timeout"
                );
                "timeout".to_string()
            }));
        }
        for h in handles {
            h.join().expect("client thread panicked");
        }
    });
    eprintln!("storm done in {:.1}s", started.elapsed().as_secs_f64());

    // Every cut request must be aborted in the engine: 600-token requests
    // would otherwise keep it busy for minutes.
    server
        .wait_idle(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", server.metrics()));
    let aborted = server
        .metric("pagoda:request_success_total{model_name=\"storm\",finished_reason=\"abort\"}");
    assert!(
        aborted >= (CUT_STREAMS + CUT_NON_STREAMING) as f64,
        "only {aborted} aborts counted"
    );
    // Still serving.
    let v = server.post_ok(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(v["usage"]["completion_tokens"], 3);
    server.wait_idle(Duration::from_secs(10)).unwrap();
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
}
