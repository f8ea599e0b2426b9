//! A choice's tool calls as OpenAI streams them: content deltas, then per
//! call a first delta with its index, id, type and name (and whatever
//! arguments are known), then argument fragments.
//!
//! Each step re-reads the whole text so far (tool-call outputs are short)
//! and sends what grew since the last step; the formats report only what
//! can no longer change, so the sent pieces add up to the non-streaming
//! answer. A call that turns out malformed after its first delta went out
//! cannot be taken back: the stream keeps it (vLLM's streams do the same).

use super::{ParsedOutput, ToolOutputFormat};

/// One piece of a streamed choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamDelta {
    Content(String),
    /// A call's first delta.
    CallStart {
        index: usize,
        id: String,
        name: String,
        arguments: String,
    },
    /// More of call `index`'s arguments.
    CallArguments {
        index: usize,
        arguments: String,
    },
}

/// The streaming state of one choice.
#[derive(Debug, Clone)]
pub struct ToolCallStreamer {
    format: ToolOutputFormat,
    /// At most this many calls are sent (`parallel_tool_calls: false`: 1).
    max_calls: usize,
    text: String,
    sent_content: usize,
    /// Per sent call: how many bytes of its arguments went out.
    sent_args: Vec<usize>,
}

impl ToolCallStreamer {
    pub fn new(format: ToolOutputFormat, max_calls: usize) -> Self {
        Self {
            format,
            max_calls,
            text: String::new(),
            sent_content: 0,
            sent_args: Vec::new(),
        }
    }

    /// Whether a call went out (the choice finishes with `tool_calls`).
    pub fn sent_calls(&self) -> bool {
        !self.sent_args.is_empty()
    }

    /// Adds the next text; `done`: the output is complete.
    pub fn push(&mut self, text: &str, done: bool) -> Vec<StreamDelta> {
        self.text.push_str(text);
        let ParsedOutput { content_end, calls } = self.format.parse(&self.text, done);
        let mut out = Vec::new();
        // Once a call went out, text that a failed parse turns into content
        // is not sent: the stream already said this is a call.
        if content_end > self.sent_content && (!calls.is_empty() || !self.sent_calls()) {
            out.push(StreamDelta::Content(
                self.text[self.sent_content..content_end].to_string(),
            ));
            self.sent_content = content_end;
        }
        for (index, call) in calls.into_iter().enumerate().take(self.max_calls) {
            match self.sent_args.get_mut(index) {
                None => {
                    let Some(name) = call.name else { break };
                    self.sent_args.push(call.arguments.len());
                    out.push(StreamDelta::CallStart {
                        index,
                        id: self.format.new_call_id(),
                        name,
                        arguments: call.arguments,
                    });
                }
                Some(sent) => {
                    let more = call.arguments.get(*sent..).unwrap_or_default();
                    if !more.is_empty() && call.arguments.is_char_boundary(*sent) {
                        out.push(StreamDelta::CallArguments {
                            index,
                            arguments: more.to_string(),
                        });
                        *sent = call.arguments.len();
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::extract;
    use super::*;

    /// A complete output read at once: content and `[name, arguments]`s.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Whole {
        pub content: Option<String>,
        pub calls: Vec<[String; 2]>,
    }

    pub fn whole(format: &ToolOutputFormat, text: &str) -> Whole {
        let e = extract(format, text);
        Whole {
            content: e.content,
            calls: e.calls.into_iter().map(|c| [c.name, c.arguments]).collect(),
        }
    }

    /// The deltas of `chunks` put back together as a client does.
    pub fn reassemble(format: &ToolOutputFormat, chunks: &[&str]) -> Whole {
        let mut s = ToolCallStreamer::new(format.clone(), usize::MAX);
        let mut content: Option<String> = None;
        let mut calls: Vec<[String; 2]> = Vec::new();
        let mut ids = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            for d in s.push(chunk, i + 1 == chunks.len()) {
                match d {
                    StreamDelta::Content(t) => content.get_or_insert_default().push_str(&t),
                    StreamDelta::CallStart {
                        index,
                        id,
                        name,
                        arguments,
                    } => {
                        assert_eq!(index, calls.len(), "calls start in order");
                        ids.push(id);
                        calls.push([name, arguments]);
                    }
                    StreamDelta::CallArguments { index, arguments } => {
                        calls[index][1].push_str(&arguments)
                    }
                }
            }
        }
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "ids are unique");
        if content.is_none() && calls.is_empty() {
            content = Some(String::new());
        }
        Whole { content, calls }
    }

    /// `text` split into chunks of `size` characters (a token is a few).
    pub fn chunks(text: &str, size: usize) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        for k in (size..bounds.len()).step_by(size) {
            out.push(&text[start..bounds[k]]);
            start = bounds[k];
        }
        out.push(&text[start..]);
        out
    }

    /// Streamed in chunks of 1..=7 characters, or at once, the deltas add
    /// up to the non-streaming answer.
    pub fn assert_streams_like_whole(format: &ToolOutputFormat, text: &str) {
        let want = whole(format, text);
        for size in 1..=7 {
            let got = reassemble(format, &chunks(text, size));
            assert_eq!(got, want, "chunks of {size} of {text:?}");
        }
        assert_eq!(reassemble(format, &[text]), want);
    }

    #[test]
    fn chunks_cover_the_text() {
        assert_eq!(chunks("abcdé", 2), vec!["ab", "cd", "é"]);
        assert_eq!(chunks("", 3), vec![""]);
        assert_eq!(chunks("ab", 5), vec!["ab"]);
    }

    #[test]
    fn first_delta_has_the_name_then_fragments() {
        let f = ToolOutputFormat::Named("lookup".into());
        let mut s = ToolCallStreamer::new(f, 1);
        let first = s.push("{\"q\": ", false);
        let [StreamDelta::CallStart {
            index: 0,
            id,
            name,
            arguments,
        }] = &first[..]
        else {
            panic!("{first:?}");
        };
        assert!(id.starts_with("chatcmpl-tool-"), "{id}");
        assert_eq!((name.as_str(), arguments.as_str()), ("lookup", "{\"q\":"));
        assert!(s.sent_calls());
        assert_eq!(
            s.push("\"x\"}", true),
            vec![StreamDelta::CallArguments {
                index: 0,
                arguments: " \"x\"}".into()
            }]
        );
    }

    #[test]
    fn parallel_calls_off_sends_the_first_only() {
        let f = ToolOutputFormat::Required;
        let text = r#"[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {}}]"#;
        let mut s = ToolCallStreamer::new(f, 1);
        let deltas = s.push(text, true);
        assert_eq!(deltas.len(), 1, "{deltas:?}");
    }
}
