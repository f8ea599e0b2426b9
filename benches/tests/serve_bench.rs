//! `bench serve` end to end against a tiny in-process OpenAI-compatible
//! server: this checks the client (dataset, arrivals, streaming, timing,
//! metrics, report), not Pagoda's server. The server's tokenizer maps each
//! word to an id (`t<id>` spells id back), so lengths are checkable.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use futures::StreamExt;
use pagoda_benches::serve::{run_benchmark, ServeArgs};
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Vllm,
    LlamaCpp,
    /// No /tokenize at all.
    None,
}

struct Fake {
    dialect: Dialect,
    /// Every n-th generation request answers 500.
    fail_every: Option<usize>,
    send_usage: bool,
    token_delay: Duration,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
}

fn encode(text: &str, bos: bool) -> Vec<u64> {
    let mut ids: Vec<u64> = bos.then_some(1).into_iter().collect();
    for w in text.split_whitespace() {
        let id = match w.strip_prefix('t').and_then(|n| n.parse::<u64>().ok()) {
            Some(id) => id,
            None => {
                10 + w
                    .bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
                    % 5000
            }
        };
        ids.push(id);
    }
    ids
}

fn decode(ids: &[Value]) -> String {
    ids.iter()
        .map(|i| format!("t{}", i.as_u64().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "tiny", "object": "model", "root": "org/tiny-root"}]}),
    )
}

