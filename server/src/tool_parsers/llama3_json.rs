//! `llama3_json`: Llama 3.1/3.2/3.3's JSON tool calls. The output is one
//! or more `{"name": ..., "parameters": {...}}` objects (`arguments` also
//! read), separated by `;`, either from its start or after
//! `<|python_tag|>` (which some prompts make the model write first; text
//! before the tag is content). Output that starts otherwise is content, as
//! in vLLM's parser.

use super::json_scan::{scan_call, skip_ws};
use super::{call_so_far, content_only, ParsedOutput};

const TAG: &str = "<|python_tag|>";
const ARGS_KEYS: &[&str] = &["parameters", "arguments"];

pub fn parse(text: &str, done: bool) -> ParsedOutput {
    let (content_end, start) = match text.find(TAG) {
        Some(k) => (k, k + TAG.len()),
        None => {
            let first = skip_ws(text, 0);
            if first < text.len() && text.as_bytes()[first] != b'{' {
                return content_only(text, done, TAG);
            }
            if first == text.len() && !done {
                // Only whitespace yet: a call or text may follow.
                return ParsedOutput::default();
            }
            (0, first)
        }
    };
    let all_content = || content_only(text, true, TAG);
    let mut out = ParsedOutput {
        content_end,
        calls: Vec::new(),
    };
    let mut i = skip_ws(text, start);
    loop {
        let Some(scan) = scan_call(text, i, ARGS_KEYS) else {
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
        let j = skip_ws(text, end);
        match text.as_bytes().get(j) {
            None => return out,
            Some(b';') => i = skip_ws(text, j + 1),
            Some(_) => return if done { all_content() } else { out },
        }
        if i == text.len() {
            // A trailing `;`: another call may follow, or nothing.
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::tests::{assert_streams_like_whole, whole};
    use super::super::{ToolOutputFormat, ToolParserKind};

    const F: ToolOutputFormat = ToolOutputFormat::Parser(ToolParserKind::Llama3Json);

    /// Llama-3.1-8B-Instruct with the JSON tool prompt of its template.
    const ONE: &str = r#"{"name": "get_current_conditions", "parameters": {"location": "San Francisco, CA", "unit": "Fahrenheit"}}"#;
    /// Two calls, `;`-separated, after the python tag.
    const TWO: &str = "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_time\", \"arguments\": {\"timezone\": \"Europe/Paris\"}}";

    #[test]
    fn one_call_without_the_tag() {
        let got = whole(&F, ONE);
        assert_eq!(got.content, None);
        assert_eq!(
            got.calls,
            [[
                "get_current_conditions",
                r#"{"location": "San Francisco, CA", "unit": "Fahrenheit"}"#
            ]]
        );
        assert_streams_like_whole(&F, ONE);
    }

    #[test]
    fn two_calls_after_the_tag_and_text_before_it() {
        let got = whole(&F, TWO);
        assert_eq!(got.calls.len(), 2);
        assert_eq!(
            got.calls[1],
            ["get_time", r#"{"timezone": "Europe/Paris"}"#]
        );
        assert_streams_like_whole(&F, TWO);
        let with_text = format!("Let me check.{TWO}");
        let got = whole(&F, &with_text);
        assert_eq!(got.content.as_deref(), Some("Let me check."));
        assert_eq!(got.calls.len(), 2);
        assert_streams_like_whole(&F, &with_text);
        let spaced = format!("\n\n {ONE};");
        assert_eq!(whole(&F, &spaced).calls.len(), 1);
        assert_streams_like_whole(&F, &spaced);
    }

    #[test]
    fn text_and_malformed_json_are_content() {
        for text in [
            "The current temperature in Paris is 18 degrees Celsius.",
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}",
            "{\"name\": \"get_weather\"}",
            "{\"function\": \"get_weather\", \"parameters\": {}}",
            "{\"name\": \"a\", \"parameters\": {}} and then some text",
            "",
        ] {
            let got = whole(&F, text);
            assert_eq!(got.content.as_deref(), Some(text), "{text}");
            assert!(got.calls.is_empty(), "{text}");
        }
        assert_streams_like_whole(&F, "The answer is {x}.");
    }
}
