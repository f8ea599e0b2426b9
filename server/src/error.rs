//! OpenAI-shaped error responses.
//!
//! Every failure the server reports, whatever its cause, leaves as
//! `{"error": {"message", "type", "param", "code"}}` with a fitting status,
//! so clients (the official `openai` package included) raise the right
//! exception class and users read one clear message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pagoda_engine::{error_chain, EngineError};
use serde::Serialize;
use std::error::Error;

/// One client-facing error: HTTP status plus the OpenAI error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error class, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable code, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (503 only).
    pub retry_after: Option<u32>,
}

/// The body as OpenAI writes it.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorObject<'a>,
}

#[derive(Serialize)]
pub struct ErrorObject<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or a value is out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the field at fault.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_param(param)
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`.",
        )
        .with_code("invalid_api_key")
    }

    /// 404 for a model name this server does not serve.
    pub fn model_not_found(requested: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{requested}` does not exist."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 for an unknown route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown route: {method} {path}"),
        )
        .with_code("not_found")
    }

    /// 405 for a known route with the wrong method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("Method {method} is not allowed on {path}."),
        )
        .with_code("method_not_allowed")
    }

    /// 413: the body is over `--max-body-bytes`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("Request body is larger than the limit of {limit} bytes."),
        )
        .with_code("payload_too_large")
    }

    /// 400 for a prompt that does not fit the context window.
    pub fn context_length(message: impl Into<String>, param: &str) -> Self {
        Self::bad_request(message)
            .with_param(param)
            .with_code("context_length_exceeded")
    }

    /// 503 with Retry-After: the server cannot take the request now.
    pub fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        let mut e =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code(code);
        e.retry_after = Some(1);
        e
    }

    /// 500: a fault of the server, never of the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
            .with_code("internal_error")
    }

    /// 500 for a failed operation: `context`, then `err` and every cause
    /// under it, so the client and the log both say what went wrong.
    pub fn internal_error(context: &str, err: &(dyn Error + 'static)) -> Self {
        let message = format!("{context}: {}", error_chain(err));
        tracing::error!("{message}");
        Self::internal(message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body, also used for the error chunk of a failing stream.
    pub fn body_json(&self) -> String {
        let body = ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serializing plain strings cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl From<EngineError> for ApiError {
    /// A server-side fault (`Load`, `Device`, `Internal`) keeps its whole
    /// cause chain in the message, and is logged with it.
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match &e {
            EngineError::InvalidParams(p) => ApiError::invalid_param(p.param, p.message.clone()),
            EngineError::InvalidStructuredOutput(_) => {
                ApiError::invalid_param("structured_outputs", message)
            }
            EngineError::PromptTooLong { .. } => ApiError::context_length(message, "prompt"),
            EngineError::EmptyPrompt => ApiError::invalid_param("prompt", message),
            EngineError::TokenOutOfVocab { .. } => ApiError::invalid_param("prompt", message),
            EngineError::QueueFull => ApiError::unavailable(message, "queue_full"),
            EngineError::Shutdown => ApiError::unavailable(message, "shutting_down"),
            EngineError::Load { .. }
            | EngineError::Device { .. }
            | EngineError::Internal { .. } => {
                let message = error_chain(&e);
                tracing::error!("engine error: {message}");
                ApiError::internal(message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body may be unread: do not reuse the connection.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagoda_engine::{EngineContext, SamplingParamsError};

    fn body(e: &ApiError) -> serde_json::Value {
        serde_json::from_str(&e.body_json()).unwrap()
    }

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid_param("temperature", "temperature must be in [0, 100].");
        let v = body(&e);
        assert_eq!(v["error"]["message"], "temperature must be in [0, 100].");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert!(v["error"]["code"].is_null());
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn engine_errors_map_to_client_statuses() {
        let cases = [
            (
                EngineError::InvalidParams(SamplingParamsError {
                    param: "top_p",
                    message: "bad".into(),
                }),
                400,
            ),
            (
                EngineError::PromptTooLong {
                    prompt_len: 10,
                    max_model_len: 5,
                },
                400,
            ),
            (EngineError::EmptyPrompt, 400),
            (
                EngineError::TokenOutOfVocab {
                    token_id: 9,
                    vocab_size: 3,
                },
                400,
            ),
            (EngineError::QueueFull, 503),
            (EngineError::Shutdown, 503),
            (EngineError::internal("x"), 500),
        ];
        for (err, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status, "{api}");
        }
        let e = ApiError::from(EngineError::InvalidParams(SamplingParamsError {
            param: "top_p",
            message: "bad".into(),
        }));
        assert_eq!(e.param.as_deref(), Some("top_p"));
    }

    #[test]
    fn queue_full_sets_retry_after() {
        let response = ApiError::from(EngineError::QueueFull).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn internal_error_message_keeps_the_cause() {
        let io = std::io::Error::other("disk on fire");
        let err = Err::<(), _>(io)
            .device_context("the model step failed")
            .unwrap_err();
        let api = ApiError::from(err);
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body(&api)["error"]["message"],
            "Device error: the model step failed: disk on fire"
        );
        let io = std::io::Error::other("worker gone");
        let api = ApiError::internal_error("tokenization failed", &io);
        assert_eq!(api.message, "tokenization failed: worker gone");
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
