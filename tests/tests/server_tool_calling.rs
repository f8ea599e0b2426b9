//! Tool calling end to end. Without the flags (as `pagoda serve` starts by
//! default): the official `openai` client's `tool_choice: "required"` and
//! named-function calls give arguments that validate against the tool's
//! schema, streamed and not; `"auto"` is a 400 naming the flags; a history
//! with an assistant's `tool_calls` and a `tool` message is accepted
//! (tests/tool_calling_client.py); malformed tools and choices are 400s
//! naming their field. With `--enable-auto-tool-choice --tool-call-parser
//! hermes`: a reply in hermes' format (SmolLM2 was never trained to write
//! one, so a regex makes it write one) comes back as `tool_calls`, and its
//! stream adds up to the same calls; plain text stays content.
//!
//! SmolLM2-135M-Instruct's chat template does not mention tools: the tools
//! are passed to it all the same and it ignores them, as under vLLM.

mod server_common;

use serde_json::{json, Value};
use server_common::{
    error_object, model_or_skip, python_imports, run_checks, run_client_script, set_flag,
    small_server_args, TestServer,
};

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}}})
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 40, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn tool_calling_without_auto() {
    let Some(model) = model_or_skip("tool_calling_without_auto") else {
        return;
    };
    let mut args = small_server_args(&model);
    set_flag(&mut args, "--served-model-name", "smollm2");
    let server = TestServer::start(&args, &[]);
    run_checks(
        &server,
        &[
            ("refusals name their field", refusals),
            ("history with tool calls", history_is_accepted),
            ("openai client", openai_client),
        ],
    );
}

fn refusals(server: &TestServer) {
    let param = |extra: Value| {
        let (status, body) = server.post("/v1/chat/completions", &chat(extra));
        assert_eq!(status, 400, "{body}");
        let e = error_object(&body);
        (
            e["param"].as_str().unwrap_or("").to_string(),
            e["message"].as_str().unwrap().to_string(),
        )
    };
    let tools = json!([weather_tool()]);
    // Auto, explicit or implied by tools, needs the flags.
    for extra in [
        json!({"tools": tools}),
        json!({"tools": tools, "tool_choice": "auto"}),
    ] {
        let (p, m) = param(extra);
        assert_eq!(p, "tool_choice");
        assert!(m.contains("--enable-auto-tool-choice"), "{m}");
    }
    let (p, m) = param(json!({"tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}}}));
    assert_eq!(p, "tool_choice");
    assert!(m.contains("get_time"), "{m}");
    assert_eq!(param(json!({"tool_choice": "required"})).0, "tool_choice");
    assert_eq!(
        param(json!({"tools": tools, "tool_choice": "sometimes"})).0,
        "tool_choice"
    );
    assert_eq!(param(json!({"tools": "x"})).0, "tools");
    let (p, _) = param(json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}));
    assert!(p.starts_with("tools"), "{p}");
    let (p, _) = param(
        json!({"tools": [{"type": "function", "function": {"name": "f",
        "parameters": "not a schema"}}], "tool_choice": "none"}),
    );
    assert!(p.starts_with("tools"), "{p}");
    // A tool constraint and another constraint.
    assert_eq!(
        param(json!({"tools": tools, "tool_choice": "required",
            "response_format": {"type": "json_object"}}))
        .0,
        "tool_choice"
    );
    // A tool schema that does not compile names `tools`.
    let bad = json!([{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}]);
    assert_eq!(
        param(json!({"tools": bad, "tool_choice": "required"})).0,
        "tools"
    );
    // Arguments in the history that are not JSON.
    let history = json!([{"role": "user", "content": "hi"}, {"role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{city"}}]}]);
    assert_eq!(param(json!({"messages": history})).0, "messages");
}

