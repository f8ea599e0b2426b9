//! Checks of a request that need only the model's facts, not the engine's
//! state. `EngineHandle` runs them on the caller's thread, so a bad request
//! is refused at once; `LlmEngine` runs them again for direct callers.

use crate::engine_error::EngineError;
use crate::model_info::ModelInfo;
use crate::sampling_params::SamplingParams;

/// Sampling parameters in range, a non-empty prompt of in-vocabulary ids
/// that leaves room for at least one token.
pub fn validate_request(
    info: &ModelInfo,
    prompt: &[u32],
    params: &SamplingParams,
) -> Result<(), EngineError> {
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
        }
    }

    #[test]
    fn refuses_what_the_model_cannot_take() {
        let ok = SamplingParams::default();
        let check = |prompt: &[u32], p: &SamplingParams| validate_request(&info(), prompt, p);
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
}
