//! POST /v1/completions: each prompt tokenized (or taken as token ids),
//! `n` samples each, answered streamed or as one body by [`respond`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use pagoda_engine::{RequestOutput, SamplingParams, TokenLogprobs};

use crate::choices::{choice_index, stop_reason_value, ChoiceCollector, UsageCounter};
use crate::error::ApiError;
use crate::generation::{submit, SubmitOptions};
use crate::json_body::SampledJson;
use crate::logprobs::{completion_logprobs, echo_logprobs, prompt_logprobs};
use crate::prompt::{
    check_prompt_fits, prepare_completion_prompt, token_text, PreparedPrompt, PromptFields,
};
use crate::protocol::common::{Prompt, PromptLogprobs, StreamOptions, Usage};
use crate::protocol::completion::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse,
    CompletionStreamResponse, TEXT_COMPLETION,
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
    let (include_usage, continuous_usage) = StreamOptions::usage_flags(req.stream_options.as_ref());
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    // lm-eval's loglikelihood requests: echo with max_tokens 0 scores the
    // prompt and generates nothing. The engine samples one token (its
    // prefill has to end somewhere), which the response leaves out.
    let echo_only = echo && max_tokens == 0;
    let mut sampling = SamplingRequest {
        max_tokens: Some(if echo_only { 1 } else { max_tokens }),
        logprobs: req.logprobs,
        ..req.sampling
    };
    let echo_logprobs = echo && req.logprobs.is_some();
    let show_prompt_logprobs = sampling.prompt_logprobs.is_some();
    if echo_logprobs && sampling.prompt_logprobs.is_none() {
        sampling.prompt_logprobs = req.logprobs;
    }
    let constraint_param = sampling.constraint_param()?;
    let params = sampling.to_sampling_params(state.vocab_size)?;
    let add_special_tokens = req.add_special_tokens.unwrap_or(true);
    let prepared = prepare_prompts(&state, req.prompt, add_special_tokens, echo, &params).await?;
    let echo_texts = prepared
        .iter()
        .map(|p| p.text.clone().unwrap_or_default())
        .collect();
    let prompts: Vec<Vec<u32>> = prepared.into_iter().map(|p| p.token_ids).collect();
    let id = random_id("cmpl");
    let opts = SubmitOptions {
        priority: req.priority.unwrap_or(0),
        cache_salt: req.cache_salt,
        constraint_param,
    };
    // Only echo with logprobs needs the ids again (to name the prompt's tokens).
    let echo_ids = if echo_logprobs {
        prompts.clone()
    } else {
        Vec::new()
    };
    let generation = submit(&state, &id, prompts, &params, &opts, arrival).await?;
    let meta = ResponseMeta {
        id,
        created: unix_time(),
        model: state.model_name.clone(),
        n: params.n,
        with_logprobs: params.logprobs.is_some(),
        echo_texts,
        echo_ids,
        echo_only,
        show_prompt_logprobs,
    };
    let usage = UsageOptions {
        include: include_usage,
        continuous: continuous_usage,
    };
    respond(generation, stream, Completions::new(state, meta, usage)).await
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
            "suffix (fill-in-the-middle) is not supported: Pagoda inserts no FIM tokens for any model yet.",
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
    if req.sampling.prompt_logprobs.is_some() && req.stream.unwrap_or(false) {
        return Err(ApiError::invalid_param(
            "prompt_logprobs",
            "prompt_logprobs are not available when stream is true.",
        ));
    }
    if req.max_tokens == Some(0) && req.echo != Some(true) {
        return Err(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be at least 1, or 0 together with echo (to score the prompt).",
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
    /// Per prompt, with `echo` and `logprobs`: the prompt's token ids, whose
    /// logprobs go before the completion's.
    echo_ids: Vec<Vec<u32>>,
    /// `echo` with `max_tokens` 0: the prompt only, no generated token.
    echo_only: bool,
    /// The request asked for vLLM's `prompt_logprobs`.
    show_prompt_logprobs: bool,
}

impl ResponseMeta {
    /// A choice's logprobs: the echoed prompt's (if any), then `tokens`'.
    fn logprobs(
        &self,
        prompt_idx: usize,
        first: bool,
        prompt_logprobs: Option<&[Option<TokenLogprobs>]>,
        tokens: &[TokenLogprobs],
        text_offset: &mut usize,
        text_of: &impl Fn(u32) -> String,
    ) -> CompletionLogprobs {
        let mut out = CompletionLogprobs::default();
        if first {
            if let Some(ids) = self.echo_ids.get(prompt_idx) {
                let lps = prompt_logprobs.unwrap_or_default();
                out = echo_logprobs(ids, lps, text_offset, text_of);
            } else {
                *text_offset = self.echo_texts[prompt_idx].chars().count();
            }
        }
        out.extend(completion_logprobs(tokens, text_offset, text_of));
        out
    }

    /// vLLM's `prompt_logprobs` of a choice, when asked for.
    fn prompt_logprobs(
        &self,
        lps: Option<&[Option<TokenLogprobs>]>,
        text_of: &impl Fn(u32) -> String,
    ) -> Option<PromptLogprobs> {
        self.show_prompt_logprobs
            .then(|| prompt_logprobs(lps.unwrap_or_default(), text_of))
    }
}

/// `stream_options`' usage flags.
struct UsageOptions {
    /// A last chunk with the usage.
    include: bool,
    /// The usage so far on every chunk too.
    continuous: bool,
}

/// Builds a completion's SSE chunks, or its one body.
struct Completions {
    state: Arc<AppState>,
    meta: ResponseMeta,
    usage_options: UsageOptions,
    usage: UsageCounter,
    /// Per choice: has it sent anything yet (echo goes first).
    started: Vec<bool>,
    /// Per choice: character offset of the next token (logprobs).
    text_offsets: Vec<usize>,
    /// Per prompt: the engine's prompt logprobs, once they came.
    prompt_logprobs: Vec<Option<Vec<Option<TokenLogprobs>>>>,
}

impl Completions {
    fn new(state: Arc<AppState>, meta: ResponseMeta, usage_options: UsageOptions) -> Self {
        let num_prompts = meta.echo_texts.len();
        let num_choices = num_prompts * meta.n;
        Self {
            state,
            usage_options,
            usage: UsageCounter::new(num_prompts),
            started: vec![false; num_choices],
            text_offsets: vec![0; num_choices],
            prompt_logprobs: vec![None; num_prompts],
            meta,
        }
    }

    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Event {
        let usage = usage.or_else(|| self.usage_options.continuous.then(|| self.usage.usage()));
        json_event(&CompletionStreamResponse {
            id: self.meta.id.clone(),
            object: TEXT_COMPLETION,
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices,
            usage: self.usage_options.include.then_some(usage),
        })
    }
}

impl ChunkBuilder for Completions {
    fn on_output(&mut self, prompt_idx: usize, out: RequestOutput) -> Vec<Event> {
        let mut out = self.prepare(out);
        self.usage.observe(prompt_idx, &out);
        if let (Some(lps), Some(slot)) = (
            out.prompt_logprobs.take(),
            self.prompt_logprobs.get_mut(prompt_idx),
        ) {
            *slot = Some(lps);
        }
        let mut events = Vec::new();
        for d in out.outputs {
            let index = choice_index(prompt_idx, self.meta.n, d.index);
            if index >= self.started.len() {
                continue;
            }
            if d.text.is_empty() && d.token_ids.is_empty() && d.finish_reason.is_none() {
                continue;
            }
            let first = !self.started[index];
            self.started[index] = true;
            let mut text = String::new();
            if first {
                text.push_str(&self.meta.echo_texts[prompt_idx]);
            }
            text.push_str(&d.text);
            let state = &self.state;
            let text_of = |id| token_text(state, id);
            let prompt_lps = self.prompt_logprobs[prompt_idx].as_deref();
            let logprobs = self.meta.with_logprobs.then(|| {
                self.meta.logprobs(
                    prompt_idx,
                    first,
                    prompt_lps,
                    d.logprobs.as_deref().unwrap_or_default(),
                    &mut self.text_offsets[index],
                    &text_of,
                )
            });
            let choice = CompletionChoice {
                index,
                text,
                logprobs,
                finish_reason: d.finish_reason.as_ref().map(finish_reason_str),
                stop_reason: d.stop_reason.as_ref().map(stop_reason_value),
                prompt_logprobs: None,
            };
            events.push(self.chunk(vec![choice], None));
        }
        events
    }

    fn on_finish(&mut self) -> Vec<Event> {
        if self.usage_options.include {
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

    /// With `echo` and `max_tokens` 0 the one token the engine sampled is
    /// not part of the answer: not in the text, logprobs or usage.
    fn prepare(&self, mut out: RequestOutput) -> RequestOutput {
        if self.meta.echo_only {
            for d in &mut out.outputs {
                d.text.clear();
                d.token_ids.clear();
                d.logprobs = None;
            }
        }
        out
    }

    fn body(self, collected: ChoiceCollector) -> CompletionResponse {
        let meta = self.meta;
        let text_of = |id| token_text(&self.state, id);
        let prompt_lps = collected.prompt_logprobs;
        let choices = collected
            .choices
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let prompt_idx = index / meta.n;
                let echo = &meta.echo_texts[prompt_idx];
                let lps = prompt_lps[prompt_idx].as_deref();
                let logprobs = meta
                    .with_logprobs
                    .then(|| meta.logprobs(prompt_idx, true, lps, &c.logprobs, &mut 0, &text_of));
                CompletionChoice {
                    index,
                    text: format!("{echo}{}", c.text),
                    logprobs,
                    finish_reason: c.finish_reason,
                    stop_reason: c.stop_reason,
                    prompt_logprobs: meta.prompt_logprobs(lps, &text_of),
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
