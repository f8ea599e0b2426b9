//! Prompts for the offline benches: token ids drawn uniformly from the
//! vocabulary, so no tokenizer round trip is needed and no two prompts share
//! a prefix. Special tokens (BOS, EOS, chat markers) are left out when the
//! model's tokenizer names them, so a prompt never ends itself early.

use pagoda_engine::tokenizer::Tokenizer;
use pagoda_engine::ModelInfo;
use rand::Rng;

/// The ids a random prompt may use: the model's vocabulary less its special
/// tokens and its BOS/EOS ids.
pub fn allowed_token_ids(info: &ModelInfo, tokenizer: Option<&Tokenizer>) -> Vec<u32> {
    let vocab = tokenizer.map_or(info.vocab_size, |t| t.vocab_size().min(info.vocab_size));
    (0..vocab as u32)
        .filter(|id| !info.eos_token_ids.contains(id) && info.bos_token_id != Some(*id))
        .filter(|&id| tokenizer.is_none_or(|t| !t.is_special(id) && t.id_to_token(id).is_some()))
        .collect()
}

/// One prompt per length, each id uniform over `allowed`.
pub fn random_token_prompts(
    rng: &mut impl Rng,
    allowed: &[u32],
    lens: &[usize],
) -> anyhow::Result<Vec<Vec<u32>>> {
    if allowed.is_empty() {
        anyhow::bail!("the vocabulary has no tokens to build prompts from");
    }
    Ok(lens
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| allowed[rng.random_range(0..allowed.len())])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn info(vocab_size: usize) -> ModelInfo {
        ModelInfo {
            scheduling_policy: Default::default(),
            kv_cache_dtype: "float32",
            name: "m".into(),
            architecture: "LlamaForCausalLM".into(),
            max_model_len: 128,
            vocab_size,
            eos_token_ids: vec![2],
            bos_token_id: Some(1),
            num_kv_blocks: 8,
            block_size: 16,
            kv_cache_tokens: 128,
            max_concurrency: 1.0,
            device: "cpu".into(),
            max_num_seqs: 8,
            max_num_batched_tokens: 128,
        }
    }

    #[test]
    fn ids_avoid_bos_eos_and_stay_in_vocab() {
        let allowed = allowed_token_ids(&info(50), None);
        assert_eq!(allowed.len(), 48);
        assert!(!allowed.contains(&1) && !allowed.contains(&2) && !allowed.contains(&50));
        let mut rng = StdRng::seed_from_u64(0);
        let prompts = random_token_prompts(&mut rng, &allowed, &[3, 0, 100]).unwrap();
        assert_eq!(
            prompts.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 0, 100]
        );
        assert!(prompts.iter().flatten().all(|id| allowed.contains(id)));
        let mut rng2 = StdRng::seed_from_u64(0);
        assert_eq!(
            prompts,
            random_token_prompts(&mut rng2, &allowed, &[3, 0, 100]).unwrap()
        );
        assert!(random_token_prompts(&mut rng2, &[], &[1]).is_err());
    }
}
