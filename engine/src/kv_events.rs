//! KV-cache events leave the engine here: after each step the engine hands
//! the scheduler's `KvCacheEvent`s, stamped with the time, to a sink that a
//! publisher (the server's ZMQ publisher) drains on its own task. The sink
//! is bounded and never blocks a step: when the publisher falls behind, a
//! batch is dropped and counted (a router then re-syncs from replay or
//! from the next `AllBlocksCleared`), which costs routing quality, never
//! latency.

use std::time::{SystemTime, UNIX_EPOCH};

pub use pagoda_scheduler::{BlockHash, KvCacheEvent};
use tokio::sync::mpsc;

/// The events of one step, as vLLM's `KVEventBatch`: `ts` in seconds since
/// the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEventBatch {
    pub ts: f64,
    pub events: Vec<KvCacheEvent>,
}

/// Where the engine sends its batches.
#[derive(Debug)]
pub struct KvEventSink {
    tx: mpsc::Sender<KvEventBatch>,
    dropped: u64,
}

impl KvEventSink {
    /// A sink holding at most `capacity` unpublished batches, and its
    /// receiving end.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<KvEventBatch>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx, dropped: 0 }, rx)
    }

    /// Hands `events` on without waiting; false if the batch was dropped.
    pub(crate) fn send(&mut self, events: Vec<KvCacheEvent>) -> bool {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match self.tx.try_send(KvEventBatch { ts, events }) {
            Ok(()) => true,
            Err(e) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    tracing::warn!(
                        "KV-cache events dropped ({} batches so far): {e}",
                        self.dropped
                    );
                }
                false
            }
        }
    }
}
