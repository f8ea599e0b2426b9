//! POST /v1/completions.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use futures::StreamExt;

use crate::choices::{choice_index, stop_reason_value, ChoiceCollector, UsageCounter};
use crate::error::ApiError;
use crate::generation::{submit, GenerationStream, SubmitOptions};
use crate::json_body::JsonBody;
use crate::logprobs::completion_logprobs;
use crate::prompt::{check_prompt_fits, prepare_completion_prompt, token_text, PreparedPrompt};
use crate::protocol::completion::{
    CompletionChoice, CompletionRequest, CompletionResponse, CompletionStreamResponse,
    TEXT_COMPLETION,
};
use crate::request_tracker::finish_reason_str;
use crate::sampling::SamplingRequest;
use crate::sse::{event_stream, json_event, sse_response, ChunkBuilder};
use crate::state::{random_id, unix_time, AppState, SharedState};
use axum::response::sse::Event;
use pagoda_engine::RequestOutput;

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: u32 = 16;
/// Prompts times `n` in one request: a 4 MiB body of one-token prompts
/// would otherwise queue a million requests.
const MAX_CHOICES: usize = 1024;

pub async fn create_completion(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Response {
    completion(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completion(state: SharedState, req: CompletionRequest) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    state.check_model(req.model.as_deref())?;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
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
    let n = req.n.unwrap_or(1);
    if req.best_of.is_some_and(|b| b != n) {
        return Err(ApiError::invalid_param(
            "best_of",
            "best_of is not supported (only best_of = n).",
        ));
    }
    let echo = req.echo.unwrap_or(false);
    if echo && req.logprobs.is_some() {
        return Err(ApiError::invalid_param(
            "echo",
            "echo together with logprobs is not supported.",
        ));
    }
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let sampling = SamplingRequest {
        max_tokens: Some(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        temperature: req.temperature,
        top_p: req.top_p,
        n: Some(n),
        stop: req.stop,
        seed: req.seed,
        logprobs: req.logprobs,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        min_tokens: req.min_tokens,
        ignore_eos: req.ignore_eos,
        stop_token_ids: req.stop_token_ids,
        skip_special_tokens: req.skip_special_tokens,
        include_stop_str_in_output: req.include_stop_str_in_output,
    };
    let params = sampling.to_sampling_params(state.vocab_size)?;
    let inputs = req.prompt.into_inputs();
    if inputs.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "prompt must not be empty.",
        ));
    }
    if inputs.len() * params.n > MAX_CHOICES {
        return Err(ApiError::invalid_param(
            "prompt",
            format!(
                "{} prompts with n = {} make {} choices; at most {MAX_CHOICES} per request.",
                inputs.len(),
                params.n,
                inputs.len() * params.n
            ),
        ));
    }
    let add_special_tokens = req.add_special_tokens.unwrap_or(true);
    let st = state.clone();
    let prepared: Vec<PreparedPrompt> = tokio::task::spawn_blocking(move || {
        inputs
            .into_iter()
            .map(|input| prepare_completion_prompt(&st, input, add_special_tokens, echo))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal_error("tokenization failed", &e))??;
    for p in &prepared {
        check_prompt_fits(
            p.token_ids.len(),
            params.max_tokens,
            state.max_model_len,
            "prompt",
            "max_tokens",
        )?;
    }
    let echo_texts: Vec<String> = prepared
        .iter()
        .map(|p| p.text.clone().unwrap_or_default())
        .collect();
    let prompts = prepared.into_iter().map(|p| p.token_ids).collect();
    let id = random_id("cmpl");
    let opts = SubmitOptions {
        priority: req.priority.unwrap_or(0),
        cache_salt: req.cache_salt,
    };
    let mut generation = submit(&state, &id, prompts, &params, &opts, arrival)?;
    let meta = ResponseMeta {
        id,
        created: unix_time(),
        model: state.model_name.clone(),
        n: params.n,
        with_logprobs: params.logprobs.is_some(),
        echo_texts,
    };
    if stream {
        // Wait for the first output so that refusals still get a status code.
        let first = match generation.next().await {
            Some((_, Err(e))) => return Err(e.into()),
            Some(item) => item,
            None => return Err(ApiError::internal("the engine returned no output")),
        };
        let builder = CompletionChunks::new(state, meta, include_usage);
        Ok(sse_response(event_stream(first, generation, builder)))
    } else {
        collect(state, meta, generation)
            .await
            .map(|r| Json(r).into_response())
    }
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

async fn collect(
    state: Arc<AppState>,
    meta: ResponseMeta,
    mut generation: GenerationStream,
) -> Result<CompletionResponse, ApiError> {
    let mut collector = ChoiceCollector::new(meta.echo_texts.len(), meta.n);
    while let Some((i, item)) = generation.next().await {
        collector.add(i, item?);
    }
    let text_of = |id| token_text(&state, id);
    let choices = collector
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
    Ok(CompletionResponse {
        id: meta.id,
        object: TEXT_COMPLETION,
        created: meta.created,
        model: meta.model,
        choices,
        usage: collector.usage.usage(),
    })
}

/// Builds the SSE chunks of a streaming completion.
struct CompletionChunks {
    state: Arc<AppState>,
    meta: ResponseMeta,
    include_usage: bool,
    usage: UsageCounter,
    /// Per choice: has it sent anything yet (echo goes first).
    started: Vec<bool>,
    /// Per choice: character offset of the next token (logprobs).
    text_offsets: Vec<usize>,
}

impl CompletionChunks {
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

    fn chunk(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<crate::protocol::common::Usage>,
    ) -> Event {
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

impl ChunkBuilder for CompletionChunks {
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
