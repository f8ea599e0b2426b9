//! GET /v1/models: the one served model.

use axum::extract::State;
use axum::response::Json;

use crate::protocol::models::{ModelCard, ModelList};
use crate::state::SharedState;

pub async fn list_models(State(state): State<SharedState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: state.model_name.clone(),
            object: "model",
            created: state.created,
            owned_by: "pagoda",
            root: state.model_root.clone(),
            parent: None,
            max_model_len: state.max_model_len,
        }],
    })
}
