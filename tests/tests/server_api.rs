//! End-to-end: `pagoda serve` with SmolLM2 on loopback, checked over HTTP:
//! completions and chat (streaming and not), n > 1, several prompts, seeds,
//! stop strings, logprobs, usage, prefix-cache accounting, tokenize, models,
//! metrics, and every client error the server must answer without a 500.

mod server_common;

use serde_json::{json, Value};
use server_common::{error_object, model_or_skip, run_checks, small_server_args, TestServer};

const PARIS_PROMPT: &str = "The capital of France is";

fn model_name(s: &TestServer) -> String {
    let (status, text) = s.get("/v1/models");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    v["data"][0]["id"].as_str().unwrap().to_string()
}

fn token_count(s: &TestServer, text: &str) -> u64 {
    s.post_ok("/tokenize", &json!({"prompt": text}))["count"]
        .as_u64()
        .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn greedy_completion(s: &TestServer, prompt: &str, max_tokens: u32, extra: Value) -> Value {
    let mut body = json!({"model": model_name(s), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.post_ok("/v1/completions", &body)
}

fn chat_body(s: &TestServer, question: &str, max_tokens: u32) -> Value {
    json!({
        "model": model_name(s),
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0
    })
}

/// Concatenated `choices[0].text` (or delta content) of stream chunks per index.
fn stream_texts(chunks: &[Value], chat: bool) -> std::collections::BTreeMap<u64, String> {
    let mut texts = std::collections::BTreeMap::new();
    for c in chunks {
        for choice in c["choices"].as_array().unwrap() {
            let idx = choice["index"].as_u64().unwrap();
            let piece = if chat {
                choice["delta"]["content"].as_str().unwrap_or("")
            } else {
                choice["text"].as_str().unwrap()
            };
            texts.entry(idx).or_insert_with(String::new).push_str(piece);
        }
    }
    texts
}

fn models_health_version(s: &TestServer) {
    let (status, body) = s.get("/health");
    assert_eq!(status, 200, "{body}");
    // vLLM's /ping: the same answer, on GET and POST.
    let (status, body) = s.get("/ping");
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.post("/ping", &json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, text) = s.get("/v1/models");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    // --model given as a file: served under its stem.
    let stem = server_common::smollm2_gguf().unwrap();
    let stem = stem.file_stem().unwrap().to_str().unwrap();
    assert_eq!(v["data"][0]["id"], stem);
    assert_eq!(v["data"][0]["max_model_len"], 1024);
    let (status, text) = s.get("/version");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["version"].is_string());
}

fn completion_basic(s: &TestServer) {
    let v = greedy_completion(s, PARIS_PROMPT, 8, json!({}));
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], model_name(s));
    assert!(v["created"].as_u64().unwrap().abs_diff(now()) < 120);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert!(choices[0]["logprobs"].is_null());
    let finish = choices[0]["finish_reason"].as_str().unwrap();
    assert!(finish == "length" || finish == "stop", "{finish}");
    assert!(!choices[0]["text"].as_str().unwrap().is_empty());
    let u = &v["usage"];
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap(),
        token_count(s, PARIS_PROMPT)
    );
    let completion = u["completion_tokens"].as_u64().unwrap();
    assert!(completion <= 8 && completion > 0);
    if finish == "length" {
        assert_eq!(completion, 8);
    }
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + completion
    );
    assert!(u["prompt_tokens_details"]["cached_tokens"].is_u64());
    // Greedy is deterministic.
    let again = greedy_completion(s, PARIS_PROMPT, 8, json!({}));
    assert_eq!(again["choices"][0]["text"], choices[0]["text"]);
}

fn completion_echo(s: &TestServer) {
    let plain = greedy_completion(s, PARIS_PROMPT, 4, json!({}));
    let echoed = greedy_completion(s, PARIS_PROMPT, 4, json!({"echo": true}));
    let expected = format!(
        "{PARIS_PROMPT}{}",
        plain["choices"][0]["text"].as_str().unwrap()
    );
    assert_eq!(echoed["choices"][0]["text"], expected);
    assert_eq!(echoed["usage"], plain["usage"]);
    let body = json!({"model": model_name(s), "prompt": PARIS_PROMPT, "max_tokens": 4,
                      "temperature": 0, "echo": true, "stream": true});
    let chunks = s.stream("/v1/completions", &body);
    assert_eq!(stream_texts(&chunks, false)[&0], expected);
}

