//! Pagoda scheduler: requests, the paged KV-cache block pool with prefix
//! caching, and the continuous-batching scheduler (vLLM v1 design).
//!
//! Pure Rust: no tensors, no device, and deterministic — the same calls in
//! the same order give the same outputs (queues are `Vec`/`VecDeque`; hash
//! maps are only ever looked up, never iterated into an output).

mod block;
mod block_hash;
mod block_pool;
mod config;
mod error;
mod free_block_queue;
mod kv_cache_manager;
mod kv_cache_spec;
mod kv_events;
mod output;
mod request;
mod request_queue;
mod request_table;
mod scheduler;
mod single_type_manager;
mod stats;

pub use block::KvCacheBlock;
pub use block_hash::{BlockHash, BlockHasher};
pub use block_pool::{BlockPool, NULL_BLOCK_ID};
pub use config::{SchedulerConfig, SchedulingPolicy};
pub use error::ConfigError;
pub use free_block_queue::FreeBlockQueue;
pub use kv_cache_manager::{ComputedBlocks, KvCacheManager};
pub use kv_cache_spec::KvCacheSpec;
pub use kv_events::KvCacheEvent;
pub use output::{RequestUpdate, ScheduledRequest, SchedulerOutput};
pub use request::{FinishReason, Request, RequestId, RequestStatus, StopConditions};
pub use scheduler::Scheduler;
pub use stats::SchedulerStats;
