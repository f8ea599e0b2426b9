//! Request ids, handed out by whoever submits a request. `EngineHandle`
//! picks an id before the engine thread has seen the request (so adding one
//! never waits for a step); the engine and its handle share one counter, so
//! ids taken on either side never collide.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    pub fn reserve(&self, n: usize) -> u64 {
        self.0.fetch_add(n.max(1) as u64, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_counter_and_ranges_do_not_overlap() {
        let a = RequestIds::default();
        let b = a.clone();
        assert_eq!(a.reserve(3), 1);
        assert_eq!(b.reserve(1), 4);
        assert_eq!(a.reserve(0), 5, "an invalid n = 0 still takes one id");
        assert_eq!(b.reserve(2), 6);
    }
}
