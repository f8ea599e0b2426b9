//! One streaming request to an OpenAI-compatible server, timed as vLLM's
//! `async_request_openai_completions` / `..._chat_completions` time it
//! (the rule is in `stream_timing`).

use std::time::Instant;

use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::metrics::RequestFuncOutput;
use super::sse::{data_payload, StreamedResponseHandler};
use super::stream_timing::StreamTiming;

pub use super::endpoint_kind::EndpointKind;

/// vLLM's `RequestFuncInput`, less what Pagoda's bench does not send.
#[derive(Debug, Clone)]
pub struct RequestFuncInput {
    pub prompt: String,
    pub api_url: String,
    pub prompt_len: usize,
    pub output_len: usize,
    /// The model name sent in the body.
    pub model: String,
    pub ignore_eos: bool,
    /// Merged into the body last (sampling parameters, `--extra-body`).
    pub extra_body: Map<String, Value>,
    /// Sent as `x-request-id`.
    pub request_id: Option<String>,
    /// Sent as `Authorization: Bearer ...` (vLLM reads `OPENAI_API_KEY`).
    pub api_key: Option<String>,
}

/// The JSON body for `kind`: streaming with usage, as vLLM sends it.
pub fn request_body(kind: EndpointKind, input: &RequestFuncInput) -> Value {
    let mut body = match kind {
        EndpointKind::Completions => json!({
            "model": input.model,
            "prompt": input.prompt,
            "repetition_penalty": 1.0,
            "max_tokens": input.output_len,
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
        // Plain string content: every server takes it, not all take parts.
        // Both token caps: older servers know only `max_tokens`.
        EndpointKind::ChatCompletions => json!({
            "model": input.model,
            "messages": [{"role": "user", "content": input.prompt}],
            "max_completion_tokens": input.output_len,
            "max_tokens": input.output_len,
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
    };
    if let Value::Object(map) = &mut body {
        if input.ignore_eos {
            map.insert("ignore_eos".into(), Value::Bool(true));
        }
        for (k, v) in &input.extra_body {
            map.insert(k.clone(), v.clone());
        }
    }
    body
}

/// Sends one request and measures it; `clock` is the benchmark's start, so
/// `start_time` is comparable across requests. Never fails: errors are
/// recorded in the output, as vLLM does.
pub async fn send_request(
    client: &reqwest::Client,
    kind: EndpointKind,
    input: &RequestFuncInput,
    clock: Instant,
) -> RequestFuncOutput {
    let mut output = RequestFuncOutput {
        prompt_len: input.prompt_len,
        ..Default::default()
    };
    let mut request = client.post(&input.api_url).json(&request_body(kind, input));
    if let Some(key) = &input.api_key {
        request = request.bearer_auth(key);
    }
    if let Some(id) = &input.request_id {
        request = request.header("x-request-id", id);
    }
    let mut st = Instant::now();
    output.start_time = st.duration_since(clock).as_secs_f64();
    // A pooled keep-alive connection the server has just closed (llama-server
    // closes them between requests) fails the send before the server reads
    // a byte: resent once on a fresh connection, timed from the resend.
    let retry = request.try_clone();
    let mut sent = request.send().await;
    if let (Err(e), Some(again)) = (&sent, retry) {
        if e.is_request() && !e.is_timeout() && !e.is_body() {
            st = Instant::now();
            sent = again.send().await;
        }
    }
    if let Err(e) = stream_response(sent, kind, st, &mut output).await {
        output.success = false;
        output.error = e;
    }
    output
}

/// An error and its causes ("error sending request" alone hides whether
/// the server reset the connection, refused it or timed out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

async fn stream_response(
    sent: reqwest::Result<reqwest::Response>,
    kind: EndpointKind,
    st: Instant,
    output: &mut RequestFuncOutput,
) -> Result<(), String> {
    let response = sent.map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let reason = status.canonical_reason().unwrap_or("");
        return Err(format!(
            "HTTP {} {reason}: {}",
            status.as_u16(),
            truncate(&body, 500)
        ));
    }
    let mut timing = StreamTiming::new(kind, st);
    let read = read_chunks(response, &mut timing).await;
    timing.finish(output, read)
}

/// Feeds every `data:` chunk to `timing` as it arrives; an error for a
/// broken stream, a chunk that is not JSON, or an error chunk.
async fn read_chunks(response: reqwest::Response, timing: &mut StreamTiming) -> Result<(), String> {
    let mut handler = StreamedResponseHandler::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("stream broken: {e}"))?;
        for message in handler.add_chunk(&chunk) {
            // SSE comments (pings) start with a colon.
            if message.starts_with(':') {
                continue;
            }
            let payload = data_payload(&message).unwrap_or(&message).trim();
            if payload == "[DONE]" {
                continue;
            }
            let timestamp = Instant::now();
            let data: Value = serde_json::from_str(payload)
                .map_err(|e| format!("invalid stream chunk {:?}: {e}", truncate(payload, 200)))?;
            if let Some(error) = data.get("error") {
                return Err(format!("error chunk: {error}"));
            }
            timing.on_chunk(&data, timestamp);
        }
    }
    Ok(())
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RequestFuncInput {
        RequestFuncInput {
            prompt: "hi there".into(),
            api_url: "http://127.0.0.1:1/v1/completions".into(),
            prompt_len: 2,
            output_len: 7,
            model: "m".into(),
            ignore_eos: true,
            extra_body: Map::from_iter([("temperature".to_string(), json!(0.0))]),
            request_id: None,
            api_key: None,
        }
    }

    #[test]
    fn completions_body_is_vllms() {
        let b = request_body(EndpointKind::Completions, &input());
        assert_eq!(b["prompt"], "hi there");
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["repetition_penalty"], 1.0);
    }

    #[test]
    fn chat_body_caps_tokens_both_ways() {
        let mut i = input();
        i.ignore_eos = false;
        let b = request_body(EndpointKind::ChatCompletions, &i);
        assert_eq!(b["messages"][0]["role"], "user");
        assert_eq!(b["messages"][0]["content"], "hi there");
        assert_eq!(b["max_completion_tokens"], 7);
        assert_eq!(b["max_tokens"], 7);
        assert!(b.get("ignore_eos").is_none());
    }

    #[test]
    fn endpoint_kind_from_path() {
        assert_eq!(
            EndpointKind::from_endpoint("/v1/chat/completions"),
            EndpointKind::ChatCompletions
        );
        assert_eq!(
            EndpointKind::from_endpoint("/v1/completions"),
            EndpointKind::Completions
        );
        assert_eq!(EndpointKind::ChatCompletions.backend_name(), "openai-chat");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_failed_request_not_an_error() {
        let client = reqwest::Client::new();
        let out = send_request(&client, EndpointKind::Completions, &input(), Instant::now()).await;
        assert!(!out.success);
        assert!(out.error.starts_with("request failed"), "{}", out.error);
    }
}