fn completion_stream_matches_non_stream(s: &TestServer) {
    let full = greedy_completion(s, PARIS_PROMPT, 8, json!({}));
    let mut body = json!({"model": model_name(s), "prompt": PARIS_PROMPT, "max_tokens": 8,
                          "temperature": 0, "stream": true,
                          "stream_options": {"include_usage": true}});
    let chunks = s.stream("/v1/completions", &body);
    assert!(chunks.len() >= 2, "{chunks:?}");
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("cmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "text_completion");
    }
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"]["completion_tokens"],
        full["usage"]["completion_tokens"]
    );
    assert_eq!(
        last["usage"]["prompt_tokens"],
        full["usage"]["prompt_tokens"]
    );
    for c in rest {
        assert!(c["usage"].is_null() && c.get("usage").is_some(), "{c}");
    }
    assert_eq!(
        stream_texts(rest, false)[&0],
        full["choices"][0]["text"].as_str().unwrap()
    );
    let finals: Vec<&Value> = rest
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0]["choices"][0]["finish_reason"],
        full["choices"][0]["finish_reason"]
    );
    // Without include_usage no chunk carries a usage field.
    body.as_object_mut().unwrap().remove("stream_options");
    let chunks = s.stream("/v1/completions", &body);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

fn chat_answers_paris(s: &TestServer) {
    let v = s.post_ok(
        "/v1/chat/completions",
        &chat_body(s, "What is the capital of France?", 24),
    );
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    let content = msg["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 10);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 24);
}

fn chat_stream_matches_non_stream(s: &TestServer) {
    let body = chat_body(s, "What is the capital of France?", 12);
    let full = s.post_ok("/v1/chat/completions", &body);
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let chunks = s.stream("/v1/chat/completions", &stream_body);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert!(chunks[1..]
        .iter()
        .all(|c| c["choices"][0]["delta"].get("role").is_none()));
    assert_eq!(
        stream_texts(&chunks, true)[&0],
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let last = chunks.last().unwrap();
    assert_eq!(
        last["choices"][0]["finish_reason"],
        full["choices"][0]["finish_reason"]
    );
}

fn chat_content_parts_equal_string(s: &TestServer) {
    let plain = s.post_ok("/v1/chat/completions", &chat_body(s, "Name a colour.", 6));
    let mut parts = chat_body(s, "", 6);
    parts["messages"] =
        json!([{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]);
    let with_parts = s.post_ok("/v1/chat/completions", &parts);
    assert_eq!(
        plain["choices"][0]["message"]["content"],
        with_parts["choices"][0]["message"]["content"]
    );
    assert_eq!(
        plain["usage"]["prompt_tokens"],
        with_parts["usage"]["prompt_tokens"]
    );
}

fn max_completion_tokens_is_honoured(s: &TestServer) {
    let mut body = chat_body(s, "Tell me a long story about a dragon.", 50);
    body.as_object_mut().unwrap().remove("max_tokens");
    body["max_completion_tokens"] = json!(3);
    let v = s.post_ok("/v1/chat/completions", &body);
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

fn n_and_several_prompts(s: &TestServer) {
    let prompts = ["Once upon a time", "The weather today is"];
    let body = json!({"model": model_name(s), "prompt": prompts, "n": 2, "max_tokens": 4,
                      "temperature": 0.8, "seed": 7, "ignore_eos": true});
    let v = s.post_ok("/v1/completions", &body);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i as u64);
        assert_eq!(c["finish_reason"], "length");
    }
    let prompt_tokens: u64 = prompts.iter().map(|p| token_count(s, p)).sum();
    assert_eq!(v["usage"]["prompt_tokens"].as_u64().unwrap(), prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    // Streaming: the same four choices, each finishing once.
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let chunks = s.stream("/v1/completions", &stream_body);
    let texts = stream_texts(&chunks, false);
    assert_eq!(texts.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    for i in 0..4u64 {
        let finishes = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap())
            .filter(|c| c["index"] == i && !c["finish_reason"].is_null())
            .count();
        assert_eq!(finishes, 1, "choice {i}");
        // Seeded: the stream reproduces the non-streamed samples.
        assert_eq!(
            texts[&i],
            choices[i as usize]["text"].as_str().unwrap(),
            "choice {i}"
        );
    }
}

fn seeds_reproduce(s: &TestServer) {
    let sample = |seed: u64| {
        let body = json!({"model": model_name(s), "prompt": "My favourite food is", "max_tokens": 12,
                          "temperature": 1.0, "seed": seed, "ignore_eos": true});
        s.post_ok("/v1/completions", &body)["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let a = sample(1234);
    assert_eq!(a, sample(1234));
    let others = [sample(1), sample(2), sample(3)];
    assert!(
        others.iter().any(|o| *o != a),
        "four seeds gave the same 12 sampled tokens: {a:?}"
    );
}

fn stop_strings(s: &TestServer) {
    let reference = greedy_completion(s, PARIS_PROMPT, 16, json!({"ignore_eos": true}));
    let text = reference["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() >= 3, "reference too short: {text:?}");
    let stop = words[1];
    let cut = text.find(stop).unwrap();
    let expected = &text[..cut];
    let v = greedy_completion(
        s,
        PARIS_PROMPT,
        16,
        json!({"ignore_eos": true, "stop": [stop]}),
    );
    let c = &v["choices"][0];
    assert_eq!(c["text"], expected, "stop {stop:?} in {text:?}");
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["stop_reason"], stop);
    let v = greedy_completion(
        s,
        PARIS_PROMPT,
        16,
        json!({"ignore_eos": true, "stop": stop, "include_stop_str_in_output": true}),
    );
    assert_eq!(v["choices"][0]["text"], format!("{expected}{stop}"));
    // Streaming holds back a possible stop prefix and never sends past it.
    let body = json!({"model": model_name(s), "prompt": PARIS_PROMPT, "max_tokens": 16,
                      "temperature": 0, "ignore_eos": true, "stop": [stop], "stream": true});
    let chunks = s.stream("/v1/completions", &body);
    assert_eq!(stream_texts(&chunks, false)[&0], expected);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

fn completion_logprobs(s: &TestServer) {
    let v = greedy_completion(
        s,
        PARIS_PROMPT,
        6,
        json!({"logprobs": 3, "ignore_eos": true}),
    );
    let c = &v["choices"][0];
    let lp = &c["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tokens.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(tokens.concat(), c["text"].as_str().unwrap());
    let offsets = lp["text_offset"].as_array().unwrap();
    let mut expected_offset = 0;
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(offsets[i].as_u64().unwrap(), expected_offset);
        expected_offset += t.chars().count() as u64;
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(chosen <= 0.0);
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!((3..=4).contains(&top.len()), "{top:?}");
        let best = top
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        // Greedy: the chosen token is the most likely one.
        assert!((best - chosen).abs() < 1e-4, "{best} vs {chosen}");
    }
}

fn chat_logprobs(s: &TestServer) {
    let mut body = chat_body(s, "What is the capital of France?", 5);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let v = s.post_ok("/v1/chat/completions", &body);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut joined = String::new();
    for t in content {
        let token = t["token"].as_str().unwrap();
        joined.push_str(token);
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        let bytes: Vec<u8> = t["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, token.as_bytes());
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
    }
    assert_eq!(
        joined,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // Without logprobs: null.
    let v = s.post_ok("/v1/chat/completions", &chat_body(s, "Hi", 2));
    assert!(v["choices"][0]["logprobs"].is_null());
}

fn prefix_cache_reports_cached_tokens(s: &TestServer) {
    let prompt = "Pagoda is a serving engine. ".repeat(12);
    let first = greedy_completion(s, &prompt, 1, json!({}));
    // The counters move once per request (its prompt), not once per step.
    let label = format!("{{model_name=\"{}\"}}", model_name(s));
    let counters = || {
        s.wait_idle(std::time::Duration::from_secs(10)).unwrap();
        (
            s.metric(&format!("pagoda:prefix_cache_queries_total{label}")),
            s.metric(&format!("pagoda:prefix_cache_hits_total{label}")),
        )
    };
    let (queries, hits) = counters();
    let second = greedy_completion(s, &prompt, 5, json!({"ignore_eos": true}));
    let (queries_after, hits_after) = counters();
    let prompt_tokens = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(prompt_tokens > 64, "{prompt_tokens}");
    assert!(
        cached >= 48 && cached < prompt_tokens,
        "cached {cached} of {prompt_tokens}; first {first}"
    );
    assert_eq!(queries_after - queries, prompt_tokens as f64);
    assert_eq!(hits_after - hits, cached as f64);
}

/// The client's X-Request-Id comes back and names the request in the log.
fn request_id_is_echoed_and_logged(s: &TestServer) {
    let id = "client-req-7f3a";
    let r = reqwest::blocking::Client::new()
        .post(s.url("/v1/completions"))
        .header("x-request-id", id)
        .json(&json!({"model": model_name(s), "prompt": "Hi", "max_tokens": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], id);
    let _ = r.text();
    let start = std::time::Instant::now();
    let logged = loop {
        let log = s.log();
        let line = log
            .lines()
            .find(|l| l.contains(id) && l.contains("Finished request"))
            .map(str::to_owned);
        if line.is_some() || start.elapsed() > std::time::Duration::from_secs(10) {
            break line;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(logged.is_some(), "no log line names {id}:\n{}", s.log());
    // Errors echo it too.
    let r = reqwest::blocking::Client::new()
        .get(s.url("/v1/nowhere"))
        .header("x-request-id", id)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], id);
}

fn tokenize_and_detokenize(s: &TestServer) {
    let v = s.post_ok("/tokenize", &json!({"prompt": "Hello world, héllo 世界"}));
    let tokens = v["tokens"].as_array().unwrap().clone();
    assert_eq!(v["count"].as_u64().unwrap(), tokens.len() as u64);
    assert_eq!(v["max_model_len"], 1024);
    let d = s.post_ok("/detokenize", &json!({"tokens": tokens}));
    assert_eq!(d["prompt"], "Hello world, héllo 世界");
    let chat = s.post_ok(
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "Hello world, héllo 世界"}]}),
    );
    assert!(chat["count"].as_u64().unwrap() > v["count"].as_u64().unwrap());
    let with_strs = s.post_ok(
        "/tokenize",
        &json!({"prompt": "Hello world", "return_token_strs": true}),
    );
    assert_eq!(
        with_strs["token_strs"].as_array().unwrap().concat_strings(),
        "Hello world"
    );
    let (status, body) = s.post("/detokenize", &json!({"tokens": [99999999]}));
    assert_eq!(status, 400);
    error_object(&body);
    let (status, body) = s.post("/tokenize", &json!({}));
    assert_eq!(status, 400);
    error_object(&body);
}

trait ConcatStrings {
    fn concat_strings(&self) -> String;
}

impl ConcatStrings for Vec<Value> {
    fn concat_strings(&self) -> String {
        self.iter().map(|v| v.as_str().unwrap()).collect()
    }
}

fn metrics_after_traffic(s: &TestServer) {
    let text = s.metrics();
    let label = format!("{{model_name=\"{}\"}}", model_name(s));
    for name in [
        "num_requests_running",
        "num_requests_waiting",
        "kv_cache_usage_perc",
        "prompt_tokens_total",
        "generation_tokens_total",
        "num_preemptions_total",
        "prefix_cache_queries_total",
        "prefix_cache_hits_total",
        "time_to_first_token_seconds_count",
        "inter_token_latency_seconds_count",
        "e2e_request_latency_seconds_count",
        "request_queue_time_seconds_count",
    ] {
        // vLLM's names too: what routers and dashboards scrape.
        for prefix in ["pagoda", "vllm"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{prefix}:{name}{label} "))),
                "{prefix}:{name}{label} missing from\n{text}"
            );
        }
    }
    let cache_info = text
        .lines()
        .find(|l| l.starts_with("vllm:cache_config_info{"))
        .unwrap_or_else(|| panic!("no vllm:cache_config_info in\n{text}"));
    assert!(
        cache_info.contains("block_size=\"16\"")
            && cache_info.contains("num_gpu_blocks=\"")
            // `--kv-cache-dtype auto` on a GGUF: f16, as llama.cpp.
            && cache_info.contains("cache_dtype=\"float16\""),
        "{cache_info}"
    );
    assert!(s.metric(&format!("pagoda:prompt_tokens_total{label}")) > 0.0);
    assert!(s.metric(&format!("pagoda:generation_tokens_total{label}")) > 0.0);
    assert!(s.metric(&format!("pagoda:prefix_cache_hits_total{label}")) > 0.0);
    assert!(s.metric(&format!("pagoda:time_to_first_token_seconds_count{label}")) > 0.0);
    assert!(s.metric(&format!("pagoda:inter_token_latency_seconds_count{label}")) > 0.0);
    assert!(s.metric("pagoda:request_success_total{") > 0.0);
    assert!(text.contains("finished_reason=\"length\""), "{text}");
    assert!(text.contains("finished_reason=\"stop\""), "{text}");
    s.wait_idle(std::time::Duration::from_secs(10)).unwrap();
}

/// POSTs `body` and checks an OpenAI error with `status` (and `param`).
fn expect_error(
    s: &TestServer,
    path: &str,
    body: Value,
    status: u16,
    param: Option<&str>,
) -> Value {
    let (got, v) = s.post(path, &body);
    assert_eq!(got, status, "{path} {body} -> {v}");
    let e = error_object(&v).clone();
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body} -> {v}");
    }
    e
}

fn raw_post(s: &TestServer, path: &str, body: Vec<u8>) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().unwrap()).unwrap_or(Value::Null),
    )
}

