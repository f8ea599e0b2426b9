//! End-to-end: no request field is dropped silently, and the API pieces
//! evaluation harnesses send work. The official `openai` package's request
//! types are walked field by field: each must have a decision in
//! `pagoda_server::request_fields`, each unsupported one must be refused
//! with a 400 naming it, each ignored one accepted (and logged). Then
//! `stream_options.continuous_usage_stats`, vLLM's `prompt_logprobs`, and
//! lm-eval's loglikelihood request (`echo` + `logprobs` + `max_tokens: 0`),
//! whose prompt logprobs must equal the logprobs `pagoda generate` reports
//! for the same tokens when it generates them.

mod server_common;

use std::process::Command;

use pagoda_server::request_fields::{field_policy, known_fields, Endpoint, FieldPolicy};
use serde_json::{json, Value};
use server_common::{
    error_object, model_or_skip, pagoda_bin, python_imports, run_checks, small_server_args,
    smollm2_gguf, TestServer,
};

const PROMPT: &str = "The capital of France is";

/// The request fields of the installed `openai` package, per endpoint.
fn sdk_fields() -> Option<(Vec<String>, Vec<String>)> {
    if !python_imports("openai") {
        eprintln!(
            "\n*** SKIPPED the openai SDK field walk: `pip install openai` (CI installs it). ***\n"
        );
        return None;
    }
    let script = r#"
import json
from openai.types import completion_create_params as c
from openai.types.chat import completion_create_params as cc
keys = lambda t: sorted(set(t.__required_keys__) | set(t.__optional_keys__))
print(json.dumps([keys(c.CompletionCreateParamsBase), keys(cc.CompletionCreateParamsBase)]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |i: usize| -> Vec<String> {
        v[i].as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    Some((names(0), names(1)))
}

fn path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Completions => "/v1/completions",
        Endpoint::ChatCompletions => "/v1/chat/completions",
    }
}

fn base_body(endpoint: Endpoint) -> Value {
    match endpoint {
        Endpoint::Completions => json!({"prompt": PROMPT, "max_tokens": 2, "temperature": 0}),
        Endpoint::ChatCompletions => json!({
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0
        }),
    }
}

fn every_sdk_field_has_a_decision(s: &TestServer) {
    let Some((completions, chat)) = sdk_fields() else {
        return;
    };
    assert!(
        completions.contains(&"prompt".to_string()),
        "{completions:?}"
    );
    assert!(chat.contains(&"messages".to_string()), "{chat:?}");
    for (endpoint, fields) in [
        (Endpoint::Completions, completions),
        (Endpoint::ChatCompletions, chat),
    ] {
        let undecided: Vec<_> = fields
            .iter()
            .filter(|f| field_policy(endpoint, f).is_none())
            .collect();
        assert!(
            undecided.is_empty(),
            "{endpoint:?}: the openai SDK sends {undecided:?}, which Pagoda has no decision for \
             (add them to server/src/request_fields.rs)"
        );
        for field in known_fields(endpoint) {
            let mut body = base_body(endpoint);
            match field_policy(endpoint, field).unwrap() {
                FieldPolicy::Honoured => continue,
                FieldPolicy::Unsupported { .. } => {
                    body[field] = json!({"set_by": "pagoda test"});
                    let (status, v) = s.post(path(endpoint), &body);
                    assert_eq!(status, 400, "{endpoint:?} {field}: {v}");
                    let e = error_object(&v);
                    assert_eq!(e["param"], field, "{v}");
                    assert!(e["message"].as_str().unwrap().contains(field), "{v}");
                }
                FieldPolicy::Ignored => {
                    body[field] = json!({"set_by": "pagoda test"});
                    let (status, v) = s.post(path(endpoint), &body);
                    assert_eq!(status, 200, "{endpoint:?} {field}: {v}");
                }
            }
        }
    }
    assert!(
        s.log().contains("present in the request but ignored"),
        "ignored fields are not logged"
    );
}

fn what_clients_send_is_refused_not_dropped(s: &TestServer) {
    let chat = base_body(Endpoint::ChatCompletions);
    for (field, value) in [
        ("response_format", json!({"type": "nonsense"})),
        ("tools", json!("x")),
        ("tool_choice", json!("required")),
        ("guided_decoding_backend", json!("outlines")),
        ("structural_tag", json!("{}")),
    ] {
        let mut body = chat.clone();
        body[field] = value;
        let (status, v) = s.post("/v1/chat/completions", &body);
        assert_eq!(status, 400, "{v}");
        // The field, or a path inside it (`response_format.type`).
        let param = error_object(&v)["param"].as_str().unwrap().to_string();
        assert!(param.starts_with(field), "{field}: {v}");
    }
    // Values that change nothing pass, as clients send them by default.
    let mut body = chat;
    body["response_format"] = json!({"type": "text"});
    body["tool_choice"] = json!("none");
    body["parallel_tool_calls"] = json!(true);
    body["use_beam_search"] = json!(false);
    s.post_ok("/v1/chat/completions", &body);
    let mut body = base_body(Endpoint::Completions);
    body["suffix"] = json!(" and that is all.");
    let (status, v) = s.post("/v1/completions", &body);
    assert_eq!(
        (status, &error_object(&v)["param"]),
        (400, &json!("suffix"))
    );
}

fn continuous_usage_stats_on_every_chunk(s: &TestServer) {
    for endpoint in [Endpoint::Completions, Endpoint::ChatCompletions] {
        let mut body = base_body(endpoint);
        body["max_tokens"] = json!(4);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true, "continuous_usage_stats": true});
        let chunks = s.stream(path(endpoint), &body);
        assert!(chunks.len() >= 3, "{chunks:?}");
        let mut last_completion = 0;
        for c in &chunks {
            let u = &c["usage"];
            assert!(u.is_object(), "{endpoint:?}: a chunk without usage: {c}");
            let completion = u["completion_tokens"].as_u64().unwrap();
            assert!(completion >= last_completion, "{chunks:?}");
            assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
            last_completion = completion;
        }
        assert_eq!(last_completion, 4, "{chunks:?}");
        // Without the flag, only the last chunk has it.
        body["stream_options"] = json!({"include_usage": true});
        let chunks = s.stream(path(endpoint), &body);
        let with_usage = chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(with_usage, 1, "{chunks:?}");
    }
}

