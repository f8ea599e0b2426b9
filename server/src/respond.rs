//! One way to answer a generation, shared by completions and chat, streamed
//! or not.
//!
//! A refusal that needs the engine's state (queue full) is every stream's
//! first and only item, so the first item is awaited before anything goes
//! out: a refusal still gets its status code instead of an SSE error chunk
//! under a 200.

use axum::response::{IntoResponse, Json, Response};
use futures::stream::{self, StreamExt};
use pagoda_engine::RequestOutput;
use serde::Serialize;

use crate::choices::ChoiceCollector;
use crate::error::ApiError;
use crate::generation::GenerationStream;
use crate::sse::{event_stream, sse_response, ChunkBuilder};

/// What an endpoint makes of the engine's outputs: SSE chunks as they come
/// ([`ChunkBuilder`]), or one body from the collected choices.
pub trait Responder: ChunkBuilder {
    type Body: Serialize;
    /// `(prompts, n)`: the request has `prompts * n` choices.
    fn shape(&self) -> (usize, usize);
    /// The non-streaming response from every choice and the usage.
    fn body(self, collected: ChoiceCollector) -> Self::Body;
    /// Each engine output before it is collected (streams get the same
    /// treatment in their [`ChunkBuilder::on_output`]).
    fn prepare(&self, out: RequestOutput) -> RequestOutput {
        out
    }
}

/// Streams `generation` through `responder` when `stream`, else collects it
/// into one JSON body; a first item that is an error is the response.
pub async fn respond<R: Responder>(
    mut generation: GenerationStream,
    stream: bool,
    responder: R,
) -> Result<Response, ApiError> {
    let first = match generation.next().await {
        Some((_, Err(e))) => return Err(e.into()),
        Some(item) => item,
        None => return Err(ApiError::internal("the engine returned no output")),
    };
    if stream {
        return Ok(sse_response(event_stream(first, generation, responder)));
    }
    let (prompts, n) = responder.shape();
    let mut collected = ChoiceCollector::new(prompts, n);
    let mut items = stream::iter([first]).chain(generation);
    while let Some((i, item)) = items.next().await {
        collected.add(i, responder.prepare(item?));
    }
    Ok(Json(responder.body(collected)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::sse::Event;
    use http_body_util::BodyExt;
    use pagoda_engine::EngineError;

    /// Streams and collects the request ids it sees.
    struct Ids(Vec<u64>);

    impl ChunkBuilder for Ids {
        fn on_output(&mut self, _: usize, out: RequestOutput) -> Vec<Event> {
            vec![Event::default().data(out.request_id.to_string())]
        }
        fn on_finish(&mut self) -> Vec<Event> {
            Vec::new()
        }
    }

    impl Responder for Ids {
        type Body = serde_json::Value;
        fn shape(&self) -> (usize, usize) {
            (2, 1)
        }
        fn body(self, collected: ChoiceCollector) -> serde_json::Value {
            serde_json::json!({"ids": self.0, "prompt_tokens": collected.usage.usage().prompt_tokens})
        }
    }

    fn output(request_id: u64) -> RequestOutput {
        RequestOutput {
            request_id: pagoda_engine::ParentRequestId::new(request_id),
            num_prompt_tokens: 3,
            num_cached_tokens: 0,
            prompt_logprobs: None,
            outputs: Vec::new(),
            finished: true,
            metrics: None,
        }
    }

    fn generation(items: Vec<(usize, Result<RequestOutput, EngineError>)>) -> GenerationStream {
        stream::iter(items).boxed()
    }

    async fn text(r: Response) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_first_refusal_is_the_response_either_way() {
        for stream in [false, true] {
            let g = generation(vec![(0, Err(EngineError::QueueFull))]);
            let e = respond(g, stream, Ids(Vec::new())).await.unwrap_err();
            assert_eq!(e.status.as_u16(), 503);
            let e = respond(generation(Vec::new()), stream, Ids(Vec::new()))
                .await
                .unwrap_err();
            assert_eq!(e.status.as_u16(), 500);
        }
    }

    #[tokio::test]
    async fn outputs_are_streamed_or_collected() {
        let items = || generation(vec![(0, Ok(output(7))), (1, Ok(output(8)))]);
        let r = respond(items(), true, Ids(Vec::new())).await.unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        assert_eq!(text(r).await, "data: 7\n\ndata: 8\n\ndata: [DONE]\n\n");
        let r = respond(items(), false, Ids(vec![1])).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
        assert_eq!(v, serde_json::json!({"ids": [1], "prompt_tokens": 6}));
        // An error after the first item fails the collected response.
        let g = generation(vec![(0, Ok(output(7))), (1, Err(EngineError::Shutdown))]);
        let e = respond(g, false, Ids(Vec::new())).await.unwrap_err();
        assert_eq!(e.status.as_u16(), 503);
    }
}
