//! POST /v1/completions: each prompt tokenized (or taken as token ids),
//! `n` samples each, answered streamed or as one body by [`respond`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use pagoda_engine::{RequestOutput, SamplingParams};

use crate::choices::{choice_index, stop_reason_value, ChoiceCollector, UsageCounter};
use crate::error::ApiError;
use crate::generation::{submit, SubmitOptions};
use crate::json_body::SampledJson;
use crate::logprobs::completion_logprobs;
use crate::prompt::{
    check_prompt_fits, prepare_completion_prompt, token_text, PreparedPrompt, PromptFields,
};
use crate::protocol::common::{Prompt, Usage};
use crate::protocol::completion::{
    CompletionChoice, CompletionRequest, CompletionResponse, CompletionStreamResponse,
    TEXT_COMPLETION,
};
use crate::request_tracker::finish_reason_str;
use crate::respond::{respond, Responder};
use crate::sampling::SamplingRequest;
use crate::sse::{json_event, ChunkBuilder};
use crate::state::{random_id, unix_time, AppState, SharedState};

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: u32 = 16;
/// Prompts times `n` in one request: a 4 MiB body of one-token prompts
/// would otherwise queue a million requests.
const MAX_CHOICES: usize = 1024;

pub async fn create_completion(
    State(state): State<SharedState>,
    SampledJson(req): SampledJson<CompletionRequest>,
) -> Response {
    completion(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completion(state: SharedState, req: CompletionRequest) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    state.check_model(req.model.as_deref())?;
    check_supported(&req)?;
    let stream = req.stream.unwrap_or(false);
    let echo = req.echo.unwrap_or(false);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let sampling = SamplingRequest {
        max_tokens: Some(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        logprobs: req.logprobs,
        ..req.sampling
    };
    let params = sampling.to_sampling_params(state.vocab_size)?;
    let add_special_tokens = req.add_special_tokens.unwrap_or(true);
    let prepared = prepare_prompts(&state, req.prompt, add_special_tokens, echo, &params).await?;
    let echo_texts = prepared
        .iter()
        .map(|p| p.text.clone().unwrap_or_default())
        .collect();
    let prompts = prepared.into_iter().map(|p| p.token_ids).collect();
    let id = random_id("cmpl");
    let opts = SubmitOptions {
        priority: req.priority.unwrap_or(0),
        cache_salt: req.cache_salt,
    };
    let generation = submit(&state, &id, prompts, &params, &opts, arrival)?;
    let meta = ResponseMeta {
        id,
        created: unix_time(),
        model: state.model_name.clone(),
        n: params.n,
        with_logprobs: params.logprobs.is_some(),
        echo_texts,
    };
    respond(
        generation,
        stream,
        Completions::new(state, meta, include_usage),
    )
    .await
}

/// Refuses what the request asks for that Pagoda does not do.
fn check_supported(req: &CompletionRequest) -> Result<(), ApiError> {
    if req.stream_options.is_some() && !req.stream.unwrap_or(false) {
        return Err(ApiError::invalid_param(
            "stream_options",
            "stream_options can only be set when stream is true.",
        ));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_param(
            "suffix",
            "suffix is not supported.",
        ));
    }
    if req
        .best_of
        .is_some_and(|b| b != req.sampling.n.unwrap_or(1))
    {
        return Err(ApiError::invalid_param(
            "best_of",
            "best_of is not supported (only best_of = n).",
        ));
    }
    if req.echo == Some(true) && req.logprobs.is_some() {
        return Err(ApiError::invalid_param(
            "echo",
            "echo together with logprobs is not supported.",
        ));
    }
    Ok(())
}

/// Tokenizes every prompt (on a blocking thread: long prompts take a
/// while) and checks that each fits with `max_tokens`.
async fn prepare_prompts(
    state: &SharedState,
    prompt: Prompt,
    add_special_tokens: bool,
    echo: bool,
    params: &SamplingParams,
) -> Result<Vec<PreparedPrompt>, ApiError> {
    let inputs = prompt.into_inputs();
    if inputs.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "prompt must not be empty.",
        ));
    }
    let choices = inputs.len() * params.n;
    if choices > MAX_CHOICES {
        return Err(ApiError::invalid_param(
            "prompt",
            format!(
                "{} prompts with n = {} make {choices} choices; at most {MAX_CHOICES} per request.",
                inputs.len(),
                params.n,
            ),
        ));
    }
    let st = state.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        inputs
            .into_iter()
            .map(|input| prepare_completion_prompt(&st, input, add_special_tokens, echo))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal_error("tokenization failed", &e))??;
    let fields = PromptFields {
        prompt: "prompt",
        max_tokens: "max_tokens",
    };
    for p in &prepared {
        check_prompt_fits(
            &p.token_ids,
            params.max_tokens,
            state.vocab_size,
            state.max_model_len,
            fields,
        )?;
    }
    Ok(prepared)
}

