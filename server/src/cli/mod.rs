//! Command-line arguments of `pagoda serve` and `pagoda generate`; the
//! engine flags they share with `pagoda bench` are the engine's
//! (`pagoda_engine::EngineArgs`).

pub mod generate_args;
pub mod serve_args;

pub use generate_args::GenerateArgs;
pub use pagoda_engine::EngineArgs;
pub use serve_args::ServeArgs;
