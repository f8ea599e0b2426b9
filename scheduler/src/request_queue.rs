//! The waiting queue (vLLM's `RequestQueue`): fcfs order, or kept sorted by
//! (priority, arrival time, admission order) under the priority policy.
//! Holds slots of the scheduler's `RequestTable`.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::config::SchedulingPolicy;
use crate::request::Request;

/// Lower sorts first: served first, preempted last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueKey {
    priority: i32,
    arrival_time: f64,
    arrival_seq: u64,
}

impl QueueKey {
    pub(crate) fn of(request: &Request) -> Self {
        Self {
            priority: request.priority,
            arrival_time: request.arrival_time,
            arrival_seq: request.arrival_seq,
        }
    }

    /// A total order (NaN arrival times sort last instead of breaking it).
    pub(crate) fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then(self.arrival_time.total_cmp(&other.arrival_time))
            .then(self.arrival_seq.cmp(&other.arrival_seq))
    }
}

#[derive(Debug)]
pub(crate) struct RequestQueue {
    policy: SchedulingPolicy,
    entries: VecDeque<(QueueKey, usize)>,
}

impl RequestQueue {
    pub(crate) fn new(policy: SchedulingPolicy) -> Self {
        Self {
            policy,
            entries: VecDeque::new(),
        }
    }

    /// A new arrival.
    pub(crate) fn add(&mut self, key: QueueKey, slot: usize) {
        match self.policy {
            SchedulingPolicy::Fcfs => self.entries.push_back((key, slot)),
            SchedulingPolicy::Priority => self.insert_sorted(key, slot),
        }
    }

    /// A preempted request: first in line under fcfs.
    pub(crate) fn prepend(&mut self, key: QueueKey, slot: usize) {
        match self.policy {
            SchedulingPolicy::Fcfs => self.entries.push_front((key, slot)),
            SchedulingPolicy::Priority => self.insert_sorted(key, slot),
        }
    }

    fn insert_sorted(&mut self, key: QueueKey, slot: usize) {
        let at = self
            .entries
            .partition_point(|(k, _)| k.cmp(&key) == Ordering::Less);
        self.entries.insert(at, (key, slot));
    }

    pub(crate) fn peek(&self) -> Option<usize> {
        self.entries.front().map(|&(_, slot)| slot)
    }

    pub(crate) fn pop_front(&mut self) -> Option<usize> {
        self.entries.pop_front().map(|(_, slot)| slot)
    }

    pub(crate) fn remove(&mut self, slot: usize) -> bool {
        match self.entries.iter().position(|&(_, s)| s == slot) {
            Some(i) => self.entries.remove(i).is_some(),
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|&(_, slot)| slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(priority: i32, arrival_time: f64, arrival_seq: u64) -> QueueKey {
        QueueKey {
            priority,
            arrival_time,
            arrival_seq,
        }
    }

    #[test]
    fn fcfs_appends_and_preempted_go_first() {
        let mut q = RequestQueue::new(SchedulingPolicy::Fcfs);
        q.add(key(5, 0.0, 0), 10);
        q.add(key(-5, 1.0, 1), 11);
        q.prepend(key(9, 2.0, 2), 12);
        assert_eq!(q.slots().collect::<Vec<_>>(), vec![12, 10, 11]);
        assert!(q.remove(10));
        assert!(!q.remove(10));
        assert_eq!(q.pop_front(), Some(12));
        assert_eq!(q.peek(), Some(11));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn priority_sorts_by_priority_then_arrival_then_order() {
        let mut q = RequestQueue::new(SchedulingPolicy::Priority);
        q.add(key(1, 5.0, 0), 0);
        q.add(key(0, 9.0, 1), 1);
        q.add(key(1, 2.0, 2), 2);
        q.add(key(1, 2.0, 3), 3);
        q.prepend(key(2, 0.0, 4), 4);
        q.add(key(1, f64::NAN, 5), 5);
        assert_eq!(q.slots().collect::<Vec<_>>(), vec![1, 2, 3, 0, 5, 4]);
        while q.pop_front().is_some() {}
        assert!(q.is_empty());
    }
}
