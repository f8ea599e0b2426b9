//! The JSON request extractor: every way a body can be wrong becomes a 400
//! (or 413) with an OpenAI error body that names the field at fault.
//!
//! axum's own `Json` answers 415/422 with a plain-text body; OpenAI clients
//! expect 400 and JSON. The body size is bounded by `--max-body-bytes`,
//! nesting by serde_json's recursion limit (128), and strings must be valid
//! UTF-8. A body over the limit is still read (and dropped) for a while
//! before the 413 goes out, as nginx's lingering close does: closing a socket
//! with unread data resets it, and the client might never see the 413.

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::request_fields::{check_fields, Endpoint};
use crate::sampling::SamplingRequest;
use crate::state::SharedState;

/// How much of an oversized body is read and dropped before answering 413.
const LINGER_BYTES: usize = 64 << 20;
/// How long an oversized body is read before answering 413.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// A request body parsed as `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state.max_body_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body that carries the sampling fields shared by completions
/// and chat, in a `#[serde(skip)]` field that [`SampledJson`] fills.
pub trait WithSampling: DeserializeOwned {
    /// The API whose field table ([`crate::request_fields`]) the body obeys.
    const ENDPOINT: Endpoint;
    fn sampling_mut(&mut self) -> &mut SamplingRequest;
}

/// A request body parsed as `T` and, in a second pass over the same bytes,
/// as its [`SamplingRequest`]; each pass ignores the other's fields.
///
/// Not `#[serde(flatten)]`: flatten buffers the object and deserializes the
/// inner struct after the outer map has ended, so a wrong type there loses
/// its path (serde-rs/serde#1183, dtolnay/path-to-error#9) and the 400
/// could no longer name the field. The second pass skips the endpoint's
/// fields (`prompt`, `messages`) without building them, and bodies are
/// capped by `--max-body-bytes`.
pub struct SampledJson<T>(pub T);

impl<T: WithSampling> FromRequest<SharedState> for SampledJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state.max_body_bytes).await?;
        parse_sampled_json(&bytes).map(SampledJson)
    }
}

/// Parses `bytes` as `T` with its sampling fields, then holds every field
/// of the body to the endpoint's table (refused or logged, never silently
/// dropped); errors as [`parse_json`].
pub fn parse_sampled_json<T: WithSampling>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut request: T = parse_json(bytes)?;
    *request.sampling_mut() = parse_json(bytes)?;
    let fields: Map<String, Value> = parse_json(bytes)?;
    check_fields(T::ENDPOINT, &fields)?;
    Ok(request)
}

/// The whole body if it is at most `limit` bytes, else 413.
pub async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit.saturating_add(LINGER_BYTES)) {
        // Far too large to be worth draining.
        return Err(ApiError::payload_too_large(limit));
    }
    let mut stream = req.into_body().into_data_stream();
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut dropped = 0usize;
    let linger_until = tokio::time::Instant::now() + LINGER_TIME;
    loop {
        let next = if dropped == 0 {
            stream.next().await
        } else {
            match tokio::time::timeout_at(linger_until, stream.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        };
        let Some(chunk) = next else { break };
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Could not read the request body: {e}")))?;
        if dropped == 0 && body.len() + chunk.len() <= limit {
            body.extend_from_slice(&chunk);
        } else {
            dropped += chunk.len().max(1);
            if dropped > LINGER_BYTES {
                break;
            }
        }
    }
    if dropped > 0 {
        return Err(ApiError::payload_too_large(limit));
    }
    Ok(body)
}

