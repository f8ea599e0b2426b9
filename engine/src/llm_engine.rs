//! The synchronous engine: one `step()` schedules, runs the forward pass,
//! samples, updates the scheduler and detokenizes. `EngineHandle` runs it on
//! a thread; tests and offline tools may drive it directly.

use crate::engine_error::{EngineContext, EngineError};
use crate::engine_request::{EngineRequest, RequestOptions, ValidRequest};
use crate::kv_events::KvEventSink;
use crate::model_info::ModelInfo;
use crate::model_runner::Runner;
use crate::outputs::{CompletionDelta, RequestMetrics, RequestOutput, StopReason, TokenLogprobs};
use crate::request_ids::{ParentRequestId, RequestIds};
use crate::runner_io::{HostLogits, LogitsNeed, ModelRunnerOutput};
use crate::sampler::{self, ProcessorContext, Sampled, SamplingRow};
use crate::sampling_params::SamplingParams;
use crate::structured_output::{GrammarMatcher, MaskWorker, StructuredOutputCompiler};
use crate::tokenizer::{IncrementalDetokenizer, Tokenizer};
use pagoda_scheduler::{
    FinishReason, Request, RequestId, RequestUpdate, Scheduler, SchedulerOutput, StopConditions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Counters the engine keeps besides the scheduler's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub kv_cache_usage: f64,
    pub num_preemptions_total: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
}

/// One of the `n` sequences of a request.
struct SeqState {
    parent: ParentRequestId,
    index: usize,
    params: Arc<SamplingParams>,
    rng: StdRng,
    detok: Option<IncrementalDetokenizer>,
    /// EOS and stop_token_ids: masked until min_tokens.
    stop_ids: Vec<u32>,
    finished: bool,
    /// The sequence's place in its structured-output grammar.
    grammar: Option<GrammarMatcher>,
}

/// A request as the caller sees it: `n` sequences and its timings.
struct ParentState {
    children: Vec<RequestId>,
    num_unfinished: usize,
    num_prompt_tokens: usize,
    arrival: Instant,
    first_scheduled: Option<Instant>,
    first_token: Option<Instant>,
    /// Prompt logprobs gathered chunk by chunk; sent with the first output.
    prompt_logprobs: Option<Vec<Option<TokenLogprobs>>>,
    prompt_logprobs_sent: bool,
    /// Prompt tokens served from the prefix cache (the first sequence's hit).
    num_cached_tokens: usize,
}

pub struct LlmEngine {
    scheduler: Scheduler,
    runner: Box<dyn Runner>,
    tokenizer: Option<Tokenizer>,
    info: ModelInfo,
    seqs: HashMap<RequestId, SeqState>,
    parents: HashMap<ParentRequestId, ParentState>,
    ids: RequestIds,
    rng: StdRng,
    max_waiting_requests: Option<usize>,
    /// Where KV-cache events go, when a publisher wants them.
    kv_event_sink: Option<KvEventSink>,
    prompt_tokens_total: u64,
    generation_tokens_total: u64,
    /// Arrival times reach the scheduler as seconds since this instant
    /// (its priority queue orders equal priorities by arrival).
    epoch: Instant,
    /// The previous step's scheduler output, its buffers reused.
    spare_sched: SchedulerOutput,
    spare_updates: Vec<RequestUpdate>,
    /// Compiles and caches structured-output grammars (shared with the
    /// handle, which validates requests on the caller's thread).
    grammars: Arc<StructuredOutputCompiler>,
    /// Computes grammar masks while the forward pass runs.
    mask_worker: MaskWorker,
}

