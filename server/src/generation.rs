//! Hands a request's prompts to the engine (one engine request per prompt,
//! each with its `n` samples) and merges their output streams.
//!
//! Dropping the merged stream drops every `RequestStream` in it, which
//! aborts those requests in the engine and frees their KV blocks: that is
//! how a client disconnect (streaming or not) reaches the engine.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, BoxStream, StreamExt};
use pagoda_engine::{
    EngineError, EngineRequest, RequestOptions, RequestOutput, RequestStream, SamplingParams,
};

use crate::error::ApiError;
use crate::request_tracker::RequestTracker;
use crate::state::AppState;

/// One streamed item: the prompt's index and the engine's output for it.
pub type GenerationItem = (usize, Result<RequestOutput, EngineError>);

/// The outputs of all prompts of one API request, interleaved as they come.
pub type GenerationStream = BoxStream<'static, GenerationItem>;

/// Per-request options taken from the API request.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub priority: i32,
    pub cache_salt: Option<String>,
    /// The request field the output constraint came from: a grammar that
    /// does not compile is a 400 naming it.
    pub constraint_param: Option<String>,
}

/// Submits every prompt without waiting for the engine. A prompt the model
/// cannot take fails here (400); a refusal of the engine (queue full) comes
/// as the first item of every prompt's stream, before any output, so
/// awaiting the first item tells success from refusal. The prompts are
/// added as one group: refused, none of them runs.
///
/// A constrained request's grammar compiles while it is validated (and the
/// first one builds the token trie): milliseconds of CPU, so that request
/// is handed over on a blocking thread, off the async workers.
pub async fn submit(
    state: &Arc<AppState>,
    response_id: &str,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    opts: &SubmitOptions,
    arrival: Instant,
) -> Result<GenerationStream, ApiError> {
    if params.structured_outputs.is_none() {
        return submit_now(state, response_id, prompts, params, opts, arrival);
    }
    let (state, id) = (state.clone(), response_id.to_string());
    let (params, opts) = (params.clone(), opts.clone());
    tokio::task::spawn_blocking(move || submit_now(&state, &id, prompts, &params, &opts, arrival))
        .await
        .map_err(|e| ApiError::internal_error("submitting the request failed", &e))?
}

fn submit_now(
    state: &Arc<AppState>,
    response_id: &str,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    opts: &SubmitOptions,
    arrival: Instant,
) -> Result<GenerationStream, ApiError> {
    let single = prompts.len() == 1;
    let requests = prompts
        .into_iter()
        .map(|prompt_token_ids| EngineRequest {
            prompt_token_ids,
            params: params.clone(),
            opts: RequestOptions {
                priority: opts.priority,
                cache_salt: opts.cache_salt.clone(),
                arrival_time: Some(arrival),
            },
        })
        .collect();
    let streams = state.engine.add_requests(requests).map_err(|e| {
        let grammar = matches!(e, EngineError::InvalidStructuredOutput(_));
        match (grammar, &opts.constraint_param) {
            (true, Some(param)) => ApiError::from(e).with_param(param.clone()),
            _ => ApiError::from(e),
        }
    })?;
    let tracked = streams.into_iter().enumerate().map(|(i, stream)| {
        let label = if single {
            response_id.to_string()
        } else {
            format!("{response_id}-{i}")
        };
        let tracker = RequestTracker::new(state.clone(), label, stream.request_id(), arrival);
        prompt_stream(i, stream, tracker)
    });
    Ok(stream::select_all(tracked).boxed())
}

/// The outputs of one engine request, ending after its last output or error.
fn prompt_stream(
    index: usize,
    stream: RequestStream,
    tracker: RequestTracker,
) -> BoxStream<'static, GenerationItem> {
    stream::unfold(Some((stream, tracker)), move |state| async move {
        let (mut stream, mut tracker) = state?;
        match stream.next().await {
            Some(Ok(out)) => {
                tracker.observe(&out);
                let next = if out.finished {
                    None
                } else {
                    Some((stream, tracker))
                };
                Some(((index, Ok(out)), next))
            }
            Some(Err(e)) => {
                tracker.observe_error(&e);
                Some(((index, Err(e)), None))
            }
            None => Some((
                (
                    index,
                    Err(EngineError::internal(
                        "the engine ended the request without a final output",
                    )),
                ),
                None,
            )),
        }
    })
    .boxed()
}
