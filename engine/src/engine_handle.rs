//! The engine on its own OS thread. Callers add requests through a channel
//! and read a stream of deltas; dropping the stream aborts the request.
//!
//! Adding never waits for the engine thread, which reads commands only
//! between steps: the handle checks what needs no engine state (sampling
//! parameters, prompt ids, length), takes the request's id from the counter
//! it shares with the engine, sends the request and returns its stream at
//! once. A refusal that needs the engine's state (queue full, scheduler)
//! arrives as the stream's first and only item.

use crate::engine_builder::build_engine;
use crate::engine_config::EngineConfig;
use crate::engine_error::{error_chain, EngineContext, EngineError};
use crate::engine_request::{EngineRequest, RequestOptions, ValidRequest};
use crate::llm_engine::{EngineStats, LlmEngine};
use crate::model_info::ModelInfo;
use crate::outputs::RequestOutput;
use crate::request_ids::{ParentRequestId, RequestIds};
use crate::sampling_params::SamplingParams;
use crate::structured_output::StructuredOutputCompiler;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

type OutputSender = mpsc::UnboundedSender<Result<RequestOutput, EngineError>>;
type OutputReceiver = mpsc::UnboundedReceiver<Result<RequestOutput, EngineError>>;

struct AddCommand {
    id: ParentRequestId,
    request: ValidRequest,
    output: OutputSender,
}

enum Command {
    /// Requests added together: all are enqueued, or none and each stream
    /// gets the refusal (one API request's prompts succeed or fail as one).
    Add(Vec<AddCommand>),
    Abort(ParentRequestId),
    Shutdown,
}

struct Shared {
    info: ModelInfo,
    tokenizer: Option<Tokenizer>,
    chat_template: Option<ChatTemplate>,
    stats: Mutex<EngineStats>,
    /// The engine's own id counter.
    ids: RequestIds,
    /// The engine's grammar compiler: constraints compile on the caller's thread.
    grammars: Arc<StructuredOutputCompiler>,
    /// Cleared when the engine loop ends, whether it returned or panicked.
    alive: AtomicBool,
}

/// A cheap, cloneable handle to the running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    shared: Arc<Shared>,
}

/// The engine's side of an `EngineHandle`: `run` drives the engine on the
/// calling thread until shutdown or until every handle is gone.
pub struct EngineLoop {
    engine: LlmEngine,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
}

/// The deltas of one request. Dropping it aborts the request.
pub struct RequestStream {
    id: ParentRequestId,
    rx: OutputReceiver,
    commands: Sender<Command>,
    done: bool,
}

impl RequestStream {
    pub fn request_id(&self) -> ParentRequestId {
        self.id
    }

    pub async fn next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        let item = self.rx.recv().await;
        self.observe(item)
    }

    /// For callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        let item = self.rx.blocking_recv();
        self.observe(item)
    }

    /// Notes the end of the stream. A channel closed before the final
    /// output means the engine loop is gone: reported once, as `Shutdown`.
    fn observe(
        &mut self,
        item: Option<Result<RequestOutput, EngineError>>,
    ) -> Option<Result<RequestOutput, EngineError>> {
        let was_done = self.done;
        match &item {
            Some(Ok(o)) if !o.finished => {}
            _ => self.done = true,
        }
        match item {
            None if !was_done => Some(Err(EngineError::Shutdown)),
            item => item,
        }
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Abort(self.id));
        }
    }
}

