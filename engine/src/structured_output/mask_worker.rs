//! Grammar masks computed while the forward pass runs, as vLLM does: the
//! engine hands each constrained sequence's matcher to this worker before
//! the step, and the sampler waits on the `PendingMask` only when it
//! reaches that row (by then the mask is usually long done).

use super::grammar::{GrammarMatcher, TokenBitmask};
use crossbeam::channel::{self, Sender};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// A mask being computed on the worker; `wait` blocks until it is there.
#[derive(Clone)]
pub struct PendingMask(Arc<Slot>);

#[derive(Default)]
struct Slot {
    mask: Mutex<Option<Arc<TokenBitmask>>>,
    ready: Condvar,
}

impl PendingMask {
    fn new() -> Self {
        Self(Arc::new(Slot::default()))
    }

    /// A mask known already (tests, and the worker-less fallback).
    pub fn ready(mask: TokenBitmask) -> Self {
        let p = Self::new();
        p.fill(mask);
        p
    }

    fn fill(&self, mask: TokenBitmask) {
        *self.0.mask.lock() = Some(Arc::new(mask));
        self.0.ready.notify_all();
    }

    /// The mask, once computed.
    pub fn wait(&self) -> Arc<TokenBitmask> {
        let mut mask = self.0.mask.lock();
        loop {
            if let Some(m) = mask.as_ref() {
                return m.clone();
            }
            self.0.ready.wait(&mut mask);
        }
    }
}

impl std::fmt::Debug for PendingMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.0.mask.lock().is_some();
        f.debug_struct("PendingMask").field("done", &done).finish()
    }
}

/// The same pending computation (a row's mask is compared by identity).
impl PartialEq for PendingMask {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A thread of its own (not rayon's pool, which the CPU forward pass and
/// sampler fill: a sampler waiting on a mask queued behind it in the same
/// pool could wait forever).
pub struct MaskWorker {
    jobs: Option<Sender<(GrammarMatcher, PendingMask)>>,
}

impl MaskWorker {
    pub fn start() -> Self {
        let (tx, rx) = channel::unbounded::<(GrammarMatcher, PendingMask)>();
        let spawned = std::thread::Builder::new()
            .name("pagoda-grammar".into())
            .spawn(move || {
                for (matcher, pending) in rx {
                    pending.fill(matcher.fill_bitmask());
                }
            });
        match spawned {
            Ok(_) => Self { jobs: Some(tx) },
            Err(e) => {
                tracing::warn!("no grammar mask thread ({e}); masks are computed inline");
                Self { jobs: None }
            }
        }
    }

    /// Starts computing `matcher`'s next mask.
    pub fn submit(&self, matcher: &GrammarMatcher) -> PendingMask {
        let pending = PendingMask::new();
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|tx| tx.send((matcher.clone(), pending.clone())).is_ok());
        if !sent {
            pending.fill(matcher.fill_bitmask());
        }
        pending
    }
}
