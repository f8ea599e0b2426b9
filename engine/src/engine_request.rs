//! A request on its way into the engine: the caller's `EngineRequest`,
//! and the `ValidRequest` it becomes once every check that needs only the
//! model's facts has passed (TGI's `ValidGenerateRequest`). The checks run
//! once, on the caller's thread (`EngineHandle::add_requests`), and the
//! engine takes only a `ValidRequest`, so it never checks again.

use std::sync::Arc;
use std::time::Instant;

use crate::engine_error::EngineError;
use crate::model_info::ModelInfo;
use crate::sampling_params::{SamplingParams, SamplingParamsError};
use crate::structured_output::{CompiledGrammar, StructuredOutputCompiler};
use pagoda_scheduler::SchedulingPolicy;

/// Caller-side options of one request.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Lower values are served first under the priority policy.
    pub priority: i32,
    /// Separates prefix-cache entries between tenants.
    pub cache_salt: Option<String>,
    /// When the request reached the server; defaults to now.
    pub arrival_time: Option<Instant>,
}

/// One request as a caller hands it over, not yet checked.
#[derive(Debug, Clone)]
pub struct EngineRequest {
    pub prompt_token_ids: Vec<u32>,
    pub params: SamplingParams,
    pub opts: RequestOptions,
}

/// A request the model can take: sampling parameters in range, a
/// non-empty prompt of in-vocabulary ids that leaves room for at least one
/// token, a priority only under the priority policy, and a structured
/// output constraint that compiles (its grammar travels with the request).
/// Only [`ValidRequest::new`] makes one.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    request: EngineRequest,
    grammar: Option<Arc<CompiledGrammar>>,
}

impl ValidRequest {
    pub fn new(
        info: &ModelInfo,
        grammars: &StructuredOutputCompiler,
        request: EngineRequest,
    ) -> Result<Self, EngineError> {
        validate(info, &request)?;
        let grammar = match &request.params.structured_outputs {
            Some(so) => Some(
                grammars
                    .compile(so)
                    .map_err(EngineError::InvalidStructuredOutput)?,
            ),
            None => None,
        };
        Ok(Self { request, grammar })
    }

    /// The compiled grammar of a constrained request.
    pub fn grammar(&self) -> Option<&Arc<CompiledGrammar>> {
        self.grammar.as_ref()
    }

    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.request.prompt_token_ids
    }

    pub fn params(&self) -> &SamplingParams {
        &self.request.params
    }

    pub fn opts(&self) -> &RequestOptions {
        &self.request.opts
    }

    pub fn into_parts(self) -> (EngineRequest, Option<Arc<CompiledGrammar>>) {
        (self.request, self.grammar)
    }
}

/// One rule, one message: the engine's are these (the scheduler only
/// asserts them).
fn validate(info: &ModelInfo, r: &EngineRequest) -> Result<(), EngineError> {
    let (prompt, params, priority) = (&r.prompt_token_ids, &r.params, r.opts.priority);
    // vLLM refuses a priority unless the priority policy is on
    // (`Processor._validate_request`): under fcfs it would be ignored.
    if priority != 0 && info.scheduling_policy != SchedulingPolicy::Priority {
        return Err(EngineError::InvalidParams(SamplingParamsError {
            param: "priority",
            message: format!(
                "Got priority {priority} but priority scheduling is not enabled \
                 (start the server with --scheduling-policy priority)."
            ),
        }));
    }
    params
        .validate(info.vocab_size)
        .map_err(EngineError::InvalidParams)?;
    validate_prompt(prompt, info.vocab_size, info.max_model_len)
}

/// The prompt's rules: not empty, ids in the vocabulary, room for at least
/// one generated token. Public so that a caller checking a prompt early
/// (the server, before it counts `max_tokens` in) meets the same rules and
/// messages rather than copies of them.
pub fn validate_prompt(
    prompt: &[u32],
    vocab_size: usize,
    max_model_len: usize,
) -> Result<(), EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if let Some(&token_id) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(EngineError::TokenOutOfVocab {
            token_id,
            vocab_size,
        });
    }
    if prompt.len() >= max_model_len {
        return Err(EngineError::PromptTooLong {
            prompt_len: prompt.len(),
            max_model_len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(
        info: &ModelInfo,
        prompt: &[u32],
        params: &SamplingParams,
        priority: i32,
    ) -> Result<(), EngineError> {
        let request = EngineRequest {
            prompt_token_ids: prompt.to_vec(),
            params: params.clone(),
            opts: RequestOptions {
                priority,
                ..Default::default()
            },
        };
        let grammars = StructuredOutputCompiler::new(None, info.vocab_size, vec![2]);
        ValidRequest::new(info, &grammars, request).map(|_| ())
    }

    fn info() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            architecture: "LlamaForCausalLM".into(),
            max_model_len: 8,
            vocab_size: 100,
            eos_token_ids: vec![2],
            bos_token_id: None,
            num_kv_blocks: 4,
            block_size: 16,
            kv_cache_tokens: 64,
            max_concurrency: 8.0,
            device: "cpu".into(),
            max_num_seqs: 4,
            max_num_batched_tokens: 64,
            scheduling_policy: SchedulingPolicy::Fcfs,
            kv_cache_dtype: "float32",
        }
    }

    #[test]
    fn refuses_what_the_model_cannot_take() {
        let ok = SamplingParams::default();
        let check = |prompt: &[u32], p: &SamplingParams| check_with(&info(), prompt, p, 0);
        assert_eq!(check(&[1; 7], &ok), Ok(()));
        assert_eq!(check(&[], &ok), Err(EngineError::EmptyPrompt));
        assert!(matches!(
            check(&[1, 100], &ok),
            Err(EngineError::TokenOutOfVocab { token_id: 100, .. })
        ));
        assert!(matches!(
            check(&[1; 8], &ok),
            Err(EngineError::PromptTooLong { prompt_len: 8, .. })
        ));
        let bad = SamplingParams {
            top_p: 2.0,
            ..Default::default()
        };
        assert!(matches!(
            check(&[1], &bad),
            Err(EngineError::InvalidParams(_))
        ));
    }

    #[test]
    fn priority_needs_the_priority_policy() {
        let ok = SamplingParams::default();
        let mut info = info();
        let err = check_with(&info, &[1], &ok, 2).unwrap_err();
        assert_eq!(err.param(), Some("priority"));
        assert!(err.is_client_error());
        assert_eq!(check_with(&info, &[1], &ok, 0), Ok(()));
        info.scheduling_policy = SchedulingPolicy::Priority;
        assert_eq!(check_with(&info, &[1], &ok, 2), Ok(()));
    }
}
