//! The request fields that constrain the output, as OpenAI and vLLM spell
//! them: `response_format`, vLLM's `structured_outputs`, and its older
//! `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar` /
//! `structural_tag`.
//! All become one engine `StructuredOutputsParams`; more than one
//! constraint is refused, as vLLM refuses it.

use pagoda_engine::{StructuralTag, StructuredOutputsParams, TagStructure};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// OpenAI's `response_format`. An unknown `type` fails to parse (400).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        json_schema: JsonSchemaFormat,
    },
    /// vLLM's structural tags: free text with tool calls, each begun by a
    /// trigger and constrained to its structure's schema.
    StructuralTag {
        structures: Vec<TagStructure>,
        triggers: Vec<String>,
    },
}

/// `response_format.json_schema`: the openai SDK's `parse()` sends the
/// Pydantic model's schema here with `strict: true`. The output always
/// follows the schema, strict or not.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// vLLM's `structured_outputs` object: exactly one of its constraints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputsRequest {
    /// A JSON schema, as an object or as a string holding one.
    #[serde(default)]
    pub json: Option<Value>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub choice: Option<Vec<String>>,
    #[serde(default)]
    pub grammar: Option<String>,
    #[serde(default)]
    pub json_object: Option<bool>,
    /// vLLM's structural tag: a JSON string (as vLLM takes it) or an
    /// object, `{"type": "structural_tag", "structures": [...], "triggers": [...]}`.
    #[serde(default)]
    pub structural_tag: Option<Value>,
}

/// Every constraint field of a request, as read from its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConstraintFields<'a> {
    pub response_format: Option<&'a ResponseFormat>,
    pub structured_outputs: Option<&'a StructuredOutputsRequest>,
    pub guided_json: Option<&'a Value>,
    pub guided_regex: Option<&'a String>,
    pub guided_choice: Option<&'a Vec<String>>,
    pub guided_grammar: Option<&'a String>,
    pub structural_tag: Option<&'a Value>,
}

impl ConstraintFields<'_> {
    /// The one constraint the request sets, if any.
    pub fn to_params(&self) -> Result<Option<StructuredOutputsParams>, ApiError> {
        Ok(self.find()?.map(|(_, p)| p))
    }

    /// The field that sets the constraint (`response_format`,
    /// `structured_outputs.regex`, `guided_json`, ...), for the `param` of
    /// a 400 when it does not compile.
    pub fn param(&self) -> Result<Option<&'static str>, ApiError> {
        Ok(self.find()?.map(|(field, _)| field))
    }

    fn find(&self) -> Result<Option<(&'static str, StructuredOutputsParams)>, ApiError> {
        let mut found: Vec<(&'static str, StructuredOutputsParams)> = Vec::new();
        match self.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => {
                found.push(("response_format", StructuredOutputsParams::JsonObject))
            }
            Some(ResponseFormat::JsonSchema { json_schema }) => {
                let schema = json_schema.schema.as_ref().ok_or_else(|| {
                    ApiError::invalid_param(
                        "response_format",
                        "response_format.json_schema.schema is required.",
                    )
                })?;
                found.push((
                    "response_format",
                    StructuredOutputsParams::Json(schema_value(schema, "response_format")?),
                ));
            }
            Some(ResponseFormat::StructuralTag {
                structures,
                triggers,
            }) => found.push((
                "response_format",
                StructuredOutputsParams::StructuralTag(StructuralTag {
                    structures: structures.clone(),
                    triggers: triggers.clone(),
                }),
            )),
        }
        if let Some(so) = self.structured_outputs {
            if let Some(tag) = &so.structural_tag {
                const T: &str = "structured_outputs.structural_tag";
                found.push((
                    T,
                    StructuredOutputsParams::StructuralTag(structural_tag(tag, T)?),
                ));
            }
            if let Some(json) = &so.json {
                const J: &str = "structured_outputs.json";
                found.push((J, StructuredOutputsParams::Json(schema_value(json, J)?)));
            }
            if let Some(rx) = &so.regex {
                found.push((
                    "structured_outputs.regex",
                    StructuredOutputsParams::Regex(rx.clone()),
                ));
            }
            if let Some(choice) = &so.choice {
                found.push((
                    "structured_outputs.choice",
                    StructuredOutputsParams::Choice(choice.clone()),
                ));
            }
            if let Some(grammar) = &so.grammar {
                found.push((
                    "structured_outputs.grammar",
                    StructuredOutputsParams::Grammar(grammar.clone()),
                ));
            }
            if so.json_object == Some(true) {
                found.push((
                    "structured_outputs.json_object",
                    StructuredOutputsParams::JsonObject,
                ));
            }
        }
        if let Some(json) = self.guided_json {
            let p = StructuredOutputsParams::Json(schema_value(json, "guided_json")?);
            found.push(("guided_json", p));
        }
        if let Some(rx) = self.guided_regex {
            found.push(("guided_regex", StructuredOutputsParams::Regex(rx.clone())));
        }
        if let Some(choice) = self.guided_choice {
            found.push((
                "guided_choice",
                StructuredOutputsParams::Choice(choice.clone()),
            ));
        }
        if let Some(grammar) = self.guided_grammar {
            found.push((
                "guided_grammar",
                StructuredOutputsParams::Grammar(grammar.clone()),
            ));
        }
        if let Some(tag) = self.structural_tag {
            let p = StructuredOutputsParams::StructuralTag(structural_tag(tag, "structural_tag")?);
            found.push(("structural_tag", p));
        }
        if found.len() > 1 {
            let fields: Vec<String> = found
                .iter()
                .map(|(field, p)| format!("{field} ({})", p.kind()))
                .collect();
            return Err(ApiError::invalid_param(
                found[1].0,
                format!(
                    "You can only use one kind of structured outputs constraint but multiple \
                     are specified: {}.",
                    fields.join(", ")
                ),
            ));
        }
        Ok(found.pop())
    }
}