fn history_is_accepted(server: &TestServer) {
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "chatcmpl-tool-1",
            "type": "function", "function": {"name": "get_weather",
            "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": "Sunny, 21 C."}
    ]);
    let r = server.post_ok(
        "/v1/chat/completions",
        &chat(json!({"messages": messages, "tools": [weather_tool()], "tool_choice": "none"})),
    );
    let msg = &r["choices"][0]["message"];
    assert!(msg["content"].is_string(), "{r}");
    assert_eq!(msg["tool_calls"], json!([]), "{r}");
    // `tools: []` and `tool_choice: "none"` change nothing.
    let r = server.post_ok(
        "/v1/chat/completions",
        &chat(json!({"tools": [], "tool_choice": "none"})),
    );
    assert!(r["choices"][0]["message"]["content"].is_string(), "{r}");
}

fn openai_client(server: &TestServer) {
    if !python_imports("openai") {
        eprintln!(
            "\n*** SKIPPED the openai client part: `python3 -c \"import openai\"` failed; \
             install it with `python3 -m pip install openai`. ***\n"
        );
        return;
    }
    run_client_script(server, "tool_calling_client.py", "smollm2");
}

#[test]
fn auto_tool_choice_with_the_hermes_parser() {
    let Some(model) = model_or_skip("auto_tool_choice_with_the_hermes_parser") else {
        return;
    };
    let mut args = small_server_args(&model);
    args.extend(["--enable-auto-tool-choice", "--tool-call-parser", "hermes"].map(String::from));
    let server = TestServer::start(&args, &[]);
    run_checks(
        &server,
        &[
            ("hermes calls, streamed and not", hermes_calls),
            ("plain text stays content", plain_text),
        ],
    );
}

/// The regex makes the model write text, then two hermes blocks.
const HERMES_REPLY: &str = r#"Let me check\.\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Paris"\}\}\n</tool_call>\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Lyon"\}\}\n</tool_call>"#;

fn hermes_calls(server: &TestServer) {
    let body = chat(json!({"tools": [weather_tool()], "max_tokens": 120,
        "structured_outputs": {"regex": HERMES_REPLY}}));
    let r = server.post_ok("/v1/chat/completions", &body);
    let choice = &r["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{r}");
    let msg = &choice["message"];
    assert_eq!(msg["content"], "Let me check.\n", "{r}");
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{r}");
    for (call, city) in calls.iter().zip(["Paris", "Lyon"]) {
        assert!(call["id"].as_str().unwrap().starts_with("chatcmpl-tool-"));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": city}));
    }
    // Streamed: content, then per call a first delta with id, type and
    // name, then argument fragments; they add up to the same calls.
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let chunks = server.stream("/v1/chat/completions", &stream_body);
    let mut content = String::new();
    let mut streamed: Vec<(String, String)> = Vec::new();
    let mut finish = Value::Null;
    for chunk in &chunks {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = d["index"].as_u64().unwrap() as usize;
            if index == streamed.len() {
                assert!(
                    d["id"].as_str().unwrap().starts_with("chatcmpl-tool-"),
                    "{d}"
                );
                assert_eq!(d["type"], "function", "{d}");
                streamed.push((
                    d["function"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                ));
            } else {
                assert!(
                    d.get("id").is_none() && d["function"].get("name").is_none(),
                    "{d}"
                );
            }
            streamed[index]
                .1
                .push_str(d["function"]["arguments"].as_str().unwrap());
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    assert_eq!(content, "Let me check.\n");
    assert_eq!(finish, "tool_calls");
    let whole: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap().to_string(),
                c["function"]["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(streamed, whole);
    // parallel_tool_calls false keeps the first call.
    let mut one = body.clone();
    one["parallel_tool_calls"] = json!(false);
    let r = server.post_ok("/v1/chat/completions", &one);
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{r}"
    );
}

fn plain_text(server: &TestServer) {
    let body = chat(json!({"tools": [weather_tool()], "max_tokens": 12}));
    let r = server.post_ok("/v1/chat/completions", &body);
    let msg = &r["choices"][0]["message"];
    let text = msg["content"].as_str().unwrap();
    assert!(!text.is_empty() && !text.contains("<tool_call>"), "{r}");
    assert_eq!(msg["tool_calls"], json!([]), "{r}");
    assert_ne!(r["choices"][0]["finish_reason"], "tool_calls", "{r}");
    // Streamed, the same text.
    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    let streamed: String = server
        .stream("/v1/chat/completions", &stream_body)
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
}
