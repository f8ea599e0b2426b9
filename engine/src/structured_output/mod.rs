//! Structured outputs (vLLM's `vllm/v1/structured_output/`) on llguidance:
//! a request's constraint is compiled at validation (a bad one is a 400
//! before anything is enqueued), each sequence advances its own matcher
//! with every accepted token, and the token bitmask of each step is
//! computed on a worker thread while the forward pass runs, then applied
//! to the row's logits before any other processor.

mod compiler;
mod grammar;
mod mask_worker;
mod params;
mod structural_tag;
mod tok_env;

pub use compiler::{StructuredOutputCompiler, StructuredOutputError};
pub use grammar::{CompiledGrammar, GrammarMatcher, TokenBitmask};
pub use mask_worker::{MaskWorker, PendingMask};
pub use params::StructuredOutputsParams;
pub use structural_tag::{StructuralTag, TagStructure};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingRow;
    use crate::tokenizer::toy_tokenizer;
    use std::sync::Arc;

    /// The toy tokenizer's EOS and vocabulary (3 control tokens, 256 bytes, 7 merges).
    const EOS: u32 = 1;

    fn compiler() -> (StructuredOutputCompiler, crate::tokenizer::Tokenizer) {
        let tok = toy_tokenizer();
        let vocab = tok.vocab_size();
        (
            StructuredOutputCompiler::new(Some(tok.clone()), vocab, vec![EOS]),
            tok,
        )
    }

    fn id(tok: &crate::tokenizer::Tokenizer, s: &str) -> u32 {
        tok.token_to_id(s).unwrap()
    }

    #[test]
    fn bitmask_sets_disallowed_logits_to_minus_infinity() {
        let mask = TokenBitmask::only(&[1, 33, 40], 40);
        assert!(mask.is_allowed(33) && !mask.is_allowed(32) && !mask.is_allowed(40));
        let mut logits: Vec<f32> = (0..40).map(|i| i as f32).collect();
        mask.apply(&mut logits);
        for (i, l) in logits.iter().enumerate() {
            assert_eq!(l.is_finite(), i == 1 || i == 33, "id {i}");
        }
        let all = TokenBitmask::from_words(&[u32::MAX, u32::MAX], 40);
        assert_eq!(all.num_allowed(), 40);
    }

    #[test]
    fn a_regex_masks_advances_and_ends_with_eos() {
        let (c, tok) = compiler();
        let g = c
            .compile(&StructuredOutputsParams::Regex("[0-9]{3}".into()))
            .unwrap();
        let m = g.matcher();
        let mask = m.fill_bitmask();
        assert!(mask.is_allowed(id(&tok, "1")));
        assert!(mask.is_allowed(id(&tok, "123")));
        assert!(!mask.is_allowed(id(&tok, "Ġw")));
        assert!(!mask.is_allowed(EOS), "EOS before the regex is complete");
        m.accept_tokens(&[id(&tok, "12")]).unwrap();
        let mask = m.fill_bitmask();
        assert!(mask.is_allowed(id(&tok, "3")));
        assert!(
            !mask.is_allowed(id(&tok, "12")),
            "two more digits would be four"
        );
        m.accept_tokens(&[id(&tok, "3")]).unwrap();
        let mask = m.fill_bitmask();
        assert_eq!(mask.num_allowed(), 1);
        assert!(mask.is_allowed(EOS), "a finished grammar allows only EOS");
        // A second matcher from the cached grammar starts fresh.
        assert!(!g.matcher().fill_bitmask().is_allowed(EOS));
        assert!(m.accept_tokens(&[id(&tok, "1")]).is_err());
    }

    #[test]
    fn grammars_are_cached_by_kind_and_text() {
        let (c, _) = compiler();
        let choice = StructuredOutputsParams::Choice(vec!["world".into(), "12".into()]);
        let a = c.compile(&choice).unwrap();
        assert_eq!(c.cache_hits(), 0);
        let b = c.compile(&choice).unwrap();
        assert_eq!(c.cache_hits(), 1);
        assert!(Arc::ptr_eq(&a, &b));
        // Same text, another kind: another grammar.
        c.compile(&StructuredOutputsParams::Grammar("start: \"12\"".into()))
            .unwrap();
        assert_eq!(c.cache_hits(), 1);
    }

    #[test]
    fn bad_constraints_are_refused_with_their_kind() {
        let (c, _) = compiler();
        let err = |p: StructuredOutputsParams| c.compile(&p).unwrap_err();
        assert_eq!(
            err(StructuredOutputsParams::Regex("a(b".into())).kind,
            "regex"
        );
        assert_eq!(
            err(StructuredOutputsParams::Grammar(
                "start: nothing_defined".into()
            ))
            .kind,
            "grammar"
        );
        let schema = serde_json::json!({"type": "object", "properties": {"a": {"type": "nope"}}});
        assert_eq!(err(StructuredOutputsParams::Json(schema)).kind, "json");
        assert_eq!(err(StructuredOutputsParams::Choice(vec![])).kind, "choice");
        let none = StructuredOutputCompiler::new(None, 10, vec![1]);
        let e = none
            .compile(&StructuredOutputsParams::JsonObject)
            .unwrap_err();
        assert_eq!(e.kind, "tokenizer");
    }

    #[test]
    fn a_structural_tag_allows_text_then_forces_the_structure() {
        let (c, tok) = compiler();
        let tag: StructuralTag = serde_json::from_value(serde_json::json!({
            "structures": [{"begin": "<f=a>", "schema": {"type": "integer"}, "end": "</f>"}],
            "triggers": ["<f="]
        }))
        .unwrap();
        let g = c
            .compile(&StructuredOutputsParams::StructuralTag(tag))
            .unwrap();
        let m = g.matcher();
        let enc = |s: &str| tok.encode(s, false).unwrap();
        let first = |s: &str| enc(s)[0];
        // Free text first: anything, the end included.
        let mask = m.fill_bitmask();
        assert!(mask.is_allowed(id(&tok, "Ġw")) && mask.is_allowed(EOS));
        m.accept_tokens(&enc("hi <f=")).unwrap();
        // The trigger is written: only the structure's begin continues.
        let mask = m.fill_bitmask();
        assert!(mask.is_allowed(first("a")));
        assert!(!mask.is_allowed(first("b")) && !mask.is_allowed(EOS));
        m.accept_tokens(&enc("a>12")).unwrap();
        // An integer, then the end tag.
        let mask = m.fill_bitmask();
        assert!(mask.is_allowed(first("<")) && mask.is_allowed(first("3")));
        assert!(!mask.is_allowed(first("x")) && !mask.is_allowed(EOS));
        m.accept_tokens(&enc("</f>")).unwrap();
        // Free text again.
        assert!(m.fill_bitmask().is_allowed(EOS));

        // A trigger that is one special token is matched as that token.
        let tag: StructuralTag = serde_json::from_value(serde_json::json!({
            "structures": [{"begin": "<|bos|>", "schema": {"type": "integer"}, "end": ""}],
            "triggers": ["<|bos|>"]
        }))
        .unwrap();
        let m = c
            .compile(&StructuredOutputsParams::StructuralTag(tag))
            .unwrap()
            .matcher();
        let bos = id(&tok, "<|bos|>");
        assert!(m.fill_bitmask().is_allowed(bos));
        m.accept_tokens(&[first("a"), bos]).unwrap();
        let mask = m.fill_bitmask();
        assert!(mask.is_allowed(first("3")) && !mask.is_allowed(first("a")));
    }

    #[test]
    fn the_sampler_takes_only_allowed_tokens() {
        let (c, tok) = compiler();
        let g = c
            .compile(&StructuredOutputsParams::Choice(vec!["world".into()]))
            .unwrap();
        let worker = MaskWorker::start();
        let m = g.matcher();
        let vocab = tok.vocab_size();
        // The model prefers EOS and a digit; the grammar allows neither.
        let mut logits = vec![0.0f32; vocab];
        logits[EOS as usize] = 10.0;
        logits[id(&tok, "1") as usize] = 9.0;
        let mut row = SamplingRow::greedy();
        row.logprobs = Some(1);
        row.grammar_mask = Some(worker.submit(&m));
        let s = row.sample(&logits);
        let allowed = m.fill_bitmask();
        assert!(allowed.is_allowed(s.token_id), "sampled {}", s.token_id);
        // Logprobs are of the masked distribution: the allowed tokens share it all.
        let lp = s.logprobs.unwrap();
        assert!(lp.logprob > -(allowed.num_allowed() as f32).ln() - 1e-4);
    }
}
