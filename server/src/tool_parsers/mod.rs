//! Tool calls in a model's output, as vLLM's `--tool-call-parser`s find
//! them (`hermes`, `llama3_json`, `mistral`), plus the JSON that
//! `tool_choice: "required"` and a named function constrain the output to.
//!
//! Every format is one function from the text so far to a [`ParsedOutput`]
//! (`done`: the text is complete). On a prefix it reports only what can no
//! longer change: content up to where a call marker starts or may start,
//! calls whose name is complete, and arguments as raw JSON text that only
//! grows. So the stream ([`stream::ToolCallStreamer`]) sends the
//! differences and the non-streaming answer ([`extract`]) is the same
//! parse with `done`. Arguments are the model's own JSON text of the
//! arguments object (vLLM re-serializes it when not streaming; keeping the
//! text makes streamed and whole answers equal). A complete text whose
//! calls do not parse is all content, as in vLLM.

mod hermes;
mod json_scan;
mod llama3_json;
mod mistral;
mod required;
pub mod stream;

use json_scan::CallScan;

/// vLLM's `--tool-call-parser` names Pagoda implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolParserKind {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
    /// (Qwen2.5, Qwen3, Hermes 2 Pro/3).
    Hermes,
    /// JSON objects with `name` and `parameters` (or `arguments`), after an
    /// optional `<|python_tag|>`, separated by `;` (Llama 3.1/3.2/3.3).
    #[value(name = "llama3_json")]
    Llama3Json,
    /// `[TOOL_CALLS]` then a JSON array of calls, or (v11+ tokenizers)
    /// `[TOOL_CALLS]name[ARGS]{...}` per call (Mistral 7B v0.3, Nemo, Small).
    Mistral,
}

impl ToolParserKind {
    /// vLLM's parsers for these formats stop the detokenizer from dropping
    /// special tokens (`adjust_request`): their markers are special tokens
    /// in some models.
    pub fn keeps_special_tokens(self) -> bool {
        matches!(self, ToolParserKind::Hermes | ToolParserKind::Mistral)
    }
}

/// How one choice's text is read for tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolOutputFormat {
    /// `tool_choice: "auto"`: the model's own format.
    Parser(ToolParserKind),
    /// `tool_choice: "required"`: `[{"name": ..., "parameters": {...}}, ...]`.
    Required,
    /// A named function: the whole output is its arguments.
    Named(String),
}

/// What a text holds, as far as it can be known yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOutput {
    /// The text before this byte offset is content.
    pub content_end: usize,
    pub calls: Vec<CallSoFar>,
}

/// One call as far as it is known: the name once complete, the arguments'
/// JSON text so far (it only grows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSoFar {
    pub name: Option<String>,
    pub arguments: String,
}

/// A finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

/// A complete output: the content before the calls (None when empty and
/// there are calls), and the calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedToolCalls {
    pub content: Option<String>,
    pub calls: Vec<ParsedCall>,
}

impl ToolOutputFormat {
    /// Reads `text`; `done`: it is the whole output.
    pub fn parse(&self, text: &str, done: bool) -> ParsedOutput {
        match self {
            ToolOutputFormat::Parser(ToolParserKind::Hermes) => hermes::parse(text, done),
            ToolOutputFormat::Parser(ToolParserKind::Llama3Json) => llama3_json::parse(text, done),
            ToolOutputFormat::Parser(ToolParserKind::Mistral) => mistral::parse(text, done),
            ToolOutputFormat::Required => required::parse(text, done),
            ToolOutputFormat::Named(name) => named(name, text, done),
        }
    }

    /// A new tool call id: `chatcmpl-tool-<32 hex>` as vLLM makes them;
    /// Mistral's templates demand 9 letters and digits, as vLLM's
    /// `MistralToolCall` makes them.
    pub fn new_call_id(&self) -> String {
        match self {
            ToolOutputFormat::Parser(ToolParserKind::Mistral) => {
                use rand::distr::{Alphanumeric, SampleString};
                Alphanumeric.sample_string(&mut rand::rng(), 9)
            }
            // vLLM's `chatcmpl-tool-` + 32 hex digits.
            _ => format!("chatcmpl-tool-{:032x}", rand::random::<u128>()),
        }
    }
}

/// The calls of a complete output, or all of it as content.
pub fn extract(format: &ToolOutputFormat, text: &str) -> ExtractedToolCalls {
    let parsed = format.parse(text, true);
    if parsed.calls.is_empty() {
        return ExtractedToolCalls {
            content: Some(text.to_string()),
            calls: Vec::new(),
        };
    }
    let content = &text[..parsed.content_end];
    ExtractedToolCalls {
        content: (!content.is_empty()).then(|| content.to_string()),
        calls: parsed
            .calls
            .into_iter()
            .map(|c| ParsedCall {
                name: c.name.unwrap_or_default(),
                arguments: c.arguments,
            })
            .collect(),
    }
}

