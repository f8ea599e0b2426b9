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
use crate::logprobs::{chat_logprobs, prompt_logprobs};
use crate::prompt::{
    check_prompt_fits, prepare_chat_prompt, token_text, ChatPromptOptions, PromptFields,
};
use crate::protocol::chat::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatLogprobs, ChatResponseMessage, ASSISTANT,
    CHAT_COMPLETION, CHAT_COMPLETION_CHUNK,
};
use crate::protocol::common::{StreamOptions, Usage};
use crate::request_tracker::finish_reason_str;
use crate::respond::{respond, Responder};
use crate::sampling::SamplingRequest;
use crate::sse::{json_event, ChunkBuilder};
use crate::state::{random_id, unix_time, AppState, SharedState};
use crate::tool_calling::{delta_parts, ToolCalling, ToolOutput};
use crate::tool_parsers::stream::ToolCallStreamer;

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
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid_param(
            "stream_options",
            "stream_options can only be set when stream is true.",
        ));
    }
    if req.sampling.prompt_logprobs.is_some() && stream {
        return Err(ApiError::invalid_param(
            "prompt_logprobs",
            "prompt_logprobs are not available when stream is true.",
        ));
    }
    let (include_usage, continuous_usage) = StreamOptions::usage_flags(req.stream_options.as_ref());
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
    let constraint_param = sampling.constraint_param()?;
    let mut params = sampling.to_sampling_params(state.vocab_size).map_err(|e| {
        // The engine names the field `max_tokens`; chat may have sent the other one.
        if e.param.as_deref() == Some("max_tokens") {
            e.with_param(max_tokens_param)
        } else {
            e
        }
    })?;
    let tool_calling = ToolCalling::resolve(
        req.tools,
        req.tool_choice,
        req.parallel_tool_calls,
        state.auto_tool_parser,
    )?;
    tool_calling.apply(&mut params)?;
    let constraint_param = if tool_calling.constrains() {
        Some("tools".to_string())
    } else {
        constraint_param
    };
    let chat_opts =
        ChatPromptOptions::resolve(req.add_generation_prompt, req.continue_final_message)?;
    let messages = req.messages;
    let st = state.clone();
    let tools = tool_calling.tools;
    let prompt = tokio::task::spawn_blocking(move || {
        prepare_chat_prompt(&st, &messages, tools.as_deref(), chat_opts)
    })
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
        constraint_param,
    };
    let generation = submit(&state, &id, vec![prompt], &params, &opts, arrival).await?;
    let meta = ChatMeta {
        id,
        created: unix_time(),
        model: state.model_name.clone(),
        n: params.n,
        logprobs: want_logprobs.then_some(top_logprobs as usize),
        show_prompt_logprobs: params.prompt_logprobs.is_some(),
        tools: tool_calling.output,
    };
    let chat = Chat::new(state, meta, include_usage, continuous_usage);
    respond(generation, stream, chat).await
}

struct ChatMeta {
    id: String,
    created: u64,
    model: String,
    n: usize,
    /// `Some(top_logprobs)` when logprobs were asked for.
    logprobs: Option<usize>,
    /// The request asked for vLLM's `prompt_logprobs`.
    show_prompt_logprobs: bool,
    /// How choices are read for tool calls (None: plain content).
    tools: Option<ToolOutput>,
}

/// Builds a chat completion's SSE chunks, or its one body.
struct Chat {
    state: Arc<AppState>,
    meta: ChatMeta,
    include_usage: bool,
    /// vLLM's `continuous_usage_stats`: the usage so far on every chunk.
    continuous_usage: bool,
    usage: UsageCounter,
    /// The role chunks go out before the first content.
    sent_roles: bool,
    /// Per choice, when its text is read for tool calls.
    streamers: Vec<ToolCallStreamer>,
}

impl Chat {
    fn new(
        state: Arc<AppState>,
        meta: ChatMeta,
        include_usage: bool,
        continuous_usage: bool,
    ) -> Self {
        let streamers = match &meta.tools {
            Some(tools) => (0..meta.n).map(|_| tools.streamer()).collect(),
            None => Vec::new(),
        };
        Self {
            state,
            meta,
            include_usage,
            continuous_usage,
            usage: UsageCounter::new(1),
            sent_roles: false,
            streamers,
        }
    }

    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Event {
        let usage = usage.or_else(|| self.continuous_usage.then(|| self.usage.usage()));
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
                        tool_calls: None,
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
            let index = choice_index(prompt_idx, self.meta.n, d.index);
            let finish_reason = d.finish_reason.as_ref().map(finish_reason_str);
            let stop_reason = d.stop_reason.as_ref().map(stop_reason_value);
            let (Some(tools), Some(streamer)) = (&self.meta.tools, self.streamers.get_mut(d.index))
            else {
                let choice = ChatChunkChoice {
                    index,
                    delta: ChatDelta {
                        role: None,
                        content: Some(d.text),
                        tool_calls: None,
                    },
                    logprobs,
                    finish_reason,
                    stop_reason,
                };
                events.push(self.chunk(vec![choice], None));
                continue;
            };
            // Tool calls: content and call pieces as the streamer settles
            // them; text held back (a marker may be starting) sends nothing,
            // unless logprobs or the finish reason must go out.
            let pieces = streamer.push(&d.text, finish_reason.is_some());
            let finish_reason = tools.finish_reason(streamer.sent_calls(), finish_reason);
            let mut deltas: Vec<ChatDelta> = pieces
                .into_iter()
                .map(|piece| {
                    let (content, tool_calls) = delta_parts(piece);
                    ChatDelta {
                        role: None,
                        content,
                        tool_calls,
                    }
                })
                .collect();
            if deltas.is_empty() && (finish_reason.is_some() || logprobs.is_some()) {
                deltas.push(ChatDelta::default());
            }
            let last = deltas.len().saturating_sub(1);
            let mut logprobs = logprobs;
            let mut stop_reason = stop_reason;
            for (k, delta) in deltas.into_iter().enumerate() {
                let is_last = k == last;
                let choice = ChatChunkChoice {
                    index,
                    delta,
                    logprobs: logprobs.take(),
                    finish_reason: finish_reason.filter(|_| is_last),
                    stop_reason: if is_last { stop_reason.take() } else { None },
                };
                events.push(self.chunk(vec![choice], None));
            }
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
        let prompt_logprobs = meta.show_prompt_logprobs.then(|| {
            let lps = collected.prompt_logprobs[0].as_deref().unwrap_or_default();
            prompt_logprobs(lps, &text_of)
        });
        let choices = collected
            .choices
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let (content, tool_calls, finish_reason) = match &meta.tools {
                    Some(tools) => {
                        let m = tools.message(&c.text, c.finish_reason);
                        (m.content, m.tool_calls, m.finish_reason)
                    }
                    None => (Some(c.text), Vec::new(), c.finish_reason),
                };
                ChatChoice {
                    index,
                    logprobs: meta.logprobs.map(|top| ChatLogprobs {
                        content: chat_logprobs(&c.logprobs, top, &text_of),
                        refusal: None,
                    }),
                    message: ChatResponseMessage {
                        role: ASSISTANT,
                        content,
                        tool_calls,
                    },
                    finish_reason,
                    stop_reason: c.stop_reason,
                }
            })
            .collect();
        ChatCompletionResponse {
            id: meta.id,
            object: CHAT_COMPLETION,
            created: meta.created,
            model: meta.model,
            choices,
            usage: collected.usage.usage(),
            prompt_logprobs,
        }
    }
}
