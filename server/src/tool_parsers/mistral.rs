//! `mistral`: `[TOOL_CALLS]` followed by a JSON array of
//! `{"name": ..., "arguments": {...}}` (Mistral 7B Instruct v0.3, Nemo,
//! Small with v3 tokenizers), or, from v11 tokenizers on,
//! `[TOOL_CALLS]name[ARGS]{...}` once per call. Content is the text before
//! the first `[TOOL_CALLS]`.

use super::json_scan::{scan_value, skip_ws, Scan};
use super::{call_so_far, content_only, scan_call_array, CallSoFar, ParsedOutput};

const BOT: &str = "[TOOL_CALLS]";
const ARGS: &str = "[ARGS]";

pub fn parse(text: &str, done: bool) -> ParsedOutput {
    let Some(first) = text.find(BOT) else {
        return content_only(text, done, BOT);
    };
    let i = skip_ws(text, first + BOT.len());
    let calls = match text.as_bytes().get(i) {
        Some(b'[') => scan_call_array(text, i, &["arguments"], done),
        None if !done => Ok(Vec::new()),
        _ => named_calls(text, i, done),
    };
    match calls {
        Ok(calls) if !(done && calls.is_empty()) => ParsedOutput {
            content_end: first,
            calls,
        },
        _ if done => content_only(text, true, BOT),
        _ => ParsedOutput {
            content_end: first,
            calls: Vec::new(),
        },
    }
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// The v11 form: `name[ARGS]{...}`, the next call after another
/// `[TOOL_CALLS]`.
fn named_calls(text: &str, mut i: usize, done: bool) -> Result<Vec<CallSoFar>, ()> {
    let b = text.as_bytes();
    let mut calls = Vec::new();
    loop {
        let name_end = (i..b.len())
            .find(|&j| !is_name_byte(b[j]))
            .unwrap_or(b.len());
        let rest = &text[name_end..];
        if name_end == i && !rest.is_empty() {
            return Err(());
        }
        if !rest.starts_with(ARGS) {
            return if !done && ARGS.starts_with(rest) {
                Ok(calls)
            } else {
                Err(())
            };
        }
        let args_start = skip_ws(text, name_end + ARGS.len());
        let scan = scan_value(text, args_start);
        let (args_end, complete) = match scan {
            Scan::Done(e) => (e, true),
            Scan::Partial => (text.len(), false),
            Scan::Invalid if args_start == text.len() => (text.len(), false),
            Scan::Invalid => return Err(()),
        };
        let object = super::json_scan::CallScan {
            name: Some(text[i..name_end].to_string()),
            args: Some((args_start, complete.then_some(args_end))),
            end: complete.then_some(args_end),
        };
        calls.push(call_so_far(text, &object, done).ok_or(())?);
        if !complete {
            return if done { Err(()) } else { Ok(calls) };
        }
        let next = skip_ws(text, args_end);
        let rest = &text[next..];
        if rest.is_empty() {
            return Ok(calls);
        }
        if rest.starts_with(BOT) {
            i = skip_ws(text, next + BOT.len());
        } else if !done && BOT.starts_with(rest) {
            return Ok(calls);
        } else {
            return Err(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::tests::{assert_streams_like_whole, whole};
    use super::super::{ToolOutputFormat, ToolParserKind};

    const F: ToolOutputFormat = ToolOutputFormat::Parser(ToolParserKind::Mistral);

    /// Mistral-7B-Instruct-v0.3: the array form, two calls.
    const V3: &str = "[TOOL_CALLS] [{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"Paris, France\", \"format\": \"celsius\"}}, {\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"Berlin, Germany\", \"format\": \"celsius\"}}]";
    /// Mistral-Small-3.2 (v11+ tokenizer): name, `[ARGS]`, arguments.
    const V11: &str = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{\"tz\": \"CET\"}";

    #[test]
    fn array_form() {
        let got = whole(&F, V3);
        assert_eq!(got.content, None);
        assert_eq!(got.calls.len(), 2);
        assert_eq!(
            got.calls[1],
            [
                "get_current_weather",
                r#"{"location": "Berlin, Germany", "format": "celsius"}"#
            ]
        );
        assert_streams_like_whole(&F, V3);
        let with_text = format!("Checking the weather.\n\n{V3}");
        assert_eq!(
            whole(&F, &with_text).content.as_deref(),
            Some("Checking the weather.\n\n")
        );
        assert_streams_like_whole(&F, &with_text);
    }

    #[test]
    fn name_args_form() {
        let got = whole(&F, V11);
        assert_eq!(
            got.calls,
            [
                ["get_weather", r#"{"city": "Paris"}"#],
                ["get_time", r#"{"tz": "CET"}"#]
            ]
        );
        assert_streams_like_whole(&F, V11);
    }

    #[test]
    fn text_and_malformed_calls_are_content() {
        for text in [
            "Paris is sunny today.",
            "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}",
            "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": \"a=1\"}]",
            "[TOOL_CALLS]get weather[ARGS]{}",
            "[TOOL_CALLS]",
            "[TOOL_CALLS] []",
        ] {
            let got = whole(&F, text);
            assert_eq!(got.content.as_deref(), Some(text), "{text}");
            assert!(got.calls.is_empty(), "{text}");
        }
        assert_streams_like_whole(&F, "Paris [TOOL is sunny.");
    }
}
