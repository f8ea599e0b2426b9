//! Follows one engine request from submission to its end: feeds the latency
//! histograms, counts it by finish reason and writes its log line. Dropped
//! before the end (client gone), it counts the request as aborted.

use std::sync::Arc;
use std::time::Instant;

use pagoda_engine::{EngineError, FinishReason, ParentRequestId, RequestOutput};

use crate::state::AppState;

/// OpenAI's `finish_reason` string.
pub fn finish_reason_str(reason: &FinishReason) -> &'static str {
    reason.as_str()
}

pub struct RequestTracker {
    state: Arc<AppState>,
    /// The response id plus the prompt index, e.g. `cmpl-…-0`.
    label: String,
    engine_id: ParentRequestId,
    arrival: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    prompt_tokens: usize,
    output_tokens: usize,
    /// The latest finish reason of any of its samples.
    finish_reason: Option<&'static str>,
    /// Finished, or refused: nothing left to record on drop.
    finished: bool,
    /// Some output arrived: an error now aborts a started request.
    started: bool,
    /// The handler's span (it names the client's `X-Request-Id`): the log
    /// line of a streamed request is written after the handler returned.
    span: tracing::Span,
}

impl RequestTracker {
    pub fn new(
        state: Arc<AppState>,
        label: String,
        engine_id: ParentRequestId,
        arrival: Instant,
    ) -> Self {
        Self {
            state,
            label,
            engine_id,
            arrival,
            first_token: None,
            last_token: None,
            prompt_tokens: 0,
            output_tokens: 0,
            finish_reason: None,
            finished: false,
            started: false,
            span: tracing::Span::current(),
        }
    }

    /// Looks at an error that ends the request. Before any output it is the
    /// engine's refusal (e.g. queue full): the request never ran, so it is
    /// not counted as finished or aborted; the client gets the error status.
    pub fn observe_error(&mut self, err: &EngineError) {
        if self.started {
            return; // counted as aborted on drop
        }
        self.finished = true;
        if self.state.log_requests {
            let _entered = self.span.enter();
            tracing::info!(
                "Refused request {}: {}",
                self.label,
                pagoda_engine::error_chain(err)
            );
        }
    }

    /// Looks at one streamed output of the request.
    pub fn observe(&mut self, out: &RequestOutput) {
        let now = Instant::now();
        self.started = true;
        self.prompt_tokens = out.num_prompt_tokens;
        let new_tokens: usize = out.outputs.iter().map(|d| d.token_ids.len()).sum();
        if let Some(r) = out
            .outputs
            .iter()
            .rev()
            .find_map(|d| d.finish_reason.as_ref())
        {
            self.finish_reason = Some(finish_reason_str(r));
        }
        if new_tokens > 0 {
            self.output_tokens += new_tokens;
            if self.first_token.is_none() {
                self.first_token = Some(now);
            } else if let Some(last) = self.last_token {
                // One engine step per output: the gap is the inter-token latency.
                self.state
                    .metrics
                    .observe_inter_token_latency(now.duration_since(last).as_secs_f64());
            }
            self.last_token = Some(now);
        }
        if out.finished {
            self.finish(out, self.finish_reason.unwrap_or("stop"), now);
        }
    }

    fn finish(&mut self, out: &RequestOutput, reason: &'static str, now: Instant) {
        self.finished = true;
        let m = &self.state.metrics;
        // The engine's timings when it sends them, else the server's own.
        let (queue, ttft, e2e) = match &out.metrics {
            Some(rm) => (
                Some(rm.queue_time),
                Some(rm.time_to_first_token),
                rm.e2e_latency,
            ),
            None => (
                None,
                self.first_token
                    .map(|t| t.duration_since(self.arrival).as_secs_f64()),
                now.duration_since(self.arrival).as_secs_f64(),
            ),
        };
        if let Some(q) = queue {
            m.observe_request_queue_time(q);
        }
        if let Some(t) = ttft.filter(|_| self.output_tokens > 0) {
            m.observe_time_to_first_token(t);
        }
        m.observe_e2e_request_latency(e2e);
        m.record_finished(reason);
        if self.state.log_requests {
            let _entered = self.span.enter();
            tracing::info!(
                "Finished request {} (engine id {}): prompt_tokens={} output_tokens={} ttft={} e2e={:.3}s finish_reason={}",
                self.label,
                self.engine_id,
                self.prompt_tokens,
                self.output_tokens,
                ttft.map_or("-".to_string(), |t| format!("{t:.3}s")),
                e2e,
                reason
            );
        }
    }
}

impl Drop for RequestTracker {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let elapsed = self.arrival.elapsed().as_secs_f64();
        self.state.metrics.record_finished("abort");
        if self.state.log_requests {
            let _entered = self.span.enter();
            tracing::info!(
                "Aborted request {} (engine id {}): prompt_tokens={} output_tokens={} after {:.3}s (client gone or error)",
                self.label,
                self.engine_id,
                self.prompt_tokens,
                self.output_tokens,
                elapsed
            );
        }
    }
}
