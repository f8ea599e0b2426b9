//! Server-sent events from a byte stream, as vLLM's `StreamedResponseHandler`
//! reads them: bytes may split anywhere (even inside a UTF-8 character), a
//! blank line ends an event, and a trailing `data: ...` whose JSON is already
//! complete is handed out at once rather than waiting for its blank line, so
//! a token's arrival time is taken when its bytes arrive.

/// Accumulates chunks and returns the complete messages (`data: ...` lines).
#[derive(Debug, Default)]
pub struct StreamedResponseHandler {
    buffer: String,
    /// Bytes of a UTF-8 character cut by a chunk boundary.
    pending: Vec<u8>,
}

impl StreamedResponseHandler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk of bytes and returns the messages it completed, trimmed.
    pub fn add_chunk(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        self.decode_pending();
        if self.buffer.contains('\r') {
            self.buffer = self.buffer.replace("\r\n", "\n");
        }
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let message = self.buffer[..end].trim().to_string();
            self.buffer.drain(..end + 2);
            if !message.is_empty() {
                messages.push(message);
            }
        }
        if let Some(payload) = data_payload(&self.buffer) {
            let payload = payload.trim();
            let complete = payload == "[DONE]"
                || (!payload.is_empty()
                    && serde_json::from_str::<serde_json::Value>(payload).is_ok());
            if complete {
                messages.push(self.buffer.trim().to_string());
                self.buffer.clear();
            }
        }
        messages
    }

    /// Moves the longest valid UTF-8 prefix of `pending` into `buffer`;
    /// invalid bytes become U+FFFD, an incomplete tail waits for more bytes.
    fn decode_pending(&mut self) {
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.buffer.push_str(s);
                    self.pending.clear();
                    return;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: from_utf8 vouched for these bytes.
                    self.buffer
                        .push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            self.buffer.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The payload of a `data:` message (`data: x` or `data:x`), if it is one.
pub fn data_payload(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("data:")?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_on_blank_lines() {
        let mut h = StreamedResponseHandler::new();
        let got = h.add_chunk(b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n");
        assert_eq!(
            got,
            vec!["data: {\"a\":1}", "data: {\"a\":2}", "data: [DONE]"]
        );
    }

    #[test]
    fn waits_for_incomplete_json_and_emits_complete_tail_early() {
        let mut h = StreamedResponseHandler::new();
        assert!(h.add_chunk(b"data: {\"text\": \"hel").is_empty());
        // Complete JSON without its blank line yet: handed out now.
        assert_eq!(h.add_chunk(b"lo\"}"), vec!["data: {\"text\": \"hello\"}"]);
        // The blank line that follows yields nothing more.
        assert!(h.add_chunk(b"\n\n").is_empty());
        assert_eq!(h.add_chunk(b"data: [DONE]"), vec!["data: [DONE]"]);
    }

    #[test]
    fn utf8_cut_across_chunks_is_kept_whole() {
        let bytes = "data: {\"text\":\"é😀\"}\n\n".as_bytes();
        let mut h = StreamedResponseHandler::new();
        let mut got = Vec::new();
        for b in bytes {
            got.extend(h.add_chunk(std::slice::from_ref(b)));
        }
        assert_eq!(got, vec!["data: {\"text\":\"é😀\"}"]);
    }

    #[test]
    fn crlf_comments_and_invalid_bytes() {
        let mut h = StreamedResponseHandler::new();
        let got = h.add_chunk(b": ping\r\n\r\ndata:{\"x\":\"\xff\"}\r\n\r\n");
        assert_eq!(
            got,
            vec![
                ": ping".to_string(),
                "data:{\"x\":\"\u{FFFD}\"}".to_string()
            ]
        );
        assert_eq!(data_payload("data:{}"), Some("{}"));
        assert_eq!(data_payload("event: x"), None);
    }
}
