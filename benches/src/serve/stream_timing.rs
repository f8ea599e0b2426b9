//! TTFT, ITL and latency of one streamed response, from its parsed chunks
//! and their arrival times, by vLLM's rule (`async_request_openai_completions`
//! and `async_request_openai_chat_completions` in
//! `vllm/benchmarks/lib/endpoint_request_func.py`):
//!
//! - a chunk counts when its `choices` is a non-empty array, whatever it
//!   carries: TTFT is the first such chunk, even a chat chunk with only
//!   `role` or a completions chunk with empty `text` (vLLM: "text could be
//!   empty here, e.g. for special tokens");
//! - each later counting chunk adds one ITL, the gap since the previous one;
//! - the latency ends at the last counting chunk: the trailing usage chunk
//!   (`choices: []`) neither counts nor moves it.
//!
//! Kept apart from the HTTP code so the rule can be tested with made-up
//! arrival times.

use std::time::Instant;

use serde_json::Value;

use super::endpoint_kind::EndpointKind;
use super::metrics::RequestFuncOutput;

/// Accumulates one response's timings and text, chunk by chunk.
#[derive(Debug)]
pub struct StreamTiming {
    kind: EndpointKind,
    /// When the request was sent.
    st: Instant,
    /// The last counting chunk, or `st` before the first.
    most_recent: Instant,
    first_chunk_received: bool,
    ttft: f64,
    itl: Vec<f64>,
    generated_text: String,
    output_tokens: Option<usize>,
    prompt_tokens: Option<usize>,
}

impl StreamTiming {
    pub fn new(kind: EndpointKind, st: Instant) -> Self {
        Self {
            kind,
            st,
            most_recent: st,
            first_chunk_received: false,
            ttft: 0.0,
            itl: Vec::new(),
            generated_text: String::new(),
            output_tokens: None,
            prompt_tokens: None,
        }
    }

    /// Takes one parsed `data:` payload that arrived at `timestamp`.
    pub fn on_chunk(&mut self, data: &Value, timestamp: Instant) {
        if let Some(choice) = data
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            if self.first_chunk_received {
                self.itl
                    .push(timestamp.duration_since(self.most_recent).as_secs_f64());
            } else {
                self.first_chunk_received = true;
                self.ttft = timestamp.duration_since(self.st).as_secs_f64();
            }
            self.most_recent = timestamp;
            let text = match self.kind {
                EndpointKind::Completions => choice.get("text"),
                EndpointKind::ChatCompletions => choice.get("delta").and_then(|d| d.get("content")),
            };
            self.generated_text
                .push_str(text.and_then(Value::as_str).unwrap_or(""));
        }
        // Some servers put usage on the last token chunk: read it wherever it is.
        if let Some(usage) = data.get("usage").filter(|u| !u.is_null()) {
            if let Some(n) = usage.get("completion_tokens").and_then(Value::as_u64) {
                self.output_tokens = Some(n as usize);
            }
            if let Some(n) = usage.get("prompt_tokens").and_then(Value::as_u64) {
                self.prompt_tokens = Some(n as usize);
            }
        }
    }

    /// Writes what was measured into `output`, given how reading the stream
    /// ended. After a failed read only TTFT, ITLs and usage are kept, as
    /// vLLM keeps them when an exception ends a request; a complete stream
    /// also gives the text and latency, and fails when no chunk counted, as
    /// vLLM marks such a response.
    pub fn finish(
        self,
        output: &mut RequestFuncOutput,
        read: Result<(), String>,
    ) -> Result<(), String> {
        output.ttft = self.ttft;
        output.itl = self.itl;
        if self.output_tokens.is_some() {
            output.output_tokens = self.output_tokens;
        }
        if let Some(n) = self.prompt_tokens {
            output.prompt_len = n;
        }
        read?;
        output.generated_text = self.generated_text;
        output.latency = self.most_recent.duration_since(self.st).as_secs_f64();
        if !self.first_chunk_received {
            return Err("Never received a valid chunk to calculate TTFT. This response will be marked as failed!".into());
        }
        output.success = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn ms(st: Instant, n: u64) -> Instant {
        st + Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Feeds `(payload, ms after sending)` pairs and returns the output.
    fn time(kind: EndpointKind, chunks: &[(Value, u64)]) -> RequestFuncOutput {
        let st = Instant::now();
        let mut timing = StreamTiming::new(kind, st);
        for (data, at) in chunks {
            timing.on_chunk(data, ms(st, *at));
        }
        let mut out = RequestFuncOutput::default();
        timing.finish(&mut out, Ok(())).unwrap();
        out
    }

    fn usage(completion: u64) -> Value {
        json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": completion}})
    }

    #[test]
    fn chat_role_chunk_starts_ttft_as_in_vllm() {
        // Role-only chunk at 30 ms, content at 50 and 80 ms, usage at 90 ms.
        let out = time(
            EndpointKind::ChatCompletions,
            &[
                (
                    json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
                    30,
                ),
                (json!({"choices": [{"delta": {"content": "Hi"}}]}), 50),
                (json!({"choices": [{"delta": {"content": " there"}}]}), 80),
                (usage(2), 90),
            ],
        );
        assert!(close(out.ttft, 0.030), "{}", out.ttft);
        assert_eq!(out.itl.len(), 2);
        assert!(close(out.itl[0], 0.020) && close(out.itl[1], 0.030));
        // The usage chunk does not move the end.
        assert!(close(out.latency, 0.080), "{}", out.latency);
        assert_eq!(out.generated_text, "Hi there");
        assert_eq!((out.output_tokens, out.prompt_len), (Some(2), 9));
    }

    #[test]
    fn completions_empty_text_counts_and_usage_chunk_does_not() {
        // An empty text (a special token) at 40 ms is the first token.
        let out = time(
            EndpointKind::Completions,
            &[
                (json!({"choices": [{"text": ""}]}), 40),
                (json!({"choices": [{"text": "a"}]}), 55),
                (json!({"choices": [{"text": "b"}], "usage": null}), 75),
                (usage(3), 200),
            ],
        );
        assert!(close(out.ttft, 0.040));
        assert_eq!(out.itl.len(), 2);
        assert!(close(out.itl[0], 0.015) && close(out.itl[1], 0.020));
        assert!(close(out.latency, 0.075));
        assert_eq!(out.generated_text, "ab");
        assert_eq!(out.output_tokens, Some(3));
    }

    #[test]
    fn only_usage_is_a_failed_response() {
        let st = Instant::now();
        let mut timing = StreamTiming::new(EndpointKind::Completions, st);
        timing.on_chunk(&usage(0), ms(st, 10));
        let mut out = RequestFuncOutput::default();
        let err = timing.finish(&mut out, Ok(())).unwrap_err();
        assert!(err.starts_with("Never received"), "{err}");
        assert!(!out.success);
    }

    #[test]
    fn broken_stream_keeps_ttft_and_itls_only() {
        let st = Instant::now();
        let mut timing = StreamTiming::new(EndpointKind::Completions, st);
        timing.on_chunk(&json!({"choices": [{"text": "a"}]}), ms(st, 20));
        timing.on_chunk(&json!({"choices": [{"text": "b"}]}), ms(st, 30));
        let mut out = RequestFuncOutput::default();
        let err = timing.finish(&mut out, Err("stream broken: reset".into()));
        assert_eq!(err.unwrap_err(), "stream broken: reset");
        assert!(close(out.ttft, 0.020) && out.itl.len() == 1);
        assert!(!out.success && out.generated_text.is_empty() && out.latency == 0.0);
    }
}
