//! `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
//! one block per call, after optional text (Qwen2.5, Qwen3, Hermes 2 Pro
//! and 3 templates ask for this). The last block may lack its closing tag
//! (the model stopped on EOS first), as vLLM's regex allows. Content is the
//! text before the first block; text between blocks is dropped, as vLLM
//! drops it.

use super::json_scan::{scan_call, skip_ws};
use super::{call_so_far, content_only, ParsedOutput};

const START: &str = "<tool_call>";
const END: &str = "</tool_call>";

pub fn parse(text: &str, done: bool) -> ParsedOutput {
    let Some(first) = text.find(START) else {
        return content_only(text, done, START);
    };
    let all_content = || content_only(text, true, START);
    let mut out = ParsedOutput {
        content_end: first,
        calls: Vec::new(),
    };
    let mut pos = first;
    loop {
        let i = skip_ws(text, pos + START.len());
        let Some(scan) = scan_call(text, i, &["arguments"]) else {
            return if done { all_content() } else { out };
        };
        let Some(call) = call_so_far(text, &scan, done) else {
            return all_content();
        };
        if call.name.is_none() {
            return if done || scan.end.is_some() {
                all_content()
            } else {
                out
            };
        }
        out.calls.push(call);
        let Some(end) = scan.end else {
            return out;
        };
        let after = skip_ws(text, end);
        let rest = &text[after..];
        if rest.starts_with(END) {
            pos = after + END.len();
        } else if rest.is_empty() || (!done && END.starts_with(rest)) {
            return out;
        } else {
            // Something other than the closing tag inside the block.
            return if done { all_content() } else { out };
        }
        match text[pos..].find(START) {
            Some(k) => pos += k,
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::tests::{assert_streams_like_whole, whole};
    use super::super::{marker_start_len, ToolOutputFormat, ToolParserKind};
    use super::*;

    const F: ToolOutputFormat = ToolOutputFormat::Parser(ToolParserKind::Hermes);

    /// Qwen2.5-7B-Instruct's shape: the call block, a newline inside it.
    const QWEN_ONE: &str = "<tool_call>\n{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}}\n</tool_call>";
    /// Two parallel calls, text before them.
    const QWEN_TWO: &str = "I'll look up both cities.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tōkyō \\\"東京\\\"\", \"days\": [1, 2]}}\n</tool_call>";

    #[test]
    fn one_call() {
        let got = whole(&F, QWEN_ONE);
        assert_eq!(got.content, None);
        assert_eq!(
            got.calls,
            [[
                "get_current_weather",
                r#"{"location": "San Francisco, CA", "unit": "fahrenheit"}"#
            ]]
        );
        assert_streams_like_whole(&F, QWEN_ONE);
    }

    #[test]
    fn text_then_two_calls() {
        let got = whole(&F, QWEN_TWO);
        assert_eq!(got.content.as_deref(), Some("I'll look up both cities.\n"));
        assert_eq!(got.calls.len(), 2);
        assert_eq!(
            got.calls[1][1],
            r#"{"city": "Tōkyō \"東京\"", "days": [1, 2]}"#
        );
        assert_streams_like_whole(&F, QWEN_TWO);
    }

    #[test]
    fn unclosed_last_block_and_plain_text() {
        let unclosed = "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}";
        assert_eq!(whole(&F, unclosed).calls, [["f", "{}"]]);
        assert_streams_like_whole(&F, unclosed);
        let plain = "The weather in Paris is sunny, 21°C. Use <b>tags</b> < 3.";
        let got = whole(&F, plain);
        assert_eq!(got.content.as_deref(), Some(plain));
        assert!(got.calls.is_empty());
        assert_streams_like_whole(&F, plain);
    }

    #[test]
    fn malformed_json_is_content() {
        for bad in [
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}\n</tool_call>",
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": tru}}\n</tool_call>",
            "<tool_call>\n{\"arguments\": {}}\n</tool_call>",
            "Sure.<tool_call>get_weather(city='Paris')</tool_call>",
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {}} trailing\n</tool_call>",
        ] {
            let got = whole(&F, bad);
            assert_eq!(got.content.as_deref(), Some(bad), "{bad}");
            assert!(got.calls.is_empty(), "{bad}");
        }
        // A held-back marker start is content when the output ends.
        let cut = "Let me check <tool_";
        assert_eq!(parse(cut, false).content_end, "Let me check ".len());
        assert_eq!(whole(&F, cut).content.as_deref(), Some(cut));
        assert_streams_like_whole(&F, cut);
    }

    #[test]
    fn partial_text_reports_only_what_is_settled() {
        let p = parse("Hi<tool_call>\n{\"name\": \"get_w", false);
        assert_eq!(p.content_end, 2);
        assert!(p.calls.is_empty());
        let p = parse(
            "Hi<tool_call>\n{\"name\": \"g\", \"arguments\": {\"city\": \"Pa",
            false,
        );
        assert_eq!(p.calls[0].name.as_deref(), Some("g"));
        assert_eq!(p.calls[0].arguments, "{\"city\": \"Pa");
        assert_eq!(marker_start_len("x</tool", END), 6);
    }
}