/// `pagoda generate --json`: prompt ids, output ids, each output token's
/// top logprobs (greedy, so the first entry is the token).
fn generate(model: &str, max_tokens: u32) -> (Vec<u64>, Vec<u64>, Vec<f64>) {
    let out = Command::new(pagoda_bin())
        .args([
            "generate",
            "--model",
            model,
            "--prompt",
            PROMPT,
            "--temperature",
            "0",
            // The server's mode (`small_server_args`).
            "--cpu-matmul",
            "exact",
        ])
        .args([
            "--max-tokens",
            &max_tokens.to_string(),
            "--logprobs",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |k: &str| -> Vec<u64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let (prompt, output) = (ids("prompt_token_ids"), ids("output_token_ids"));
    let logprobs = v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&output)
        .map(|(top, id)| {
            assert_eq!(top[0][0].as_u64(), Some(*id), "greedy picks the top token");
            top[0][1].as_f64().unwrap()
        })
        .collect();
    (prompt, output, logprobs)
}

fn echo_scores_the_prompt_as_generate_does(s: &TestServer) {
    let model = smollm2_gguf().expect("the server runs it");
    let (prompt, output, gen_logprobs) = generate(model.to_str().unwrap(), 5);
    let ids: Vec<u64> = prompt.iter().chain(&output).copied().collect();
    let body = json!({"prompt": ids, "echo": true, "logprobs": 1, "max_tokens": 0});
    let v = s.post_ok("/v1/completions", &body);
    let choice = &v["choices"][0];
    let lp = &choice["logprobs"];
    let token_logprobs = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(token_logprobs.len(), ids.len(), "{v}");
    assert!(
        token_logprobs[0].is_null(),
        "the first token has no logprob: {v}"
    );
    assert!(lp["top_logprobs"][0].is_null(), "{v}");
    for (i, want) in gen_logprobs.iter().enumerate() {
        let got = token_logprobs[prompt.len() + i].as_f64().unwrap();
        assert!(
            (got - want).abs() < 2e-3,
            "token {i}: echo scored {got}, generate reported {want}: {v}"
        );
        // Greedy tokens are their position's best: in top_logprobs.
        assert!(!lp["top_logprobs"][prompt.len() + i]
            .as_object()
            .unwrap()
            .is_empty());
    }
    let tokens: String = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(choice["text"].as_str().unwrap(), tokens, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 0, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], ids.len(), "{v}");
    assert_eq!(choice["finish_reason"], "length");

    // With generation: the prompt's logprobs, then the completion's.
    let body = json!({"prompt": PROMPT, "echo": true, "logprobs": 1, "max_tokens": 3,
                      "temperature": 0});
    let v = s.post_ok("/v1/completions", &body);
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(
        lp["tokens"].as_array().unwrap().len(),
        prompt.len() + 3,
        "{v}"
    );
    let first_gen = lp["token_logprobs"][prompt.len()].as_f64().unwrap();
    assert!((first_gen - gen_logprobs[0]).abs() < 2e-3, "{v}");
    // Streamed, the first chunk carries the echoed prompt's logprobs.
    let mut body = body;
    body["stream"] = json!(true);
    let chunks = s.stream("/v1/completions", &body);
    let streamed: usize = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(streamed, prompt.len() + 3, "{chunks:?}");

    // Without echo, max_tokens 0 is still an error.
    let (status, v) = s.post(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 0}),
    );
    assert_eq!(
        (status, &error_object(&v)["param"]),
        (400, &json!("max_tokens"))
    );
}

