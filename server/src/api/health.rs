//! GET /health: 200 while the server runs (open even with an API key).

use axum::http::StatusCode;

pub async fn health() -> StatusCode {
    StatusCode::OK
}
