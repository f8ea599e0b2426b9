//! A chat request's tool calling, decided once from `tools`,
//! `tool_choice` and `parallel_tool_calls` with vLLM's rules:
//!
//! - no `tool_choice`: `"auto"` when `tools` is non-empty, else `"none"`;
//! - `"none"`: tools are still rendered into the prompt (vLLM's
//!   `exclude_tools_when_tool_choice_none` is off by default), the output
//!   is plain content;
//! - `"auto"` needs `--enable-auto-tool-choice` and `--tool-call-parser`
//!   (else a 400 saying so); the parser reads the output;
//! - `"required"` and a named function need no flags: llguidance constrains
//!   the output to vLLM's JSON for them (a non-empty array of
//!   `{"name", "parameters"}` for required, the function's parameters
//!   schema for a named one), so the arguments always parse and validate;
//!   `"required"` with no tools behaves as `"none"`, as in vLLM.
//!
//! Finish reasons as vLLM's: `tool_calls` when calls were made, except for
//! a named function (`stop`, as OpenAI answers it); a choice cut by
//! `max_tokens` stays `length`.

use pagoda_engine::{SamplingParams, StructuredOutputsParams};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::protocol::tools::{
    ChatTool, DeltaFunctionCall, DeltaToolCall, FunctionCall, FunctionType, ToolCall, ToolChoice,
};
use crate::tool_parsers::stream::{StreamDelta, ToolCallStreamer};
use crate::tool_parsers::{extract, ToolOutputFormat, ToolParserKind};

/// What the request's tools mean for its prompt, its constraint and its output.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCalling {
    /// The chat template's `tools` (None: the variable stays none).
    pub tools: Option<Vec<ChatTool>>,
    /// How choices are read for calls; None: plain content.
    pub output: Option<ToolOutput>,
    /// The grammar of `required` / a named function.
    constraint: Option<Value>,
    /// The parser needs special tokens kept in the text.
    keep_special_tokens: bool,
}

/// How each choice's text becomes content and calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub format: ToolOutputFormat,
    /// `parallel_tool_calls: false` keeps the first call only (vLLM's
    /// `maybe_filter_parallel_tool_calls`).
    pub max_calls: usize,
}

/// vLLM's message for `"auto"` without the flags.
pub const AUTO_NEEDS_FLAGS: &str =
    "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set";

impl ToolCalling {
    /// `auto_parser`: the server's `--tool-call-parser` when
    /// `--enable-auto-tool-choice` is on.
    pub fn resolve(
        tools: Option<Vec<ChatTool>>,
        tool_choice: Option<ToolChoice>,
        parallel_tool_calls: Option<bool>,
        auto_parser: Option<ToolParserKind>,
    ) -> Result<Self, ApiError> {
        let has_tools = tools.as_ref().is_some_and(|t| !t.is_empty());
        let choice = tool_choice.unwrap_or(if has_tools {
            ToolChoice::Auto
        } else {
            ToolChoice::None
        });
        let max_calls = if parallel_tool_calls.unwrap_or(true) {
            usize::MAX
        } else {
            1
        };
        let mut resolved = Self {
            tools,
            output: None,
            constraint: None,
            keep_special_tokens: false,
        };
        if choice == ToolChoice::None {
            return Ok(resolved);
        }
        let Some(tools) = resolved.tools.as_deref() else {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "When using `tool_choice`, `tools` must be set.",
            ));
        };
        let format = match choice {
            ToolChoice::None => unreachable!("handled above"),
            ToolChoice::Required if !has_tools => {
                resolved.tools = None;
                return Ok(resolved);
            }
            ToolChoice::Required => {
                resolved.constraint = Some(required_schema(tools, max_calls)?);
                ToolOutputFormat::Required
            }
            ToolChoice::Function(name) => {
                let tool = tools
                    .iter()
                    .find(|t| t.function.name == name)
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "tool_choice",
                            format!(
                                "The tool specified in `tool_choice` ({name}) does not match any \
                             of the specified `tools`."
                            ),
                        )
                    })?;
                resolved.constraint = Some(parameters_schema(tool));
                ToolOutputFormat::Named(name)
            }
            ToolChoice::Auto => {
                let parser = auto_parser
                    .ok_or_else(|| ApiError::invalid_param("tool_choice", AUTO_NEEDS_FLAGS))?;
                if !has_tools {
                    return Ok(resolved);
                }
                resolved.keep_special_tokens = parser.keeps_special_tokens();
                ToolOutputFormat::Parser(parser)
            }
        };
        resolved.output = Some(ToolOutput { format, max_calls });
        Ok(resolved)
    }

    /// Puts the tools' constraint and detokenizer needs into `params`; a
    /// request that also constrains its output otherwise is a 400 (vLLM
    /// lets the tool schema win silently).
    pub fn apply(&self, params: &mut SamplingParams) -> Result<(), ApiError> {
        if let Some(schema) = &self.constraint {
            if params.structured_outputs.is_some() {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    "You can only either use constraints for structured outputs or tools, \
                     not both.",
                ));
            }
            params.structured_outputs = Some(StructuredOutputsParams::Json(schema.clone()));
        }
        if self.keep_special_tokens {
            params.skip_special_tokens = false;
        }
        Ok(())
    }

    /// Whether the constraint comes from the tools (a compile error names `tools`).
    pub fn constrains(&self) -> bool {
        self.constraint.is_some()
    }
}

