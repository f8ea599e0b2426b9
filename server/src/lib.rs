//! `pagoda`: the OpenAI-compatible server (`serve`), offline generation
//! (`generate`) and the wiring of the load generator (`bench`).

pub mod api;
pub mod auth;
pub mod choices;
pub mod cli;
pub mod default_model;
pub mod error;
pub mod generate;
pub mod generation;
pub mod gpu_metrics;
pub mod json_body;
pub mod kv_events;
pub mod logprobs;
pub mod metrics;
pub mod prompt;
pub mod protocol;
pub mod request_fields;
pub mod request_id;
pub mod request_tracker;
pub mod respond;
pub mod router;
pub mod sampling;
pub mod serve;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod tool_calling;
pub mod tool_parsers;
