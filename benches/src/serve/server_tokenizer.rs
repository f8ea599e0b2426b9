//! Tokenization through the server under test, so prompts have exact token
//! lengths without a local copy of its tokenizer. Two dialects exist:
//! vLLM's (`/tokenize {"model","prompt","add_special_tokens"}` ->
//! `{"tokens","count","max_model_len"}`, `/detokenize {"model","tokens"}` ->
//! `{"prompt"}`), which Pagoda speaks, and llama.cpp's llama-server's
//! (`{"content","add_special"}` -> `{"tokens"}`, `{"tokens"}` -> `{"content"}`).
//! The dialect is found by probing once.

use std::collections::BTreeSet;

use anyhow::Context;
use serde_json::{json, Value};

/// Which request bodies the server understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizeDialect {
    /// vLLM and Pagoda; `add_special_tokens_field` is false for servers
    /// that refuse the field (they then always add special tokens).
    Vllm { add_special_tokens_field: bool },
    /// llama.cpp's llama-server.
    LlamaCpp,
}

/// A tokenizer reached over HTTP at `{base_url}/tokenize` and `/detokenize`.
#[derive(Debug, Clone)]
pub struct ServerTokenizer {
    client: reqwest::Client,
    base_url: String,
    model: String,
    api_key: Option<String>,
    pub dialect: TokenizeDialect,
    /// The server's context length, when its /tokenize reports it.
    pub max_model_len: Option<usize>,
}

const PROBE_TEXT: &str = "Hello world, this is a tokenizer probe.";

impl ServerTokenizer {
    /// Finds the dialect the server speaks; an error says what each probe got.
    pub async fn connect(
        client: reqwest::Client,
        base_url: &str,
        model: &str,
        api_key: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut tok = Self {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key,
            dialect: TokenizeDialect::Vllm {
                add_special_tokens_field: true,
            },
            max_model_len: None,
        };
        let mut failures = Vec::new();
        for dialect in [
            TokenizeDialect::Vllm {
                add_special_tokens_field: true,
            },
            TokenizeDialect::Vllm {
                add_special_tokens_field: false,
            },
            TokenizeDialect::LlamaCpp,
        ] {
            tok.dialect = dialect;
            match tok.tokenize_raw(PROBE_TEXT, false).await {
                // llama-server answers a vLLM body with an empty list: not a match.
                Ok((ids, max_len)) if !ids.is_empty() => {
                    let text = tok
                        .decode(&ids)
                        .await
                        .context("server /detokenize failed")?;
                    if text.is_empty() {
                        anyhow::bail!(
                            "server /detokenize returned empty text for {} tokens",
                            ids.len()
                        );
                    }
                    tok.max_model_len = max_len;
                    return Ok(tok);
                }
                Ok(_) => failures.push(format!("{dialect:?}: no tokens")),
                Err(e) => failures.push(format!("{dialect:?}: {e:#}")),
            }
        }
        anyhow::bail!(
            "the server at {} has no usable /tokenize ({})",
            tok.base_url,
            failures.join("; ")
        )
    }

    /// Token ids of `text`.
    pub async fn encode(&self, text: &str, add_special_tokens: bool) -> anyhow::Result<Vec<u32>> {
        Ok(self.tokenize_raw(text, add_special_tokens).await?.0)
    }

    /// Text of `ids`.
    pub async fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        let body = match self.dialect {
            TokenizeDialect::Vllm { .. } => json!({"model": self.model, "tokens": ids}),
            TokenizeDialect::LlamaCpp => json!({"tokens": ids}),
        };
        let v = self.post("detokenize", body).await?;
        v.get("prompt")
            .or_else(|| v.get("content"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!("/detokenize answer has no \"prompt\" or \"content\": {v}")
            })
    }

    /// Distinct token ids of a built-in text that spans letters, digits,
    /// punctuation and common words: the pool random prompts draw from when
    /// the vocabulary itself cannot be listed over HTTP.
    pub async fn token_pool(&self) -> anyhow::Result<Vec<u32>> {
        let mut pool = BTreeSet::new();
        for text in POOL_TEXTS {
            pool.extend(self.encode(text, false).await?);
        }
        if pool.len() < 2 {
            anyhow::bail!(
                "the server's tokenizer gave only {} distinct tokens for the built-in text",
                pool.len()
            );
        }
        Ok(pool.into_iter().collect())
    }

    async fn tokenize_raw(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> anyhow::Result<(Vec<u32>, Option<usize>)> {
        let body = match self.dialect {
            TokenizeDialect::Vllm {
                add_special_tokens_field: true,
            } => {
                json!({"model": self.model, "prompt": text, "add_special_tokens": add_special_tokens})
            }
            TokenizeDialect::Vllm {
                add_special_tokens_field: false,
            } => json!({"model": self.model, "prompt": text}),
            TokenizeDialect::LlamaCpp => {
                json!({"content": text, "add_special": add_special_tokens})
            }
        };
        let v = self.post("tokenize", body).await?;
        let tokens = v
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow::anyhow!("/tokenize answer has no \"tokens\" list"))?;
        let ids = tokens
            .iter()
            .map(|t| {
                // llama-server may send {"id", "piece"} objects.
                t.as_u64()
                    .or_else(|| t.get("id").and_then(Value::as_u64))
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| anyhow::anyhow!("/tokenize gave a token that is not an id: {t}"))
            })
            .collect::<anyhow::Result<Vec<u32>>>()?;
        let max_model_len = v
            .get("max_model_len")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        Ok((ids, max_model_len))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.base_url);
        let mut req = self.client.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("POST {url}: reading the answer"))?;
        if !status.is_success() {
            anyhow::bail!(
                "POST {url}: HTTP {}: {}",
                status.as_u16(),
                text.chars().take(300).collect::<String>()
            );
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url}: answer is not JSON"))
    }
}

/// Texts whose tokens make the random-prompt pool (see `token_pool`).
const POOL_TEXTS: &[&str] = &[
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an \
     they you were her she there been one all we their has would when if so no will more can its who two time \
     may into only new some could these then do first any my now such like our over man me even most made after \
     also did many before must through back years where much your way well down should because each just those \
     people how too little state good very make world still own see men work long get here between both life \
     being under never day same another know while last might us great old year off come since against go came \
     right used take three",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 0 1 2 3 4 5 6 7 8 9 10 42 100 2024",
    ". , ; : ! ? ' \" ( ) [ ] { } - _ + = * / \\ | @ # $ % ^ & ~ < >",
    "Engine server request token cache block memory model batch stream latency throughput kernel compute \
     schedule prefill decode attention layer weight vector matrix network language question answer system",
];
