//! Request ids, handed out by whoever submits a request. `EngineHandle`
//! picks an id before the engine thread has seen the request (so adding one
//! never waits for a step); the engine and its handle share one counter, so
//! ids taken on either side never collide.

use pagoda_scheduler::RequestId;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The id of a request as submitted: all of its `n` samples. Each sample
/// runs in the scheduler as a child request with a plain `RequestId`; the
/// newtype keeps the two from being swapped (an abort takes the parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentRequestId(u64);

impl ParentRequestId {
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The scheduler id of sample `index`: children take consecutive ids.
    pub fn child(self, index: usize) -> RequestId {
        self.0 + index as u64
    }
}

impl fmt::Display for ParentRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A shared counter of request ids. A request with `n` samples takes `n`
/// consecutive ids: the first is the request's id, and sample `i` runs as
/// scheduler request `first + i`. Request ids and sample ids live in
/// separate tables, so the shared first id is no clash; ranges never overlap.
#[derive(Debug, Clone)]
pub struct RequestIds(Arc<AtomicU64>);

impl Default for RequestIds {
    fn default() -> Self {
        Self(Arc::new(AtomicU64::new(1)))
    }
}

impl RequestIds {
    /// Takes `n` consecutive ids (at least one); returns the first.
    pub fn reserve(&self, n: usize) -> ParentRequestId {
        ParentRequestId(self.0.fetch_add(n.max(1) as u64, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_counter_and_ranges_do_not_overlap() {
        let a = RequestIds::default();
        let b = a.clone();
        let first = a.reserve(3);
        assert_eq!(first.get(), 1);
        assert_eq!((first.child(0), first.child(2)), (1, 3));
        assert_eq!(b.reserve(1).get(), 4);
        assert_eq!(a.reserve(0).get(), 5, "an invalid n = 0 still takes one id");
        assert_eq!(b.reserve(2).get(), 6);
    }
}
