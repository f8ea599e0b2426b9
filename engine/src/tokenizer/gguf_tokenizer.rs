//! Building a tokenizer from GGUF metadata (llama.cpp stores the vocabulary,
//! merges or scores, and token types instead of a `tokenizer.json`).
//!
//! This mirrors HF transformers' GGUF converter
//! (`transformers/integrations/gguf/gguf_tokenizer_mapping.py`), which is the
//! reference our tests compare against: a byte-level BPE ("gpt2") model with
//! GPT-2's ByteLevel pre-tokenizer, replaced by a `Split` regex + ByteLevel for
//! the pre-tokenizer types llama.cpp names (`tokenizer.ggml.pre`: Llama 3,
//! Qwen2, ...); control tokens become special added tokens and user-defined
//! tokens plain added tokens, so both encode whole when written in text.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use super::gguf_sentencepiece::{sentencepiece_tokenizer, SpaceStyle};
use super::{Tokenizer, TokenizerError};
use crate::weights::gguf::GgufValue;

/// llama.cpp's `llama_token_type` values.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex HF's converter uses for a `tokenizer.ggml.pre` value
/// (its `GGUF_PRE_TOKENIZER_SPLITS`). `None`: GPT-2's ByteLevel regex, which
/// is what it keeps for "gpt2", "smollm", "default" and names it does not list.
pub fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// Builds the tokenizer from GGUF metadata looked up by `meta` (a
/// `GgufFile::metadata`): byte-level BPE ("gpt2") or SentencePiece
/// ("llama", see [`super::gguf_sentencepiece`]), then the added tokens and
/// BOS/EOS as HF's loader sets them.
pub fn tokenizer_from_gguf_metadata<'g>(
    meta: impl Fn(&str) -> Option<&'g GgufValue>,
) -> Result<Tokenizer, TokenizerError> {
    let model = meta("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| metadata_error("tokenizer.ggml.model", "absent or not a string"))?;
    let tokens = string_array(&meta, "tokenizer.ggml.tokens")?;
    let token_types = token_types(&meta, tokens.len())?;
    let (mut hf, byte_level) = match model {
        "gpt2" => (byte_level_tokenizer(&meta, &tokens)?, true),
        "llama" => (sentencepiece(&meta, &tokens)?, false),
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "GGUF tokenizer model `{other}`: supported are byte-level BPE (\"gpt2\": SmolLM2, \
                 Qwen2/3, Llama 3) and SentencePiece (\"llama\": Llama 2, Mistral, Phi-3); use the \
                 model's HF folder with tokenizer.json instead"
            )))
        }
    };
    add_special_tokens(&mut hf, &meta, &tokens, &token_types, byte_level);
    let tokenizer = Tokenizer::from_hf(hf);

    let token_at = |key: &str| -> Option<&str> {
        let id = usize::try_from(meta(key)?.as_u64()?).ok()?;
        tokens.get(id).copied()
    };
    // llama.cpp adds BOS to a SentencePiece vocabulary that does not say
    // otherwise, and HF's loader follows it.
    let add_bos = meta("tokenizer.ggml.add_bos_token")
        .and_then(GgufValue::as_bool)
        .unwrap_or(model == "llama");
    let add_eos = meta("tokenizer.ggml.add_eos_token")
        .and_then(GgufValue::as_bool)
        .unwrap_or(false);
    tokenizer.with_bos_eos(
        token_at("tokenizer.ggml.bos_token_id").filter(|_| add_bos),
        token_at("tokenizer.ggml.eos_token_id").filter(|_| add_eos),
    )
}

/// `tokenizer.ggml.token_type`, one per token (empty when absent).
fn token_types<'g>(
    meta: &impl Fn(&str) -> Option<&'g GgufValue>,
    num_tokens: usize,
) -> Result<Vec<i64>, TokenizerError> {
    let types = match meta("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                metadata_error("tokenizer.ggml.token_type", "not an array of integers")
            })?,
    };
    if !types.is_empty() && types.len() != num_tokens {
        return Err(metadata_error(
            "tokenizer.ggml.token_type",
            &format!("{} entries for {num_tokens} tokens", types.len()),
        ));
    }
    Ok(types)
}

