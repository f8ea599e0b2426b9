//! POST /v1/chat/completions: the model's chat template, rendered with
//! `add_generation_prompt`, tokenized without special tokens (the template
//! writes BOS itself).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use pagoda_engine::RequestOutput;

use crate::choices::{choice_index, stop_reason_value, ChoiceCollector, UsageCounter};
use crate::error::ApiError;
use crate::generation::{submit, SubmitOptions};
use crate::json_body::SampledJson;
use crate::logprobs::chat_logprobs;
use crate::prompt::{
    check_prompt_fits, prepare_chat_prompt, token_text, ChatPromptOptions, PromptFields,
};
use crate::protocol::chat::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatLogprobs, ChatResponseMessage, ASSISTANT,
    CHAT_COMPLETION, CHAT_COMPLETION_CHUNK,
};
use crate::protocol::common::Usage;
use crate::request_tracker::finish_reason_str;
use crate::respond::{respond, Responder};
use crate::sampling::SamplingRequest;
use crate::sse::{json_event, ChunkBuilder};
use crate::state::{random_id, unix_time, AppState, SharedState};

pub async fn create_chat_completion(
    State(state): State<SharedState>,
    SampledJson(req): SampledJson<ChatCompletionRequest>,
) -> Response {
    chat_completion(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completion(
    state: SharedState,
    req: ChatCompletionRequest,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    state.check_model(req.model.as_deref())?;
    req.check_tools()?;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_param(
            "stream_options",
            "stream_options can only be set when stream is true.",
        ));
    }
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let want_logprobs = req.logprobs.unwrap_or(false);
    let top_logprobs = req.top_logprobs.unwrap_or(0);
    if top_logprobs > 0 && !want_logprobs {
        return Err(ApiError::invalid_param(
            "top_logprobs",
            "top_logprobs needs logprobs set to true.",
        ));
    }
    let (max_tokens, max_tokens_param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let sampling = SamplingRequest {
        max_tokens,
        logprobs: want_logprobs.then_some(top_logprobs),
        ..req.sampling
    };
    let params = sampling.to_sampling_params(state.vocab_size).map_err(|e| {
        // The engine names the field `max_tokens`; chat may have sent the other one.
        if e.param.as_deref() == Some("max_tokens") {
            e.with_param(max_tokens_param)
        } else {
            e
        }
    })?;
    let chat_opts =
        ChatPromptOptions::resolve(req.add_generation_prompt, req.continue_final_message)?;
    let messages = req.messages;
    let st = state.clone();
    let prompt =
        tokio::task::spawn_blocking(move || prepare_chat_prompt(&st, &messages, chat_opts))
            .await
            .map_err(|e| ApiError::internal_error("chat template failed", &e))??;
    let fields = PromptFields {
        prompt: "messages",
        max_tokens: max_tokens_param,
    };
    check_prompt_fits(
        &prompt,
        params.max_tokens,
        state.vocab_size,
        state.max_model_len,
        fields,
    )?;
    let id = random_id("chatcmpl");
    let opts = SubmitOptions {
        priority: req.priority.unwrap_or(0),
        cache_salt: req.cache_salt,
    };
    let generation = submit(&state, &id, vec![prompt], &params, &opts, arrival)?;
    let meta = ChatMeta {
        id,
        created: unix_time(),
        model: state.model_name.clone(),
        n: params.n,
        logprobs: want_logprobs.then_some(top_logprobs as usize),
    };
    respond(generation, stream, Chat::new(state, meta, include_usage)).await
}

struct ChatMeta {
    id: String,
    created: u64,
    model: String,
    n: usize,
    /// `Some(top_logprobs)` when logprobs were asked for.
    logprobs: Option<usize>,
}

/// Builds a chat completion's SSE chunks, or its one body.
struct Chat {
    state: Arc<AppState>,
    meta: ChatMeta,
    include_usage: bool,
    usage: UsageCounter,
    /// The role chunks go out before the first content.
    sent_roles: bool,
}

impl Chat {
    fn new(state: Arc<AppState>, meta: ChatMeta, include_usage: bool) -> Self {
        Self {
            state,
            meta,
            include_usage,
            usage: UsageCounter::new(1),
            sent_roles: false,
        }
    }

    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Event {
        json_event(&ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: CHAT_COMPLETION_CHUNK,
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }
}

impl ChunkBuilder for Chat {
    fn on_output(&mut self, prompt_idx: usize, out: RequestOutput) -> Vec<Event> {
        self.usage.observe(prompt_idx, &out);
        let mut events = Vec::new();
        if !self.sent_roles {
            self.sent_roles = true;
            for index in 0..self.meta.n {
                let role = ChatChunkChoice {
                    index,
                    delta: ChatDelta {
                        role: Some(ASSISTANT),
                        content: Some(String::new()),
                    },
                    logprobs: None,
                    finish_reason: None,
                    stop_reason: None,
                };
                events.push(self.chunk(vec![role], None));
            }
        }
        for d in out.outputs {
            if d.index >= self.meta.n {
                continue;
            }
            if d.text.is_empty() && d.token_ids.is_empty() && d.finish_reason.is_none() {
                continue;
            }
            let state = &self.state;
            let logprobs = self.meta.logprobs.map(|top| ChatLogprobs {
                content: chat_logprobs(d.logprobs.as_deref().unwrap_or_default(), top, &|id| {
                    token_text(state, id)
                }),
                refusal: None,
            });
            let choice = ChatChunkChoice {
                index: choice_index(prompt_idx, self.meta.n, d.index),
                delta: ChatDelta {
                    role: None,
                    content: Some(d.text),
                },
                logprobs,
                finish_reason: d.finish_reason.as_ref().map(finish_reason_str),
                stop_reason: d.stop_reason.as_ref().map(stop_reason_value),
            };
            events.push(self.chunk(vec![choice], None));
        }
        events
    }

    fn on_finish(&mut self) -> Vec<Event> {
        if self.include_usage {
            vec![self.chunk(Vec::new(), Some(self.usage.usage()))]
        } else {
            Vec::new()
        }
    }
}

impl Responder for Chat {
    type Body = ChatCompletionResponse;

    fn shape(&self) -> (usize, usize) {
        (1, self.meta.n)
    }

    fn body(self, collected: ChoiceCollector) -> ChatCompletionResponse {
        let meta = self.meta;
        let text_of = |id| token_text(&self.state, id);
        let choices = collected
            .choices
            .into_iter()
            .enumerate()
            .map(|(index, c)| ChatChoice {
                index,
                logprobs: meta.logprobs.map(|top| ChatLogprobs {
                    content: chat_logprobs(&c.logprobs, top, &text_of),
                    refusal: None,
                }),
                message: ChatResponseMessage {
                    role: ASSISTANT,
                    content: c.text,
                },
                finish_reason: c.finish_reason,
                stop_reason: c.stop_reason,
            })
            .collect();
        ChatCompletionResponse {
            id: meta.id,
            object: CHAT_COMPLETION,
            created: meta.created,
            model: meta.model,
            choices,
            usage: collected.usage.usage(),
        }
    }
}