fn prompt_logprobs_as_vllm_sends_them(s: &TestServer) {
    let body = json!({"prompt": PROMPT, "max_tokens": 1, "prompt_logprobs": 2, "temperature": 0});
    let v = s.post_ok("/v1/completions", &body);
    let pl = v["choices"][0]["prompt_logprobs"].as_array().unwrap();
    let n = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(pl.len(), n, "{v}");
    assert!(pl[0].is_null());
    for entry in &pl[1..] {
        let entry = entry.as_object().unwrap();
        assert!((1..=3).contains(&entry.len()), "{v}");
        for (id, lp) in entry {
            id.parse::<u32>().unwrap();
            assert!(lp["logprob"].as_f64().unwrap() <= 0.0);
            assert!(lp["rank"].as_u64().unwrap() >= 1);
            assert!(lp["decoded_token"].is_string());
        }
    }
    let mut chat = base_body(Endpoint::ChatCompletions);
    chat["prompt_logprobs"] = json!(0);
    let v = s.post_ok("/v1/chat/completions", &chat);
    let pl = v["prompt_logprobs"].as_array().unwrap();
    assert_eq!(
        pl.len() as u64,
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    // Not asked for: null, as vLLM sends it.
    let v = s.post_ok(
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 1}),
    );
    assert!(v["choices"][0]["prompt_logprobs"].is_null());
    // Not with stream, as in vLLM.
    chat["stream"] = json!(true);
    let (status, v) = s.post("/v1/chat/completions", &chat);
    assert_eq!(
        (status, &error_object(&v)["param"]),
        (400, &json!("prompt_logprobs"))
    );
}

#[test]
fn request_fields_end_to_end() {
    let Some(model) = model_or_skip("request_fields_end_to_end") else {
        return;
    };
    let server = TestServer::start(&small_server_args(&model), &[]);
    run_checks(
        &server,
        &[
            (
                "every_sdk_field_has_a_decision",
                every_sdk_field_has_a_decision,
            ),
            (
                "what_clients_send_is_refused_not_dropped",
                what_clients_send_is_refused_not_dropped,
            ),
            (
                "continuous_usage_stats_on_every_chunk",
                continuous_usage_stats_on_every_chunk,
            ),
            (
                "echo_scores_the_prompt_as_generate_does",
                echo_scores_the_prompt_as_generate_does,
            ),
            (
                "prompt_logprobs_as_vllm_sends_them",
                prompt_logprobs_as_vllm_sends_them,
            ),
        ],
    );
}
