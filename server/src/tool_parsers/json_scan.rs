//! Just enough of a JSON scanner to find tool calls in text that is still
//! growing: where a value ends (or that it has not ended yet), and the keys
//! of a call object. serde_json validates what this finds; this only tells
//! "complete", "not yet" and "cannot be JSON" apart on a prefix, which a
//! full parser cannot.

/// How far a value got in the text so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The value ends before this byte offset.
    Done(usize),
    /// The text ends inside the value.
    Partial,
    /// No JSON value can start like this.
    Invalid,
}

/// The first offset at or after `i` that is not JSON whitespace.
pub fn skip_ws(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Scans the value that starts at `i` (no leading whitespace).
pub fn scan_value(text: &str, i: usize) -> Scan {
    let b = text.as_bytes();
    match b.get(i) {
        None => Scan::Partial,
        Some(b'"') => scan_string(text, i),
        Some(b'{' | b'[') => scan_container(b, i),
        Some(c) if c.is_ascii_alphanumeric() || *c == b'-' => {
            // A number or a literal; validated later by serde_json.
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'-' | b'+' | b'.'))
            {
                j += 1;
            }
            if j == b.len() {
                Scan::Partial
            } else {
                Scan::Done(j)
            }
        }
        Some(_) => Scan::Invalid,
    }
}

/// Scans the string whose opening quote is at `i`.
pub fn scan_string(text: &str, i: usize) -> Scan {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return Scan::Invalid;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Scan::Done(j + 1),
            _ => j += 1,
        }
    }
    Scan::Partial
}

/// Objects and arrays: brackets counted outside strings.
fn scan_container(b: &[u8], i: usize) -> Scan {
    let mut stack = Vec::new();
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' => {
                j += 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
            }
            open @ (b'{' | b'[') => stack.push(open),
            close @ (b'}' | b']') => {
                let want = if close == b'}' { b'{' } else { b'[' };
                if stack.pop() != Some(want) {
                    return Scan::Invalid;
                }
                if stack.is_empty() {
                    return Scan::Done(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Scan::Partial
}

/// A string literal's value, once it is complete.
pub fn decode_string(literal: &str) -> Option<String> {
    serde_json::from_str(literal).ok()
}

/// What is known so far of one call object `{"name": ..., "arguments": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallScan {
    /// The function name, once its string is complete.
    pub name: Option<String>,
    /// Where the arguments value starts, and ends once it is complete.
    pub args: Option<(usize, Option<usize>)>,
    /// The offset after the closing brace, once the object is complete.
    pub end: Option<usize>,
}

/// Scans the call object whose `{` is at `i`. `args_keys` name the
/// arguments (`arguments`, Llama's `parameters`); the first such key in the
/// text wins, so what was read of the arguments never changes as the text
/// grows. `None`: this cannot be a call object.
pub fn scan_call(text: &str, i: usize, args_keys: &[&str]) -> Option<CallScan> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'{') {
        return (i >= b.len()).then(CallScan::default);
    }
    let mut call = CallScan::default();
    let mut j = skip_ws(text, i + 1);
    if b.get(j) == Some(&b'}') {
        call.end = Some(j + 1);
        return Some(call);
    }
    loop {
        let key_end = match scan_string(text, j) {
            Scan::Done(e) => e,
            Scan::Partial => return Some(call),
            Scan::Invalid => return (j >= b.len()).then_some(call),
        };
        let key = decode_string(&text[j..key_end])?;
        j = skip_ws(text, key_end);
        match b.get(j) {
            None => return Some(call),
            Some(b':') => {}
            Some(_) => return None,
        }
        j = skip_ws(text, j + 1);
        let value = scan_value(text, j);
        if value == Scan::Invalid {
            return None;
        }
        let value_end = match value {
            Scan::Done(e) => Some(e),
            _ => None,
        };
        if key == "name" {
            if let Some(e) = value_end {
                call.name = Some(decode_string(&text[j..e])?);
            } else if b.get(j).is_some_and(|c| *c != b'"') {
                return None;
            }
        } else if call.args.is_none() && args_keys.contains(&key.as_str()) {
            call.args = Some((j, value_end));
        }
        let Some(e) = value_end else {
            return Some(call);
        };
        j = skip_ws(text, e);
        match b.get(j) {
            None => return Some(call),
            Some(b',') => j = skip_ws(text, j + 1),
            Some(b'}') => {
                call.end = Some(j + 1);
                return Some(call);
            }
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_end_or_wait() {
        let t = r#"{"a": [1, "]}"], "b": {"c": "\"}"}} tail"#;
        assert_eq!(scan_value(t, 0), Scan::Done(t.len() - 5));
        for cut in 1..t.len() - 5 {
            assert_eq!(scan_value(&t[..cut], 0), Scan::Partial, "{}", &t[..cut]);
        }
        assert_eq!(scan_value("[1}", 0), Scan::Invalid);
        assert_eq!(scan_value("12,", 0), Scan::Done(2));
        assert_eq!(scan_value("12", 0), Scan::Partial);
        assert_eq!(scan_value(":", 0), Scan::Invalid);
        assert_eq!(scan_string(r#""a\"b" x"#, 0), Scan::Done(6));
    }

    #[test]
    fn call_objects_are_read_as_they_grow() {
        let t = r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#;
        let full = scan_call(t, 0, &["arguments"]).unwrap();
        assert_eq!(full.name.as_deref(), Some("get_weather"));
        let (s, e) = full.args.unwrap();
        assert_eq!(&t[s..e.unwrap()], r#"{"city": "Paris"}"#);
        assert_eq!(full.end, Some(t.len()));
        for cut in 0..t.len() {
            let part = scan_call(&t[..cut], 0, &["arguments"]).unwrap();
            assert_eq!(part.end, None, "{}", &t[..cut]);
            if cut < 22 {
                assert_eq!(part.name, None, "{}", &t[..cut]);
            } else {
                assert_eq!(part.name, full.name);
            }
        }
        assert!(scan_call(r#"{"name": 3}"#, 0, &["arguments"]).is_none());
        assert!(scan_call(r#"{"name" "x"}"#, 0, &["arguments"]).is_none());
        assert!(scan_call("not json", 0, &["arguments"]).is_none());
        let both = r#"{"parameters": {"a": 1}, "arguments": {"b": 2}, "name": "f"}"#;
        let c = scan_call(both, 0, &["arguments", "parameters"]).unwrap();
        let (s, e) = c.args.unwrap();
        assert_eq!(&both[s..e.unwrap()], r#"{"a": 1}"#);
    }
}
