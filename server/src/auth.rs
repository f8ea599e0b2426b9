//! `--api-key`: every route but /health and /metrics needs
//! `Authorization: Bearer <key>`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::SharedState;

/// Middleware: 401 unless the request carries the key (when one is set).
pub async fn require_api_key(
    State(state): State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.api_key {
        if !authorized(req.headers().get(header::AUTHORIZATION), key) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Whether the `Authorization` header holds `Bearer <key>`.
pub fn authorized(header: Option<&HeaderValue>, key: &str) -> bool {
    let Some(given) = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), key.as_bytes())
}

/// Compares without an early exit, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_key_must_match() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(authorized(Some(&v("Bearer sekrit")), "sekrit"));
        assert!(!authorized(Some(&v("Bearer sekrit2")), "sekrit"));
        assert!(!authorized(Some(&v("Bearer sekri")), "sekrit"));
        assert!(!authorized(Some(&v("sekrit")), "sekrit"));
        assert!(!authorized(Some(&v("Basic sekrit")), "sekrit"));
        assert!(!authorized(None, "sekrit"));
    }
}
