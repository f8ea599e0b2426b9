//! Pagoda engine: model loading, tokenization, the model runner, the sampler
//! and the engine loop that drives the scheduler.

pub mod backend;
pub mod byte_size;
pub mod config;
pub mod decode_graphs;
pub mod engine_args;
pub mod engine_builder;
pub mod engine_config;
pub mod engine_error;
pub mod engine_handle;
pub mod engine_request;
pub mod kv_events;
pub mod llm_engine;
pub mod model;
pub mod model_info;
pub mod model_runner;
pub mod outputs;
pub mod request_ids;
pub mod runner_io;
pub mod sampler;
pub mod sampling_params;
pub mod structured_output;
pub mod tokenizer;
pub mod weights;

pub use engine_args::EngineArgs;
pub use engine_config::{CpuMatmul, Device, EngineConfig, KvCacheDtype};
pub use engine_error::{error_chain, EngineContext, EngineError, ErrorCause};
pub use engine_handle::{
    generate_all, EngineHandle, EngineLoop, FinalOutput, FinalSample, RequestStream,
};
pub use engine_request::{validate_prompt, EngineRequest, RequestOptions, ValidRequest};
pub use llm_engine::{EngineStats, LlmEngine};
pub use model_info::ModelInfo;
pub use outputs::{
    CompletionDelta, FinishReason, RequestMetrics, RequestOutput, StopReason, TokenLogprobs,
};
pub use request_ids::{ParentRequestId, RequestIds};
pub use sampling_params::{SamplingParams, SamplingParamsError};
pub use structured_output::{
    StructuralTag, StructuredOutputError, StructuredOutputsParams, TagStructure,
};
