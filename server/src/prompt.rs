//! From API prompts to token ids: tokenization, chat-template rendering and
//! the checks that the prompt fits the context window.
//!
//! These run on a blocking thread (a long prompt takes a while to
//! tokenize), so they take the state by reference and return owned data.

use pagoda_engine::tokenizer::{continue_final_message, Tokenizer};
use pagoda_engine::{error_chain, validate_prompt, EngineError};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::protocol::common::{ChatMessage, PromptInput};
use crate::protocol::tools::ChatTool;
use crate::state::AppState;

fn tokenizer(state: &AppState) -> Result<&Tokenizer, ApiError> {
    state.engine.tokenizer().ok_or_else(|| {
        ApiError::bad_request(
            "This model has no tokenizer; send the prompt as token ids (a list of integers).",
        )
    })
}

/// Text to token ids.
pub fn encode(
    state: &AppState,
    text: &str,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    tokenizer(state)?
        .encode(text, add_special_tokens)
        .map_err(|e| {
            ApiError::bad_request(format!("Cannot tokenize the prompt: {}", error_chain(&e)))
        })
}

/// Token ids to text.
pub fn decode(
    state: &AppState,
    ids: &[u32],
    skip_special_tokens: bool,
) -> Result<String, ApiError> {
    check_token_ids(ids, state.vocab_size, "tokens")?;
    tokenizer(state)?
        .decode(ids, skip_special_tokens)
        .map_err(|e| ApiError::bad_request(format!("Cannot detokenize: {}", error_chain(&e))))
}

/// The text of one token, for logprobs (special tokens included).
pub fn token_text(state: &AppState, id: u32) -> String {
    state
        .engine
        .tokenizer()
        .and_then(|t| t.decode(&[id], false).ok())
        .unwrap_or_else(|| format!("token_id:{id}"))
}

/// A prompt's token ids, and its text when `echo` needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPrompt {
    pub token_ids: Vec<u32>,
    pub text: Option<String>,
}

/// Tokenizes one completions prompt (`keep_text`: also return its text).
pub fn prepare_completion_prompt(
    state: &AppState,
    input: PromptInput,
    add_special_tokens: bool,
    keep_text: bool,
) -> Result<PreparedPrompt, ApiError> {
    match input {
        PromptInput::Text(text) => {
            let token_ids = encode(state, &text, add_special_tokens)?;
            Ok(PreparedPrompt {
                token_ids,
                text: keep_text.then_some(text),
            })
        }
        PromptInput::TokenIds(ids) => {
            check_token_ids(&ids, state.vocab_size, "prompt")?;
            let text = if keep_text {
                Some(decode(state, &ids, false)?)
            } else {
                None
            };
            Ok(PreparedPrompt {
                token_ids: ids,
                text,
            })
        }
    }
}

/// How a chat ends: a new assistant turn opened (`add_generation_prompt`),
/// or the final message left open for the model to continue
/// (`continue_final_message`, HF's and vLLM's), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatPromptOptions {
    pub add_generation_prompt: bool,
    pub continue_final_message: bool,
}

impl ChatPromptOptions {
    /// `add_generation_prompt` defaults to true, except with
    /// `continue_final_message`, where an open assistant header would be
    /// wrong (vLLM's default would make such a request fail; a client that
    /// asks to continue means the other off). Both set true is a 400, as
    /// vLLM's `check_generation_prompt` answers.
    pub fn resolve(
        add_generation_prompt: Option<bool>,
        continue_final_message: Option<bool>,
    ) -> Result<Self, ApiError> {
        let continue_final_message = continue_final_message.unwrap_or(false);
        if continue_final_message && add_generation_prompt == Some(true) {
            return Err(ApiError::invalid_param(
                "continue_final_message",
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
            ));
        }
        Ok(Self {
            add_generation_prompt: add_generation_prompt.unwrap_or(!continue_final_message),
            continue_final_message,
        })
    }
}

/// Renders `messages` with the model's chat template; `tools` become its
/// `tools` variable, as HF's `apply_chat_template(tools=...)` passes them
/// (a template that does not mention tools ignores them, as under vLLM).
pub fn render_chat(
    state: &AppState,
    messages: &[ChatMessage],
    tools: Option<&[ChatTool]>,
    opts: ChatPromptOptions,
) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty.",
        ));
    }
    let template = state.engine.chat_template().ok_or_else(|| {
        ApiError::bad_request(
            "This model has no chat template; use /v1/completions with a prompt instead.",
        )
    })?;
    let values = messages
        .iter()
        .map(message_value)
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let template_error =
        |e| ApiError::invalid_param("messages", format!("Cannot apply the chat template: {e}"));
    let extra = tools.map(|tools| json!({ "tools": tools }));
    let text = template
        .render(&values, opts.add_generation_prompt, extra.as_ref())
        .map_err(template_error)?;
    if !opts.continue_final_message {
        return Ok(text);
    }
    let last = messages.last().and_then(|m| m.content.as_deref());
    continue_final_message(&text, last.unwrap_or_default()).map_err(template_error)
}

/// Renders and tokenizes a chat (the template adds BOS itself).
pub fn prepare_chat_prompt(
    state: &AppState,
    messages: &[ChatMessage],
    tools: Option<&[ChatTool]>,
    opts: ChatPromptOptions,
) -> Result<Vec<u32>, ApiError> {
    let text = render_chat(state, messages, tools, opts)?;
    encode(state, &text, false)
}

