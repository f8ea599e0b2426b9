//! GET /health: 200 while the engine loop runs, 503 once it has died (open
//! even with an API key), so a load balancer takes a broken replica out.
//! GET and POST /ping answer the same, as vLLM's do (SageMaker probes /ping).

use crate::state::SharedState;
use axum::extract::State;
use axum::http::StatusCode;

pub async fn health(State(state): State<SharedState>) -> StatusCode {
    if state.engine.is_alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