impl LlmEngine {
    pub fn new(
        scheduler: Scheduler,
        runner: Box<dyn Runner>,
        tokenizer: Option<Tokenizer>,
        info: ModelInfo,
        seed: u64,
        max_waiting_requests: Option<usize>,
    ) -> Self {
        let grammars = Arc::new(StructuredOutputCompiler::new(
            tokenizer.clone(),
            info.vocab_size,
            info.eos_token_ids.clone(),
        ));
        Self {
            grammars,
            mask_worker: MaskWorker::start(),
            scheduler,
            runner,
            tokenizer,
            info,
            seqs: HashMap::new(),
            parents: HashMap::new(),
            ids: RequestIds::default(),
            rng: StdRng::seed_from_u64(seed),
            max_waiting_requests,
            kv_event_sink: None,
            prompt_tokens_total: 0,
            generation_tokens_total: 0,
            epoch: Instant::now(),
            spare_sched: SchedulerOutput::default(),
            spare_updates: Vec::new(),
        }
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Checks a request without enqueuing it.
    pub fn validate(&self, request: EngineRequest) -> Result<ValidRequest, EngineError> {
        ValidRequest::new(&self.info, &self.grammars, request)
    }

    /// The structured-output compiler and its grammar cache.
    pub fn structured_output_compiler(&self) -> &Arc<StructuredOutputCompiler> {
        &self.grammars
    }

    /// The engine's id counter, for callers that pick ids themselves
    /// (`add_request_with_id`), such as `EngineHandle`.
    pub fn request_ids(&self) -> RequestIds {
        self.ids.clone()
    }

    /// Enqueues a request; returns its id.
    pub fn add_request(
        &mut self,
        prompt: Vec<u32>,
        params: SamplingParams,
        opts: RequestOptions,
    ) -> Result<ParentRequestId, EngineError> {
        let request = self.validate(EngineRequest {
            prompt_token_ids: prompt,
            params,
            opts,
        })?;
        let id = self.ids.reserve(request.params().n);
        self.add_request_with_id(id, request)?;
        Ok(id)
    }

    /// Enqueues a request under an id taken from `request_ids()`
    /// (`reserve(params.n)`): its samples run as `id..id + n`.
    pub fn add_request_with_id(
        &mut self,
        parent_id: ParentRequestId,
        request: ValidRequest,
    ) -> Result<(), EngineError> {
        let (
            EngineRequest {
                prompt_token_ids: prompt,
                params,
                opts,
            },
            grammar,
        ) = request.into_parts();
        let child_ids = (0..params.n).map(|i| parent_id.child(i));
        if self.parents.contains_key(&parent_id)
            || child_ids.clone().any(|c| self.seqs.contains_key(&c))
        {
            return Err(EngineError::internal(format!(
                "request id {parent_id} is already in use"
            )));
        }
        if let Some(limit) = self.max_waiting_requests {
            if self.scheduler.num_waiting() >= limit {
                return Err(EngineError::QueueFull);
            }
        }
        let arrival = opts.arrival_time.unwrap_or_else(Instant::now);
        let params = Arc::new(params);
        let max_tokens = params
            .max_tokens
            .unwrap_or(self.info.max_model_len - prompt.len())
            .min(self.info.max_model_len - prompt.len());
        let mut stop_ids = self.info.eos_token_ids.clone();
        stop_ids.extend_from_slice(&params.stop_token_ids);
        // Prompt logprobs need logits of every prompt token, so such a request
        // must not take its prefix from the cache: a salt of its own keeps it apart.
        let cache_salt = if params.prompt_logprobs.is_some() {
            Some(format!("prompt-logprobs-{parent_id}"))
        } else {
            opts.cache_salt.clone()
        };
        let mut children = Vec::with_capacity(params.n);
        for (index, id) in child_ids.enumerate() {
            let seed = match params.seed {
                Some(s) => s.wrapping_add(index as u64),
                None => self.rng.random(),
            };
            let stop = StopConditions {
                eos_token_ids: self.info.eos_token_ids.clone(),
                stop_token_ids: params.stop_token_ids.clone(),
                max_tokens,
                // max_tokens may have been cut to the context left.
                min_tokens: params.min_tokens.min(max_tokens),
                ignore_eos: params.ignore_eos,
            };
            let request = Request::new(
                id,
                prompt.clone(),
                stop,
                opts.priority,
                arrival.saturating_duration_since(self.epoch).as_secs_f64(),
                cache_salt.clone(),
            );
            self.scheduler.add_request(request);
            let detok = self.tokenizer.as_ref().map(|_| {
                IncrementalDetokenizer::new(
                    &prompt,
                    params.skip_special_tokens,
                    params.stop.clone(),
                    params.include_stop_str_in_output,
                )
                .with_min_tokens(params.min_tokens)
            });
            self.seqs.insert(
                id,
                SeqState {
                    parent: parent_id,
                    index,
                    params: params.clone(),
                    rng: StdRng::seed_from_u64(seed),
                    detok,
                    stop_ids: stop_ids.clone(),
                    finished: false,
                    grammar: grammar.as_ref().map(|g| g.matcher()),
                },
            );
            children.push(id);
        }
        self.parents.insert(
            parent_id,
            ParentState {
                num_unfinished: children.len(),
                children,
                num_prompt_tokens: prompt.len(),
                arrival,
                first_scheduled: None,
                first_token: None,
                prompt_logprobs: params.prompt_logprobs.map(|_| vec![None]),
                prompt_logprobs_sent: false,
                num_cached_tokens: 0,
            },
        );
        Ok(())
    }

    /// Aborts every unfinished sequence of a request; frees its blocks.
    pub fn abort_request(&mut self, parent_id: ParentRequestId) -> bool {
        let Some(parent) = self.parents.remove(&parent_id) else {
            return false;
        };
        for id in parent.children {
            self.scheduler.abort_request(id);
            self.seqs.remove(&id);
        }
        // Freed blocks may change the cache; an idle engine takes no step.
        self.publish_kv_events();
        true
    }

    /// Ids of all requests not yet finished.
    pub fn unfinished_request_ids(&self) -> Vec<ParentRequestId> {
        let mut ids: Vec<ParentRequestId> = self.parents.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn has_unfinished_requests(&self) -> bool {
        !self.parents.is_empty()
    }

    pub fn stats(&self) -> EngineStats {
        let s = self.scheduler.stats();
        EngineStats {
            num_running: s.num_running,
            num_waiting: s.num_waiting,
            kv_cache_usage: s.kv_cache_usage,
            num_preemptions_total: s.num_preemptions_total,
            prefix_cache_queries: s.prefix_cache_queries,
            prefix_cache_hits: s.prefix_cache_hits,
            prompt_tokens_total: self.prompt_tokens_total,
            generation_tokens_total: self.generation_tokens_total,
        }
    }

    /// One engine step. Returns the progress of every request that made some.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>, EngineError> {
        // The scheduler's allocation-free variants, over last step's buffers.
        let mut sched = std::mem::take(&mut self.spare_sched);
        self.scheduler.schedule_into(&mut sched);
        let outputs = if sched.is_empty() {
            Ok(Vec::new())
        } else {
            self.run_step(&sched)
        };
        self.spare_sched = sched;
        self.publish_kv_events();
        outputs
    }

    /// Records KV-cache events from now on and sends each step's to `sink`.
    pub fn set_kv_event_sink(&mut self, sink: KvEventSink) {
        self.scheduler.set_kv_events(true);
        self.kv_event_sink = Some(sink);
    }

    fn publish_kv_events(&mut self) {
        if let Some(sink) = self.kv_event_sink.as_mut() {
            let events = self.scheduler.take_kv_events();
            if !events.is_empty() {
                sink.send(events);
            }
        }
    }

    /// Runs a scheduled step: forward, sampling, scheduler update, text.
    fn run_step(&mut self, sched: &SchedulerOutput) -> Result<Vec<RequestOutput>, EngineError> {
        let needs = self.logits_needs(sched, Instant::now());
        let ModelRunnerOutput {
            sampled,
            prompt_logits,
        } = self
            .runner
            .execute(sched, needs)
            .device_context("the model step failed")?;
        if let Some(logits) = prompt_logits {
            self.collect_prompt_logprobs(sched, &logits);
            self.runner.recycle(logits);
        }
        let tokens: Vec<Option<u32>> = sampled
            .iter()
            .map(|s| s.as_ref().map(|s| s.token_id))
            .collect();
        let mut updates = std::mem::take(&mut self.spare_updates);
        self.scheduler
            .update_from_output_into(sched, &tokens, &mut updates);
        let mut by_id: HashMap<RequestId, Sampled> = HashMap::with_capacity(sampled.len());
        for (r, s) in sched.requests().iter().zip(sampled) {
            if let Some(s) = s {
                by_id.insert(r.request_id, s);
            }
        }
        let mut deltas: Vec<(ParentRequestId, CompletionDelta)> = Vec::with_capacity(updates.len());
        for u in updates.drain(..) {
            let first_seq = self.seqs.get(&u.request_id).filter(|s| s.index == 0);
            if let Some(parent) = first_seq.and_then(|s| self.parents.get_mut(&s.parent)) {
                parent.num_cached_tokens = u.num_cached_tokens;
            }
            let sampled = by_id.remove(&u.request_id);
            if let Some(delta) =
                self.process_update(u.request_id, u.new_token_ids, u.finish_reason, sampled)
            {
                deltas.push(delta);
            }
        }
        self.spare_updates = updates;
        Ok(self.assemble_outputs(deltas, Instant::now()))
    }

    /// What each scheduled request needs from the step's logits, and its
    /// first-scheduling time. Each sampling request draws from its own
    /// stream, so a seeded request samples the same tokens whatever its
    /// batch and wherever it is sampled.
    fn logits_needs(&mut self, sched: &SchedulerOutput, now: Instant) -> Vec<LogitsNeed> {
        let mut needs = Vec::with_capacity(sched.requests().len());
        for r in sched.requests() {
            let Some(seq) = self.seqs.get_mut(&r.request_id) else {
                needs.push(LogitsNeed::None);
                continue;
            };
            if let Some(p) = self.parents.get_mut(&seq.parent) {
                p.first_scheduled.get_or_insert(now);
            }
            let row = match self.scheduler.request(r.request_id) {
                Some(req) if r.sample => {
                    let ctx = ProcessorContext {
                        params: &seq.params,
                        prompt_token_ids: req.prompt_token_ids(),
                        output_token_ids: req.output_token_ids(),
                        stop_ids: &seq.stop_ids,
                    };
                    let mut row = SamplingRow::new(&ctx, &mut seq.rng);
                    // The mask is computed on the worker during the forward pass.
                    row.grammar_mask = seq.grammar.as_ref().map(|g| self.mask_worker.submit(g));
                    Some(row)
                }
                _ => None,
            };
            let all_rows = seq.params.prompt_logprobs.is_some()
                && seq.index == 0
                && r.start_position < r.num_prompt_tokens;
            needs.push(match (all_rows, row) {
                (true, row) => LogitsNeed::AllRows(row),
                (false, Some(row)) => LogitsNeed::Sample(row),
                (false, None) => LogitsNeed::None,
            });
        }
        needs
    }

    /// Logprobs of each prompt token given the tokens before it.
    fn collect_prompt_logprobs(&mut self, sched: &SchedulerOutput, logits: &HostLogits) {
        for (i, r) in sched.requests().iter().enumerate() {
            if logits.rows[i].is_empty() {
                continue;
            }
            let Some(seq) = self.seqs.get(&r.request_id) else {
                continue;
            };
            let k = seq.params.prompt_logprobs.unwrap_or(0);
            let Some(parent) = self.parents.get_mut(&seq.parent) else {
                continue;
            };
            let Some(request) = self.scheduler.request(r.request_id) else {
                continue;
            };
            let prompt = request.prompt_token_ids();
            let Some(out) = parent.prompt_logprobs.as_mut() else {
                continue;
            };
            for (j, row) in logits.rows[i].clone().enumerate() {
                let next = r.start_position + j + 1;
                if next < prompt.len() {
                    out.push(Some(sampler::top_logprobs(
                        logits.row(row),
                        prompt[next],
                        k,
                    )));
                }
            }
        }
    }

    /// Detokenizes a sequence's new tokens and applies stop strings.
    fn process_update(
        &mut self,
        id: RequestId,
        new_token_ids: Vec<u32>,
        mut finish: Option<FinishReason>,
        sampled: Option<Sampled>,
    ) -> Option<(ParentRequestId, CompletionDelta)> {
        let seq = self.seqs.get_mut(&id)?;
        if seq.finished {
            return None;
        }
        // As vLLM: the grammar advances by every accepted token; once it is
        // complete the mask allows only EOS, which ends the sequence (with
        // `ignore_eos`, EOS repeats to max_tokens: a finished grammar takes
        // nothing more). A token it refuses (a broken invariant) ends the
        // sequence here.
        let advances = |g: &&GrammarMatcher| !new_token_ids.is_empty() && !g.is_terminated();
        if let Some(g) = seq.grammar.as_ref().filter(advances) {
            if let Err(e) = g.accept_tokens(&new_token_ids) {
                tracing::warn!("structured output of request {id}: {e}; ending the sequence");
                if finish.is_none() {
                    self.scheduler.finish_request(id, FinishReason::Stop);
                    finish = Some(FinishReason::Stop);
                }
            }
        }
        self.generation_tokens_total += new_token_ids.len() as u64;
        let mut stop_reason = None;
        let mut text = String::new();
        if let (Some(detok), Some(tok)) = (seq.detok.as_mut(), self.tokenizer.as_ref()) {
            // A sequence ended by EOS or a stop token id does not show that
            // token's text unless asked to (vLLM's detokenizer drops it when
            // `stop_terminated`, vllm/v1/engine/detokenizer.py `update`).
            let stop_terminated =
                finish == Some(FinishReason::Stop) && !seq.params.include_stop_str_in_output;
            let text_ids = match new_token_ids.split_last() {
                Some((_, before)) if stop_terminated => before,
                _ => &new_token_ids[..],
            };
            let delta = detok.push(tok, text_ids);
            text = delta.text;
            if let Some(stop) = delta.stop_matched {
                if finish.is_none() {
                    self.scheduler.finish_request(id, FinishReason::Stop);
                }
                finish = Some(FinishReason::Stop);
                stop_reason = Some(StopReason::Text(stop));
            } else if finish.is_some() {
                text.push_str(&detok.finish(tok));
            }
        }
        if stop_reason.is_none() && finish == Some(FinishReason::Stop) {
            if let Some(&last) = new_token_ids.last() {
                if seq.params.stop_token_ids.contains(&last) {
                    stop_reason = Some(StopReason::Token(last));
                }
            }
        }
        let logprobs = if seq.params.logprobs.is_some() {
            Some(sampled.and_then(|s| s.logprobs).into_iter().collect())
        } else {
            None
        };
        if finish.is_some() {
            seq.finished = true;
        }
        Some((
            seq.parent,
            CompletionDelta {
                index: seq.index,
                token_ids: new_token_ids,
                text,
                logprobs,
                finish_reason: finish,
                stop_reason,
            },
        ))
    }

    /// Groups sequence deltas by request and retires finished requests.
    fn assemble_outputs(
        &mut self,
        deltas: Vec<(ParentRequestId, CompletionDelta)>,
        now: Instant,
    ) -> Vec<RequestOutput> {
        let mut order: Vec<ParentRequestId> = Vec::new();
        let mut grouped: HashMap<ParentRequestId, Vec<CompletionDelta>> = HashMap::new();
        for (parent, delta) in deltas {
            let entry = grouped.entry(parent).or_default();
            if entry.is_empty() {
                order.push(parent);
            }
            entry.push(delta);
        }
        let mut outputs = Vec::with_capacity(order.len());
        for parent_id in order {
            let deltas = grouped.remove(&parent_id).unwrap_or_default();
            let Some(parent) = self.parents.get_mut(&parent_id) else {
                continue;
            };
            if parent.first_token.is_none() {
                parent.first_token = Some(now);
                // As vLLM: a prompt counts once it is prefilled (its first
                // token out), so aborted-while-waiting prompts do not.
                self.prompt_tokens_total += parent.num_prompt_tokens as u64;
            }
            let newly_finished = deltas.iter().filter(|d| d.finish_reason.is_some()).count();
            parent.num_unfinished = parent.num_unfinished.saturating_sub(newly_finished);
            let finished = parent.num_unfinished == 0;
            let prompt_logprobs = if parent.prompt_logprobs_sent {
                None
            } else {
                parent.prompt_logprobs_sent = true;
                parent.prompt_logprobs.take()
            };
            let num_cached_tokens = parent.num_cached_tokens;
            let metrics = finished.then(|| RequestMetrics {
                queue_time: parent
                    .first_scheduled
                    .map(|t| t.duration_since(parent.arrival).as_secs_f64())
                    .unwrap_or(0.0),
                time_to_first_token: parent
                    .first_token
                    .map(|t| t.duration_since(parent.arrival).as_secs_f64())
                    .unwrap_or(0.0),
                e2e_latency: now.duration_since(parent.arrival).as_secs_f64(),
            });
            outputs.push(RequestOutput {
                request_id: parent_id,
                num_prompt_tokens: parent.num_prompt_tokens,
                num_cached_tokens,
                prompt_logprobs,
                outputs: deltas,
                finished,
                metrics,
            });
            if finished {
                if let Some(p) = self.parents.remove(&parent_id) {
                    for c in p.children {
                        self.seqs.remove(&c);
                    }
                }
            }
        }
        outputs
    }
}
