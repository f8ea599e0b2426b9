//! Compiles a request's constraint into an llguidance grammar once, at
//! validation, and caches it by (kind, text): repeated schemas cost a clone.
//! The tokenizer's trie and llguidance's `ParserFactory` are built on the
//! first constrained request, so servers that never see one pay nothing.

use super::grammar::CompiledGrammar;
use super::params::StructuredOutputsParams;
use super::tok_env::PagodaTokEnv;
use crate::tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// Compiled grammars kept; past this the cache starts over (a server
/// flooded with distinct schemas must not grow without bound).
const MAX_CACHED_GRAMMARS: usize = 512;

/// A constraint that cannot be used: the kind (`json`, `regex`, ...) and
/// llguidance's reason, for the client's 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Invalid structured output {kind}: {message}")]
pub struct StructuredOutputError {
    pub kind: &'static str,
    pub message: String,
}

/// Where the engine's grammars come from: the model's tokenizer and EOS
/// ids, the lazily built factory, and the grammar cache.
pub struct StructuredOutputCompiler {
    tokenizer: Option<Tokenizer>,
    vocab_size: usize,
    eos_token_ids: Vec<u32>,
    factory: OnceLock<Result<ParserFactory, String>>,
    cache: Mutex<HashMap<(&'static str, String), Arc<CompiledGrammar>>>,
    hits: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for StructuredOutputCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuredOutputCompiler")
            .field("vocab_size", &self.vocab_size)
            .field("cached", &self.cache.lock().len())
            .finish()
    }
}

impl StructuredOutputCompiler {
    /// A compiler for a model with this tokenizer (none: every constrained
    /// request is refused), `vocab_size` logits and these EOS ids.
    pub fn new(tokenizer: Option<Tokenizer>, vocab_size: usize, eos_token_ids: Vec<u32>) -> Self {
        Self {
            tokenizer,
            vocab_size,
            eos_token_ids,
            factory: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            hits: Default::default(),
        }
    }

    /// The grammar of `params`, compiled now or taken from the cache.
    pub fn compile(
        &self,
        params: &StructuredOutputsParams,
    ) -> Result<Arc<CompiledGrammar>, StructuredOutputError> {
        let key = (params.kind(), params.text());
        if let Some(g) = self.cache.lock().get(&key) {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(g.clone());
        }
        let refuse = |message: String| StructuredOutputError {
            kind: params.kind(),
            message,
        };
        let factory = self.factory()?;
        let grammar = top_level_grammar(params, |t| self.special_id(t)).map_err(refuse)?;
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| refuse(format!("{e:#}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(refuse(e));
        }
        let compiled = Arc::new(CompiledGrammar::new(
            matcher,
            self.vocab_size,
            &self.eos_token_ids,
        ));
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED_GRAMMARS {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// How many compilations the cache saved (for tests and metrics).
    pub fn cache_hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The id of `text` when it is one special token of the vocabulary.
    fn special_id(&self, text: &str) -> Option<u32> {
        let t = self.tokenizer.as_ref()?;
        t.token_to_id(text).filter(|&id| t.is_special(id))
    }

    fn factory(&self) -> Result<&ParserFactory, StructuredOutputError> {
        self.factory
            .get_or_init(|| {
                let tokenizer = self
                    .tokenizer
                    .as_ref()
                    .ok_or("the model has no tokenizer")?;
                let env = PagodaTokEnv::build(tokenizer, self.vocab_size, &self.eos_token_ids)
                    .map_err(|e| format!("{e:#}"))?;
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| format!("{e:#}"))?;
                factory.quiet();
                Ok(factory)
            })
            .as_ref()
            .map_err(|reason| StructuredOutputError {
                kind: "tokenizer",
                message: format!("structured outputs are not available for this model: {reason}"),
            })
    }
}

/// The llguidance grammar of a constraint (vLLM's llguidance backend makes
/// the same ones: a choice is the alternation of its literal strings).
fn top_level_grammar(
    params: &StructuredOutputsParams,
    special_id: impl Fn(&str) -> Option<u32>,
) -> Result<TopLevelGrammar, String> {
    Ok(match params {
        StructuredOutputsParams::Json(schema) => {
            if !schema.is_object() && !schema.is_boolean() {
                return Err("a JSON schema must be an object or a boolean".into());
            }
            TopLevelGrammar::from_json_schema(schema.clone())
        }
        StructuredOutputsParams::JsonObject => {
            TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"}))
        }
        StructuredOutputsParams::Regex(rx) => TopLevelGrammar::from_regex(rx),
        StructuredOutputsParams::Choice(choices) => {
            if choices.is_empty() {
                return Err("choice must list at least one string".into());
            }
            let alternatives: Vec<String> = choices
                .iter()
                .map(|c| serde_json::Value::from(c.as_str()).to_string())
                .collect();
            TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
        }
        StructuredOutputsParams::Grammar(lark) => {
            if lark.trim().is_empty() {
                return Err("the grammar is empty".into());
            }
            TopLevelGrammar::from_lark(lark.clone())
        }
        StructuredOutputsParams::StructuralTag(tag) => {
            TopLevelGrammar::from_lark(tag.to_lark(special_id)?)
        }
    })
}