async fn tokenize(State(s): State<Arc<Fake>>, Json(b): Json<Value>) -> Response {
    match s.dialect {
        Dialect::Vllm => {
            let Some(prompt) = b["prompt"].as_str() else {
                return (StatusCode::BAD_REQUEST, "prompt missing").into_response();
            };
            let ids = encode(prompt, b["add_special_tokens"].as_bool().unwrap_or(true));
            Json(json!({"tokens": ids, "count": ids.len(), "max_model_len": 4096})).into_response()
        }
        // Like llama-server: a body without "content" gets an empty list.
        Dialect::LlamaCpp => {
            let ids = b["content"]
                .as_str()
                .map(|c| encode(c, b["add_special"].as_bool().unwrap_or(false)))
                .unwrap_or_default();
            Json(json!({"tokens": ids})).into_response()
        }
        Dialect::None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn detokenize(State(s): State<Arc<Fake>>, Json(b): Json<Value>) -> Response {
    let text = decode(
        b["tokens"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    match s.dialect {
        Dialect::Vllm => Json(json!({"prompt": text})).into_response(),
        Dialect::LlamaCpp => Json(json!({"content": text})).into_response(),
        Dialect::None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn generate(State(s): State<Arc<Fake>>, chat: bool, Json(b): Json<Value>) -> Response {
    s.bodies.lock().unwrap().push(b.clone());
    let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if s.fail_every.is_some_and(|k| n % k == 0) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    let prompt_tokens = if chat {
        encode(b["messages"][0]["content"].as_str().unwrap_or(""), true).len() + 3
    } else {
        encode(b["prompt"].as_str().unwrap_or(""), true).len()
    };
    let max_tokens = b["max_tokens"].as_u64().unwrap_or(16) as usize;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Bytes>();
    let state = s.clone();
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::spawn(async move {
        for i in 0..max_tokens {
            tokio::time::sleep(state.token_delay).await;
            let chunk = if chat {
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": format!("t{i} ")}, "finish_reason": null}]})
            } else {
                json!({"object": "text_completion", "choices": [{"index": 0, "text": format!("t{i} "), "finish_reason": null}]})
            };
            let _ = tx.unbounded_send(Bytes::from(format!("data: {chunk}\n\n")));
        }
        if state.send_usage {
            let usage = json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens}});
            let _ = tx.unbounded_send(Bytes::from(format!("data: {usage}\n\n")));
        }
        let _ = tx.unbounded_send(Bytes::from_static(b"data: [DONE]\n\n"));
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(rx.map(Ok::<_, Infallible>)))
        .unwrap()
}

async fn start(fake: Fake) -> (SocketAddr, Arc<Fake>) {
    let state = Arc::new(fake);
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/v1/completions", post(|s, b| generate(s, false, b)))
        .route("/v1/chat/completions", post(|s, b| generate(s, true, b)))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Without TCP_NODELAY, Nagle holds small SSE writes for the peer's
    // delayed ACK (~40 ms) and tokens arrive in bursts.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

fn fake(dialect: Dialect) -> Fake {
    Fake {
        dialect,
        fail_every: None,
        send_usage: true,
        token_delay: Duration::from_millis(4),
        requests: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        bodies: Mutex::new(Vec::new()),
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

fn args(addr: SocketAddr, extra: &[&str]) -> ServeArgs {
    let url = format!("http://{addr}");
    let mut argv = vec!["bench", "--base-url", &url, "--disable-tqdm"];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().args
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagoda-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn lens(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_vllm_tokenize_and_concurrency_cap() {
    let (addr, server) = start(fake(Dialect::Vllm)).await;
    let dir = temp_dir("completions");
    let a = args(
        addr,
        &[
            "--num-prompts",
            "12",
            "--random-input-len",
            "20",
            "--random-output-len",
            "6",
            "--random-range-ratio",
            "0.5",
            "--max-concurrency",
            "4",
            "--save-result",
            "--result-dir",
            dir.to_str().unwrap(),
            "--seed",
            "3",
        ],
    );
    let r = run_benchmark(&a).await.unwrap();
    assert_eq!(r["completed"], 12);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["model_id"], "org/tiny-root");
    assert_eq!(r["backend"], "openai");
    assert_eq!(r["request_rate"], "inf");
    assert_eq!(r["max_concurrency"], 4);

    // Input lengths as the server counts them, inside the requested range:
    // 20 less one BOS is 19, so 1 + [9, 29].
    let input_lens = lens(&r["input_lens"]);
    assert!(
        input_lens.iter().all(|&n| (10..=30).contains(&n)),
        "{input_lens:?}"
    );
    assert!(
        input_lens.iter().any(|&n| n != input_lens[0]),
        "lengths should vary"
    );
    let output_lens = lens(&r["output_lens"]);
    assert!(
        output_lens.iter().all(|&n| (3..=9).contains(&n)),
        "{output_lens:?}"
    );
    assert_eq!(r["total_output_tokens"], output_lens.iter().sum::<usize>());
    assert_eq!(r["total_input_tokens"], input_lens.iter().sum::<usize>());

    // One ITL per token after the first; the text is what was streamed.
    for (i, itl) in r["itls"].as_array().unwrap().iter().enumerate() {
        assert_eq!(itl.as_array().unwrap().len(), output_lens[i] - 1);
        assert!(r["generated_texts"][i]
            .as_str()
            .unwrap()
            .starts_with("t0 t1 t2 "));
    }
    // Tokens arrive 4 ms apart: TPOT and ITL cannot be below that.
    assert!(
        r["mean_tpot_ms"].as_f64().unwrap() >= 3.5,
        "{}",
        r["mean_tpot_ms"]
    );
    assert!(r["median_itl_ms"].as_f64().unwrap() >= 3.5);
    assert!(r["mean_ttft_ms"].as_f64().unwrap() >= 3.5);
    assert!(r["p99_e2el_ms"].as_f64().unwrap() >= r["median_e2el_ms"].as_f64().unwrap());
    assert!(server.max_in_flight.load(Ordering::SeqCst) <= 4);
    // vLLM's peak counts the requests active in each second, not at one
    // instant: a run shorter than a second has all 12 in second 0.
    let peak = r["max_concurrent_requests"].as_u64().unwrap();
    if r["duration"].as_f64().unwrap() < 1.0 {
        assert_eq!(peak, 12);
    } else {
        assert!((4..=12).contains(&peak), "{peak}");
    }

    // What the server was sent: vLLM's body, EOS ignored on the random dataset.
    let bodies = server.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 12);
    for b in &bodies {
        assert_eq!(b["model"], "tiny");
        assert_eq!(b["stream"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
    }
    let mut sent: Vec<u64> = bodies
        .iter()
        .map(|b| b["max_tokens"].as_u64().unwrap())
        .collect();
    let mut want: Vec<u64> = output_lens.iter().map(|&n| n as u64).collect();
    sent.sort();
    want.sort();
    assert_eq!(sent, want);

    // The saved file carries the same JSON under vLLM's file name.
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("openai-infqps-concurrency4-tiny-root-") && name.ends_with(".json"),
        "{name}"
    );
    let saved: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(saved["completed"], 12);
    assert_eq!(saved["ttfts"], r["ttfts"]);
    std::fs::remove_dir_all(&dir).unwrap();

    // The same seed gives the same prompts.
    let again = run_benchmark(&a).await.unwrap();
    assert_eq!(again["input_lens"], r["input_lens"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_with_llama_cpp_tokenize_poisson_arrivals_and_no_usage() {
    let mut f = fake(Dialect::LlamaCpp);
    f.send_usage = false;
    let (addr, server) = start(f).await;
    let a = args(
        addr,
        &[
            "--endpoint",
            "/v1/chat/completions",
            "--num-prompts",
            "10",
            "--input-len",
            "16",
            "--output-len",
            "5",
            "--request-rate",
            "40",
            "--model",
            "tiny",
            "--temperature",
            "0",
        ],
    );
    let r = run_benchmark(&a).await.unwrap();
    assert_eq!(r["completed"], 10);
    assert_eq!(r["backend"], "openai-chat");
    assert_eq!(r["request_rate"], 40.0);
    // No usage from the server: outputs are counted with its tokenizer.
    assert_eq!(lens(&r["output_lens"]), vec![5; 10]);
    // The last request is sent at 10 / 40 = 0.25 s.
    assert!(r["duration"].as_f64().unwrap() >= 0.25);
    let starts: Vec<f64> = r["start_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1] + 1e-3));
    assert!(*starts.last().unwrap() >= 0.24);
    let bodies = server.bodies.lock().unwrap().clone();
    for b in &bodies {
        assert_eq!(b["max_completion_tokens"], 5);
        assert_eq!(b["temperature"], 0.0);
        // 16 tokens with the BOS the server adds: 15 words.
        let words = b["messages"][0]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count();
        assert_eq!(words, 15);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_are_counted_not_fatal() {
    let mut f = fake(Dialect::Vllm);
    f.fail_every = Some(3);
    let (addr, _server) = start(f).await;
    let a = args(
        addr,
        &[
            "--num-prompts",
            "9",
            "--random-input-len",
            "8",
            "--random-output-len",
            "3",
        ],
    );
    let r = run_benchmark(&a).await.unwrap();
    assert_eq!(r["completed"], 6);
    assert_eq!(r["failed"], 3);
    let errors: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.iter().filter(|e| e.contains("HTTP 500")).count(), 3);
    assert_eq!(
        lens(&r["output_lens"]).iter().filter(|&&n| n == 0).count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tokenize_needs_a_local_tokenizer() {
    let (addr, _server) = start(fake(Dialect::None)).await;
    let a = args(
        addr,
        &[
            "--num-prompts",
            "2",
            "--tokenizer",
            "/nonexistent/tokenizer.json",
        ],
    );
    let err = run_benchmark(&a).await.unwrap_err().to_string();
    assert!(err.contains("--tokenizer"), "{err}");
    let a = args(addr, &["--num-prompts", "2"]);
    let err = run_benchmark(&a).await.unwrap_err().to_string();
    assert!(err.contains("--tokenizer"), "{err}");
}

/// A word-level `tokenizer.json` with a BOS added to every encoding:
/// words `w0`..`w199`, `<s>` special.
fn write_word_level_tokenizer(dir: &std::path::Path) -> PathBuf {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<s>".into(), json!(0));
    vocab.insert("<unk>".into(), json!(1));
    for i in 0..200 {
        vocab.insert(format!("w{i}"), json!(i + 2));
    }
    let bos = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tokenizer_replaces_the_servers() {
    let (addr, server) = start(fake(Dialect::None)).await;
    let dir = temp_dir("local-tokenizer");
    let path = write_word_level_tokenizer(&dir);
    let a = args(
        addr,
        &[
            "--num-prompts",
            "5",
            "--input-len",
            "12",
            "--output-len",
            "3",
            "--tokenizer",
            path.to_str().unwrap(),
        ],
    );
    let r = run_benchmark(&a).await.unwrap();
    assert_eq!(r["completed"], 5);
    assert_eq!(r["tokenizer_id"], path.to_str().unwrap());
    // 12 tokens with the BOS: 11 vocabulary words, never the special token.
    assert_eq!(lens(&r["input_lens"]), vec![12; 5]);
    for b in server.bodies.lock().unwrap().iter() {
        let words: Vec<&str> = b["prompt"].as_str().unwrap().split_whitespace().collect();
        assert_eq!(words.len(), 11);
        assert!(words.iter().all(|w| w.starts_with('w')), "{words:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