/// A function's arguments schema; none means an empty object, as vLLM
/// makes it.
fn parameters_schema(tool: &ChatTool) -> Value {
    match &tool.function.parameters {
        Some(p) if !p.is_empty() => Value::Object(p.clone()),
        _ => json!({"type": "object", "properties": {}}),
    }
}

/// vLLM's schema for `"required"`: a non-empty array whose items are one
/// of the tools' `{"name": <const>, "parameters": <its schema>}`, the
/// tools' `$defs` lifted to the root (their `$ref`s point there), and no
/// other keys in a call object.
/// `max_calls` 1 (`parallel_tool_calls: false`) also caps the array.
fn required_schema(tools: &[ChatTool], max_calls: usize) -> Result<Value, ApiError> {
    let mut defs = Map::new();
    let mut any_of = Vec::with_capacity(tools.len());
    for tool in tools {
        let mut parameters = parameters_schema(tool);
        if let Some(Value::Object(tool_defs)) =
            parameters.as_object_mut().and_then(|p| p.remove("$defs"))
        {
            for (name, schema) in tool_defs {
                match defs.get(&name) {
                    Some(known) if *known != schema => {
                        return Err(ApiError::invalid_param(
                            "tools",
                            format!(
                                "Tool definition '{name}' has multiple schemas, which is not \
                                 supported."
                            ),
                        ))
                    }
                    _ => {
                        defs.insert(name, schema);
                    }
                }
            }
        }
        any_of.push(json!({
            "properties": {
                "name": {"type": "string", "enum": [tool.function.name]},
                "parameters": parameters,
            },
            "required": ["name", "parameters"],
            // Only these two keys: vLLM's default grammar backend (xgrammar,
            // strict mode) reads a missing `additionalProperties` as false,
            // llguidance as JSON Schema does (true), which let a model append
            // keys after `parameters` until max_tokens.
            "additionalProperties": false,
        }));
    }
    let mut schema = json!({
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": any_of},
    });
    if max_calls == 1 {
        schema["maxItems"] = json!(1);
    }
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    Ok(schema)
}

/// A non-streaming choice's message parts.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceMessage {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<&'static str>,
}

impl ToolOutput {
    /// Reads a finished choice's text.
    pub fn message(&self, text: &str, finish_reason: Option<&'static str>) -> ChoiceMessage {
        let extracted = extract(&self.format, text);
        let tool_calls: Vec<ToolCall> = extracted
            .calls
            .into_iter()
            .take(self.max_calls)
            .map(|c| ToolCall {
                id: self.format.new_call_id(),
                kind: FunctionType::Function,
                function: FunctionCall {
                    name: c.name,
                    arguments: c.arguments,
                },
            })
            .collect();
        ChoiceMessage {
            content: extracted.content,
            finish_reason: self.finish_reason(!tool_calls.is_empty(), finish_reason),
            tool_calls,
        }
    }

    /// A streamer for one choice.
    pub fn streamer(&self) -> ToolCallStreamer {
        ToolCallStreamer::new(self.format.clone(), self.max_calls)
    }

    /// The engine's finish reason, made `tool_calls` when calls were made
    /// (not for a named function, not for a choice cut by `length`).
    pub fn finish_reason(
        &self,
        called: bool,
        engine: Option<&'static str>,
    ) -> Option<&'static str> {
        let named = matches!(self.format, ToolOutputFormat::Named(_));
        match engine {
            Some("length") | None => engine,
            Some(_) if called && !named => Some("tool_calls"),
            other => other,
        }
    }
}

