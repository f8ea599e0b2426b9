//! OpenAI's tool-calling shapes: the request's `tools` and `tool_choice`,
//! the calls in an assistant message of the history, and the calls in a
//! response and its stream deltas.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One entry of `tools`. Only `function` tools exist in the chat API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ChatTool {
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionDefinition,
}

/// The `type` of a tool or a call: `"function"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionType {
    Function,
}

/// A function the model may call. Rendered to the chat template as vLLM
/// renders its pydantic model: `description` and `parameters` present
/// (null when not given), `strict` only when given.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FunctionDefinition {
    #[serde(deserialize_with = "non_empty_name")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON schema of the arguments object.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

fn non_empty_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name.is_empty() {
        return Err(de::Error::custom("a function name must not be empty"));
    }
    Ok(name)
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"` or
/// `{"type": "function", "function": {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

const TOOL_CHOICE_FORMS: &str =
    "Only named tools, \"none\", \"auto\" or \"required\" are supported; \
     a named tool is `{\"type\": \"function\", \"function\": {\"name\": \"my_function\"}}`";

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Named {
            #[serde(rename = "type")]
            _kind: FunctionType,
            function: NamedFunction,
        }
        #[derive(Deserialize)]
        struct NamedFunction {
            #[serde(deserialize_with = "non_empty_name")]
            name: String,
        }
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => match s.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(de::Error::custom(format!(
                    "Invalid value for `tool_choice`: {other:?}. {TOOL_CHOICE_FORMS}."
                ))),
            },
            Value::Object(_) => Named::deserialize(v)
                .map(|n| ToolChoice::Function(n.function.name))
                .map_err(|e| {
                    de::Error::custom(format!(
                        "Invalid value for `tool_choice` ({e}). {TOOL_CHOICE_FORMS}."
                    ))
                }),
            other => Err(de::Error::custom(format!(
                "Invalid value for `tool_choice`: {other}. {TOOL_CHOICE_FORMS}."
            ))),
        }
    }
}

/// A call in an assistant message of the history. `arguments` is the JSON
/// text OpenAI clients send (an object is taken too, as vLLM takes it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryToolCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<FunctionType>,
    pub function: HistoryFunctionCall,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryFunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

impl HistoryToolCall {
    /// The call as chat templates expect it: `arguments` a mapping, not
    /// the JSON text (HF's convention; vLLM parses it the same way, and an
    /// absent or empty one becomes `{}`). `Err`: arguments that are not JSON.
    pub fn template_value(&self) -> Result<Value, String> {
        let arguments = match &self.function.arguments {
            Value::Null => Value::Object(Map::new()),
            Value::String(s) if s.is_empty() => Value::Object(Map::new()),
            Value::String(s) => serde_json::from_str(s).map_err(|e| {
                format!(
                    "the arguments of the call to `{}` are not JSON: {e}",
                    self.function.name
                )
            })?,
            other => other.clone(),
        };
        let mut call = Map::new();
        if let Some(id) = &self.id {
            call.insert("id".into(), Value::String(id.clone()));
        }
        call.insert("type".into(), Value::String("function".into()));
        call.insert(
            "function".into(),
            serde_json::json!({"name": self.function.name, "arguments": arguments}),
        );
        Ok(Value::Object(call))
    }
}

/// A call in a response message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionCall,
}

/// `arguments` is JSON text, as OpenAI sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A call's piece in a stream delta: the first has `id`, `type` and the
/// name; later ones only argument text, under the same `index`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeltaToolCall {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FunctionType>,
    pub function: DeltaFunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeltaFunctionCall {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_parse_and_render_as_vllm_dumps_them() {
        let t: ChatTool = serde_json::from_value(json!({"type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}}}))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"type": "function", "function": {"name": "f", "description": null,
                "parameters": {"type": "object"}}})
        );
        for bad in [
            json!({"type": "retrieval", "function": {"name": "f"}}),
            json!({"type": "function", "function": {"name": ""}}),
            json!({"type": "function", "function": {"name": "f", "parameters": []}}),
            json!({"type": "function"}),
        ] {
            assert!(
                serde_json::from_value::<ChatTool>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn tool_choice_forms() {
        let tc = |v: Value| serde_json::from_value::<ToolChoice>(v);
        assert_eq!(tc(json!("none")).unwrap(), ToolChoice::None);
        assert_eq!(tc(json!("auto")).unwrap(), ToolChoice::Auto);
        assert_eq!(tc(json!("required")).unwrap(), ToolChoice::Required);
        assert_eq!(
            tc(json!({"type": "function", "function": {"name": "f"}})).unwrap(),
            ToolChoice::Function("f".into())
        );
        for bad in [
            json!("any"),
            json!(3),
            json!({"type": "function"}),
            json!({"type": "function", "function": {"name": ""}}),
        ] {
            let e = tc(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("tool_choice"), "{bad}: {e}");
        }
    }

    #[test]
    fn history_arguments_become_a_mapping() {
        let call: HistoryToolCall = serde_json::from_value(json!({"id": "call_1",
            "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}))
        .unwrap();
        assert_eq!(
            call.template_value().unwrap(),
            json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}})
        );
        let empty: HistoryToolCall =
            serde_json::from_value(json!({"function": {"name": "g", "arguments": ""}})).unwrap();
        assert_eq!(
            empty.template_value().unwrap()["function"]["arguments"],
            json!({})
        );
        let bad: HistoryToolCall =
            serde_json::from_value(json!({"function": {"name": "g", "arguments": "{"}})).unwrap();
        assert!(bad.template_value().unwrap_err().contains("`g`"));
    }

    #[test]
    fn deltas_leave_out_what_they_do_not_carry() {
        let d = DeltaToolCall {
            index: 1,
            id: None,
            kind: None,
            function: DeltaFunctionCall {
                name: None,
                arguments: "{\"a\"".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(d).unwrap(),
            json!({"index": 1, "function": {"arguments": "{\"a\""}})
        );
    }
}