impl EngineHandle {
    /// Loads the model (blocking) and starts the engine thread.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let built = build_engine(&config)?;
        Self::from_engine(built.engine, built.chat_template)
    }

    /// Runs an already built engine on a new thread.
    pub fn from_engine(
        engine: LlmEngine,
        chat_template: Option<ChatTemplate>,
    ) -> Result<Self, EngineError> {
        let (handle, engine_loop) = Self::unstarted(engine, chat_template);
        std::thread::Builder::new()
            .name("pagoda-engine".into())
            .spawn(move || engine_loop.run())
            .internal_context("cannot start the engine thread")?;
        Ok(handle)
    }

    /// A handle and the loop that serves it, for callers that run the loop
    /// on a thread of their own. Requests added before `run` wait for it.
    pub fn unstarted(engine: LlmEngine, chat_template: Option<ChatTemplate>) -> (Self, EngineLoop) {
        let (tx, rx) = channel::unbounded();
        let shared = Arc::new(Shared {
            info: engine.model_info().clone(),
            tokenizer: engine.tokenizer().cloned(),
            chat_template,
            stats: Mutex::new(engine.stats()),
            ids: engine.request_ids(),
            grammars: engine.structured_output_compiler().clone(),
            alive: AtomicBool::new(true),
        });
        let handle = Self {
            commands: tx,
            shared: shared.clone(),
        };
        let engine_loop = EngineLoop {
            engine,
            commands: rx,
            shared,
        };
        (handle, engine_loop)
    }

    /// Adds one request without waiting for the engine: see `add_requests`.
    pub fn add_request(
        &self,
        prompt_token_ids: Vec<u32>,
        params: SamplingParams,
        opts: RequestOptions,
    ) -> Result<RequestStream, EngineError> {
        let mut streams = self.add_requests(vec![EngineRequest {
            prompt_token_ids,
            params,
            opts,
        }])?;
        streams
            .pop()
            .ok_or_else(|| EngineError::internal("no stream for the request"))
    }

    /// Adds requests that stand or fall together, without waiting for the
    /// engine. A request the model cannot take fails here; a refusal of the
    /// engine (e.g. `QueueFull`) is then every stream's first item.
    pub fn add_requests(
        &self,
        requests: Vec<EngineRequest>,
    ) -> Result<Vec<RequestStream>, EngineError> {
        let requests = requests
            .into_iter()
            .map(|r| ValidRequest::new(&self.shared.info, &self.shared.grammars, r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut streams = Vec::with_capacity(requests.len());
        let mut group = Vec::with_capacity(requests.len());
        for request in requests {
            let id = self.shared.ids.reserve(request.params().n);
            let (tx, rx) = mpsc::unbounded_channel();
            group.push(AddCommand {
                id,
                request,
                output: tx,
            });
            streams.push(RequestStream {
                id,
                rx,
                commands: self.commands.clone(),
                done: false,
            });
        }
        self.commands
            .send(Command::Add(group))
            .map_err(|_| EngineError::Shutdown)?;
        Ok(streams)
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.shared.info
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.shared.tokenizer.as_ref()
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.shared.chat_template.as_ref()
    }

    /// Whether the engine thread is still running (for /health).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> EngineStats {
        self.shared.stats.lock().clone()
    }

    /// Stops the loop; unfinished streams end with `EngineError::Shutdown`.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

impl EngineLoop {
    /// Drives the engine until shutdown or until every handle is dropped.
    pub fn run(mut self) {
        run_loop(&mut self.engine, &self.commands, &self.shared);
    }
}

impl Drop for EngineLoop {
    /// Marks the engine dead when the loop returns, panics, or never ran.
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::Release);
    }
}

