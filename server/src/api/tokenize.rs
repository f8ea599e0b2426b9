//! POST /tokenize and POST /detokenize (vLLM's).

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};

use crate::error::ApiError;
use crate::json_body::JsonBody;
use crate::prompt::{decode, encode, prepare_chat_prompt, token_text, ChatPromptOptions};
use crate::protocol::tokenize::{
    DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
};
use crate::state::SharedState;

pub async fn tokenize(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> Response {
    let result = async {
        state.check_model(req.model.as_deref())?;
        let st = state.clone();
        let tokens = tokio::task::spawn_blocking(move || match (req.prompt, req.messages) {
            (Some(prompt), None) => encode(&st, &prompt, req.add_special_tokens.unwrap_or(true)),
            (None, Some(messages)) => {
                let opts = ChatPromptOptions::resolve(
                    req.add_generation_prompt,
                    req.continue_final_message,
                )?;
                prepare_chat_prompt(&st, &messages, req.tools.as_deref(), opts)
            }
            _ => Err(ApiError::bad_request(
                "Send exactly one of `prompt` (text) and `messages` (a chat).",
            )),
        })
        .await
        .map_err(|e| ApiError::internal_error("tokenization failed", &e))??;
        let token_strs = req
            .return_token_strs
            .unwrap_or(false)
            .then(|| tokens.iter().map(|&id| token_text(&state, id)).collect());
        Ok::<_, ApiError>(TokenizeResponse {
            count: tokens.len(),
            max_model_len: state.max_model_len,
            tokens,
            token_strs,
        })
    }
    .await;
    match result {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn detokenize(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<DetokenizeRequest>,
) -> Response {
    let result = state
        .check_model(req.model.as_deref())
        .and_then(|()| decode(&state, &req.tokens, false));
    match result {
        Ok(prompt) => Json(DetokenizeResponse { prompt }).into_response(),
        Err(e) => e.into_response(),
    }
}
