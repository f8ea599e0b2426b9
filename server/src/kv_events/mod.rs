//! KV-cache events for routers (`--kv-events-config`, vLLM's flag and JSON):
//! the scheduler records which block hashes enter and leave the prefix
//! cache, the engine hands each step's events to a bounded sink, and this
//! module publishes them over ZeroMQ in vLLM's msgpack format, with vLLM's
//! replay socket. A router that follows them (`vllm-router --policy
//! kv_aware`, llm-d, Dynamo) knows which prefixes this replica holds.

mod config;
mod publisher;
pub mod wire;

pub use config::{KvEventsConfig, KvEventsConfigError};
pub use publisher::KvEventPublisher;
