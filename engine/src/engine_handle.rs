//! The engine on its own OS thread. Callers add requests through a channel
//! and read a stream of deltas; dropping the stream aborts the request.

use crate::engine_builder::build_engine;
use crate::engine_config::EngineConfig;
use crate::engine_error::EngineError;
use crate::llm_engine::{EngineStats, LlmEngine, RequestOptions};
use crate::model_info::ModelInfo;
use crate::outputs::RequestOutput;
use crate::sampling_params::SamplingParams;
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
    prompt: Vec<u32>,
    params: SamplingParams,
    opts: RequestOptions,
    reply: Sender<Result<(u64, OutputReceiver), EngineError>>,
}

enum Command {
    Add(Box<AddCommand>),
    Abort(u64),
    Shutdown,
}

struct Shared {
    info: ModelInfo,
    tokenizer: Option<Tokenizer>,
    chat_template: Option<ChatTemplate>,
    stats: Mutex<EngineStats>,
    /// Cleared when the engine thread ends, whether it returned or panicked.
    alive: AtomicBool,
}

/// Marks the engine dead when the loop's stack unwinds or returns.
struct AliveGuard<'a>(&'a AtomicBool);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A cheap, cloneable handle to the running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    shared: Arc<Shared>,
}

/// The deltas of one request. Dropping it aborts the request.
pub struct RequestStream {
    id: u64,
    rx: OutputReceiver,
    commands: Sender<Command>,
    done: bool,
}

impl RequestStream {
    pub fn request_id(&self) -> u64 {
        self.id
    }

    pub async fn next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        let item = self.rx.recv().await;
        self.observe(&item);
        item
    }

    /// For callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        let item = self.rx.blocking_recv();
        self.observe(&item);
        item
    }

    fn observe(&mut self, item: &Option<Result<RequestOutput, EngineError>>) {
        match item {
            Some(Ok(o)) if !o.finished => {}
            _ => self.done = true,
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
        let (tx, rx) = channel::unbounded();
        let shared = Arc::new(Shared {
            info: engine.model_info().clone(),
            tokenizer: engine.tokenizer().cloned(),
            chat_template,
            stats: Mutex::new(engine.stats()),
            alive: AtomicBool::new(true),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("pagoda-engine".into())
            .spawn(move || {
                let _guard = AliveGuard(&thread_shared.alive);
                run_loop(engine, rx, &thread_shared)
            })
            .map_err(|e| EngineError::Internal(format!("cannot start the engine thread: {e}")))?;
        Ok(Self {
            commands: tx,
            shared,
        })
    }

    pub fn add_request(
        &self,
        prompt_token_ids: Vec<u32>,
        params: SamplingParams,
        opts: RequestOptions,
    ) -> Result<RequestStream, EngineError> {
        let (reply_tx, reply_rx) = channel::bounded(1);
        self.commands
            .send(Command::Add(Box::new(AddCommand {
                prompt: prompt_token_ids,
                params,
                opts,
                reply: reply_tx,
            })))
            .map_err(|_| EngineError::Shutdown)?;
        let (id, rx) = reply_rx.recv().map_err(|_| EngineError::Shutdown)??;
        Ok(RequestStream {
            id,
            rx,
            commands: self.commands.clone(),
            done: false,
        })
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

fn run_loop(mut engine: LlmEngine, commands: Receiver<Command>, shared: &Shared) {
    let mut senders: HashMap<u64, OutputSender> = HashMap::new();
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
                Command::Add(add) => {
                    let AddCommand {
                        prompt,
                        params,
                        opts,
                        reply,
                    } = *add;
                    let result = engine.add_request(prompt, params, opts).map(|id| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        senders.insert(id, tx);
                        (id, rx)
                    });
                    let _ = reply.send(result);
                }
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
                    tracing::error!("engine step failed: {e}; aborting all requests");
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

/// A finished request, for offline use (`generate`, `bench throughput`).
#[derive(Debug, Clone)]
pub struct FinalOutput {
    pub prompt_token_ids: Vec<u32>,
    pub num_cached_tokens: usize,
    /// One per sample (`n`), in index order.
    pub samples: Vec<FinalSample>,
    pub metrics: Option<crate::outputs::RequestMetrics>,
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
    let mut streams = Vec::with_capacity(prompts.len());
    for (prompt, params) in prompts {
        let n = params.n;
        let stream = handle.add_request(prompt.clone(), params, RequestOptions::default())?;
        streams.push((prompt, n, stream));
    }
    let mut results = Vec::with_capacity(streams.len());
    for (prompt, n, mut stream) in streams {
        let mut out = FinalOutput {
            prompt_token_ids: prompt,
            num_cached_tokens: 0,
            samples: vec![FinalSample::default(); n],
            metrics: None,
        };
        while let Some(item) = stream.blocking_next() {
            let o = item?;
            out.num_cached_tokens = o.num_cached_tokens;
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