/// Parses `bytes` as `T`, naming the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "The request body is empty; expected a JSON object.",
            ))
        }
        // Serde would also take an array as a struct's fields in order.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid JSON: the request body must be a JSON object.",
            ))
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    match parsed {
        Ok(v) => {
            // Trailing garbage after the object is an error too.
            de.end()
                .map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
            Ok(v)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let is_data = matches!(inner.classify(), serde_json::error::Category::Data);
            if !is_data {
                return Err(ApiError::bad_request(format!("Invalid JSON: {inner}")));
            }
            let e = ApiError::bad_request(format!("Invalid request: {inner}"));
            // serde_path_to_error writes "." for the root and "?" for unknown places.
            Err(if path == "." || path == "?" || path.is_empty() {
                e
            } else {
                e.with_param(path)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Req {
        #[allow(dead_code)]
        max_tokens: Option<u32>,
        #[allow(dead_code)]
        stop: Option<Vec<String>>,
    }

    #[test]
    fn good_body_parses() {
        let r: Req = parse_json(br#"{"max_tokens": 3, "other": [1, {"a": 2}]}"#).unwrap();
        assert_eq!(r.max_tokens, Some(3));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse_json::<Req>(br#"{"max_tokens": "abc"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse_json::<Req>(br#"{"stop": ["a", 3]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stop[1]"));
    }

    #[derive(Debug, Deserialize)]
    struct Sampled {
        max_tokens: Option<u32>,
        #[serde(skip)]
        sampling: SamplingRequest,
    }

    impl WithSampling for Sampled {
        const ENDPOINT: Endpoint = Endpoint::Completions;

        fn sampling_mut(&mut self) -> &mut SamplingRequest {
            &mut self.sampling
        }
    }

    #[test]
    fn sampling_fields_are_parsed_with_their_names() {
        let r: Sampled = parse_sampled_json(br#"{"max_tokens": 3, "n": 2, "x": 1}"#).unwrap();
        assert_eq!((r.max_tokens, r.sampling.n), (Some(3), Some(2)));
        let e = parse_sampled_json::<Sampled>(br#"{"n": 1.5}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("n"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse_sampled_json::<Sampled>(br#"{"stop": 3}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stop"));
        assert!(e.message.contains("stop must be"), "{}", e.message);
        // The endpoint's fields are read (and refused) first.
        let e = parse_sampled_json::<Sampled>(br#"{"max_tokens": "a", "n": "b"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn syntax_errors_are_400() {
        for body in [
            &b"{bad"[..],
            b"{",
            b"not json",
            b"",
            b"   ",
            b"[1, 2]",
            b"{} trailing",
            b"{\"max_tokens\": 1,}",
        ] {
            let e = parse_json::<Req>(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body:?}");
            assert!(!e.message.is_empty());
            assert_eq!(e.param, None, "{body:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct WithValue {
        #[allow(dead_code)]
        x: serde_json::Value,
    }

    #[test]
    fn deep_nesting_is_refused_or_skipped_without_overflow() {
        let depth = 100_000;
        let mut body = String::from(r#"{"x": "#);
        body.push_str(&"[".repeat(depth));
        body.push_str(&"]".repeat(depth));
        body.push('}');
        // Parsed fields stop at serde_json's recursion limit ...
        let e = parse_json::<WithValue>(body.as_bytes()).unwrap_err();
        assert!(e.message.contains("recursion limit"), "{}", e.message);
        // ... and unknown fields are skipped without recursion.
        assert!(parse_json::<Req>(body.as_bytes()).is_ok());
    }

    fn request(body: Vec<u8>, content_length: Option<usize>) -> Request {
        let mut b = Request::builder().method("POST").uri("/");
        if let Some(len) = content_length {
            b = b.header("content-length", len);
        }
        b.body(axum::body::Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn body_within_the_limit_is_read_whole() {
        let body = read_body(request(vec![b'a'; 100], Some(100)), 100)
            .await
            .unwrap();
        assert_eq!(body.len(), 100);
        let body = read_body(request(Vec::new(), None), 100).await.unwrap();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn body_over_the_limit_is_413() {
        let e = read_body(request(vec![b'a'; 101], None), 100)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("100 bytes"), "{}", e.message);
        // Declared far beyond the limit: refused without reading.
        let e = read_body(request(vec![b'a'; 10], Some(LINGER_BYTES + 1000)), 100)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let e = parse_json::<Req>(b"{\"stop\": [\"a\xff\xfeb\"]}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
