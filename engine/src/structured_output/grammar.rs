//! A compiled grammar, the per-sequence matcher cloned from it, and the
//! token bitmask the matcher allows (vLLM's `StructuredOutputGrammar`:
//! `accept_tokens`, `fill_bitmask`, `is_terminated`).

use llguidance::Matcher;
use parking_lot::Mutex;
use std::sync::Arc;

/// A grammar compiled for the model's vocabulary, in its start state: each
/// sequence gets a deep clone, so compiling happens once per (kind, text).
pub struct CompiledGrammar {
    template: Mutex<Matcher>,
    vocab_size: usize,
    eos_token_ids: Arc<[u32]>,
}

impl CompiledGrammar {
    pub(crate) fn new(template: Matcher, vocab_size: usize, eos_token_ids: &[u32]) -> Self {
        Self {
            template: Mutex::new(template),
            vocab_size,
            eos_token_ids: eos_token_ids.into(),
        }
    }

    /// A fresh matcher in the grammar's start state.
    pub fn matcher(&self) -> GrammarMatcher {
        GrammarMatcher {
            matcher: Arc::new(Mutex::new(self.template.lock().deep_clone())),
            vocab_size: self.vocab_size,
            eos_token_ids: self.eos_token_ids.clone(),
        }
    }
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledGrammar").finish_non_exhaustive()
    }
}

/// One sequence's position in its grammar. Shared (an `Arc`) between the
/// engine thread, which advances it with each accepted token, and the mask
/// worker, which reads it while the forward pass runs.
#[derive(Clone)]
pub struct GrammarMatcher {
    matcher: Arc<Mutex<Matcher>>,
    vocab_size: usize,
    eos_token_ids: Arc<[u32]>,
}

impl GrammarMatcher {
    /// The tokens the grammar allows next; only EOS once the grammar has
    /// finished (or failed: the sequence then ends rather than run free).
    pub fn fill_bitmask(&self) -> TokenBitmask {
        let mut m = self.matcher.lock();
        match m.compute_mask_or_eos() {
            Ok(vob) => TokenBitmask::from_words(vob.as_slice(), self.vocab_size),
            Err(e) => {
                tracing::warn!(
                    "structured output: the grammar failed ({e:#}); ending the sequence"
                );
                TokenBitmask::only(&self.eos_token_ids, self.vocab_size)
            }
        }
    }

    /// Advances the grammar by the sequence's new tokens. An error means a
    /// token the mask did not allow (or the grammar failed).
    pub fn accept_tokens(&self, tokens: &[u32]) -> Result<(), String> {
        self.matcher
            .lock()
            .consume_tokens(tokens)
            .map_err(|e| format!("{e:#}"))
    }

    /// Whether the grammar has ended (accepted EOS, or cannot go on).
    pub fn is_terminated(&self) -> bool {
        self.matcher.lock().is_stopped()
    }
}

impl std::fmt::Debug for GrammarMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarMatcher").finish_non_exhaustive()
    }
}

/// One bit per token id: set where the grammar allows the token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBitmask {
    words: Vec<u32>,
}

impl TokenBitmask {
    /// A mask over `vocab_size` ids from 32-bit words (bit i of word w is
    /// id 32w + i); ids past the words are disallowed.
    pub fn from_words(words: &[u32], vocab_size: usize) -> Self {
        let mut words = words.to_vec();
        words.resize(vocab_size.div_ceil(32), 0);
        // Bits past the vocabulary in the last word stay clear.
        if !vocab_size.is_multiple_of(32) {
            if let Some(last) = words.last_mut() {
                *last &= (1u32 << (vocab_size % 32)) - 1;
            }
        }
        Self { words }
    }

    /// A mask allowing only `ids`.
    pub fn only(ids: &[u32], vocab_size: usize) -> Self {
        let mut words = vec![0u32; vocab_size.div_ceil(32)];
        for &id in ids.iter().filter(|&&id| (id as usize) < vocab_size) {
            words[id as usize / 32] |= 1 << (id % 32);
        }
        Self { words }
    }

    pub fn is_allowed(&self, id: u32) -> bool {
        self.words
            .get(id as usize / 32)
            .is_some_and(|w| w >> (id % 32) & 1 == 1)
    }

    pub fn num_allowed(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Sets every disallowed logit to -inf (vLLM's
    /// `apply_token_bitmask_inplace`), before any other processor.
    pub fn apply(&self, logits: &mut [f32]) {
        pagoda_kernels::cpu::apply_token_bitmask(logits, &self.words);
    }

    /// The packed words (bit `i % 32` of word `i / 32` allows token i), as
    /// the CUDA `apply_token_bitmask` kernel reads them.
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}
