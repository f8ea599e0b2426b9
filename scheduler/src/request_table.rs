//! Live requests in a slab: stable slots so the running list, the waiting
//! queue and `SchedulerOutput` refer to requests by index, plus an id map
//! for the caller-facing lookups (abort, finish, `request(id)`).

use std::collections::HashMap;

use crate::request::{Request, RequestId};

#[derive(Debug, Default)]
pub(crate) struct RequestTable {
    slots: Vec<Option<Request>>,
    free_slots: Vec<usize>,
    by_id: HashMap<RequestId, usize>,
}

impl RequestTable {
    pub(crate) fn contains_id(&self, id: RequestId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn slot_of(&self, id: RequestId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Stores a request whose id is not present; returns its slot.
    pub(crate) fn insert(&mut self, request: Request) -> usize {
        let id = request.request_id;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(request);
                slot
            }
            None => {
                self.slots.push(Some(request));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Request> {
        let request = self.slots.get_mut(slot)?.take()?;
        self.by_id.remove(&request.request_id);
        self.free_slots.push(slot);
        Some(request)
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Request> {
        self.slots.get(slot)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Request> {
        self.slots.get_mut(slot)?.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::StopConditions;

    fn req(id: RequestId) -> Request {
        let stop = StopConditions {
            eos_token_ids: vec![],
            stop_token_ids: vec![],
            max_tokens: 1,
            min_tokens: 0,
            ignore_eos: false,
        };
        Request::new(id, vec![1], stop, 0, 0.0, None)
    }

    #[test]
    fn slots_are_reused_and_ids_map_to_them() {
        let mut t = RequestTable::default();
        let a = t.insert(req(100));
        let b = t.insert(req(200));
        assert_ne!(a, b);
        assert_eq!(t.slot_of(200), Some(b));
        assert_eq!(t.remove(a).map(|r| r.request_id), Some(100));
        assert!(t.remove(a).is_none());
        assert!(!t.contains_id(100));
        let c = t.insert(req(300));
        assert_eq!(c, a, "freed slot reused");
        assert_eq!(t.get(c).map(|r| r.request_id), Some(300));
        assert!(t.contains_id(200) && t.contains_id(300));
        assert!(t.get_mut(99).is_none());
    }
}