/// A structural tag sent as a JSON string (vLLM's type) or as an object.
/// Only the `structures` + `triggers` form is read; xgrammar's newer
/// `format` form is refused by name.
fn structural_tag(v: &Value, param: &'static str) -> Result<StructuralTag, ApiError> {
    let parsed = match v {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|e| ApiError::invalid_param(param, format!("{param} is not JSON: {e}")))?,
        other => other.clone(),
    };
    if parsed.get("format").is_some() {
        return Err(ApiError::invalid_param(
            param,
            format!(
                "{param}: the `format` form is not supported; send `structures` and `triggers`."
            ),
        ));
    }
    serde_json::from_value(parsed).map_err(|e| {
        ApiError::invalid_param(
            param,
            format!("{param} needs `structures` ([{{begin, schema, end}}]) and `triggers`: {e}"),
        )
    })
}

/// A schema sent as an object, or as a string that holds one (vLLM takes both).
fn schema_value(v: &Value, param: &'static str) -> Result<Value, ApiError> {
    match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::invalid_param(param, format!("{param}: the JSON schema is not JSON: {e}"))
        }),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn format(v: Value) -> Result<ResponseFormat, serde_json::Error> {
        serde_json::from_value(v)
    }

    /// What a request with only this `response_format` asks the engine for.
    fn params_of_format(v: Value) -> Option<StructuredOutputsParams> {
        let f = format(v).unwrap();
        let fields = ConstraintFields {
            response_format: Some(&f),
            ..Default::default()
        };
        fields.to_params().unwrap()
    }

    #[test]
    fn response_format_types() {
        assert_eq!(
            format(json!({"type": "text"})).unwrap(),
            ResponseFormat::Text
        );
        assert_eq!(
            format(json!({"type": "json_object"})).unwrap(),
            ResponseFormat::JsonObject
        );
        assert_eq!(
            params_of_format(json!({"type": "json_schema", "json_schema":
                {"name": "P", "schema": {"type": "object"}, "strict": true}})),
            Some(StructuredOutputsParams::Json(json!({"type": "object"})))
        );
        assert!(format(json!({"type": "nonsense"})).is_err());
        assert!(format(json!({"type": "json_schema"})).is_err());
    }

    #[test]
    fn one_constraint_at_most() {
        let so = StructuredOutputsRequest {
            regex: Some("a+".into()),
            ..Default::default()
        };
        let choice = vec!["x".to_string()];
        let fields = ConstraintFields {
            structured_outputs: Some(&so),
            guided_choice: Some(&choice),
            ..Default::default()
        };
        let err = fields.to_params().unwrap_err();
        assert_eq!(err.param.as_deref(), Some("guided_choice"));
        let fields = ConstraintFields {
            structured_outputs: Some(&so),
            ..Default::default()
        };
        assert_eq!(
            fields.to_params().unwrap(),
            Some(StructuredOutputsParams::Regex("a+".into()))
        );
        assert_eq!(fields.param().unwrap(), Some("structured_outputs.regex"));
        let two = StructuredOutputsRequest {
            regex: Some("a+".into()),
            choice: Some(choice.clone()),
            ..Default::default()
        };
        let fields = ConstraintFields {
            structured_outputs: Some(&two),
            ..Default::default()
        };
        assert_eq!(
            fields.to_params().unwrap_err().param.as_deref(),
            Some("structured_outputs.choice")
        );
        let tag: StructuredOutputsRequest =
            serde_json::from_value(json!({"structural_tag": "{}"})).unwrap();
        let fields = ConstraintFields {
            structured_outputs: Some(&tag),
            ..Default::default()
        };
        let err = fields.to_params().unwrap_err();
        assert_eq!(
            err.param.as_deref(),
            Some("structured_outputs.structural_tag")
        );
        assert!(serde_json::from_value::<StructuredOutputsRequest>(json!({"jsn": {}})).is_err());
    }

    #[test]
    fn structural_tags_from_a_string_or_response_format() {
        let text = json!({"type": "structural_tag",
            "structures": [{"begin": "<f=a>", "schema": {"type": "object"}, "end": "</f>"}],
            "triggers": ["<f="]})
        .to_string();
        let so: StructuredOutputsRequest =
            serde_json::from_value(json!({ "structural_tag": text })).unwrap();
        let fields = ConstraintFields {
            structured_outputs: Some(&so),
            ..Default::default()
        };
        let want = StructuralTag {
            structures: vec![TagStructure {
                begin: "<f=a>".into(),
                schema: Some(json!({"type": "object"})),
                end: "</f>".into(),
            }],
            triggers: vec!["<f=".into()],
        };
        assert_eq!(
            fields.to_params().unwrap(),
            Some(StructuredOutputsParams::StructuralTag(want.clone()))
        );
        assert_eq!(
            params_of_format(json!({"type": "structural_tag",
                "structures": [{"begin": "<f=a>", "schema": {"type": "object"}, "end": "</f>"}],
                "triggers": ["<f="]})),
            Some(StructuredOutputsParams::StructuralTag(want))
        );
        let newer: StructuredOutputsRequest = serde_json::from_value(
            json!({"structural_tag": {"type": "structural_tag", "format": {}}}),
        )
        .unwrap();
        let fields = ConstraintFields {
            structured_outputs: Some(&newer),
            ..Default::default()
        };
        assert!(fields.to_params().unwrap_err().message.contains("format"));
    }

    #[test]
    fn guided_json_takes_a_string_or_an_object() {
        let s = json!("{\"type\": \"integer\"}");
        let fields = ConstraintFields {
            guided_json: Some(&s),
            ..Default::default()
        };
        assert_eq!(
            fields.to_params().unwrap(),
            Some(StructuredOutputsParams::Json(json!({"type": "integer"})))
        );
        assert_eq!(fields.param().unwrap(), Some("guided_json"));
        let bad = json!("{not json");
        let fields = ConstraintFields {
            guided_json: Some(&bad),
            ..Default::default()
        };
        assert_eq!(
            fields.to_params().unwrap_err().param.as_deref(),
            Some("guided_json")
        );
    }
}
