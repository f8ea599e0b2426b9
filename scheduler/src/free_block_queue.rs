//! The free-block queue: an LRU list of blocks with ref count 0, in eviction
//! order (head = evicted first).
//!
//! A doubly-linked list threaded through a `Vec` indexed by block id (vLLM's
//! `FreeKVCacheBlockQueue`): popping the head, appending at the tail and —
//! the reason it is not a `VecDeque` — removing a block from the middle when
//! a prefix-cache hit revives it are all O(1) and allocation-free.

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
    queued: bool,
}

#[derive(Debug, Clone)]
pub struct FreeBlockQueue {
    links: Vec<Link>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeBlockQueue {
    /// An empty queue that can hold block ids `0..capacity`.
    pub fn new(capacity: usize) -> Self {
        let unlinked = Link {
            prev: NIL,
            next: NIL,
            queued: false,
        };
        Self {
            links: vec![unlinked; capacity],
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, block_id: u32) -> bool {
        self.links
            .get(block_id as usize)
            .is_some_and(|link| link.queued)
    }

    /// Takes the block to evict next.
    pub fn popleft(&mut self) -> Option<u32> {
        let id = self.head;
        if id == NIL {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    /// Unlinks a block from anywhere in the queue; false if it was not queued.
    pub fn remove(&mut self, block_id: u32) -> bool {
        if !self.contains(block_id) {
            return false;
        }
        let Link { prev, next, .. } = self.links[block_id as usize];
        match prev {
            NIL => self.head = next,
            p => self.links[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.links[n as usize].prev = prev,
        }
        self.links[block_id as usize] = Link {
            prev: NIL,
            next: NIL,
            queued: false,
        };
        self.len -= 1;
        true
    }

    /// Puts a block at the tail (evicted last); false if it was already
    /// queued or its id is out of range.
    pub fn append(&mut self, block_id: u32) -> bool {
        if block_id as usize >= self.links.len() || self.contains(block_id) {
            return false;
        }
        self.links[block_id as usize] = Link {
            prev: self.tail,
            next: NIL,
            queued: true,
        };
        match self.tail {
            NIL => self.head = block_id,
            t => self.links[t as usize].next = block_id,
        }
        self.tail = block_id;
        self.len += 1;
        true
    }

    /// Block ids from head (next evicted) to tail.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors((self.head != NIL).then_some(self.head), |&id| {
            let next = self.links[id as usize].next;
            (next != NIL).then_some(next)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(q: &FreeBlockQueue) -> Vec<u32> {
        q.iter().collect()
    }

    #[test]
    fn append_pop_and_remove_from_the_middle() {
        let mut q = FreeBlockQueue::new(6);
        for id in 1..6 {
            assert!(q.append(id));
        }
        assert!(!q.append(3), "already queued");
        assert!(!q.append(6), "out of range");
        assert_eq!(ids(&q), vec![1, 2, 3, 4, 5]);
        assert!(q.remove(3));
        assert!(!q.remove(3));
        assert!(q.remove(5), "tail");
        assert!(q.remove(1), "head");
        assert_eq!(ids(&q), vec![2, 4]);
        assert_eq!(q.len(), 2);
        assert!(q.append(1));
        assert_eq!(q.popleft(), Some(2));
        assert_eq!(q.popleft(), Some(4));
        assert_eq!(q.popleft(), Some(1));
        assert_eq!(q.popleft(), None);
        assert!(q.is_empty());
        assert!(!q.contains(0));
    }

    #[test]
    fn matches_a_vec_model_under_random_operations() {
        // A cheap deterministic generator; the model is a plain Vec.
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let n = 32u32;
        let mut q = FreeBlockQueue::new(n as usize);
        let mut model: Vec<u32> = Vec::new();
        for _ in 0..5000 {
            let id = (next() % n as u64) as u32;
            match next() % 3 {
                0 => assert_eq!(q.append(id), {
                    let absent = !model.contains(&id);
                    if absent {
                        model.push(id);
                    }
                    absent
                }),
                1 => assert_eq!(q.remove(id), {
                    let pos = model.iter().position(|&m| m == id);
                    pos.map(|p| model.remove(p)).is_some()
                }),
                _ => assert_eq!(q.popleft(), (!model.is_empty()).then(|| model.remove(0))),
            }
            assert_eq!(q.len(), model.len());
        }
        assert_eq!(ids(&q), model);
    }
}
