//! The JSON request extractor: every way a body can be wrong becomes a 400
//! (or 413) with an OpenAI error body that names the field at fault.
//!
//! axum's own `Json` answers 415/422 with a plain-text body; OpenAI clients
//! expect 400 and JSON. The body size is bounded by axum's
//! `DefaultBodyLimit` (set from `--max-body-bytes`), nesting by serde_json's
//! recursion limit (128), and strings must be valid UTF-8.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A request body parsed as `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    ..ApiError::bad_request(format!(
                        "Request body is too large: {}",
                        rejection.body_text()
                    ))
                }
                .with_code("payload_too_large")
            } else {
                ApiError::bad_request(format!(
                    "Could not read the request body: {}",
                    rejection.body_text()
                ))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`, naming the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; expected a JSON object.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    match parsed {
        Ok(v) => {
            // Trailing garbage after the object is an error too.
            de.end().map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
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

    #[test]
    fn invalid_utf8_is_refused() {
        let e = parse_json::<Req>(b"{\"stop\": [\"a\xff\xfeb\"]}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
