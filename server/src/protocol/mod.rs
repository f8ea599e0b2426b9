//! Wire types of the OpenAI-compatible API (requests in, responses out).

pub mod chat;
pub mod common;
pub mod completion;
pub mod models;
pub mod structured_outputs;
pub mod tokenize;
pub mod tools;
