//! The token trie llguidance walks, built from the model's own tokenizer.
//!
//! `toktrie_hf_tokenizers` pins `tokenizers` 0.21 while Pagoda uses 0.22,
//! so instead of a second tokenizer crate the trie is built from the
//! tokenizer's JSON serialization with llguidance's own
//! `token_bytes_from_tokenizer_json`, and re-tokenization (llguidance's
//! token healing of forced text) calls Pagoda's tokenizer.

use crate::tokenizer::Tokenizer;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use std::sync::Arc;

pub struct PagodaTokEnv {
    tokenizer: Tokenizer,
    trie: TokTrie,
}

impl PagodaTokEnv {
    /// A trie over `vocab_size` ids (the logits' width: ids past the
    /// tokenizer's get placeholder special entries no grammar can produce),
    /// with every `eos_token_ids` entry ending generation.
    pub fn build(
        tokenizer: &Tokenizer,
        vocab_size: usize,
        eos_token_ids: &[u32],
    ) -> anyhow::Result<TokEnv> {
        let json = tokenizer
            .hf_tokenizer()
            .to_string(false)
            .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&json)?;
        // llguidance asserts on some malformed vocabularies: a panic there
        // must become this error, not take the server thread down.
        let bytes = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
            .map_err(|_| anyhow::anyhow!("the tokenizer's vocabulary could not be read"))??;
        anyhow::ensure!(
            bytes.len() <= vocab_size,
            "the tokenizer has {} tokens, more than the model's {vocab_size} logits",
            bytes.len()
        );
        let mut words = bytes;
        while words.len() < vocab_size {
            let mut name = format!(".<[{}]>", words.len()).into_bytes();
            name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
            words.push(name);
        }
        let &first_eos = eos_token_ids
            .first()
            .ok_or_else(|| anyhow::anyhow!("the model has no EOS token"))?;
        let info = TokRxInfo::new(vocab_size as u32, first_eos);
        let mut trie = TokTrie::from(&info, &words);
        if eos_token_ids.len() > 1 {
            trie = trie.with_eos_tokens(eos_token_ids);
        }
        Ok(Arc::new(PagodaTokEnv {
            tokenizer: tokenizer.clone(),
            trie,
        }))
    }
}

impl TokenizerEnv for PagodaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |s| {
            self.tokenizer.encode(s, false).unwrap_or_default()
        })
    }
}
