//! Hands a request's prompts to the engine (one engine request per prompt,
//! each with its `n` samples) and merges their output streams.
//!
//! Dropping the merged stream drops every `RequestStream` in it, which
//! aborts those requests in the engine and frees their KV blocks: that is
//! how a client disconnect (streaming or not) reaches the engine.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, BoxStream, StreamExt};
use pagoda_engine::{EngineError, RequestOptions, RequestOutput, RequestStream, SamplingParams};

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
}

/// Submits every prompt; on any refusal the ones already submitted are
/// dropped (so aborted) and the error returned.
pub fn submit(
    state: &Arc<AppState>,
    response_id: &str,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    opts: &SubmitOptions,
    arrival: Instant,
) -> Result<GenerationStream, ApiError> {
    let single = prompts.len() == 1;
    let mut tracked = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.into_iter().enumerate() {
        let request_opts = RequestOptions {
            priority: opts.priority,
            cache_salt: opts.cache_salt.clone(),
            arrival_time: Some(arrival),
        };
        let stream = state
            .engine
            .add_request(prompt, params.clone(), request_opts)?;
        let label = if single {
            response_id.to_string()
        } else {
            format!("{response_id}-{i}")
        };
        let tracker = RequestTracker::new(state.clone(), label, stream.request_id(), arrival);
        tracked.push((i, stream, tracker));
    }
    let streams = tracked.into_iter().map(|(i, s, t)| prompt_stream(i, s, t));
    Ok(stream::select_all(streams).boxed())
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
            Some(Err(e)) => Some(((index, Err(e)), None)),
            None => Some((
                (
                    index,
                    Err(EngineError::Internal(
                        "the engine ended the request without a final output".into(),
                    )),
                ),
                None,
            )),
        }
    })
    .boxed()
}
