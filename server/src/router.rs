//! The HTTP routes and the layers around them: API key, body limit,
//! OpenAI-shaped 404/405, panics turned into 500s, and `X-Request-Id`.

use std::any::Any;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{chat_completions, completions, health, metrics, models, tokenize, version};
use crate::auth::require_api_key;
use crate::error::ApiError;
use crate::request_id::request_id;
use crate::state::SharedState;

/// `JsonBody` enforces `--max-body-bytes` itself (to answer 413 cleanly),
/// so axum's default 2 MB limit is off.
pub fn build_router(state: SharedState) -> Router {
    let protected = Router::new()
        .route("/v1/completions", post(completions::create_completion))
        .route(
            "/v1/chat/completions",
            post(chat_completions::create_chat_completion),
        )
        .route("/v1/models", get(models::list_models))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/version", get(version::version))
        .route_layer(from_fn_with_state(state.clone(), require_api_key));
    let open = Router::new()
        .route("/health", get(health::health))
        .route("/ping", get(health::health).post(health::health))
        .route("/metrics", get(metrics::metrics));
    protected
        .merge(open)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn(request_id))
        .with_state(state)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::route_not_found(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!("a request handler panicked: {detail}");
    ApiError::internal("Internal server error.").into_response()
}