/// A stream piece as a chat delta's `content` or `tool_calls`.
pub fn delta_parts(delta: StreamDelta) -> (Option<String>, Option<Vec<DeltaToolCall>>) {
    match delta {
        StreamDelta::Content(text) => (Some(text), None),
        StreamDelta::CallStart {
            index,
            id,
            name,
            arguments,
        } => (
            None,
            Some(vec![DeltaToolCall {
                index,
                id: Some(id),
                kind: Some(FunctionType::Function),
                function: DeltaFunctionCall {
                    name: Some(name),
                    arguments,
                },
            }]),
        ),
        StreamDelta::CallArguments { index, arguments } => (
            None,
            Some(vec![DeltaToolCall {
                index,
                id: None,
                kind: None,
                function: DeltaFunctionCall {
                    name: None,
                    arguments,
                },
            }]),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Option<Vec<ChatTool>> {
        serde_json::from_value(json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"$ref": "#/$defs/City"}},
                "required": ["city"], "$defs": {"City": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time"}}
        ]))
        .unwrap()
    }

    fn resolve(
        tools: Option<Vec<ChatTool>>,
        choice: Option<ToolChoice>,
        parser: Option<ToolParserKind>,
    ) -> Result<ToolCalling, ApiError> {
        ToolCalling::resolve(tools, choice, None, parser)
    }

    #[test]
    fn auto_needs_the_flags_and_is_the_default_with_tools() {
        let e = resolve(tools(), None, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        assert_eq!(e.message, AUTO_NEEDS_FLAGS);
        let t = resolve(tools(), None, Some(ToolParserKind::Hermes)).unwrap();
        assert_eq!(
            t.output.unwrap().format,
            ToolOutputFormat::Parser(ToolParserKind::Hermes)
        );
        assert!(t.constraint.is_none() && t.keep_special_tokens);
        // No tools: nothing to do.
        let t = resolve(None, None, None).unwrap();
        assert!(t.output.is_none() && t.tools.is_none());
        let t = resolve(Some(vec![]), None, None).unwrap();
        assert!(t.output.is_none());
    }

    #[test]
    fn none_renders_tools_and_parses_nothing() {
        let t = resolve(tools(), Some(ToolChoice::None), None).unwrap();
        assert_eq!(t.tools.as_ref().map(Vec::len), Some(2));
        assert!(t.output.is_none() && !t.constrains());
    }

    #[test]
    fn named_and_required_are_constrained_without_flags() {
        let t = resolve(tools(), Some(ToolChoice::Function("get_time".into())), None).unwrap();
        assert_eq!(
            t.constraint,
            Some(json!({"type": "object", "properties": {}}))
        );
        let e = resolve(tools(), Some(ToolChoice::Function("nope".into())), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        assert!(e.message.contains("nope"));
        let t = resolve(tools(), Some(ToolChoice::Required), None).unwrap();
        let schema = t.constraint.clone().unwrap();
        assert_eq!(schema["minItems"], 1);
        assert_eq!(schema["$defs"], json!({"City": {"type": "string"}}));
        let any_of = schema["items"]["anyOf"].as_array().unwrap();
        assert_eq!(
            any_of[0]["properties"]["name"],
            json!({"type": "string", "enum": ["get_weather"]})
        );
        assert!(any_of[0]["properties"]["parameters"].get("$defs").is_none());
        assert_eq!(any_of[0]["additionalProperties"], false);
        assert!(schema.get("maxItems").is_none());
        // The template still gets the tools as sent.
        assert!(t.tools.unwrap()[0].function.parameters.as_ref().unwrap()["$defs"].is_object());
        let one =
            ToolCalling::resolve(tools(), Some(ToolChoice::Required), Some(false), None).unwrap();
        assert_eq!(one.constraint.unwrap()["maxItems"], 1);
        // Required without tools is none; a choice without tools is a 400.
        let t = resolve(Some(vec![]), Some(ToolChoice::Required), None).unwrap();
        assert!(t.output.is_none() && t.tools.is_none());
        let e = resolve(None, Some(ToolChoice::Required), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn a_tool_constraint_and_another_constraint_conflict() {
        let t = resolve(tools(), Some(ToolChoice::Required), None).unwrap();
        let mut p = SamplingParams::default();
        t.apply(&mut p).unwrap();
        assert!(matches!(
            p.structured_outputs,
            Some(StructuredOutputsParams::Json(_))
        ));
        let e = t.apply(&mut p).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let auto = resolve(tools(), None, Some(ToolParserKind::Mistral)).unwrap();
        let mut p = SamplingParams::default();
        auto.apply(&mut p).unwrap();
        assert!(!p.skip_special_tokens && p.structured_outputs.is_none());
    }

    #[test]
    fn messages_and_finish_reasons() {
        let required = ToolOutput {
            format: ToolOutputFormat::Required,
            max_calls: usize::MAX,
        };
        let m = required.message(
            r#"[{"name": "get_time", "parameters": {}}, {"name": "get_time", "parameters": {}}]"#,
            Some("stop"),
        );
        assert_eq!(m.content, None);
        assert_eq!(m.tool_calls.len(), 2);
        assert_ne!(m.tool_calls[0].id, m.tool_calls[1].id);
        assert_eq!(m.finish_reason, Some("tool_calls"));
        let cut = required.message(r#"[{"name": "get_ti"#, Some("length"));
        assert_eq!(cut.content.as_deref(), Some(r#"[{"name": "get_ti"#));
        assert_eq!(cut.finish_reason, Some("length"));
        let one = ToolOutput {
            max_calls: 1,
            ..required
        };
        let m = one.message(
            r#"[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {}}]"#,
            Some("stop"),
        );
        assert_eq!(m.tool_calls.len(), 1);
        let named = ToolOutput {
            format: ToolOutputFormat::Named("f".into()),
            max_calls: usize::MAX,
        };
        let m = named.message("{}", Some("stop"));
        assert_eq!(m.finish_reason, Some("stop"));
        assert_eq!(m.tool_calls[0].function.arguments, "{}");
        let auto = ToolOutput {
            format: ToolOutputFormat::Parser(ToolParserKind::Hermes),
            max_calls: usize::MAX,
        };
        let m = auto.message("Just text.", Some("stop"));
        assert_eq!(
            (m.content.as_deref(), m.finish_reason),
            (Some("Just text."), Some("stop"))
        );
    }
}
