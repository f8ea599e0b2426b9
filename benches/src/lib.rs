//! Pagoda benches: the client side of `pagoda bench serve | throughput |
//! latency`, compatible with `vllm bench` (same flags, same printed table,
//! same saved JSON), so one tool compares Pagoda with other servers.

pub mod cli;
pub mod engine_args;
pub mod latency;
pub mod random_prompts;
pub mod serve;
pub mod stats;
pub mod throughput;