/// Identity of the response and what shapes its choices.
struct ResponseMeta {
    id: String,
    created: u64,
    model: String,
    n: usize,
    with_logprobs: bool,
    /// Per prompt: text to put before the completion (`echo`), else "".
    echo_texts: Vec<String>,
}

/// Builds a completion's SSE chunks, or its one body.
struct Completions {
    state: Arc<AppState>,
    meta: ResponseMeta,
    include_usage: bool,
    usage: UsageCounter,
    /// Per choice: has it sent anything yet (echo goes first).
    started: Vec<bool>,
    /// Per choice: character offset of the next token (logprobs).
    text_offsets: Vec<usize>,
}

impl Completions {
    fn new(state: Arc<AppState>, meta: ResponseMeta, include_usage: bool) -> Self {
        let num_choices = meta.echo_texts.len() * meta.n;
        Self {
            state,
            include_usage,
            usage: UsageCounter::new(meta.echo_texts.len()),
            started: vec![false; num_choices],
            text_offsets: vec![0; num_choices],
            meta,
        }
    }

    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Event {
        json_event(&CompletionStreamResponse {
            id: self.meta.id.clone(),
            object: TEXT_COMPLETION,
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices,
            usage: self.include_usage.then_some(usage),
        })
    }
}

impl ChunkBuilder for Completions {
    fn on_output(&mut self, prompt_idx: usize, out: RequestOutput) -> Vec<Event> {
        self.usage.observe(prompt_idx, &out);
        let mut events = Vec::new();
        for d in out.outputs {
            let index = choice_index(prompt_idx, self.meta.n, d.index);
            if index >= self.started.len() {
                continue;
            }
            if d.text.is_empty() && d.token_ids.is_empty() && d.finish_reason.is_none() {
                continue;
            }
            let mut text = String::new();
            if !self.started[index] {
                self.started[index] = true;
                text.push_str(&self.meta.echo_texts[prompt_idx]);
                self.text_offsets[index] = text.chars().count();
            }
            text.push_str(&d.text);
            let logprobs = self.meta.with_logprobs.then(|| {
                let state = &self.state;
                completion_logprobs(
                    d.logprobs.as_deref().unwrap_or_default(),
                    &mut self.text_offsets[index],
                    &|id| token_text(state, id),
                )
            });
            let choice = CompletionChoice {
                index,
                text,
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

impl Responder for Completions {
    type Body = CompletionResponse;

    fn shape(&self) -> (usize, usize) {
        (self.meta.echo_texts.len(), self.meta.n)
    }

    fn body(self, collected: ChoiceCollector) -> CompletionResponse {
        let meta = self.meta;
        let text_of = |id| token_text(&self.state, id);
        let choices = collected
            .choices
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let echo = &meta.echo_texts[index / meta.n];
                let logprobs = meta
                    .with_logprobs
                    .then(|| completion_logprobs(&c.logprobs, &mut echo.chars().count(), &text_of));
                CompletionChoice {
                    index,
                    text: format!("{echo}{}", c.text),
                    logprobs,
                    finish_reason: c.finish_reason,
                    stop_reason: c.stop_reason,
                }
            })
            .collect();
        CompletionResponse {
            id: meta.id,
            object: TEXT_COMPLETION,
            created: meta.created,
            model: meta.model,
            choices,
            usage: collected.usage.usage(),
        }
    }
}