/// A message as the template sees it: absent content becomes "", the
/// calls of an assistant message carry their arguments as a mapping (what
/// tool-use templates expect; vLLM parses them the same way), a tool
/// message keeps the id of the call it answers.
fn message_value(m: &ChatMessage) -> Result<Value, ApiError> {
    let mut v = json!({"role": m.role, "content": m.content.clone().unwrap_or_default()});
    if let Some(name) = &m.name {
        v["name"] = Value::String(name.clone());
    }
    if let Some(calls) = &m.tool_calls {
        let calls = calls
            .iter()
            .map(|c| c.template_value())
            .collect::<Result<Vec<Value>, String>>()
            .map_err(|e| ApiError::invalid_param("messages", format!("Invalid tool call: {e}.")))?;
        v["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = Value::String(id.clone());
    }
    Ok(v)
}

/// Every id must be inside the vocabulary (the engine's rule and message,
/// under the request's own field name).
pub fn check_token_ids(ids: &[u32], vocab_size: usize, param: &str) -> Result<(), ApiError> {
    match ids.iter().find(|&&id| id as usize >= vocab_size) {
        Some(&token_id) => Err(ApiError::from(EngineError::TokenOutOfVocab {
            token_id,
            vocab_size,
        })
        .with_param(param)),
        None => Ok(()),
    }
}

/// The request fields a prompt check names in its errors: chat sends
/// `messages`, not `prompt`, and may cap with `max_completion_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptFields {
    pub prompt: &'static str,
    pub max_tokens: &'static str,
}

/// The prompt must be one the engine takes (its rules and messages:
/// [`validate_prompt`]) and leave room for `max_tokens` in `max_model_len`.
/// The second rule is the server's, as in vLLM's serving layer: the engine
/// lets a request without `max_tokens` run to the context limit, and only
/// the server knows which field the client capped the completion with.
pub fn check_prompt_fits(
    prompt: &[u32],
    max_tokens: Option<usize>,
    vocab_size: usize,
    max_model_len: usize,
    fields: PromptFields,
) -> Result<(), ApiError> {
    validate_prompt(prompt, vocab_size, max_model_len)
        .map_err(|e| ApiError::from(e).with_param(fields.prompt))?;
    let prompt_len = prompt.len();
    match max_tokens {
        Some(max_tokens) if prompt_len + max_tokens > max_model_len => {
            Err(ApiError::context_length(
                format!(
                    "This model's maximum context length is {max_model_len} tokens. However, you \
                     requested {} tokens ({prompt_len} in the prompt, {max_tokens} for the \
                     completion). Please reduce the length of the prompt or {}.",
                    prompt_len + max_tokens,
                    fields.max_tokens
                ),
                fields.max_tokens,
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: PromptFields = PromptFields {
        prompt: "prompt",
        max_tokens: "max_tokens",
    };

    #[test]
    fn prompt_that_fits_passes() {
        assert!(check_prompt_fits(&[1; 10], Some(5), 100, 16, FIELDS).is_ok());
        assert!(check_prompt_fits(&[1; 10], Some(6), 100, 16, FIELDS).is_ok());
        assert!(check_prompt_fits(&[1; 15], None, 100, 16, FIELDS).is_ok());
    }

    #[test]
    fn too_long_prompt_names_both_lengths() {
        let e = check_prompt_fits(&[1; 20], None, 100, 16, FIELDS).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(
            e.message.contains("16") && e.message.contains("20"),
            "{}",
            e.message
        );
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let chat = PromptFields {
            prompt: "messages",
            ..FIELDS
        };
        let e = check_prompt_fits(&[1; 16], None, 100, 16, chat).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        // The engine's rule and message, not a copy.
        let engine = EngineError::PromptTooLong {
            prompt_len: 16,
            max_model_len: 16,
        };
        assert_eq!(e.message, engine.to_string());
    }

    #[test]
    fn prompt_plus_max_tokens_over_the_context_is_refused() {
        let e = check_prompt_fits(&[1; 10], Some(7), 100, 16, FIELDS).unwrap_err();
        assert!(
            e.message
                .contains("17 tokens (10 in the prompt, 7 for the completion)"),
            "{}",
            e.message
        );
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn empty_prompt_and_foreign_ids_are_refused() {
        let e = check_prompt_fits(&[], Some(1), 100, 16, FIELDS).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.message, EngineError::EmptyPrompt.to_string());
        assert_eq!(e.param.as_deref(), Some("prompt"));
        let e = check_prompt_fits(&[1, 100], None, 100, 16, FIELDS).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert!(check_token_ids(&[0, 99], 100, "tokens").is_ok());
        let e = check_token_ids(&[0, 100], 100, "tokens").unwrap_err();
        assert!(e.message.contains("100"));
        assert_eq!(e.param.as_deref(), Some("tokens"));
    }

    #[test]
    fn message_value_fills_absent_content() {
        let m = ChatMessage {
            role: "assistant".into(),
            content: None,
            name: Some("bot".into()),
            ..Default::default()
        };
        assert_eq!(
            message_value(&m).unwrap(),
            json!({"role": "assistant", "content": "", "name": "bot"})
        );
    }

    #[test]
    fn message_value_carries_tool_calls_and_ids() {
        let m: ChatMessage = serde_json::from_value(json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}))
        .unwrap();
        assert_eq!(
            message_value(&m).unwrap(),
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather",
                "arguments": {"city": "Paris"}}}]})
        );
        let m: ChatMessage = serde_json::from_value(
            json!({"role": "tool", "content": "21 C", "tool_call_id": "call_1"}),
        )
        .unwrap();
        assert_eq!(
            message_value(&m).unwrap(),
            json!({"role": "tool", "content": "21 C", "tool_call_id": "call_1"})
        );
        let bad: ChatMessage = serde_json::from_value(json!({"role": "assistant",
            "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}))
        .unwrap();
        assert_eq!(
            message_value(&bad).unwrap_err().param.as_deref(),
            Some("messages")
        );
    }
}
