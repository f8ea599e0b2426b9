//! Where the bench's token counts come from: the model's tokenizer loaded
//! locally (`--tokenizer PATH`), or the server's /tokenize and /detokenize.
//! Either builds prompts of exact token lengths; the choice is printed.

use std::future::Future;
use std::path::{Path, PathBuf};

use pagoda_engine::tokenizer::Tokenizer;

use super::local_tokenizer::{load_tokenizer, non_special_ids};
use super::server_tokenizer::ServerTokenizer;

/// Text <-> ids, synchronous or over HTTP. Dataset code is generic over it.
pub trait TextTokenizer {
    fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> impl Future<Output = anyhow::Result<Vec<u32>>>;
    fn decode(&self, ids: &[u32]) -> impl Future<Output = anyhow::Result<String>>;
}

/// The tokenizer a bench run uses.
#[derive(Debug, Clone)]
pub enum PromptTokenizer {
    Local { tokenizer: Tokenizer, path: PathBuf },
    Server(ServerTokenizer),
}

impl PromptTokenizer {
    /// The local tokenizer when `local` is given and loads; else the server's,
    /// saying why on stderr. Fails only when neither is usable.
    pub async fn resolve(
        local: Option<&Path>,
        client: reqwest::Client,
        base_url: &str,
        model: &str,
        api_key: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut local_error = None;
        if let Some(path) = local {
            match load_tokenizer(path) {
                Ok(tokenizer) => {
                    return Ok(Self::Local {
                        tokenizer,
                        path: path.to_path_buf(),
                    })
                }
                Err(e) => {
                    eprintln!("WARNING: cannot load --tokenizer {}: {e:#}; trying the server's /tokenize.", path.display());
                    local_error = Some(e);
                }
            }
        }
        match ServerTokenizer::connect(client, base_url, model, api_key).await {
            Ok(server) => Ok(Self::Server(server)),
            Err(e) => match local_error {
                Some(local) => anyhow::bail!("no tokenizer: --tokenizer failed ({local:#}) and {e:#}"),
                None => anyhow::bail!("{e:#}; pass --tokenizer PATH (an HF folder, tokenizer.json or .gguf) to count tokens locally"),
            },
        }
    }

    /// One line for the user: which tokenizer counts the tokens.
    pub fn describe(&self) -> String {
        match self {
            Self::Local { path, tokenizer } => format!(
                "local tokenizer {} (vocabulary {})",
                path.display(),
                tokenizer.vocab_size()
            ),
            Self::Server(s) => format!(
                "the server's /tokenize and /detokenize ({:?} dialect)",
                s.dialect
            ),
        }
    }

    /// Token ids random prompts are drawn from: the whole vocabulary less
    /// special tokens locally; the tokens of a built-in text over HTTP.
    pub async fn token_pool(&self) -> anyhow::Result<Vec<u32>> {
        match self {
            Self::Local { tokenizer, .. } => {
                let pool = non_special_ids(tokenizer);
                if pool.is_empty() {
                    anyhow::bail!("the tokenizer has no non-special tokens");
                }
                Ok(pool)
            }
            Self::Server(s) => s.token_pool().await,
        }
    }

    /// How many tokens `add_special_tokens` adds (a BOS, say): the server adds
    /// them to every prompt, so random prompts are that much shorter.
    pub async fn num_special_tokens_to_add(&self) -> anyhow::Result<usize> {
        let probe = "hello";
        let with = self.encode(probe, true).await?.len();
        let without = self.encode(probe, false).await?.len();
        Ok(with.saturating_sub(without))
    }

    /// The server's context length, when known.
    pub fn max_model_len(&self) -> Option<usize> {
        match self {
            Self::Local { .. } => None,
            Self::Server(s) => s.max_model_len,
        }
    }
}

impl TextTokenizer for PromptTokenizer {
    async fn encode(&self, text: &str, add_special_tokens: bool) -> anyhow::Result<Vec<u32>> {
        match self {
            Self::Local { tokenizer, .. } => Ok(tokenizer.encode(text, add_special_tokens)?),
            Self::Server(s) => s.encode(text, add_special_tokens).await,
        }
    }

    async fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        match self {
            Self::Local { tokenizer, .. } => Ok(tokenizer.decode(ids, false)?),
            Self::Server(s) => s.decode(ids).await,
        }
    }
}
