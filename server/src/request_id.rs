//! `X-Request-Id`: the id a client (or its proxy) gives a request. It is
//! echoed in the response and named in the request's tracing span, so one
//! id finds the request in the client's logs and the server's.
//!
//! vLLM echoes it only behind `--enable-request-id-headers`; here it is
//! always echoed: the value is the client's own, costs one header, and a
//! flag would only make correlation something to remember to turn on. No
//! id is made up when the client sent none.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const X_REQUEST_ID: &str = "x-request-id";

/// Longer values are ignored (neither echoed nor logged): a log field, not
/// a payload.
const MAX_LEN: usize = 256;

/// The client's id, when it sent a usable one: printable ASCII, at most
/// `MAX_LEN` bytes.
pub fn client_request_id(value: Option<&HeaderValue>) -> Option<&str> {
    value
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_LEN)
}

/// Middleware: runs the handler in a `request` span carrying the id and
/// echoes the header. Loggers that outlive the handler (the per-request
/// line written when a stream ends) keep the span: see `RequestTracker`.
pub async fn request_id(req: Request, next: Next) -> Response {
    let Some(id) = client_request_id(req.headers().get(X_REQUEST_ID)).map(str::to_owned) else {
        return next.run(req).await;
    };
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn router() -> Router {
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(request_id))
    }

    async fn echoed(sent: Option<&str>) -> Option<String> {
        let mut req = Request::builder().uri("/");
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let response = router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn the_client_id_is_echoed() {
        assert_eq!(echoed(Some("abc-123")).await.as_deref(), Some("abc-123"));
        assert_eq!(echoed(None).await, None, "none made up");
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(echoed(Some(&long)).await, None, "over-long ids are ignored");
    }

    #[test]
    fn unusable_values_are_ignored() {
        let v = |s: &[u8]| HeaderValue::from_bytes(s).unwrap();
        assert_eq!(client_request_id(Some(&v(b"id-1"))), Some("id-1"));
        assert_eq!(client_request_id(Some(&v(b""))), None);
        assert_eq!(client_request_id(Some(&v(b"caf\xc3\xa9"))), None);
        assert_eq!(client_request_id(None), None);
    }
}
