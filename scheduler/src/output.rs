//! What one `schedule()` decided, in flat buffers (one allocation each,
//! reusable through `Scheduler::schedule_into`), and what
//! `update_from_output` reports back per request.

use crate::request::{FinishReason, RequestId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledRequest {
    pub request_id: RequestId,
    /// Position of the first token computed this step (= the request's
    /// `num_computed_tokens` before the step, prefix hit included).
    pub start_position: usize,
    /// Tokens computed this step.
    pub num_tokens: usize,
    /// True when the step completes the known sequence, so the engine samples
    /// one token for it.
    pub sample: bool,
    pub num_prompt_tokens: usize,
}

#[derive(Debug, Clone, Default)]
pub struct SchedulerOutput {
    pub(crate) requests: Vec<ScheduledRequest>,
    /// Scheduler-internal slot of each request, so `update_from_output` needs
    /// no id lookup (the id is re-checked against the slot).
    pub(crate) slots: Vec<usize>,
    /// `token_ids[token_starts[i]..token_starts[i + 1]]` belong to request i.
    pub(crate) token_starts: Vec<usize>,
    pub(crate) token_ids: Vec<u32>,
    /// KV-cache groups: each request has one block table per group.
    pub(crate) num_groups: usize,
    /// `block_tables[block_table_starts[i * num_groups + g]..][..]` is
    /// request i's table of group g.
    pub(crate) block_table_starts: Vec<usize>,
    pub(crate) block_tables: Vec<u32>,
    pub(crate) preempted: Vec<RequestId>,
}

impl SchedulerOutput {
    pub fn new() -> Self {
        Self {
            num_groups: 1,
            ..Self::default()
        }
    }

    /// Pre-sized buffers (the scheduler passes the previous step's sizes so
    /// a fresh output never regrows).
    pub(crate) fn with_capacity(
        num_requests: usize,
        num_tokens: usize,
        num_block_ids: usize,
    ) -> Self {
        Self {
            requests: Vec::with_capacity(num_requests),
            slots: Vec::with_capacity(num_requests),
            token_starts: Vec::with_capacity(num_requests + 1),
            token_ids: Vec::with_capacity(num_tokens),
            num_groups: 1,
            block_table_starts: Vec::with_capacity(num_requests + 1),
            block_tables: Vec::with_capacity(num_block_ids),
            preempted: Vec::new(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.requests.clear();
        self.slots.clear();
        self.token_starts.clear();
        self.token_starts.push(0);
        self.token_ids.clear();
        self.block_table_starts.clear();
        self.block_table_starts.push(0);
        self.block_tables.clear();
        self.preempted.clear();
    }

    pub(crate) fn push(
        &mut self,
        slot: usize,
        scheduled: ScheduledRequest,
        token_ids: &[u32],
        block_tables: &[Vec<u32>],
    ) {
        debug_assert_eq!(block_tables.len(), self.num_groups);
        self.requests.push(scheduled);
        self.slots.push(slot);
        self.token_ids.extend_from_slice(token_ids);
        self.token_starts.push(self.token_ids.len());
        for table in block_tables {
            self.block_tables.extend_from_slice(table);
            self.block_table_starts.push(self.block_tables.len());
        }
    }

    pub fn requests(&self) -> &[ScheduledRequest] {
        &self.requests
    }

    /// Tokens to compute this step for request `i`.
    pub fn token_ids(&self, i: usize) -> &[u32] {
        match (self.token_starts.get(i), self.token_starts.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.token_ids[a..b],
            _ => &[],
        }
    }

    /// Request `i`'s whole block table of KV-cache group 0.
    pub fn block_table(&self, i: usize) -> &[u32] {
        self.group_block_table(0, i)
    }

    /// Number of KV-cache groups (block tables per request).
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// Request `i`'s block table of KV-cache group `group`: the null block
    /// where the group's window no longer reads.
    pub fn group_block_table(&self, group: usize, i: usize) -> &[u32] {
        let k = i * self.num_groups + group;
        if group >= self.num_groups {
            return &[];
        }
        match (
            self.block_table_starts.get(k),
            self.block_table_starts.get(k + 1),
        ) {
            (Some(&a), Some(&b)) => &self.block_tables[a..b],
            _ => &[],
        }
    }

    /// All scheduled tokens of this step, request after request.
    pub fn all_token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    pub fn num_batched_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Requests preempted during this `schedule()` (their KV is gone; they
    /// will be recomputed).
    pub fn preempted(&self) -> &[RequestId] {
        &self.preempted
    }

    /// Nothing to run this step.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Longest block table of any group in this step (sizes the flat
    /// `[num_seqs, max_blocks_per_seq]` table).
    pub fn max_num_blocks(&self) -> usize {
        self.block_table_starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// One request's progress after a step: the tokens appended and, if it
/// finished, why (its blocks are already freed then). Requests that sampled
/// nothing and did not finish (prefill chunks) get no update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUpdate {
    pub request_id: RequestId,
    /// Includes a final eos / stop token (the detokenizer decides whether to
    /// show it).
    pub new_token_ids: Vec<u32>,
    pub finish_reason: Option<FinishReason>,
    pub num_prompt_tokens: usize,
    pub num_cached_tokens: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_storage_slices_per_request() {
        let mut out = SchedulerOutput::new();
        out.clear();
        assert!(out.is_empty());
        assert_eq!(out.token_ids(0), &[] as &[u32], "out of range is empty");
        let req = |id, n| ScheduledRequest {
            request_id: id,
            start_position: 0,
            num_tokens: n,
            sample: true,
            num_prompt_tokens: n,
        };
        out.push(3, req(7, 3), &[1, 2, 3], &[vec![5, 6]]);
        out.push(1, req(8, 1), &[4], &[vec![9, 10, 11]]);
        assert_eq!(out.requests().len(), 2);
        assert_eq!(out.token_ids(0), &[1, 2, 3]);
        assert_eq!(out.token_ids(1), &[4]);
        assert_eq!(out.block_table(0), &[5, 6]);
        assert_eq!(out.block_table(1), &[9, 10, 11]);
        assert_eq!(out.num_batched_tokens(), 4);
        assert_eq!(out.max_num_blocks(), 3);
        out.clear();
        assert!(out.is_empty() && out.num_batched_tokens() == 0);
        assert_eq!(out.block_table(0), &[] as &[u32]);
    }

    #[test]
    fn tables_per_group() {
        let mut out = SchedulerOutput::new();
        out.num_groups = 2;
        out.clear();
        let req = ScheduledRequest {
            request_id: 1,
            start_position: 0,
            num_tokens: 1,
            sample: true,
            num_prompt_tokens: 1,
        };
        out.push(0, req, &[1], &[vec![1, 2, 3], vec![0, 4]]);
        out.push(1, req, &[1], &[vec![5], vec![6]]);
        assert_eq!(out.group_block_table(0, 0), &[1, 2, 3]);
        assert_eq!(out.group_block_table(1, 0), &[0, 4]);
        assert_eq!(out.block_table(1), &[5]);
        assert_eq!(out.group_block_table(1, 1), &[6]);
        assert_eq!(out.group_block_table(2, 1), &[] as &[u32]);
        assert_eq!(out.max_num_blocks(), 3);
    }
}
