//! Checks of a request that need only the model's facts, not the engine's
//! state. `EngineHandle` runs them on the caller's thread, so a bad request
//! is refused at once; `LlmEngine` runs them again for direct callers.

use crate::engine_error::EngineError;
use crate::model_info::ModelInfo;
use crate::sampling_params::{SamplingParams, SamplingParamsError};
use pagoda_scheduler::SchedulingPolicy;

/// Sampling parameters in range, a non-empty prompt of in-vocabulary ids
/// that leaves room for at least one token, and a priority only under the
/// priority policy (vLLM's `Processor._validate_request`: under fcfs it
/// would be silently ignored).
pub fn validate_request(
    info: &ModelInfo,
    prompt: &[u32],
    params: &SamplingParams,
    priority: i32,
) -> Result<(), EngineError> {
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
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= info.vocab_size) {
        return Err(EngineError::TokenOutOfVocab {
            token_id: bad,
            vocab_size: info.vocab_size,
        });
    }
    if prompt.len() >= info.max_model_len {
        return Err(EngineError::PromptTooLong {
            prompt_len: prompt.len(),
            max_model_len: info.max_model_len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn refuses_what_the_model_cannot_take() {
        let ok = SamplingParams::default();
        let check = |prompt: &[u32], p: &SamplingParams| validate_request(&info(), prompt, p, 0);
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
        let err = validate_request(&info, &[1], &ok, 2).unwrap_err();
        assert_eq!(err.param(), Some("priority"));
        assert!(err.is_client_error());
        assert_eq!(validate_request(&info, &[1], &ok, 0), Ok(()));
        info.scheduling_policy = SchedulingPolicy::Priority;
        assert_eq!(validate_request(&info, &[1], &ok, 2), Ok(()));
    }
}
