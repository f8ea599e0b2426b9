//! SentencePiece vocabularies in GGUF (`tokenizer.ggml.model = "llama"`:
//! Llama 1/2, Mistral 7B v0.1–v0.3, Phi-3, ...), built as HF transformers'
//! GGUF loader builds them (`gguf_tokenizer_mapping.py`,
//! `sentencepiece_tokenizer` and `LlamaTokenizer`): the file's pieces as a
//! BPE vocabulary with byte fallback, merges recovered from the pieces and
//! their scores (llama.cpp stores none), `▁` for spaces through a Metaspace
//! pre-tokenizer that prepends one to the first word, and a decoder that
//! turns `▁` back into spaces and `<0xNN>` pieces back into bytes.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::TokenizerError;

/// SentencePiece's word-boundary mark, which stands for a space.
const SPACE_MARK: char = '\u{2581}';

/// How a SentencePiece vocabulary marks the start of the text, which
/// depends on the model family (a GGUF does not say; HF picks by
/// `general.architecture`, and so do we).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceStyle {
    /// Llama / Mistral: a Metaspace pre-tokenizer that prepends `▁` to the
    /// first word only.
    Metaspace,
    /// Phi-3: a normalizer that prepends `▁` and turns every space into
    /// `▁`, no pre-tokenizer (`"  hi"` becomes `▁▁▁hi`, not `▁▁hi`).
    PrependNormalizer,
    /// Gemma 1–3: spaces become `▁` with nothing prepended; whitespace-only
    /// pieces are stored as real spaces and respelled with `▁`; merges
    /// follow the pieces' order in the file, not their scores.
    Gemma,
}

impl SpaceStyle {
    /// The style for a GGUF `general.architecture`; `None` for families
    /// whose SentencePiece setup Pagoda does not reproduce yet.
    pub fn for_architecture(architecture: &str) -> Option<Self> {
        match architecture {
            "phi3" => Some(Self::PrependNormalizer),
            "gemma" | "gemma2" | "gemma3" => Some(Self::Gemma),
            "gemma4" => None,
            _ => Some(Self::Metaspace),
        }
    }
}

/// The tokenizer (model, normalizer, pre-tokenizer, decoder; no added
/// tokens or BOS yet) for SentencePiece `tokens` with their `scores`.
pub fn sentencepiece_tokenizer(
    tokens: &[&str],
    scores: &[f32],
    style: SpaceStyle,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let respelled: Vec<String>;
    let positions: Vec<f32>;
    let (tokens, scores): (Vec<&str>, &[f32]) = if style == SpaceStyle::Gemma {
        respelled = tokens.iter().map(|t| gemma_spelling(t)).collect();
        // Gemma's scores do not follow its merge order; the file's order does.
        positions = (0..tokens.len()).map(|i| -(i as f32)).collect();
        (respelled.iter().map(String::as_str).collect(), &positions)
    } else {
        (tokens.to_vec(), scores)
    };
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        // A later duplicate spelling wins, as in a Python dict.
        vocab.insert((*token).to_string(), id as u32);
    }
    let merges = generate_merges(&tokens, scores, &vocab);
    let has_unk = vocab.contains_key(GEMMA_UNK);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if style == SpaceStyle::Gemma && has_unk {
        builder = builder.unk_token(GEMMA_UNK.to_string());
    }
    let bpe = builder.build().map_err(|e| TokenizerError::GgufMetadata {
        key: "tokenizer.ggml.tokens".into(),
        message: format!("cannot build a BPE model from the pieces: {e}"),
    })?;
    let mut hf = tokenizers::Tokenizer::new(bpe);
    let mut decoders = vec![
        DecoderWrapper::Replace(replace(&SPACE_MARK.to_string(), " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    match style {
        SpaceStyle::Metaspace => {
            hf.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
                SPACE_MARK,
                PrependScheme::First,
                false,
            ))));
        }
        SpaceStyle::PrependNormalizer => {
            hf.with_normalizer(Some(NormalizerWrapper::Sequence(
                tokenizers::normalizers::Sequence::new(vec![
                    NormalizerWrapper::Prepend(Prepend::new(SPACE_MARK.to_string())),
                    NormalizerWrapper::Replace(replace(" ", &SPACE_MARK.to_string())?),
                ]),
            )));
            hf.with_pre_tokenizer(None::<PreTokenizerWrapper>);
        }
        SpaceStyle::Gemma => {
            hf.with_normalizer(Some(NormalizerWrapper::Replace(replace(
                " ",
                &SPACE_MARK.to_string(),
            )?)));
            let split = Split::new(
                SplitPattern::String(" ".into()),
                SplitDelimiterBehavior::MergedWithPrevious,
                false,
            )
            .map_err(|e| TokenizerError::Unsupported(format!("space split: {e}")))?;
            hf.with_pre_tokenizer(Some(PreTokenizerWrapper::Split(split)));
        }
    }
    if style != SpaceStyle::Gemma {
        // The space the pre-tokenizer (or normalizer) put in front.
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    hf.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(
        decoders,
    ))));
    Ok(hf)
}

