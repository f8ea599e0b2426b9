//! What a request constrains its output to: vLLM's `StructuredOutputsParams`
//! as one typed choice (vLLM allows exactly one of its fields). The server
//! maps `response_format`, `structured_outputs` and the older `guided_*`
//! fields onto it; the engine compiles it once, at validation.

use super::structural_tag::StructuralTag;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum StructuredOutputsParams {
    /// Output is JSON valid under this JSON schema.
    Json(Value),
    /// Output is any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// Output matches this regular expression (Rust `regex` syntax, as llguidance reads it).
    Regex(String),
    /// Output is exactly one of these strings.
    Choice(Vec<String>),
    /// Output is in the language of this Lark grammar (llguidance's Lark dialect).
    Grammar(String),
    /// Free text with tagged structures (vLLM's `structural_tag`).
    StructuralTag(StructuralTag),
}

impl StructuredOutputsParams {
    /// The kind, as vLLM names the field (`json`, `regex`, ...): the first
    /// half of the grammar cache key and the word error messages use.
    pub fn kind(&self) -> &'static str {
        match self {
            StructuredOutputsParams::Json(_) => "json",
            StructuredOutputsParams::JsonObject => "json_object",
            StructuredOutputsParams::Regex(_) => "regex",
            StructuredOutputsParams::Choice(_) => "choice",
            StructuredOutputsParams::Grammar(_) => "grammar",
            StructuredOutputsParams::StructuralTag(_) => "structural_tag",
        }
    }

    /// The constraint's text: the second half of the cache key (a schema in
    /// its compact serialization, so equal schemas share an entry).
    pub fn text(&self) -> String {
        match self {
            StructuredOutputsParams::Json(v) => v.to_string(),
            StructuredOutputsParams::JsonObject => String::new(),
            StructuredOutputsParams::Regex(s) | StructuredOutputsParams::Grammar(s) => s.clone(),
            StructuredOutputsParams::Choice(c) => Value::from(c.clone()).to_string(),
            StructuredOutputsParams::StructuralTag(t) => {
                serde_json::to_string(t).unwrap_or_default()
            }
        }
    }
}
