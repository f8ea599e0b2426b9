//! One generation request as the scheduler sees it: its tokens, how many of
//! them are in the KV cache, its stop conditions, and the KV blocks it holds.
//!
//! Prompt and output live in one `Vec` (`all_token_ids`) because the model
//! computes them alike: after preemption the whole sequence is recomputed.

use crate::block_hash::BlockHash;

/// Internal request id (the engine maps external string ids onto these).
pub type RequestId = u64;

/// Why a request finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// An eos token, a stop token, or (reported by the engine) a stop string.
    Stop,
    /// `max_tokens` or `max_model_len` reached.
    Length,
    /// Aborted by the caller (e.g. the client went away).
    Abort,
}

impl FinishReason {
    /// The OpenAI `finish_reason` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    Waiting,
    Running,
    /// Evicted under memory pressure; waits to be recomputed from scratch.
    Preempted,
    Finished(FinishReason),
}

/// The stop conditions the scheduler applies itself (stop strings need text
/// and are the engine's: it calls `Scheduler::finish_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopConditions {
    pub eos_token_ids: Vec<u32>,
    pub stop_token_ids: Vec<u32>,
    pub max_tokens: usize,
    /// No eos / stop token ends the request before this many output tokens.
    pub min_tokens: usize,
    pub ignore_eos: bool,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) request_id: RequestId,
    /// Prompt followed by output.
    pub(crate) all_token_ids: Vec<u32>,
    pub(crate) num_prompt_tokens: usize,
    /// Tokens whose KV is (or, once the scheduled step runs, will be) cached.
    pub(crate) num_computed_tokens: usize,
    pub(crate) status: RequestStatus,
    pub(crate) stop: StopConditions,
    pub(crate) priority: i32,
    pub(crate) arrival_time: f64,
    /// Tie-breaker for equal (priority, arrival_time): admission order.
    pub(crate) arrival_seq: u64,
    pub(crate) cache_salt: Option<String>,
    /// Prefix-cache hit at first scheduling; `None` until then.
    pub(crate) num_cached_tokens: Option<usize>,
    pub(crate) num_preemptions: usize,
    /// Per KV-cache group, the block ids holding this request's KV in token
    /// order (the null block where a window no longer reads).
    pub(crate) block_tables: Vec<Vec<u32>>,
    /// Hashes of this request's full blocks, computed lazily and kept across
    /// preemption (tokens are append-only, so a full block's hash never changes).
    pub(crate) block_hashes: Vec<BlockHash>,
    /// Leading entries of every group's table already registered in the
    /// prefix cache.
    pub(crate) num_cached_blocks: usize,
}

impl Request {
    pub fn new(
        request_id: RequestId,
        prompt_token_ids: Vec<u32>,
        stop: StopConditions,
        priority: i32,
        arrival_time: f64,
        cache_salt: Option<String>,
    ) -> Self {
        let num_prompt_tokens = prompt_token_ids.len();
        Self {
            request_id,
            all_token_ids: prompt_token_ids,
            num_prompt_tokens,
            num_computed_tokens: 0,
            status: RequestStatus::Waiting,
            stop,
            priority,
            arrival_time,
            arrival_seq: 0,
            cache_salt,
            num_cached_tokens: None,
            num_preemptions: 0,
            block_tables: Vec::new(),
            block_hashes: Vec::new(),
            num_cached_blocks: 0,
        }
    }

