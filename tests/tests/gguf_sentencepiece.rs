//! A SentencePiece ("llama") GGUF vocabulary, read by Pagoda and by HF
//! transformers' GGUF loader, must tokenize alike, under a Llama and under a
//! Phi-3 and a Gemma 2 architecture (which mark spaces otherwise). The fixture
//! (`tests/fixtures/spm_gguf/`, made by `tests/scripts/make_spm_gguf_fixture.py`)
//! is a SentencePiece BPE vocabulary with byte fallback, split digits and
//! user-defined `<think>` tokens written into a GGUF as llama.cpp's converter
//! writes one (no merges: they are recovered from the scores), with the ids
//! HF gives for texts with leading and double spaces, newlines and tabs,
//! digits, accents, CJK, an emoji (byte fallback), special tokens in text
//! and empty input.

use std::path::Path;

use pagoda_engine::tokenizer::Tokenizer;
use pagoda_engine::weights::gguf::GgufFile;
use serde_json::Value;

#[test]
fn sentencepiece_gguf_tokenizes_as_hf_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/spm_gguf");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut failures = Vec::new();
    let files = golden["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "llama, phi3 and gemma2");
    for file in files {
        let name = file["gguf_file"].as_str().unwrap();
        let gguf = GgufFile::open(&dir.join(name)).unwrap();
        let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
        let cases = file["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let plain = tokenizer.encode(text, false).unwrap();
            let with_bos = tokenizer.encode(text, true).unwrap();
            let decoded = tokenizer.decode(&with_bos, true).unwrap();
            if plain != ids(&case["ids"])
                || with_bos != ids(&case["ids_with_special"])
                || decoded != case["decoded"].as_str().unwrap()
            {
                failures.push(format!(
                    "{name} {text:?}: pagoda {with_bos:?} -> {decoded:?}, hf {} -> {}",
                    case["ids_with_special"], case["decoded"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
