//! The tokenizer: text <-> token ids, a thin shared handle over the
//! `tokenizers` crate (the same Rust code HF transformers' fast tokenizers
//! run), so encode/decode equal HF's once the pipeline is built the same way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::processors::template::TemplateProcessing;

/// Everything that can go wrong loading or running a tokenizer or a chat
/// template. Messages name the file or metadata key involved.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid tokenizer file {path}: {message}")]
    InvalidFile { path: PathBuf, message: String },
    /// `tokenizer.json` that the `tokenizers` crate cannot load.
    #[error("invalid tokenizer file {path}")]
    InvalidTokenizerJson {
        path: PathBuf,
        source: tokenizers::Error,
    },
    #[error("GGUF tokenizer metadata `{key}`: {message}")]
    GgufMetadata { key: String, message: String },
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("tokenizer failed to encode")]
    Encode(#[source] tokenizers::Error),
    #[error("tokenizer failed to decode")]
    Decode(#[source] tokenizers::Error),
    #[error("token id {id} is not in the vocabulary (size {vocab_size})")]
    UnknownTokenId { id: u32, vocab_size: usize },
    #[error("chat template: {0}")]
    Template(String),
}

/// A loaded tokenizer. Cheap to clone; shared between the engine thread and
/// the server's request handlers.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    hf: tokenizers::Tokenizer,
    /// Added tokens flagged special: what `skip_special_tokens` drops.
    special_ids: HashSet<u32>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.vocab_size)
            .field("num_special", &self.inner.special_ids.len())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (HF `tokenizers` serialization).
    pub fn from_file(tokenizer_json: &Path) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(tokenizer_json).map_err(|source| TokenizerError::Io {
            path: tokenizer_json.to_path_buf(),
            source,
        })?;
        let hf = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|source| {
            TokenizerError::InvalidTokenizerJson {
                path: tokenizer_json.to_path_buf(),
                source,
            }
        })?;
        Ok(Self::from_hf(hf))
    }

    /// Loads an HF folder's tokenizer the way HF transformers does:
    /// `tokenizer.json`, then, when `tokenizer_config.json` states
    /// `add_bos_token` / `add_eos_token`, the post-processor rebuilt from
    /// those flags (transformers' `update_post_processor`).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tokenizer = Self::from_file(&dir.join("tokenizer.json"))?;
        match super::TokenizerConfig::from_dir(dir)? {
            Some(config) if config.add_bos_eos_explicit => tokenizer.with_bos_eos(
                config.bos_token.as_deref().filter(|_| config.add_bos_token),
                config.eos_token.as_deref().filter(|_| config.add_eos_token),
            ),
            _ => Ok(tokenizer),
        }
    }

    /// Builds the tokenizer from a GGUF file's vocabulary metadata.
    pub fn from_gguf(g: &crate::weights::gguf::GgufFile) -> Result<Self, TokenizerError> {
        super::gguf_tokenizer::tokenizer_from_gguf_metadata(|key| g.metadata(key))
    }

    /// Wraps an already built `tokenizers` tokenizer. Truncation and padding
    /// are switched off: a serving engine never silently cuts a prompt.
    pub fn from_hf(mut hf: tokenizers::Tokenizer) -> Self {
        hf.with_padding(None);
        // Cannot fail with `None`.
        let _ = hf.with_truncation(None);
        let special_ids = hf
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        let vocab_size = hf
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        Self {
            inner: Arc::new(Inner {
                hf,
                special_ids,
                vocab_size,
            }),
        }
    }

    /// A copy whose `encode(.., add_special_tokens = true)` puts `bos` first
    /// and `eos` last (either may be absent), replacing the post-processor.
    /// A token that is not in the vocabulary is left out, as HF does.
    pub fn with_bos_eos(
        &self,
        bos: Option<&str>,
        eos: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let bos = bos.and_then(|t| self.token_to_id(t).map(|id| (t, id)));
        let eos = eos.and_then(|t| self.token_to_id(t).map(|id| (t, id)));
        let special = |t: &str| serde_json::json!({ "SpecialToken": { "id": t, "type_id": 0 } });
        let seq = |s: &str, type_id: u32| serde_json::json!({ "Sequence": { "id": s, "type_id": type_id } });
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut special_tokens = serde_json::Map::new();
        for (t, id) in bos.iter().chain(eos.iter()) {
            special_tokens.insert(
                t.to_string(),
                serde_json::json!({ "id": t, "ids": [id], "tokens": [t] }),
            );
        }
        for (type_id, s, out) in [(0, "A", &mut single), (1, "B", &mut pair)] {
            if let Some((t, _)) = bos {
                out.push(special(t));
            }
            out.push(seq(s, type_id));
            if let Some((t, _)) = eos {
                out.push(special(t));
            }
        }
        let pair: Vec<_> = single.iter().cloned().chain(pair).collect();
        let processor: TemplateProcessing = serde_json::from_value(serde_json::json!({
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": special_tokens,
        }))
        .map_err(|e| TokenizerError::Unsupported(format!("bos/eos post-processor: {e}")))?;
        let mut hf = self.inner.hf.clone();
        hf.with_post_processor(Some(processor));
        Ok(Self::from_hf(hf))
    }

    /// Text to token ids. `add_special_tokens` applies the post-processor
    /// (BOS/EOS where the tokenizer adds them); special tokens written in the
    /// text (`<|im_start|>`) always encode to their ids.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .hf
            .encode_fast(text, add_special_tokens)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(TokenizerError::Encode)
    }

    /// Token ids to text. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids
            .iter()
            .find(|&&id| self.inner.hf.id_to_token(id).is_none())
        {
            return Err(TokenizerError::UnknownTokenId {
                id,
                vocab_size: self.vocab_size(),
            });
        }
        self.inner
            .hf
            .decode(ids, skip_special_tokens)
            .map_err(TokenizerError::Decode)
    }

    /// Decode for streaming: ids outside the vocabulary (a model whose
    /// embedding is padded past the tokenizer) contribute no text.
    pub(crate) fn decode_lenient(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        self.inner
            .hf
            .decode(ids, skip_special_tokens)
            .unwrap_or_default()
    }

    /// One past the largest token id, added tokens included (HF's
    /// `len(tokenizer)` for a vocabulary without holes).
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.hf.token_to_id(token)
    }

    /// The token's vocabulary spelling (byte-level BPE spells a space `Ġ`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.hf.id_to_token(id)
    }

    /// Whether `id` is a special added token (`<|im_end|>`), which
    /// `skip_special_tokens` drops from decoded text.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.special_ids.contains(&id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn hf_tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.inner.hf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::bpe::BPE;
    use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

    /// A word-level toy: tokens are whole words split on whitespace.
    fn toy() -> Tokenizer {
        let vocab: tokenizers::models::bpe::Vocab =
            [("a", 0), ("b", 1), ("ab", 2), ("<s>", 3), ("</s>", 4)]
                .into_iter()
                .map(|(t, i)| (t.to_string(), i))
                .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![("a".into(), "b".into())])
            .build()
            .unwrap();
        let mut hf = HfTokenizer::new(bpe);
        hf.add_special_tokens(&[
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ]);
        Tokenizer::from_hf(hf)
    }

    #[test]
    fn encode_decode_and_special_tokens() {
        let t = toy();
        assert_eq!(t.encode("ab", false).unwrap(), vec![2]);
        assert_eq!(t.encode("<s>ab</s>", false).unwrap(), vec![3, 2, 4]);
        assert_eq!(t.decode(&[3, 2], true).unwrap(), "ab");
        assert!(t.is_special(3) && t.is_special(4) && !t.is_special(2));
        assert_eq!(t.vocab_size(), 5);
        assert_eq!(t.token_to_id("ab"), Some(2));
        assert_eq!(t.id_to_token(4).as_deref(), Some("</s>"));
    }

    #[test]
    fn unknown_id_is_an_error_not_a_panic() {
        let err = toy().decode(&[2, 99], false).unwrap_err();
        assert!(
            matches!(err, TokenizerError::UnknownTokenId { id: 99, .. }),
            "{err}"
        );
        assert_eq!(toy().decode_lenient(&[2, 99], false), "ab");
    }

    #[test]
    fn bos_eos_post_processor() {
        let t = toy().with_bos_eos(Some("<s>"), Some("</s>")).unwrap();
        assert_eq!(t.encode("ab", true).unwrap(), vec![3, 2, 4]);
        assert_eq!(t.encode("ab", false).unwrap(), vec![2]);
        let bos_only = toy().with_bos_eos(Some("<s>"), Some("missing")).unwrap();
        assert_eq!(bos_only.encode("ab", true).unwrap(), vec![3, 2]);
    }

    #[test]
    fn shared_types_are_send_sync() {
        fn shared<T: Clone + Send + Sync + 'static>() {}
        shared::<Tokenizer>();
        shared::<crate::tokenizer::ChatTemplate>();
        shared::<crate::tokenizer::IncrementalDetokenizer>();
        fn error<T: std::error::Error + Send + Sync + 'static>() {}
        error::<TokenizerError>();
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/tokenizer.json"),
            "{err}"
        );
    }
}