/// A SentencePiece vocabulary: its pieces with their scores.
fn sentencepiece<'g>(
    meta: &impl Fn(&str) -> Option<&'g GgufValue>,
    tokens: &[&str],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let architecture = meta("general.architecture")
        .and_then(GgufValue::as_str)
        .unwrap_or("llama");
    let style = SpaceStyle::for_architecture(architecture).ok_or_else(|| {
        TokenizerError::Unsupported(format!(
            "the SentencePiece vocabulary of a `{architecture}` GGUF (its space handling \
             differs from Llama's and Gemma's and is not reproduced yet); use the model's HF \
             folder with tokenizer.json instead"
        ))
    })?;
    let scores = meta("tokenizer.ggml.scores")
        .ok_or_else(|| metadata_error("tokenizer.ggml.scores", "absent"))?
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| metadata_error("tokenizer.ggml.scores", "not an array of numbers"))?;
    if scores.len() != tokens.len() {
        return Err(metadata_error(
            "tokenizer.ggml.scores",
            &format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    sentencepiece_tokenizer(tokens, &scores, style)
}

/// A byte-level BPE vocabulary with its merges.
fn byte_level_tokenizer<'g>(
    meta: &impl Fn(&str) -> Option<&'g GgufValue>,
    tokens: &[&str],
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = string_array(meta, "tokenizer.ggml.merges")?;
    // The vocabulary as HF's `byte_level_tokenizer` builds it: a token
    // written outside the byte alphabet is respelled from its UTF-8 bytes;
    // a later duplicate spelling wins, as in a Python dict.
    let alphabet = byte_alphabet();
    let in_alphabet: std::collections::HashSet<char> = alphabet.iter().copied().collect();
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        let id = u32::try_from(id)
            .map_err(|_| metadata_error("tokenizer.ggml.tokens", "more than 2^32 tokens"))?;
        let spelled = if token.chars().all(|c| in_alphabet.contains(&c)) {
            token.to_string()
        } else {
            token.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(spelled, id);
    }
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    metadata_error(
                        "tokenizer.ggml.merges",
                        &format!("merge {m:?} has no space"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| metadata_error("tokenizer.ggml.merges", &e.to_string()))?;
    let mut hf = tokenizers::Tokenizer::new(bpe);
    let pre = meta("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    match pre_tokenizer_split(pre) {
        Some(regex) => {
            let split = Split::new(
                SplitPattern::Regex(regex.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| {
                TokenizerError::Unsupported(format!("pre-tokenizer `{pre}` regex: {e}"))
            })?;
            hf.with_pre_tokenizer(Some(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ])));
        }
        None => {
            hf.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        }
    }
    hf.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(hf)
}

/// Control tokens become special added tokens and user-defined ones plain
/// added tokens, so both encode whole when written in text; HF also
/// registers the bos/eos/unk/pad tokens as special. In a byte-level
/// vocabulary a control token spelled outside the byte alphabet is a
/// llama.cpp mislabel and is skipped, as HF skips it.
fn add_special_tokens<'g>(
    hf: &mut tokenizers::Tokenizer,
    meta: &impl Fn(&str) -> Option<&'g GgufValue>,
    tokens: &[&str],
    token_types: &[i64],
    byte_level: bool,
) {
    let alphabet: std::collections::HashSet<char> = byte_alphabet().into_iter().collect();
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(token_types)
        .filter(|(t, &ty)| {
            ty == TOKEN_TYPE_CONTROL && (!byte_level || t.chars().all(|c| alphabet.contains(&c)))
        })
        .map(|(t, _)| AddedToken::from(t.to_string(), true).normalized(false))
        .collect();
    hf.add_special_tokens(&control);
    let user_defined: Vec<AddedToken> = tokens
        .iter()
        .zip(token_types)
        .filter(|(t, &ty)| ty == TOKEN_TYPE_USER_DEFINED && hf.token_to_id(t).is_some())
        .map(|(t, _)| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    hf.add_tokens(&user_defined);
    let named_special: Vec<AddedToken> = [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ]
    .iter()
    .filter_map(|key| meta(key)?.as_u64())
    .filter_map(|id| tokens.get(usize::try_from(id).ok()?))
    .filter(|t| hf.token_to_id(t).is_some())
    .map(|t| AddedToken::from(t.to_string(), true).normalized(false))
    .collect();
    hf.add_special_tokens(&named_special);
}

fn metadata_error(key: &str, message: &str) -> TokenizerError {
    TokenizerError::GgufMetadata {
        key: key.to_string(),
        message: message.to_string(),
    }
}

fn string_array<'g>(
    meta: &impl Fn(&str) -> Option<&'g GgufValue>,
    key: &str,
) -> Result<Vec<&'g str>, TokenizerError> {
    meta(key)
        .ok_or_else(|| metadata_error(key, "absent"))?
        .as_array()
        .and_then(|a| a.iter().map(GgufValue::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| metadata_error(key, "not an array of strings"))
}

