//! The model's own tokenizer, loaded here with `--tokenizer PATH`: exact and
//! fast, and the vocabulary is known, so random prompts draw from all of it
//! (special tokens excluded), as vLLM's random dataset does.

use std::path::Path;

use anyhow::Context;
use pagoda_engine::tokenizer::Tokenizer;
use pagoda_engine::weights::gguf::GgufFile;

/// Loads a tokenizer from an HF folder, a `tokenizer.json`, a `.gguf` file,
/// or a folder holding one `.gguf` file.
pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    if path.is_dir() {
        if path.join("tokenizer.json").is_file() {
            return Tokenizer::from_dir(path)
                .with_context(|| format!("loading the tokenizer of {}", path.display()));
        }
        let ggufs: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        return match ggufs.as_slice() {
            [one] => load_gguf(one),
            [] => anyhow::bail!(
                "{} has neither tokenizer.json nor a .gguf file",
                path.display()
            ),
            _ => anyhow::bail!("{} holds several .gguf files: name one", path.display()),
        };
    }
    if path.extension().is_some_and(|x| x == "gguf") {
        return load_gguf(path);
    }
    Tokenizer::from_file(path).with_context(|| format!("loading the tokenizer {}", path.display()))
}

fn load_gguf(path: &Path) -> anyhow::Result<Tokenizer> {
    let gguf = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    Tokenizer::from_gguf(&gguf)
        .with_context(|| format!("reading the tokenizer of {}", path.display()))
}

/// Every id of the vocabulary that is not a special token.
pub fn non_special_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    (0..tokenizer.vocab_size() as u32)
        .filter(|&id| !tokenizer.is_special(id) && tokenizer.id_to_token(id).is_some())
        .collect()
}