fn run_loop(engine: &mut LlmEngine, commands: &Receiver<Command>, shared: &Shared) {
    let mut senders: HashMap<ParentRequestId, OutputSender> = HashMap::new();
    loop {
        // Block while idle; otherwise take what has arrived and step.
        let first = if engine.has_unfinished_requests() {
            commands.try_recv().ok()
        } else {
            match commands.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            }
        };
        let mut shutdown = false;
        for cmd in first
            .into_iter()
            .chain(std::iter::from_fn(|| commands.try_recv().ok()))
        {
            match cmd {
                Command::Add(group) => add_group(engine, &mut senders, group),
                Command::Abort(id) => {
                    engine.abort_request(id);
                    senders.remove(&id);
                }
                Command::Shutdown => shutdown = true,
            }
        }
        if shutdown {
            for (id, tx) in senders.drain() {
                engine.abort_request(id);
                let _ = tx.send(Err(EngineError::Shutdown));
            }
            *shared.stats.lock() = engine.stats();
            return;
        }
        if engine.has_unfinished_requests() {
            match engine.step() {
                Ok(outputs) => {
                    // Stats first: a caller that sees this step's output
                    // then sees stats at least as fresh.
                    *shared.stats.lock() = engine.stats();
                    for out in outputs {
                        let id = out.request_id;
                        let finished = out.finished;
                        let delivered = senders.get(&id).is_some_and(|tx| tx.send(Ok(out)).is_ok());
                        if finished {
                            senders.remove(&id);
                        } else if !delivered {
                            // The caller is gone: free its blocks now.
                            engine.abort_request(id);
                            senders.remove(&id);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "engine step failed: {}; aborting all requests",
                        error_chain(&e)
                    );
                    for (id, tx) in senders.drain() {
                        engine.abort_request(id);
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
        *shared.stats.lock() = engine.stats();
    }
}

/// Enqueues a group of requests, all or none: on a refusal the ones
/// already enqueued are aborted and every stream of the group gets it.
fn add_group(
    engine: &mut LlmEngine,
    senders: &mut HashMap<ParentRequestId, OutputSender>,
    group: Vec<AddCommand>,
) {
    let mut added = Vec::with_capacity(group.len());
    let mut refused = Vec::new();
    let mut refusal = None;
    for add in group {
        if refusal.is_none() {
            match engine.add_request_with_id(add.id, add.request) {
                Ok(()) => {
                    added.push((add.id, add.output));
                    continue;
                }
                Err(e) => refusal = Some(e),
            }
        }
        refused.push(add.output);
    }
    match refusal {
        None => senders.extend(added),
        Some(e) => {
            for (id, output) in added {
                engine.abort_request(id);
                refused.push(output);
            }
            for output in refused {
                let _ = output.send(Err(e.clone()));
            }
        }
    }
}

/// A finished request, for offline use (`generate`, `bench throughput`).
#[derive(Debug, Clone)]
pub struct FinalOutput {
    pub prompt_token_ids: Vec<u32>,
    pub num_cached_tokens: usize,
    /// One per sample (`n`), in index order.
    pub samples: Vec<FinalSample>,
    pub metrics: Option<crate::outputs::RequestMetrics>,
    /// One per prompt token (the first `None`), when `prompt_logprobs` was asked.
    pub prompt_logprobs: Option<Vec<Option<crate::outputs::TokenLogprobs>>>,
}

#[derive(Debug, Clone, Default)]
pub struct FinalSample {
    pub token_ids: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<crate::outputs::TokenLogprobs>,
    pub finish_reason: Option<crate::outputs::FinishReason>,
}

/// Runs all prompts together and returns their results in input order.
pub fn generate_all(
    handle: &EngineHandle,
    prompts: Vec<(Vec<u32>, SamplingParams)>,
) -> Result<Vec<FinalOutput>, EngineError> {
    let shapes: Vec<(Vec<u32>, usize)> = prompts
        .iter()
        .map(|(prompt, params)| (prompt.clone(), params.n))
        .collect();
    let requests = prompts
        .into_iter()
        .map(|(prompt_token_ids, params)| EngineRequest {
            prompt_token_ids,
            params,
            opts: RequestOptions::default(),
        })
        .collect();
    let streams = handle.add_requests(requests)?;
    let mut results = Vec::with_capacity(streams.len());
    for ((prompt, n), mut stream) in shapes.into_iter().zip(streams) {
        let mut out = FinalOutput {
            prompt_token_ids: prompt,
            num_cached_tokens: 0,
            samples: vec![FinalSample::default(); n],
            metrics: None,
            prompt_logprobs: None,
        };
        while let Some(item) = stream.blocking_next() {
            let o = item?;
            out.num_cached_tokens = o.num_cached_tokens;
            if o.prompt_logprobs.is_some() {
                out.prompt_logprobs = o.prompt_logprobs;
            }
            for d in o.outputs {
                let s = &mut out.samples[d.index];
                s.token_ids.extend(d.token_ids);
                s.text.push_str(&d.text);
                s.logprobs.extend(d.logprobs.unwrap_or_default());
                if d.finish_reason.is_some() {
                    s.finish_reason = d.finish_reason;
                }
            }
            if o.finished {
                out.metrics = o.metrics;
                break;
            }
        }
        results.push(out);
    }
    Ok(results)
}
