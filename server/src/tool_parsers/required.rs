//! `tool_choice: "required"`: the grammar makes the output a non-empty
//! JSON array of `{"name": ..., "parameters": {...}}` (vLLM's schema), so
//! every element is a call. An array cut short (`max_tokens`) is content.

use super::json_scan::skip_ws;
use super::{content_only, scan_call_array, ParsedOutput};

pub fn parse(text: &str, done: bool) -> ParsedOutput {
    match scan_call_array(text, skip_ws(text, 0), &["parameters"], done) {
        Ok(calls) if !(done && calls.is_empty()) => ParsedOutput {
            content_end: 0,
            calls,
        },
        _ if done => content_only(text, true, ""),
        _ => ParsedOutput::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::tests::{assert_streams_like_whole, whole};
    use super::super::ToolOutputFormat;

    const F: ToolOutputFormat = ToolOutputFormat::Required;

    #[test]
    fn arrays_of_calls() {
        let text = "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 3}}, {\"name\":\"get_time\",\"parameters\":{}}]";
        let got = whole(&F, text);
        assert_eq!(got.content, None);
        assert_eq!(
            got.calls,
            [
                ["get_weather", r#"{"city": "Paris", "days": 3}"#],
                ["get_time", "{}"]
            ]
        );
        assert_streams_like_whole(&F, text);
        let cut = "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Par";
        assert_eq!(whole(&F, cut).content.as_deref(), Some(cut));
        assert_eq!(whole(&F, "[]").content.as_deref(), Some("[]"));
    }
}
