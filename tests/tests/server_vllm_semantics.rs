//! End-to-end: where Pagoda once answered differently from vLLM (found by a
//! black-box pass, issue 14), checked over HTTP against `pagoda serve` with
//! SmolLM2: min_tokens holding back stop strings, the text of a stop token,
//! the order of completions top_logprobs, continue_final_message, priority
//! under fcfs, and seeded sampling reproduced across preemption.

mod server_common;

use std::thread;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{json, Value};
use server_common::{error_object, model_or_skip, run_checks, set_flag, small_server_args};
use server_common::{metric_value, TestServer};

const PARIS_PROMPT: &str = "The capital of France is";

fn completion(s: &TestServer, extra: Value) -> Value {
    let mut body = json!({"prompt": PARIS_PROMPT, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.post_ok("/v1/completions", &body)
}

fn chat(s: &TestServer, messages: Value, extra: Value) -> (u16, Value) {
    let mut body = json!({"messages": messages, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.post("/v1/chat/completions", &body)
}

fn completion_tokens(v: &Value) -> u64 {
    v["usage"]["completion_tokens"].as_u64().unwrap()
}

/// vLLM matches stop strings only once more than `min_tokens` tokens exist
/// (vllm/v1/engine/detokenizer.py, `update`: `len(self.output_token_ids) >
/// self.min_tokens`); EOS and stop ids are masked until then.
fn min_tokens_holds_back_stop_strings(s: &TestServer) {
    let free = completion(s, json!({"max_tokens": 40, "stop": ["."]}));
    assert!(
        completion_tokens(&free) < 35,
        "without min_tokens the '.' stop should come early: {free}"
    );
    let held = completion(
        s,
        json!({"max_tokens": 40, "min_tokens": 35, "stop": ["."]}),
    );
    assert!(completion_tokens(&held) >= 35, "{held}");
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (status, v) = chat(
        s,
        messages,
        json!({"max_tokens": 40, "min_tokens": 20, "stop": ["Paris"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(completion_tokens(&v) >= 20, "{v}");
}

fn token_id(s: &TestServer, text: &str) -> u64 {
    let v = s.post_ok(
        "/tokenize",
        &json!({"prompt": text, "add_special_tokens": false}),
    );
    let ids = v["tokens"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is not one token: {v}");
    ids[0].as_u64().unwrap()
}

/// A sequence ended by a stop token id or EOS does not show that token's
/// text unless `include_stop_str_in_output` (vLLM's detokenizer drops it
/// when `stop_terminated`); its id still counts as a completion token.
fn stop_token_text_is_dropped(s: &TestServer) {
    let dot = token_id(s, ".");
    let body = json!({"max_tokens": 30, "stop_token_ids": [dot]});
    let v = completion(s, body.clone());
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop", "{v}");
    assert_eq!(c["stop_reason"], dot, "{v}");
    let text = c["text"].as_str().unwrap();
    assert!(!text.is_empty() && !text.ends_with('.'), "{v}");
    let streamed_body = json!({"prompt": PARIS_PROMPT, "temperature": 0, "max_tokens": 30,
                               "stop_token_ids": [dot], "stream": true});
    let streamed: String = s
        .stream("/v1/completions", &streamed_body)
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, text);
    let mut with_stop = body;
    with_stop["include_stop_str_in_output"] = json!(true);
    let v = completion(s, with_stop);
    assert_eq!(v["choices"][0]["text"], format!("{text}."), "{v}");

    // EOS (<|im_end|> for this chat model) with special tokens shown.
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (status, v) = chat(
        s,
        messages.clone(),
        json!({"max_tokens": 40, "skip_special_tokens": false}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !content.is_empty() && !content.contains("<|im_end|>"),
        "{v}"
    );
    let (_, v) = chat(
        s,
        messages,
        json!({"max_tokens": 40, "skip_special_tokens": false,
               "include_stop_str_in_output": true}),
    );
    let with_eos = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(with_eos, format!("{content}<|im_end|>"), "{v}");
}

/// A JSON object read as its entries in document order (serde_json's
/// `Value` would sort them).
struct OrderedEntries(Vec<(String, f64)>);

impl<'de> serde::Deserialize<'de> for OrderedEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of logprobs")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, f64>()? {
                    out.push((k, v));
                }
                Ok(OrderedEntries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(serde::Deserialize)]
struct RawLogprobs {
    top_logprobs: Vec<OrderedEntries>,
}
#[derive(serde::Deserialize)]
struct RawChoice {
    logprobs: RawLogprobs,
}
#[derive(serde::Deserialize)]
struct RawCompletion {
    choices: Vec<RawChoice>,
}

/// OpenAI and vLLM list each token's alternatives most likely first.
fn top_logprobs_most_likely_first(s: &TestServer) {
    let body = json!({"prompt": "My favourite food is", "max_tokens": 6, "temperature": 1.0,
                      "seed": 7, "logprobs": 5, "ignore_eos": true});
    let text = s
        .client
        .post(s.url("/v1/completions"))
        .json(&body)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let v: RawCompletion = serde_json::from_str(&text).unwrap();
    let positions = &v.choices[0].logprobs.top_logprobs;
    assert_eq!(positions.len(), 6, "{text}");
    let mut unsorted_by_text = false;
    for p in positions {
        assert!((5..=6).contains(&p.0.len()), "{text}");
        for pair in p.0.windows(2) {
            assert!(pair[0].1 >= pair[1].1, "not most likely first: {text}");
            unsorted_by_text |= pair[0].0 > pair[1].0;
        }
    }
    // The check means something only if text order would differ.
    assert!(
        unsorted_by_text,
        "every list happened to be in text order: {text}"
    );
}

/// HF's `apply_chat_template(..., continue_final_message=True)`, as vLLM
/// passes it: the final message is left open (no `<|im_end|>\n` after it).
fn continue_final_message(s: &TestServer) {
    let messages = json!([
        {"role": "user", "content": "Write a poem about roses."},
        {"role": "assistant", "content": "Roses are"}
    ]);
    let tokenize = |extra: Value| {
        let mut body = json!({"messages": messages.clone(), "return_token_strs": true});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        s.post_ok("/tokenize", &body)
    };
    let closed = tokenize(json!({"add_generation_prompt": false}));
    let open = tokenize(json!({"add_generation_prompt": false, "continue_final_message": true}));
    let closed_ids = closed["tokens"].as_array().unwrap();
    let open_ids = open["tokens"].as_array().unwrap();
    assert!(open_ids.len() < closed_ids.len(), "{open} vs {closed}");
    assert_eq!(&closed_ids[..open_ids.len()], &open_ids[..]);
    let open_text: String = open["token_strs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(open_text.ends_with("are"), "{open_text:?}");
    // add_generation_prompt defaults to false when continuing.
    assert_eq!(
        tokenize(json!({"continue_final_message": true}))["tokens"],
        open["tokens"]
    );

    let (status, v) = chat(
        s,
        messages.clone(),
        json!({"max_tokens": 4, "add_generation_prompt": false,
               "continue_final_message": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], open["count"], "{v}");

    let (status, v) = chat(
        s,
        messages,
        json!({"max_tokens": 4, "add_generation_prompt": true,
               "continue_final_message": true}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(error_object(&v)["param"], "continue_final_message");
}

/// vLLM refuses a priority unless `--scheduling-policy priority`
/// (vllm/v1/engine/processor.py, `_validate_request`).
fn priority_needs_the_priority_policy(s: &TestServer) {
    let (status, v) = s.post(
        "/v1/completions",
        &json!({"prompt": PARIS_PROMPT, "max_tokens": 2, "priority": 3}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(error_object(&v)["param"], "priority");
    let (status, v) = chat(
        s,
        json!([{"role": "user", "content": "Hi"}]),
        json!({"max_tokens": 2, "priority": -1}),
    );
    assert_eq!(status, 400, "{v}");
    // The default priority is always fine.
    completion(s, json!({"max_tokens": 2, "priority": 0}));
}

#[test]
fn server_answers_as_vllm_does() {
    let Some(model) = model_or_skip("server_answers_as_vllm_does") else {
        return;
    };
    let server = TestServer::start(&small_server_args(&model), &[]);
    run_checks(
        &server,
        &[
            (
                "min_tokens_holds_back_stop_strings",
                min_tokens_holds_back_stop_strings,
            ),
            ("stop_token_text_is_dropped", stop_token_text_is_dropped),
            (
                "top_logprobs_most_likely_first",
                top_logprobs_most_likely_first,
            ),
            ("continue_final_message", continue_final_message),
            (
                "priority_needs_the_priority_policy",
                priority_needs_the_priority_policy,
            ),
        ],
    );
    server
        .wait_idle(std::time::Duration::from_secs(30))
        .unwrap();
}

/// Bytes of one 16-token KV block of SmolLM2-135M in f32 (30 layers, K and
/// V, 3 KV heads of 64).
const SMOLLM2_BLOCK_BYTES: u64 = 2 * 30 * 3 * 64 * 4 * 16;

/// Seeded requests promise the same tokens whatever they are batched with,
/// preemption included: a preempted request recomputes its KV, and logits
/// that differ in the last bits must not change what its seed draws.
#[test]
fn seeded_sampling_survives_preemption() {
    let Some(model) = model_or_skip("seeded_sampling_survives_preemption") else {
        return;
    };
    let mut args = small_server_args(&model);
    // 12 blocks (192 tokens) for 8 requests of up to 6 blocks each.
    set_flag(&mut args, "--max-model-len", "128");
    set_flag(
        &mut args,
        "--kv-cache-memory",
        &(12 * SMOLLM2_BLOCK_BYTES).to_string(),
    );
    set_flag(&mut args, "--scheduling-policy", "priority");
    let server = TestServer::start(&args, &[]);
    let prompts = [
        "My favourite food is",
        "Once upon a time, in a quiet village by the sea,",
        "The best way to learn a language is",
        "Here is a short story about a robot:",
        "In the year 2100, cities will",
        "A good breakfast has",
        "The weather today",
        "Ten facts about cats: 1.",
    ];
    let body = |i: usize| {
        json!({"prompt": prompts[i], "max_tokens": 64, "temperature": 1.0,
               "seed": 1000 + i, "ignore_eos": true})
    };
    let text_of = |v: &Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let alone: Vec<String> = (0..prompts.len())
        .map(|i| text_of(&server.post_ok("/v1/completions", &body(i))))
        .collect();
    let before = metric_value(&server.metrics(), "pagoda:num_preemptions_total{").unwrap();
    let together: Vec<String> = thread::scope(|scope| {
        let handles: Vec<_> = (0..prompts.len())
            .map(|i| {
                let server = &server;
                scope.spawn(move || text_of(&server.post_ok("/v1/completions", &body(i))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = metric_value(&server.metrics(), "pagoda:num_preemptions_total{").unwrap();
    assert!(after > before, "the small KV cache should force preemption");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(
            a, t,
            "seeded request {i} changed when batched and preempted"
        );
    }
    // The priority policy accepts a priority.
    let mut b = body(0);
    b["priority"] = json!(5);
    b["max_tokens"] = json!(2);
    server.post_ok("/v1/completions", &b);
    server
        .wait_idle(std::time::Duration::from_secs(30))
        .unwrap();
}
