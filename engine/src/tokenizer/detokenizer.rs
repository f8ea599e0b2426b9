//! Incremental detokenization (vLLM's / TGI's prefix-offset technique) with
//! stop strings.
//!
//! A token's text depends on its neighbours: byte-level BPE cuts multi-byte
//! UTF-8 characters across tokens, and SentencePiece decoders drop the space
//! of the first token they see. So each step decodes a small window,
//! `ids[prefix_offset..]`, and emits what it adds to `ids[prefix_offset..
//! read_offset]`. Text is final once it is followed by a complete character:
//! trailing U+FFFD (an unfinished byte sequence) is held back until the next
//! token completes it, and the window only moves forward at such points. The
//! concatenated deltas then equal the decode of all output ids at once.
//!
//! Stop strings are searched in the text, across token boundaries; the tail
//! of the text that could still become a stop string is held back until it
//! cannot, and on a match the output ends before the stop string (or after
//! it with `include_stop_str_in_output`).

use super::{StopChecker, Tokenizer};

/// Prompt tokens decoded as context before the first output token (vLLM's
/// `INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET`), so the first output token
/// keeps the leading space a SentencePiece decoder drops at text start.
const PROMPT_CONTEXT_TOKENS: usize = 5;

/// New text from one `push`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetokenizerDelta {
    /// Text safe to send now.
    pub text: String,
    /// The stop string that matched: generation must end, and `text` is the
    /// last of the output.
    pub stop_matched: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IncrementalDetokenizer {
    /// The ids still needed for decoding: from `prefix_offset` on, plus the
    /// prompt context at the start.
    window: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    /// Bytes of the window's new text (past its prefix text) already in
    /// `output_text` while the window waits for a character to complete.
    window_appended: usize,
    skip_special_tokens: bool,
    stop: StopChecker,
    /// All text decoded so far (cut at a stop string once one matched).
    output_text: String,
    /// Bytes of `output_text` already returned in deltas.
    emitted: usize,
    /// Stop strings ending after this byte offset have not been searched yet.
    stop_check_from: usize,
    num_output_tokens: usize,
    min_tokens: usize,
    stop_matched: Option<String>,
    finished: bool,
}

impl IncrementalDetokenizer {
    /// `prompt_token_ids` gives context for the first output tokens; the
    /// output text itself starts after the prompt. Empty stop strings are
    /// ignored.
    pub fn new(
        prompt_token_ids: &[u32],
        skip_special_tokens: bool,
        stop: Vec<String>,
        include_stop_str_in_output: bool,
    ) -> Self {
        let context =
            &prompt_token_ids[prompt_token_ids.len().saturating_sub(PROMPT_CONTEXT_TOKENS)..];
        Self {
            window: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
            window_appended: 0,
            skip_special_tokens,
            stop: StopChecker::new(stop, include_stop_str_in_output),
            output_text: String::new(),
            emitted: 0,
            stop_check_from: 0,
            num_output_tokens: 0,
            min_tokens: 0,
            stop_matched: None,
            finished: false,
        }
    }

    /// Stop strings are not matched until more than `min_tokens` tokens have
    /// been generated (vLLM's `min_tokens`).
    pub fn with_min_tokens(mut self, min_tokens: usize) -> Self {
        self.min_tokens = min_tokens;
        self
    }

    /// Adds newly generated tokens; returns the text that is safe to emit.
    /// After a stop match or `finish`, further tokens are ignored.
    pub fn push(&mut self, tokenizer: &Tokenizer, new_token_ids: &[u32]) -> DetokenizerDelta {
        if self.finished || self.stop_matched.is_some() {
            return DetokenizerDelta::default();
        }
        for &id in new_token_ids {
            self.window.push(id);
            self.decode_window(tokenizer, false);
            self.num_output_tokens += 1;
            if self.num_output_tokens <= self.min_tokens {
                self.stop_check_from = self.output_text.len();
            }
        }
        self.check_stop_and_emit(false)
    }

    /// Flushes what is held back at the end of generation: an unfinished
    /// UTF-8 sequence (as U+FFFD) and a possible stop-string prefix. A stop
    /// string completed by the flushed text still cuts the output (see
    /// [`Self::stop_matched`]).
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> String {
        if self.finished || self.stop_matched.is_some() {
            return String::new();
        }
        self.finished = true;
        self.decode_window(tokenizer, true);
        self.check_stop_and_emit(true).text
    }

    /// The output text so far: everything decoded, including text held back
    /// from the deltas; cut at the stop string once one matched.
    pub fn output_text(&self) -> &str {
        &self.output_text
    }

    /// The stop string that ended the output, if any.
    pub fn stop_matched(&self) -> Option<&str> {
        self.stop_matched.as_deref()
    }

    pub fn num_output_tokens(&self) -> usize {
        self.num_output_tokens
    }