/// A named function's arguments: the whole output, trimmed. The grammar
/// made it valid; a truncated one is passed on as it is (`finish_reason:
/// "length"` says so), as vLLM passes it.
fn named(name: &str, text: &str, done: bool) -> ParsedOutput {
    let start = json_scan::skip_ws(text, 0);
    let arguments = if done {
        text.trim()
    } else {
        match json_scan::scan_value(text, start) {
            json_scan::Scan::Done(end) => &text[start..end],
            _ => text[start..].trim_end(),
        }
    };
    ParsedOutput {
        content_end: 0,
        calls: vec![CallSoFar {
            name: Some(name.to_string()),
            arguments: arguments.to_string(),
        }],
    }
}

/// The longest end of `text` that is a proper start of `marker`: text held
/// back because a marker may be starting.
fn marker_start_len(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&k| text.ends_with(&marker[..k]))
        .unwrap_or(0)
}

/// Content of a text with no marker yet: all of it when done, else all but
/// what may be the start of `marker`.
fn content_only(text: &str, done: bool, marker: &str) -> ParsedOutput {
    let held = if done {
        0
    } else {
        marker_start_len(text, marker)
    };
    ParsedOutput {
        content_end: text.len() - held,
        calls: Vec::new(),
    }
}

/// A call as far as its scan got; `None` once done if it is not a whole
/// call with a name and JSON-object arguments.
fn call_so_far(text: &str, scan: &CallScan, done: bool) -> Option<CallSoFar> {
    let arguments = match scan.args {
        None => "",
        Some((start, Some(end))) => &text[start..end],
        Some((start, None)) => text[start..].trim_end(),
    };
    if done {
        let whole = scan.end.is_some() && scan.name.is_some();
        let args_ok = matches!(scan.args, Some((_, Some(_))))
            && serde_json::from_str::<serde_json::Value>(arguments).is_ok_and(|v| v.is_object());
        if !(whole && args_ok) {
            return None;
        }
    }
    Some(CallSoFar {
        name: scan.name.clone(),
        arguments: arguments.to_string(),
    })
}

/// Scans the JSON array of call objects at `i` (Mistral's and
/// `tool_choice: "required"`'s). `Err(())`: not such an array (when done:
/// not a complete one).
fn scan_call_array(
    text: &str,
    i: usize,
    args_keys: &[&str],
    done: bool,
) -> Result<Vec<CallSoFar>, ()> {
    let b = text.as_bytes();
    let mut calls = Vec::new();
    match b.get(i) {
        Some(b'[') => {}
        None if !done => return Ok(calls),
        _ => return Err(()),
    }
    let mut j = json_scan::skip_ws(text, i + 1);
    loop {
        let scan = json_scan::scan_call(text, j, args_keys).ok_or(())?;
        let call = call_so_far(text, &scan, done).ok_or(())?;
        if scan.end.is_some() && call.name.is_none() {
            return Err(());
        }
        let end = scan.end;
        if call.name.is_some() || done {
            calls.push(call);
        }
        let Some(end) = end else {
            return if done { Err(()) } else { Ok(calls) };
        };
        j = json_scan::skip_ws(text, end);
        match b.get(j) {
            Some(b',') => j = json_scan::skip_ws(text, j + 1),
            Some(b']') => {
                let rest = json_scan::skip_ws(text, j + 1);
                return if rest == text.len() || !done {
                    Ok(calls)
                } else {
                    Err(())
                };
            }
            None if !done => return Ok(calls),
            _ => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_starts_are_held_back() {
        assert_eq!(marker_start_len("Hi <tool", "<tool_call>"), 5);
        assert_eq!(marker_start_len("Hi <", "<tool_call>"), 1);
        assert_eq!(marker_start_len("Hi", "<tool_call>"), 0);
        assert_eq!(marker_start_len("", "<tool_call>"), 0);
        assert_eq!(content_only("Hi <to", false, "<tool_call>").content_end, 3);
        assert_eq!(content_only("Hi <to", true, "<tool_call>").content_end, 6);
    }

    #[test]
    fn named_arguments_are_the_output() {
        let f = ToolOutputFormat::Named("f".into());
        let got = extract(&f, " {\"a\": 1}");
        assert_eq!(got.content, None);
        assert_eq!(
            got.calls,
            vec![ParsedCall {
                name: "f".into(),
                arguments: "{\"a\": 1}".into()
            }]
        );
        assert_eq!(f.parse("{\"a\": 1 ", false).calls[0].arguments, "{\"a\": 1");
    }

    #[test]
    fn call_ids_look_like_vllms() {
        let id = ToolOutputFormat::Required.new_call_id();
        assert!(
            id.starts_with("chatcmpl-tool-") && id.len() == 14 + 32,
            "{id}"
        );
        let id = ToolOutputFormat::Parser(ToolParserKind::Mistral).new_call_id();
        assert!(id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