/// GPT-2's `bytes_to_unicode`: byte `b` is written as `alphabet[b]`
/// (printable bytes as themselves, the others shifted past U+0100).
pub fn byte_alphabet() -> [char; 256] {
    let mut alphabet = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        alphabet[b as usize] = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or('\u{FFFD}')
        };
    }
    alphabet
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The toy byte-level tokenizer other modules' tests use.
    pub(crate) fn toy_tokenizer() -> Tokenizer {
        build(&toy_metadata("gpt2", false)).unwrap()
    }

    /// A tiny byte-level vocabulary: the 256 byte tokens, a few merges, two
    /// control tokens and one user-defined token.
    fn toy_metadata(pre: &str, add_bos: bool) -> HashMap<String, GgufValue> {
        let alphabet = byte_alphabet();
        let mut tokens: Vec<String> = vec!["<|bos|>".into(), "<|eos|>".into(), "<think>".into()];
        tokens.extend(alphabet.iter().map(|c| c.to_string()));
        tokens.extend(["Ġw", "or", "Ġwor", "ld", "Ġworld", "12", "123"].map(String::from));
        let types: Vec<GgufValue> = tokens
            .iter()
            .enumerate()
            .map(|(i, _)| {
                GgufValue::I32(match i {
                    0 | 1 => 3,
                    2 => 4,
                    _ => 1,
                })
            })
            .collect();
        let merges = ["Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2", "12 3"];
        let s = |v: &str| GgufValue::String(v.to_string());
        HashMap::from([
            ("tokenizer.ggml.model".to_string(), s("gpt2")),
            ("tokenizer.ggml.pre".to_string(), s(pre)),
            (
                "tokenizer.ggml.tokens".to_string(),
                GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
            ),
            (
                "tokenizer.ggml.merges".to_string(),
                GgufValue::Array(merges.iter().map(|m| s(m)).collect()),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                GgufValue::Array(types),
            ),
            ("tokenizer.ggml.bos_token_id".to_string(), GgufValue::U32(0)),
            ("tokenizer.ggml.eos_token_id".to_string(), GgufValue::U32(1)),
            (
                "tokenizer.ggml.add_bos_token".to_string(),
                GgufValue::Bool(add_bos),
            ),
        ])
    }

    fn build(meta: &HashMap<String, GgufValue>) -> Result<Tokenizer, TokenizerError> {
        tokenizer_from_gguf_metadata(|k| meta.get(k))
    }

    fn id(t: &Tokenizer, s: &str) -> u32 {
        t.token_to_id(s).unwrap()
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'A' as usize], 'A');
        assert_eq!(a[0], 'Ā');
        let unique: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(unique.len(), 256);
    }

    #[test]
    fn encodes_with_merges_and_added_tokens() {
        let t = build(&toy_metadata("smollm", false)).unwrap();
        let ids = t.encode("<|bos|>a world<think>", false).unwrap();
        assert_eq!(ids, vec![0, id(&t, "a"), id(&t, "Ġworld"), 2]);
        assert!(t.is_special(0) && t.is_special(1) && !t.is_special(2));
        assert_eq!(t.decode(&ids, true).unwrap(), "a world<think>");
        assert_eq!(t.decode(&ids, false).unwrap(), "<|bos|>a world<think>");
    }

    #[test]
    fn pre_tokenizer_type_changes_digit_splitting() {
        // GPT-2's regex keeps "1234" one piece, so "123" + "4" merge;
        // Qwen2's splits every digit; Llama 3's makes groups of three.
        let gpt2 = build(&toy_metadata("gpt2", false)).unwrap();
        assert_eq!(
            gpt2.encode("1234", false).unwrap(),
            vec![id(&gpt2, "123"), id(&gpt2, "4")]
        );
        let qwen2 = build(&toy_metadata("qwen2", false)).unwrap();
        let digits: Vec<u32> = ["1", "2", "3", "4"].iter().map(|d| id(&qwen2, d)).collect();
        assert_eq!(qwen2.encode("1234", false).unwrap(), digits);
        let llama3 = build(&toy_metadata("llama-bpe", false)).unwrap();
        assert_eq!(
            llama3.encode("12345", false).unwrap(),
            vec![id(&llama3, "123"), id(&llama3, "4"), id(&llama3, "5")]
        );
    }

    #[test]
    fn add_bos_token_flag() {
        let t = build(&toy_metadata("gpt2", true)).unwrap();
        assert_eq!(t.encode("a", true).unwrap(), vec![0, id(&t, "a")]);
        assert_eq!(t.encode("a", false).unwrap(), vec![id(&t, "a")]);
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let mut meta = toy_metadata("gpt2", false);
        meta.remove("tokenizer.ggml.merges");
        let err = build(&meta).unwrap_err();
        assert!(err.to_string().contains("tokenizer.ggml.merges"), "{err}");

        let mut meta = toy_metadata("gpt2", false);
        meta.insert(
            "tokenizer.ggml.model".into(),
            GgufValue::String("rwkv".into()),
        );
        assert!(matches!(
            build(&meta).unwrap_err(),
            TokenizerError::Unsupported(_)
        ));

        let mut meta = toy_metadata("gpt2", false);
        meta.insert(
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(vec![GgufValue::I32(1)]),
        );
        assert!(build(&meta).is_err());
    }
}
