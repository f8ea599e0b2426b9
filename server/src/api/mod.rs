//! The HTTP handlers, one file per endpoint.

pub mod chat_completions;
pub mod completions;
pub mod health;
pub mod metrics;
pub mod models;
pub mod tokenize;
pub mod version;
