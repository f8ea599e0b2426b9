//! Structured outputs end to end: the official `openai` client's `parse()`
//! with a nested Pydantic model, json_object, regex, choice and Lark
//! grammars through `pagoda serve` (tests/structured_outputs_client.py),
//! and the refusals over plain HTTP: a bad schema or regex, an unknown
//! `response_format`, two constraints at once, and tools without the
//! auto-tool flags, each a 400 that names its field (a constraint that does
//! not compile: the field it came from).

mod server_common;

use serde_json::json;
use server_common::{
    error_object, model_or_skip, python_imports, run_checks, run_client_script, set_flag,
    small_server_args, TestServer,
};

#[test]
fn structured_outputs() {
    let Some(model) = model_or_skip("structured_outputs") else {
        return;
    };
    let mut args = small_server_args(&model);
    set_flag(&mut args, "--served-model-name", "smollm2");
    let server = TestServer::start(&args, &[]);
    run_checks(
        &server,
        &[
            ("refusals name their field", refusals),
            ("regex on completions", regex_on_completions),
            ("structural tag", structural_tag),
            ("openai client", openai_client),
        ],
    );
}

fn refusals(server: &TestServer) {
    let chat = |extra: serde_json::Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, body) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 400, "{body}");
        error_object(&body)["param"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // The JSON reader names the path: `response_format.type`.
    let param = chat(json!({"response_format": {"type": "nonsense"}}));
    assert!(param.starts_with("response_format"), "{param}");
    let bad_schema = json!({"type": "json_schema", "json_schema": {"name": "x",
        "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}});
    // A constraint that does not compile names the field it came from.
    assert_eq!(
        chat(json!({"response_format": bad_schema})),
        "response_format"
    );
    assert_eq!(chat(json!({"guided_regex": "a(b"})), "guided_regex");
    assert_eq!(
        chat(json!({"structured_outputs": {"regex": "a(b"}})),
        "structured_outputs.regex"
    );
    assert_eq!(
        chat(json!({"structured_outputs": {"regex": "a", "choice": ["a"]}})),
        "structured_outputs.choice"
    );
    assert_eq!(
        chat(json!({"structured_outputs": {"structural_tag": "{}"}})),
        "structured_outputs.structural_tag"
    );
    // A structure whose begin matches no trigger does not compile.
    let tag = json!({"structures": [{"begin": "<tool>", "schema": {}, "end": "</tool>"}],
        "triggers": ["<function"]});
    assert_eq!(
        chat(json!({"structured_outputs": {"structural_tag": tag.to_string()}})),
        "structured_outputs.structural_tag"
    );
    assert_eq!(chat(json!({"guided_json": "{not json"})), "guided_json");
    // Tools imply `tool_choice: "auto"`, which needs the server's flags
    // (tests/server_tool_calling.rs has the rest).
    assert_eq!(
        chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
        "tool_choice"
    );
    assert_eq!(chat(json!({"tool_choice": "required"})), "tool_choice");
    // A bad constraint on completions too, and nothing was enqueued.
    let (status, body) = server.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 4, "structured_outputs": {"grammar": "start: undefined_rule"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_object(&body)["message"]
        .as_str()
        .unwrap()
        .contains("grammar"));
    // `response_format: text` and `tool_choice: none` change nothing.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "response_format": {"type": "text"}, "tool_choice": "none", "tools": []});
    let (status, body) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{body}");
}

/// Random sampling under a regex: every sample matches, constrained and
/// unconstrained requests share the batch.
fn regex_on_completions(server: &TestServer) {
    let body = json!({"prompt": "Call me at", "max_tokens": 16, "temperature": 1.0, "n": 4,
        "structured_outputs": {"regex": "[0-9]{3}-[0-9]{2}"}});
    let free = json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.0});
    let base = server.base.clone();
    let other = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{base}/v1/completions"))
            .json(&free)
            .send()
            .map(|r| r.status().as_u16())
    });
    let r = server.post_ok("/v1/completions", &body);
    for c in r["choices"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let ok = text.len() == 6
            && text.chars().enumerate().all(|(i, ch)| {
                if i == 3 {
                    ch == '-'
                } else {
                    ch.is_ascii_digit()
                }
            });
        assert!(ok, "{text:?} does not match");
        assert_eq!(c["finish_reason"], "stop", "{c}");
    }
    assert_eq!(other.join().unwrap().unwrap(), 200);
}

/// A structural tag on a prompt that invites the tagged pattern: every
/// call the model starts (at the trigger `<f=`) is `<f=a>` + an integer +
/// `</f>`, though the model would happily write other names, and at least
/// one call is written across the samples.
fn structural_tag(server: &TestServer) {
    let tag = json!({"type": "structural_tag",
        "structures": [{"begin": "<f=a>", "schema": {"type": "integer"}, "end": "</f>"}],
        "triggers": ["<f="]});
    let body = json!({"prompt": "<f=a>1</f> <f=b>2</f> <f=a>3</f> <f=c>4</f> <f=a>5</f>",
        "max_tokens": 24, "temperature": 1.0, "seed": 7, "n": 4,
        "structured_outputs": {"structural_tag": tag.to_string()}});
    let r = server.post_ok("/v1/completions", &body);
    let mut calls = 0;
    for c in r["choices"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let truncated = c["finish_reason"] == "length";
        for (i, part) in text.split("<f=").enumerate().skip(1) {
            let last = i == text.split("<f=").count() - 1;
            let ok = part.strip_prefix("a>").is_some_and(|rest| {
                let digits = rest.trim_start_matches(|ch: char| ch.is_ascii_digit() || ch == '-');
                digits.starts_with("</f>") && digits.len() < rest.len()
            });
            // The last call may be cut by max_tokens anywhere inside.
            if !(ok || (last && truncated && "a>".starts_with(&part[..part.len().min(2)]))) {
                panic!("call {part:?} breaks the tag in {text:?}");
            }
            calls += ok as usize;
        }
    }
    assert!(calls > 0, "no sample wrote a call: {r}");
}

fn openai_client(server: &TestServer) {
    if !python_imports("openai, pydantic") {
        eprintln!(
            "\n*** SKIPPED the openai client part: `python3 -c \"import openai\"` failed; \
             install it with `python3 -m pip install openai`. ***\n"
        );
        return;
    }
    run_client_script(server, "structured_outputs_client.py", "smollm2");
}