    pub fn request_id(&self) -> RequestId {
        self.request_id
    }
    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.all_token_ids[..self.num_prompt_tokens]
    }
    pub fn output_token_ids(&self) -> &[u32] {
        &self.all_token_ids[self.num_prompt_tokens..]
    }
    pub fn all_token_ids(&self) -> &[u32] {
        &self.all_token_ids
    }
    pub fn num_tokens(&self) -> usize {
        self.all_token_ids.len()
    }
    pub fn num_prompt_tokens(&self) -> usize {
        self.num_prompt_tokens
    }
    pub fn num_output_tokens(&self) -> usize {
        self.all_token_ids.len() - self.num_prompt_tokens
    }
    pub fn num_computed_tokens(&self) -> usize {
        self.num_computed_tokens
    }
    pub fn status(&self) -> RequestStatus {
        self.status
    }
    pub fn is_finished(&self) -> bool {
        matches!(self.status, RequestStatus::Finished(_))
    }
    /// Prefix-cache hit length when the request was first scheduled (0 before).
    pub fn num_cached_tokens(&self) -> usize {
        self.num_cached_tokens.unwrap_or(0)
    }
    pub fn num_preemptions(&self) -> usize {
        self.num_preemptions
    }
    pub fn priority(&self) -> i32 {
        self.priority
    }
    pub fn arrival_time(&self) -> f64 {
        self.arrival_time
    }
    pub fn cache_salt(&self) -> Option<&str> {
        self.cache_salt.as_deref()
    }
    pub fn stop_conditions(&self) -> &StopConditions {
        &self.stop
    }
    /// The KV blocks this request holds in KV-cache group 0, in token order.
    pub fn block_table(&self) -> &[u32] {
        self.group_block_table(0)
    }
    /// Group `group`'s block table (empty while the request holds nothing).
    pub fn group_block_table(&self, group: usize) -> &[u32] {
        self.block_tables.get(group).map_or(&[], Vec::as_slice)
    }
    /// Whether the request holds a table in any group.
    pub(crate) fn holds_blocks(&self) -> bool {
        self.block_tables.iter().any(|t| !t.is_empty())
    }
    /// Hashes computed so far for this request's full blocks.
    pub fn block_hashes(&self) -> &[BlockHash] {
        &self.block_hashes
    }

    pub(crate) fn append_output_token(&mut self, token: u32) {
        self.all_token_ids.push(token);
    }

    /// vLLM's `check_stop`, applied after a token was appended. An eos or stop
    /// token wins over a length cap reached on the same token, so a model
    /// that ends on its last allowed token reports `Stop`.
    pub(crate) fn check_stop(&self, max_model_len: usize) -> Option<FinishReason> {
        let num_output = self.num_output_tokens();
        if num_output >= self.stop.min_tokens {
            if let Some(&last) = self.all_token_ids.last() {
                let eos = !self.stop.ignore_eos && self.stop.eos_token_ids.contains(&last);
                if eos || self.stop.stop_token_ids.contains(&last) {
                    return Some(FinishReason::Stop);
                }
            }
        }
        if self.num_tokens() >= max_model_len || num_output >= self.stop.max_tokens {
            return Some(FinishReason::Length);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(max_tokens: usize, min_tokens: usize, ignore_eos: bool) -> StopConditions {
        StopConditions {
            eos_token_ids: vec![2],
            stop_token_ids: vec![7],
            max_tokens,
            min_tokens,
            ignore_eos,
        }
    }

    #[test]
    fn prompt_and_output_views() {
        let mut r = Request::new(5, vec![10, 11, 12], stop(4, 0, false), 0, 0.0, None);
        r.append_output_token(20);
        assert_eq!(r.request_id(), 5);
        assert_eq!(r.prompt_token_ids(), &[10, 11, 12]);
        assert_eq!(r.output_token_ids(), &[20]);
        assert_eq!(r.all_token_ids(), &[10, 11, 12, 20]);
        assert_eq!((r.num_tokens(), r.num_output_tokens()), (4, 1));
        assert_eq!(r.status(), RequestStatus::Waiting);
        assert_eq!(r.num_cached_tokens(), 0);
    }

    #[test]
    fn eos_stops_only_after_min_tokens_and_not_when_ignored() {
        let mut r = Request::new(1, vec![1, 1], stop(10, 2, false), 0, 0.0, None);
        r.append_output_token(2);
        assert_eq!(r.check_stop(100), None, "eos before min_tokens");
        r.append_output_token(2);
        assert_eq!(r.check_stop(100), Some(FinishReason::Stop));

        let mut r = Request::new(1, vec![1, 1], stop(10, 0, true), 0, 0.0, None);
        r.append_output_token(2);
        assert_eq!(r.check_stop(100), None, "ignore_eos");
        r.append_output_token(7);
        assert_eq!(r.check_stop(100), Some(FinishReason::Stop), "stop token");
    }

    #[test]
    fn length_caps_from_max_tokens_and_max_model_len() {
        let mut r = Request::new(1, vec![1, 1], stop(2, 0, false), 0, 0.0, None);
        r.append_output_token(3);
        assert_eq!(r.check_stop(100), None);
        r.append_output_token(3);
        assert_eq!(r.check_stop(100), Some(FinishReason::Length));

        let mut r = Request::new(1, vec![1, 1], stop(50, 0, false), 0, 0.0, None);
        r.append_output_token(3);
        assert_eq!(r.check_stop(3), Some(FinishReason::Length));
        // min_tokens never holds a request past max_model_len.
        let mut r = Request::new(1, vec![1, 1], stop(50, 40, false), 0, 0.0, None);
        r.append_output_token(2);
        assert_eq!(r.check_stop(3), Some(FinishReason::Length));
        // eos on the last allowed token reports Stop.
        let mut r = Request::new(1, vec![1, 1], stop(1, 0, false), 0, 0.0, None);
        r.append_output_token(2);
        assert_eq!(r.check_stop(100), Some(FinishReason::Stop));
    }
}