fn errors_invalid_json_and_types(s: &TestServer) {
    for body in [
        &b"{bad"[..],
        b"",
        b"[1, 2]",
        b"{\"prompt\": \"x\"} trailing",
        b"{\"prompt\": \"a\xff\xfe\"}",
    ] {
        let (status, v) = raw_post(s, "/v1/completions", body.to_vec());
        assert_eq!(status, 400, "{body:?} -> {v}");
        error_object(&v);
    }
    let deep = format!(
        "{{\"prompt\": {}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (status, v) = raw_post(s, "/v1/completions", deep.into_bytes());
    assert_eq!(status, 400, "{v}");
    error_object(&v);
    let c = "/v1/completions";
    expect_error(
        s,
        c,
        json!({"prompt": "x", "max_tokens": "abc"}),
        400,
        Some("max_tokens"),
    );
    expect_error(s, c, json!({"prompt": "x", "n": 1.5}), 400, Some("n"));
    expect_error(s, c, json!({"prompt": 5}), 400, Some("prompt"));
    expect_error(s, c, json!({"max_tokens": 3}), 400, None);
    expect_error(
        s,
        "/v1/chat/completions",
        json!({"messages": "hi"}),
        400,
        Some("messages"),
    );
    expect_error(
        s,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        400,
        None,
    );
    expect_error(s, "/v1/chat/completions", json!({"prompt": "x"}), 400, None);
}

fn errors_invalid_values(s: &TestServer) {
    let c = "/v1/completions";
    let cases = [
        (json!({"prompt": "x", "temperature": -1}), "temperature"),
        (json!({"prompt": "x", "top_p": 0}), "top_p"),
        (json!({"prompt": "x", "n": 0}), "n"),
        (json!({"prompt": "x", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "x", "logprobs": 30}), "logprobs"),
        (
            json!({"prompt": "x", "logit_bias": {"abc": 1}}),
            "logit_bias",
        ),
        (
            json!({"prompt": "x", "logit_bias": {"5": 1000}}),
            "logit_bias",
        ),
        (
            json!({"prompt": "x", "stop_token_ids": [99999999]}),
            "stop_token_ids",
        ),
        (
            json!({"prompt": "x", "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"prompt": "x", "repetition_penalty": 0}),
            "repetition_penalty",
        ),
        (json!({"prompt": []}), "prompt"),
        (json!({"prompt": [[99999999]]}), "prompt"),
        (json!({"prompt": vec![vec![1]; 600], "n": 2}), "prompt"),
        (
            json!({"prompt": "x", "max_tokens": 0, "echo": false}),
            "max_tokens",
        ),
    ];
    for (body, param) in cases {
        expect_error(s, c, body, 400, Some(param));
    }
    let chat = "/v1/chat/completions";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    expect_error(
        s,
        chat,
        json!({"messages": msgs, "top_logprobs": 2}),
        400,
        Some("top_logprobs"),
    );
    expect_error(
        s,
        chat,
        json!({"messages": msgs, "max_completion_tokens": 0}),
        400,
        Some("max_completion_tokens"),
    );
    expect_error(s, chat, json!({"messages": []}), 400, Some("messages"));
}

fn errors_context_length(s: &TestServer) {
    let long = "hello ".repeat(1200);
    let len = token_count(s, &long);
    assert!(len > 1024);
    let e = expect_error(
        s,
        "/v1/completions",
        json!({"prompt": long}),
        400,
        Some("prompt"),
    );
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("1024") && msg.contains(&len.to_string()),
        "{msg}"
    );
    assert_eq!(e["code"], "context_length_exceeded");
    let e = expect_error(
        s,
        "/v1/completions",
        json!({"prompt": PARIS_PROMPT, "max_tokens": 1020}),
        400,
        Some("max_tokens"),
    );
    assert!(e["message"].as_str().unwrap().contains("1024"), "{e}");
    let e = expect_error(
        s,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": long}]}),
        400,
        Some("messages"),
    );
    assert!(e["message"].as_str().unwrap().contains("1024"), "{e}");
}

fn errors_not_found_method_and_size(s: &TestServer) {
    let e = expect_error(
        s,
        "/v1/completions",
        json!({"model": "gpt-17", "prompt": "x"}),
        404,
        Some("model"),
    );
    assert_eq!(e["code"], "model_not_found");
    expect_error(
        s,
        "/v1/chat/completions",
        json!({"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}),
        404,
        Some("model"),
    );
    expect_error(s, "/v1/nowhere", json!({}), 404, None);
    let (status, text) = s.get("/v1/completions");
    assert_eq!(status, 405);
    error_object(&serde_json::from_str(&text).unwrap());
    let (status, v) = s.post("/health", &json!({}));
    assert_eq!(status, 405);
    error_object(&v);
    // Over the default 4 MiB limit.
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(5 << 20));
    let (status, v) = raw_post(s, "/v1/completions", big.into_bytes());
    assert_eq!(status, 413, "{v}");
    error_object(&v);
    // The server is unharmed.
    let v = greedy_completion(s, PARIS_PROMPT, 2, json!({}));
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[test]
fn server_api_end_to_end() {
    let Some(model) = model_or_skip("server_api_end_to_end") else {
        return;
    };
    let server = TestServer::start(&small_server_args(&model), &[]);
    run_checks(
        &server,
        &[
            ("models_health_version", models_health_version),
            ("completion_basic", completion_basic),
            ("completion_echo", completion_echo),
            (
                "completion_stream_matches_non_stream",
                completion_stream_matches_non_stream,
            ),
            ("chat_answers_paris", chat_answers_paris),
            (
                "chat_stream_matches_non_stream",
                chat_stream_matches_non_stream,
            ),
            (
                "chat_content_parts_equal_string",
                chat_content_parts_equal_string,
            ),
            (
                "max_completion_tokens_is_honoured",
                max_completion_tokens_is_honoured,
            ),
            ("n_and_several_prompts", n_and_several_prompts),
            ("seeds_reproduce", seeds_reproduce),
            ("stop_strings", stop_strings),
            ("completion_logprobs", completion_logprobs),
            ("chat_logprobs", chat_logprobs),
            (
                "prefix_cache_reports_cached_tokens",
                prefix_cache_reports_cached_tokens,
            ),
            ("tokenize_and_detokenize", tokenize_and_detokenize),
            (
                "request_id_is_echoed_and_logged",
                request_id_is_echoed_and_logged,
            ),
            (
                "errors_invalid_json_and_types",
                errors_invalid_json_and_types,
            ),
            ("errors_invalid_values", errors_invalid_values),
            ("errors_context_length", errors_context_length),
            (
                "errors_not_found_method_and_size",
                errors_not_found_method_and_size,
            ),
            ("metrics_after_traffic", metrics_after_traffic),
        ],
    );
}