/// Gemma's unknown token, which its tokenizer names whatever the file says.
const GEMMA_UNK: &str = "<unk>";

/// A whitespace-only Gemma piece stored with real spaces, spelled with `▁`
/// as its tokenizer looks it up.
fn gemma_spelling(token: &str) -> String {
    if token.contains(' ') && token.trim().is_empty() {
        SPACE_MARK.to_string().repeat(token.chars().count())
    } else {
        token.to_string()
    }
}

fn replace(pattern: &str, content: &str) -> Result<Replace, TokenizerError> {
    Replace::new(pattern, content)
        .map_err(|e| TokenizerError::Unsupported(format!("replace {pattern:?}: {e}")))
}

/// The merges a SentencePiece BPE vocabulary implies, as transformers'
/// `generate_merges` recovers them: every split of a piece into two pieces
/// of the vocabulary, best score first; ties by the halves' lengths
/// (longer first), then in the order the pieces and their splits were met.
fn generate_merges(
    tokens: &[&str],
    scores: &[f32],
    vocab: &tokenizers::models::bpe::Vocab,
) -> Vec<(String, String)> {
    // `dict(zip(tokens, scores))`: first position, last score.
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut score_of: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    for (token, &score) in tokens.iter().zip(scores) {
        if score_of.insert(token, score).is_none() {
            order.push(token);
        }
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for piece in order {
        let score = score_of[piece];
        let mut local: Vec<(&str, &str, u32, u32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = piece.split_at(at);
                Some((left, right, *vocab.get(left)?, *vocab.get(right)?))
            })
            .collect();
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        merges.extend(local.into_iter().map(|(l, r, _, _)| (l, r, score)));
    }
    let chars = |s: &str| s.chars().count();
    // Descending and stable, as Python's `sorted(..., reverse=True)`.
    merges.sort_by(|a, b| {
        (b.2, chars(b.0), chars(b.1))
            .partial_cmp(&(a.2, chars(a.0), chars(a.1)))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_of(tokens: &[&str]) -> tokenizers::models::bpe::Vocab {
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect()
    }

    #[test]
    fn merges_follow_scores_then_lengths() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc", "▁", "▁ab"];
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, 0.0, -0.5];
        let merges = generate_merges(&tokens, &scores, &vocab_of(&tokens));
        let pairs: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("▁", "ab"),
                ("a", "b"),
                ("b", "c"),
                // "abc": both splits score -3; the longer left half first.
                ("ab", "c"),
                ("a", "bc"),
            ]
        );
    }

    #[test]
    fn pieces_encode_with_a_leading_mark_and_byte_fallback() {
        let mut tokens = vec!["<unk>", "<s>", "</s>"];
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        tokens.extend(bytes.iter().map(String::as_str));
        tokens.extend(["▁", "h", "i", "hi", "▁hi"]);
        let mut scores = vec![0.0; tokens.len()];
        let n = scores.len();
        scores[n - 2] = -1.0;
        scores[n - 1] = -0.5;
        let hf = sentencepiece_tokenizer(&tokens, &scores, SpaceStyle::Metaspace).unwrap();
        let enc = hf.encode("hi hi\n", false).unwrap();
        let id = |t: &str| hf.token_to_id(t).unwrap();
        assert_eq!(enc.get_ids(), &[id("▁hi"), id("▁hi"), id("<0x0A>")]);
        assert_eq!(hf.decode(enc.get_ids(), false).unwrap(), "hi hi\n");
        // Phi-3's normalizer marks every space, the first one included.
        let phi = sentencepiece_tokenizer(&tokens, &scores, SpaceStyle::PrependNormalizer).unwrap();
        let enc = phi.encode(" hi", false).unwrap();
        assert_eq!(enc.get_ids(), &[id("▁"), id("▁hi")]);
    }
}
