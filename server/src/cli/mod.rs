//! Command-line arguments of `pagoda`.

pub mod byte_size;
pub mod engine_args;
pub mod generate_args;
pub mod serve_args;

pub use engine_args::EngineArgs;
pub use generate_args::GenerateArgs;
pub use serve_args::ServeArgs;
