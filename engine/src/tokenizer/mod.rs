//! Tokenization: the tokenizer (from `tokenizer.json` or GGUF metadata), its
//! config (chat template, BOS/EOS), chat-template rendering, and the
//! incremental detokenizer with stop strings that streams output text.

mod chat_template;
mod continue_final_message;
mod detokenizer;
mod gguf_sentencepiece;
mod gguf_tokenizer;
#[cfg(test)]
pub(crate) use gguf_tokenizer::tests::toy_tokenizer;
mod stop_checker;
#[allow(clippy::module_inception)]
mod tokenizer;
mod tokenizer_config;

pub use chat_template::ChatTemplate;
pub use continue_final_message::continue_final_message;
pub use detokenizer::{DetokenizerDelta, IncrementalDetokenizer};
pub use gguf_tokenizer::{byte_alphabet, pre_tokenizer_split, tokenizer_from_gguf_metadata};
pub use stop_checker::{StopChecker, StopMatch};
pub use tokenizer::{Tokenizer, TokenizerError};
pub use tokenizer_config::TokenizerConfig;
