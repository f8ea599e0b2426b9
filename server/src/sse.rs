//! Server-sent events as OpenAI streams them: `data: <json>` per chunk, an
//! error chunk if the request fails midway, then `data: [DONE]`.
//!
//! Dropping the event stream (the client went away) drops the generation
//! stream inside it, which aborts the engine requests.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde::Serialize;

use crate::error::ApiError;
use crate::generation::{GenerationItem, GenerationStream};
use pagoda_engine::RequestOutput;

/// `data: <chunk as JSON>`.
pub fn json_event<T: Serialize>(chunk: &T) -> Event {
    // Our chunk types hold only strings and numbers: serializing cannot fail.
    Event::default().data(serde_json::to_string(chunk).unwrap_or_default())
}

/// `data: [DONE]`, the last event of every stream.
pub fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// `data: {"error": {...}}` for a request that fails after streaming began.
pub fn error_event(err: &ApiError) -> Event {
    Event::default().data(err.body_json())
}

/// Turns engine outputs into the chunks of one API (completions or chat).
pub trait ChunkBuilder: Send + 'static {
    /// The chunks for one engine output of prompt `prompt_idx`.
    fn on_output(&mut self, prompt_idx: usize, out: RequestOutput) -> Vec<Event>;
    /// The chunks after the last output (e.g. usage), before `[DONE]`.
    fn on_finish(&mut self) -> Vec<Event>;
}

/// The SSE events of a request whose first item is already in hand.
pub fn event_stream<B: ChunkBuilder>(
    first: GenerationItem,
    rest: GenerationStream,
    builder: B,
) -> impl Stream<Item = Event> + Send + 'static {
    let items = stream::once(async move { first }).chain(rest).boxed();
    stream::unfold(Some((items, builder)), |state| async move {
        let (mut items, mut builder) = state?;
        match items.next().await {
            Some((i, Ok(out))) => Some((builder.on_output(i, out), Some((items, builder)))),
            Some((_, Err(e))) => {
                let err = ApiError::from(e);
                tracing::warn!("request failed while streaming: {}", err.message);
                Some((vec![error_event(&err), done_event()], None))
            }
            None => {
                let mut events = builder.on_finish();
                events.push(done_event());
                Some((events, None))
            }
        }
    })
    .flat_map(stream::iter)
}

/// The HTTP response for an event stream (`text/event-stream`).
pub fn sse_response(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    Sse::new(events.map(Ok::<_, Infallible>)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use pagoda_engine::EngineError;
    use pagoda_engine::ParentRequestId;

    async fn body_text(response: Response) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Writes each output's request id, and "end" after the last.
    struct Ids;

    impl ChunkBuilder for Ids {
        fn on_output(&mut self, prompt_idx: usize, out: RequestOutput) -> Vec<Event> {
            vec![json_event(&serde_json::json!([
                prompt_idx,
                out.request_id.get()
            ]))]
        }
        fn on_finish(&mut self) -> Vec<Event> {
            vec![Event::default().data("end")]
        }
    }

    fn output(request_id: u64) -> RequestOutput {
        RequestOutput {
            request_id: ParentRequestId::new(request_id),
            num_prompt_tokens: 1,
            num_cached_tokens: 0,
            prompt_logprobs: None,
            outputs: Vec::new(),
            finished: false,
            metrics: None,
        }
    }

    async fn run(items: Vec<GenerationItem>) -> Vec<String> {
        let mut items = items.into_iter();
        let first = items.next().unwrap();
        let rest = stream::iter(items).boxed();
        let text = body_text(sse_response(event_stream(first, rest, Ids))).await;
        text.split("\n\n")
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_prefix("data: ").unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn stream_ends_with_finish_chunks_then_done() {
        let events = run(vec![(0, Ok(output(7))), (1, Ok(output(8)))]).await;
        assert_eq!(events, vec!["[0,7]", "[1,8]", "end", "[DONE]"]);
    }

    #[tokio::test]
    async fn error_midway_sends_error_chunk_then_done_and_stops() {
        let events = run(vec![
            (0, Ok(output(7))),
            (0, Err(EngineError::Shutdown)),
            (1, Ok(output(8))),
        ])
        .await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0], "[0,7]");
        let err: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
        assert_eq!(err["error"]["code"], "shutting_down");
        assert_eq!(events[2], "[DONE]");
    }

    #[tokio::test]
    async fn events_are_data_lines_ending_with_done() {
        let events = stream::iter(vec![
            json_event(&serde_json::json!({"a": 1})),
            error_event(&ApiError::bad_request("bad")),
            done_event(),
        ]);
        let response = sse_response(events);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = body_text(response).await;
        let lines: Vec<&str> = text.split("\n\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines[0], r#"data: {"a":1}"#);
        assert!(
            lines[1].starts_with(r#"data: {"error":{"message":"bad""#),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "data: [DONE]");
        assert_eq!(lines.len(), 3);
    }
}
