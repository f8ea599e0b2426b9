//! `pagoda bench serve`: the load generator of `vllm bench serve`, against
//! any OpenAI-compatible server.

pub mod args;
pub mod arrivals;
pub mod benchmark;
pub mod client;
pub mod dataset;
pub mod endpoint_kind;
pub mod local_tokenizer;
pub mod metrics;
pub mod report;
pub mod server_tokenizer;
pub mod sse;
pub mod stream_timing;
pub mod tokenizer;

pub use args::ServeArgs;
pub use benchmark::run_benchmark;
