//! The incremental detokenizer on the real SmolLM2 vocabulary (the committed
//! HF tokenizer.json), property-tested: for random token sequences (biased
//! towards tokens holding a fragment of a multi-byte character, and special
//! tokens), pushed in random chunks, the streamed text equals
//! `decode(all output ids)`; with stop strings, the output is that text cut
//! at the first stop string to complete, and never shows text past it.

mod tokenizer_common;

use std::sync::OnceLock;

use pagoda_engine::tokenizer::{IncrementalDetokenizer, Tokenizer};
use proptest::prelude::*;
use tokenizer_common::*;

struct Vocab {
    tok: Tokenizer,
    /// Tokens whose text alone is not valid UTF-8 (they decode with U+FFFD).
    fragments: Vec<u32>,
    specials: Vec<u32>,
}

fn vocab() -> &'static Vocab {
    static VOCAB: OnceLock<Vocab> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let tok = Tokenizer::from_file(&smollm2_folder().join("tokenizer.json")).unwrap();
        let n = tok.vocab_size() as u32;
        let fragments: Vec<u32> = (0..n)
            .filter(|&id| tok.decode(&[id], false).unwrap().contains('\u{FFFD}'))
            .collect();
        let specials: Vec<u32> = (0..n).filter(|&id| tok.is_special(id)).collect();
        assert!(
            fragments.len() > 100,
            "SmolLM2 has many byte-fragment tokens"
        );
        assert!(!specials.is_empty());
        Vocab {
            tok,
            fragments,
            specials,
        }
    })
}

/// A token id: uniform over the vocabulary, a byte fragment, or a special.
fn token_id() -> impl Strategy<Value = u32> {
    (0u8..100, any::<u32>()).prop_map(|(kind, r)| {
        let v = vocab();
        match kind {
            0..=49 => r % v.tok.vocab_size() as u32,
            50..=89 => v.fragments[r as usize % v.fragments.len()],
            _ => v.specials[r as usize % v.specials.len()],
        }
    })
}

/// Streams `ids` in chunks of the given sizes (cycled); returns the deltas'
/// concatenation, the stop string matched, and the detokenizer.
fn stream(
    prompt: &[u32],
    ids: &[u32],
    chunks: &[usize],
    skip_special: bool,
    stop: Vec<String>,
    include: bool,
) -> (String, Option<String>, IncrementalDetokenizer) {
    let tok = &vocab().tok;
    let mut d = IncrementalDetokenizer::new(prompt, skip_special, stop, include);
    let mut out = String::new();
    let mut rest = ids;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        let delta = d.push(tok, &rest[..n]);
        out.push_str(&delta.text);
        if delta.stop_matched.is_some() {
            return (out, delta.stop_matched, d);
        }
        rest = &rest[n..];
    }
    out.push_str(&d.finish(tok));
    let stop = d.stop_matched().map(str::to_string);
    (out, stop, d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn streamed_text_equals_full_decode(
        ids in prop::collection::vec(token_id(), 0..48),
        chunks in prop::collection::vec(1usize..5, 1..4),
        skip_special in any::<bool>(),
        with_prompt in any::<bool>(),
    ) {
        let tok = &vocab().tok;
        // A prompt that ends on a character boundary, as real prompts do.
        let prompt = if with_prompt { tok.encode("<|im_start|>user\nSay hi 👋<|im_end|>\n", false).unwrap() } else { vec![] };
        let (out, stop, d) = stream(&prompt, &ids, &chunks, skip_special, vec![], false);
        let full = tok.decode(&ids, skip_special).unwrap();
        prop_assert_eq!(&out, &full);
        prop_assert_eq!(d.output_text(), full.as_str());
        prop_assert_eq!(stop, None);
    }

    #[test]
    fn stop_strings_cut_at_the_first_completed_match(
        ids in prop::collection::vec(token_id(), 1..48),
        chunks in prop::collection::vec(1usize..4, 1..4),
        picks in prop::collection::vec((any::<prop::sample::Index>(), 1usize..5), 1..4),
        include in any::<bool>(),
    ) {
        let tok = &vocab().tok;
        let full = tok.decode(&ids, true).unwrap();
        let chars: Vec<char> = full.chars().collect();
        prop_assume!(!chars.is_empty());
        // Stop strings taken from the text itself, so they do occur.
        let stops: Vec<String> = picks
            .iter()
            .map(|(at, len)| {
                let start = at.index(chars.len());
                chars[start..(start + len).min(chars.len())].iter().collect()
            })
            .collect();
        let (out, stop, d) = stream(&[], &ids, &chunks, true, stops.clone(), include);
        prop_assert_eq!(d.output_text(), out.as_str());
        let s = stop.expect("a stop string from the text must match");
        prop_assert!(stops.contains(&s));
        // The output is the text up to the stop string (or through it).
        let cut = if include { out.len() - s.len() } else { out.len() };
        prop_assert!(full.starts_with(&out), "{:?} is not a prefix of {:?}", out, full);
        prop_assert!(full[cut..].starts_with(&s));
        // No stop string completed earlier: every occurrence that starts
        // before the cut ends after the matched one.
        for t in &stops {
            for q in (0..cut).filter(|&q| full.is_char_boundary(q) && full[q..].starts_with(t.as_str())) {
                prop_assert!(q + t.len() > cut + s.len(), "{:?} at {} completes first", t, q);
            }
        }
    }
}

#[test]
fn streams_a_real_sentence_token_by_token() {
    let tok = &vocab().tok;
    let text = "Café 東京 👨‍👩‍👧 done.";
    let ids = tok.encode(text, false).unwrap();
    let (out, stop, _) = stream(&[], &ids, &[1], false, vec![], false);
    assert_eq!(out, text);
    assert_eq!(stop, None);
    let (out, stop, _) = stream(&[], &ids, &[1], false, vec!["東京".into()], false);
    assert_eq!((out.as_str(), stop.as_deref()), ("Café ", Some("東京")));
}
