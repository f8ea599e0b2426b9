//! End-to-end: the API key (from PAGODA_API_KEY), --served-model-name, 503
//! with Retry-After when the waiting queue is full, and graceful shutdown on
//! SIGTERM (short requests finish, long ones are aborted after
//! --shutdown-timeout, exit status 0).

mod server_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};
use server_common::{
    drain, error_object, model_or_skip, parse_sse, read_events, set_flag, small_server_args,
    TestServer,
};

const KEY: &str = "sekrit-key";
const NAME: &str = "my-smol";

fn keyed_client(key: &str) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

fn completion_body(max_tokens: u32, stream: bool) -> Value {
    json!({"model": NAME, "prompt": "Once upon a time", "max_tokens": max_tokens,
           "ignore_eos": true, "temperature": 0, "stream": stream})
}

fn api_key_is_required(s: &TestServer) {
    let anonymous = Client::new();
    let wrong = keyed_client("not-the-key");
    let right = keyed_client(KEY);
    for client in [&anonymous, &wrong] {
        for (method, path) in [
            ("GET", "/v1/models"),
            ("POST", "/v1/completions"),
            ("POST", "/tokenize"),
            ("GET", "/version"),
        ] {
            let r = if method == "GET" {
                client.get(s.url(path)).send()
            } else {
                client
                    .post(s.url(path))
                    .json(&completion_body(2, false))
                    .send()
            }
            .unwrap();
            assert_eq!(r.status(), 401, "{method} {path}");
            let v: Value = r.json().unwrap();
            assert_eq!(error_object(&v)["code"], "invalid_api_key");
        }
    }
    // Open routes.
    assert_eq!(
        anonymous.get(s.url("/health")).send().unwrap().status(),
        200
    );
    assert_eq!(anonymous.get(s.url("/ping")).send().unwrap().status(), 200);
    assert_eq!(
        anonymous.get(s.url("/metrics")).send().unwrap().status(),
        200
    );
    // With the key.
    let v: Value = right
        .get(s.url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["data"][0]["id"], NAME);
    let r = right
        .post(s.url("/v1/completions"))
        .json(&completion_body(2, false))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["model"], NAME);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    // The file's name is not a served name.
    let mut other = completion_body(2, false);
    other["model"] = json!("SmolLM2-135M-Instruct.Q4_1");
    let r = right
        .post(s.url("/v1/completions"))
        .json(&other)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// With one running slot and one waiting slot taken, the next request gets
/// 503 + Retry-After, streaming or not.
fn full_queue_gives_503(s: &TestServer) {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let hold = || {
            let mut r = keyed_client(KEY)
                .post(s.url("/v1/completions"))
                .json(&completion_body(900, true))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            while !stop.load(Ordering::SeqCst) {
                if read_events(&mut r, 1) == 0 {
                    break;
                }
            }
        };
        let running = scope.spawn(hold);
        wait_for(s, |running, waiting| running == 1.0 && waiting == 0.0);
        let waiting = scope.spawn(hold);
        wait_for(s, |running, waiting| running == 1.0 && waiting == 1.0);
        let client = keyed_client(KEY);
        for stream in [false, true] {
            let r = client
                .post(s.url("/v1/completions"))
                .json(&completion_body(4, stream))
                .send()
                .unwrap();
            assert_eq!(r.status(), 503, "stream {stream}");
            assert_eq!(r.headers()["retry-after"], "1");
            let v: Value = r.json().unwrap();
            assert_eq!(error_object(&v)["code"], "queue_full");
        }
        stop.store(true, Ordering::SeqCst);
        running.join().unwrap();
        waiting.join().unwrap();
    });
    s.wait_idle(Duration::from_secs(20)).unwrap();
}

fn wait_for(s: &TestServer, ok: impl Fn(f64, f64) -> bool) {
    let start = Instant::now();
    loop {
        let running = s.metric("pagoda:num_requests_running{");
        let waiting = s.metric("pagoda:num_requests_waiting{");
        if ok(running, waiting) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stuck at running {running}, waiting {waiting}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn server_config_end_to_end() {
    let Some(model) = model_or_skip("server_config_end_to_end") else {
        return;
    };
    let mut args = small_server_args(&model);
    set_flag(&mut args, "--max-num-seqs", "1");
    set_flag(&mut args, "--max-waiting-requests", "1");
    set_flag(&mut args, "--served-model-name", NAME);
    set_flag(&mut args, "--shutdown-timeout", "3");
    let mut server = TestServer::start(&args, &[("PAGODA_API_KEY", KEY)]);
    server_common::run_checks(
        &server,
        &[
            ("api_key_is_required", api_key_is_required),
            ("full_queue_gives_503", full_queue_gives_503),
        ],
    );

    // Graceful shutdown: a short request in flight finishes, a long one is
    // aborted when --shutdown-timeout (3 s) runs out, and the exit status is 0.
    let url = server.url("/v1/completions");
    let short = {
        let url = url.clone();
        thread::spawn(move || {
            drain(
                keyed_client(KEY)
                    .post(url)
                    .json(&completion_body(8, true))
                    .send()
                    .unwrap(),
            )
        })
    };
    wait_for(&server, |running, _| running == 1.0);
    let long = {
        let url = url.clone();
        thread::spawn(move || {
            drain(
                keyed_client(KEY)
                    .post(url)
                    .json(&completion_body(900, true))
                    .send()
                    .unwrap(),
            )
        })
    };
    wait_for(&server, |running, waiting| running + waiting == 2.0);
    let signalled = Instant::now();
    let status = server.terminate(Duration::from_secs(30));
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("no exit 30 s after SIGTERM\n{}", server.log()));
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    assert!(
        took >= Duration::from_secs(2),
        "exited after {took:?}, before the timeout"
    );
    let short_chunks = parse_sse(&short.join().unwrap());
    assert_eq!(
        short_chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length",
        "{short_chunks:?}"
    );
    let long_body = long.join().unwrap();
    assert!(
        long_body.contains("\"error\"") && long_body.trim_end().ends_with("data: [DONE]"),
        "the aborted stream should end with an error chunk and [DONE]: {long_body}"
    );
    // Nothing listens any more.
    assert!(Client::new().get(server.url("/health")).send().is_err());
    let log = server.log();
    assert!(log.contains("SIGTERM"), "{log}");
}
