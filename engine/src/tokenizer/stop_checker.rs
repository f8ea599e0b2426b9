//! Stop strings (vLLM's `StopChecker`): find one in the generated text, even
//! across token boundaries, and say how much of the text's tail must be held
//! back from the client because a stop string could still begin there.

/// A stop string found in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopMatch {
    /// Byte offset in the text where the stop string starts.
    pub start: usize,
    /// Index into the checker's stop strings.
    pub index: usize,
}

#[derive(Debug, Clone, Default)]
pub struct StopChecker {
    stop: Vec<String>,
    include_in_output: bool,
}

impl StopChecker {
    /// Empty strings are dropped: they would match everywhere.
    pub fn new(stop: Vec<String>, include_in_output: bool) -> Self {
        let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stop,
            include_in_output,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stop.is_empty()
    }

    pub fn stop_string(&self, index: usize) -> &str {
        &self.stop[index]
    }

    /// The earliest stop string in `text` that ends after byte `new_from`
    /// (text before it was searched already). Equal starts: the first listed.
    pub fn find(&self, text: &str, new_from: usize) -> Option<StopMatch> {
        let new_from = new_from.min(text.len());
        self.stop
            .iter()
            .enumerate()
            .filter_map(|(index, s)| {
                let mut from = new_from.saturating_sub(s.len() - 1);
                while !text.is_char_boundary(from) {
                    from -= 1;
                }
                text[from..].find(s.as_str()).map(|pos| (from + pos, index))
            })
            .min()
            .map(|(start, index)| StopMatch { start, index })
    }

    /// Where the output ends for a match: before the stop string, or after
    /// it with `include_stop_str_in_output`.
    pub fn truncate_at(&self, m: &StopMatch) -> usize {
        if self.include_in_output {
            m.start + self.stop[m.index].len()
        } else {
            m.start
        }
    }

    /// Bytes at the end of `text` to hold back: the longest tail that is a
    /// proper prefix of a stop string. Nothing is held back when stop strings
    /// are included in the output (a match never removes text before it).
    pub fn held_back_len(&self, text: &str) -> usize {
        if self.include_in_output {
            return 0;
        }
        self.stop
            .iter()
            .filter_map(|s| {
                (1..s.len().min(text.len() + 1))
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && text.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(stop: &[&str], include: bool) -> StopChecker {
        StopChecker::new(stop.iter().map(|s| s.to_string()).collect(), include)
    }

    #[test]
    fn finds_earliest_match() {
        let c = checker(&["world", "lo"], false);
        let m = c.find("hello world", 0).unwrap();
        assert_eq!((m.start, c.stop_string(m.index)), (3, "lo"));
        assert_eq!(c.truncate_at(&m), 3);
        let inc = checker(&["world", "lo"], true);
        assert_eq!(inc.truncate_at(&inc.find("hello world", 0).unwrap()), 5);
    }

    #[test]
    fn search_starts_just_before_new_text() {
        let c = checker(&["abc"], false);
        // "abc" ends inside the new text ("c" from byte 2 on): found.
        assert_eq!(c.find("xabc", 3).map(|m| m.start), Some(1));
        // Entirely inside old text: not searched again.
        assert_eq!(c.find("abcxyz", 5), None);
    }

    #[test]
    fn search_start_respects_char_boundaries() {
        let c = checker(&["日本"], false);
        let text = "é日本";
        for from in 0..=text.len() {
            if text.is_char_boundary(from) {
                assert_eq!(c.find(text, from).map(|m| m.start), Some(2), "from {from}");
            }
        }
    }

    #[test]
    fn held_back_tail_is_a_stop_prefix() {
        let c = checker(&["</end>", "STOP"], false);
        assert_eq!(c.held_back_len("hello </e"), 3);
        assert_eq!(c.held_back_len("hello ST"), 2);
        assert_eq!(c.held_back_len("hello"), 0);
        assert_eq!(c.held_back_len("<"), 1);
        assert_eq!(checker(&["</end>"], true).held_back_len("hello </e"), 0);
        let multibyte = checker(&["éa"], false);
        assert_eq!(multibyte.held_back_len("xé"), 2);
    }

    #[test]
    fn empty_strings_are_ignored() {
        let c = checker(&[""], false);
        assert!(c.is_empty());
        assert_eq!(c.find("anything", 0), None);
        assert_eq!(c.held_back_len("anything"), 0);
    }
}