    /// Decodes the window and appends its final text to `output_text`;
    /// moves the window on when the text ends in a complete character.
    /// `flush` appends everything, unfinished characters included.
    fn decode_window(&mut self, tokenizer: &Tokenizer, flush: bool) {
        let ids = &self.window[self.prefix_offset..];
        let prefix_text = tokenizer.decode_lenient(
            &ids[..self.read_offset - self.prefix_offset],
            self.skip_special_tokens,
        );
        let new_text = tokenizer.decode_lenient(ids, self.skip_special_tokens);
        let start = if new_text.starts_with(&prefix_text) {
            prefix_text.len()
        } else {
            // The decoder changed the prefix text (a prompt cut inside a
            // character): skip as many characters, as vLLM does.
            new_text
                .char_indices()
                .nth(prefix_text.chars().count())
                .map_or(new_text.len(), |(i, _)| i)
        };
        let complete = !new_text.ends_with('\u{FFFD}');
        let final_end = if complete || flush {
            new_text.len()
        } else {
            new_text.trim_end_matches('\u{FFFD}').len()
        };
        let appended_end = start + self.window_appended;
        if let Some(text) = new_text.get(appended_end..final_end) {
            self.output_text.push_str(text);
            self.window_appended = final_end - start;
        }
        if complete && new_text.len() > start {
            self.prefix_offset = self.read_offset;
            self.read_offset = self.window.len();
            self.window_appended = 0;
            self.window.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
    }

    fn check_stop_and_emit(&mut self, flush: bool) -> DetokenizerDelta {
        if let Some(m) = self.stop.find(&self.output_text, self.stop_check_from) {
            // Text before `emitted` never starts a stop string (it is held
            // back until it cannot), so the cut is never before it.
            let end = self.stop.truncate_at(&m).max(self.emitted);
            self.output_text.truncate(end);
            let stop = self.stop.stop_string(m.index).to_string();
            self.stop_matched = Some(stop.clone());
            return DetokenizerDelta {
                text: self.take_until(self.output_text.len()),
                stop_matched: Some(stop),
            };
        }
        self.stop_check_from = self.output_text.len();
        let held_back = if flush {
            0
        } else {
            self.stop.held_back_len(&self.output_text[self.emitted..])
        };
        DetokenizerDelta {
            text: self.take_until(self.output_text.len() - held_back),
            stop_matched: None,
        }
    }

    fn take_until(&mut self, end: usize) -> String {
        let text = self.output_text[self.emitted..end].to_string();
        self.emitted = end;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::gguf_tokenizer::tests::toy_tokenizer;

    /// Pushes ids one by one and collects every delta plus the flush.
    fn stream(
        t: &Tokenizer,
        d: &mut IncrementalDetokenizer,
        ids: &[u32],
    ) -> (Vec<String>, Option<String>) {
        let mut deltas = Vec::new();
        for &id in ids {
            let delta = d.push(t, &[id]);
            deltas.push(delta.text);
            if delta.stop_matched.is_some() {
                return (deltas, delta.stop_matched);
            }
        }
        deltas.push(d.finish(t));
        (deltas, None)
    }

    fn byte_ids(t: &Tokenizer, bytes: &[u8]) -> Vec<u32> {
        let alphabet = crate::tokenizer::gguf_tokenizer::byte_alphabet();
        bytes
            .iter()
            .map(|&b| t.token_to_id(&alphabet[b as usize].to_string()).unwrap())
            .collect()
    }

    #[test]
    fn multibyte_character_split_across_tokens_is_held_back() {
        let t = toy_tokenizer();
        let ids = byte_ids(&t, "a日b".as_bytes());
        let mut d = IncrementalDetokenizer::new(&[], false, vec![], false);
        let (deltas, _) = stream(&t, &mut d, &ids);
        assert_eq!(deltas, vec!["a", "", "", "日", "b", ""]);
        assert_eq!(d.output_text(), "a日b");
    }

    #[test]
    fn unfinished_character_is_flushed_as_replacement() {
        let t = toy_tokenizer();
        let ids = byte_ids(&t, &[b'x', 0xE6, 0x97]);
        let mut d = IncrementalDetokenizer::new(&[], false, vec![], false);
        let (deltas, _) = stream(&t, &mut d, &ids);
        assert_eq!(deltas.concat(), t.decode(&ids, false).unwrap());
        assert_eq!(deltas.last().unwrap(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_across_tokens_is_held_then_cut() {
        let t = toy_tokenizer();
        let ids = t.encode("hello world and more", false).unwrap();
        let mut d = IncrementalDetokenizer::new(&[], false, vec!["o w".into()], false);
        let (deltas, stop) = stream(&t, &mut d, &ids);
        assert_eq!(stop.as_deref(), Some("o w"));
        assert_eq!(deltas.concat(), "hell");
        assert_eq!(d.output_text(), "hell");
        // Once stopped, nothing more comes out.
        assert_eq!(d.push(&t, &ids), DetokenizerDelta::default());
        assert_eq!(d.finish(&t), "");
    }

    #[test]
    fn stop_string_included_in_output() {
        let t = toy_tokenizer();
        let ids = t.encode("hello world and more", false).unwrap();
        let mut d = IncrementalDetokenizer::new(&[], false, vec!["world".into()], true);
        let (deltas, stop) = stream(&t, &mut d, &ids);
        assert_eq!(stop.as_deref(), Some("world"));
        assert_eq!(deltas.concat(), "hello world");
    }

    #[test]
    fn possible_stop_prefix_is_released_when_it_cannot_match() {
        let t = toy_tokenizer();
        let ids = t.encode("ab cd", false).unwrap();
        let mut d = IncrementalDetokenizer::new(&[], false, vec!["b c!".into()], false);
        let (deltas, stop) = stream(&t, &mut d, &ids);
        assert_eq!(stop, None);
        assert_eq!(deltas.concat(), "ab cd");
        // "b", "b " and "b c" are held until "d" rules the stop string out.
        assert_eq!(deltas[..4].concat(), "a");
    }

    #[test]
    fn held_back_prefix_is_flushed_by_finish() {
        let t = toy_tokenizer();
        let ids = t.encode("end<", false).unwrap();
        let mut d = IncrementalDetokenizer::new(&[], false, vec!["<stop>".into()], false);
        let (deltas, stop) = stream(&t, &mut d, &ids);
        assert_eq!(stop, None);
        assert_eq!(deltas.last().unwrap(), "<");
        assert_eq!(deltas.concat(), "end<");
    }

    #[test]
    fn min_tokens_delays_stop_matching() {
        let t = toy_tokenizer();
        let ids = t.encode("xyxyx", false).unwrap();
        let mut d =
            IncrementalDetokenizer::new(&[], false, vec!["x".into()], false).with_min_tokens(2);
        let (deltas, stop) = stream(&t, &mut d, &ids);
        assert_eq!(stop.as_deref(), Some("x"));
        assert_eq!(deltas.concat(), "xy");
    }

    #[test]
    fn special_tokens_skipped_or_kept() {
        let t = toy_tokenizer();
        let ids = t.encode("a<|eos|>b", false).unwrap();
        for (skip, want) in [(true, "ab"), (false, "a<|eos|>b")] {
            let mut d = IncrementalDetokenizer::new(&[], skip, vec![], false);
            assert_eq!(stream(&t, &mut d, &ids).0.concat(), want);
        }
    }

    #[test]
    fn prompt_context_does_not_leak_into_output() {
        let t = toy_tokenizer();
        let prompt = t.encode("the prompt world", false).unwrap();
        let ids = t.encode(" world", false).unwrap();
        let mut d = IncrementalDetokenizer::new(&prompt, true, vec![], false);
        assert_eq!(stream(&t, &mut d, &ids).0.concat(), " world");
    }

    /// A SentencePiece-style vocabulary: words carry a leading "▁" that the
    /// decoder turns into a space, except at the start of the text.
    fn sentencepiece_toy() -> Tokenizer {
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        let vocab: tokenizers::models::bpe::Vocab = ["▁hello", "▁world", "!", "▁"]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = tokenizers::models::bpe::BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .unwrap();
        let mut hf = tokenizers::Tokenizer::new(bpe);
        hf.with_decoder(Some(Metaspace::new('▁', PrependScheme::First, true)));
        Tokenizer::from_hf(hf)
    }

    #[test]
    fn sentencepiece_leading_space_is_kept_after_a_prompt() {
        let t = sentencepiece_toy();
        let (hello, world, bang) = (0, 1, 2);
        // After a prompt, "▁world" continues the text: " world".
        let mut d = IncrementalDetokenizer::new(&[hello], false, vec![], false);
        let (deltas, _) = stream(&t, &mut d, &[world, bang, world]);
        assert_eq!(deltas.concat(), " world! world");
        // Without one, the output is exactly decode(ids), first space dropped.
        let mut d = IncrementalDetokenizer::new(&[], false, vec![], false);
        let (deltas, _) = stream(&t, &mut d, &[world, bang, world]);
        assert_eq!(
            deltas.concat(),
            t.decode(&[world, bang, world], false).unwrap()
        );
        assert_eq!(deltas.concat(), "world! world");
    }

    #[test]
    fn out_of_vocabulary_ids_add_no_text() {
        let t = toy_tokenizer();
        let mut d = IncrementalDetokenizer::new(&[], false, vec![], false);
        let ids = [
            t.token_to_id("a").unwrap(),
            1_000_000,
            t.token_to_id("b").unwrap(),
        ];
        assert_eq!(stream(&t, &mut d, &ids).0.concat(), "ab");
    }
}
