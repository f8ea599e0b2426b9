//! vLLM's structural tags: free text in which each tool call, once the
//! model writes one of the `triggers`, must continue with a structure's
//! `begin`, a JSON value valid under its `schema`, and its `end`. vLLM's
//! llguidance backend compiles them to a Lark grammar with lazy trigger
//! lexemes (llguidance's "tool calling" pattern); so does this.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tagged structure (`{"begin": "<function=f>", "schema": {...}, "end": "</function>"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagStructure {
    pub begin: String,
    /// The JSON schema of the content; absent: any JSON value.
    #[serde(default)]
    pub schema: Option<Value>,
    pub end: String,
}

/// The `structures` and `triggers` of a structural tag (vLLM's
/// `StructuralTagResponseFormat` without its `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructuralTag {
    pub structures: Vec<TagStructure>,
    pub triggers: Vec<String>,
}

impl StructuralTag {
    /// The Lark grammar: any text, interrupted by tagged structures. A
    /// trigger that is one special token of the vocabulary (`special_id`
    /// gives its id) is matched as that token; any other is a lazy text
    /// lexeme, so the free text ends where the trigger is first written.
    pub fn to_lark(&self, special_id: impl Fn(&str) -> Option<u32>) -> Result<String, String> {
        if self.structures.is_empty() {
            return Err("structural_tag lists no structures".into());
        }
        if let Some(t) = self.triggers.iter().find(|t| t.is_empty()) {
            return Err(format!("structural_tag has an empty trigger {t:?}"));
        }
        let names: Vec<String> = (0..self.structures.len())
            .map(|i| format!("tag_{i}"))
            .collect();
        let mut lark = format!(
            "%llguidance {{}}\nstart: ({})* tag_end\ntag_end: TAG_TEXT\nTAG_TEXT: /(.|\\n)*/\n",
            names.join(" | ")
        );
        for (s, name) in self.structures.iter().zip(&names) {
            let trigger = self
                .triggers
                .iter()
                .find(|t| s.begin.starts_with(t.as_str()))
                .ok_or_else(|| {
                    format!(
                        "structural_tag: begin {:?} starts with none of the triggers {:?}",
                        s.begin, self.triggers
                    )
                })?;
            let schema = s
                .schema
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default()));
            if !schema.is_object() && !schema.is_boolean() {
                return Err(format!(
                    "structural_tag: the schema of {:?} must be an object or a boolean",
                    s.begin
                ));
            }
            let rest = &s.begin[trigger.len()..];
            let body = format!("{} %json {schema} {}", literal(rest), literal(&s.end));
            match special_id(trigger) {
                Some(id) => lark.push_str(&format!("{name}: TAG_TEXT <[{id}]> {body}\n")),
                None => {
                    lark.push_str(&format!(
                        "{name}_trigger[lazy]: TAG_TEXT {}\n",
                        literal(trigger)
                    ));
                    lark.push_str(&format!("{name}: {name}_trigger {body}\n"));
                }
            }
        }
        Ok(lark)
    }
}

/// A Lark string literal (JSON quoting, which llguidance's Lark reads), or
/// nothing for the empty string.
fn literal(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        Value::from(s).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag(v: Value) -> StructuralTag {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn text_triggers_are_lazy_and_special_ones_are_tokens() {
        let t = tag(json!({
            "structures": [
                {"begin": "<function=get_weather>", "schema": {"type": "object"}, "end": "</function>"},
                {"begin": "<|python_tag|>", "end": ""}
            ],
            "triggers": ["<function=", "<|python_tag|>"]
        }));
        let lark = t.to_lark(|s| (s == "<|python_tag|>").then_some(7)).unwrap();
        assert!(lark.contains("start: (tag_0 | tag_1)* tag_end"), "{lark}");
        assert!(
            lark.contains("tag_0_trigger[lazy]: TAG_TEXT \"<function=\""),
            "{lark}"
        );
        assert!(
            lark.contains(
                "tag_0: tag_0_trigger \"get_weather>\" %json {\"type\":\"object\"} \"</function>\""
            ),
            "{lark}"
        );
        assert!(lark.contains("tag_1: TAG_TEXT <[7]>  %json {} "), "{lark}");
    }

    #[test]
    fn bad_tags_are_errors() {
        let no_trigger = tag(json!({
            "structures": [{"begin": "<tool>", "schema": {}, "end": "</tool>"}],
            "triggers": ["<function"]
        }));
        assert!(no_trigger
            .to_lark(|_| None)
            .unwrap_err()
            .contains("none of the triggers"));
        let empty = tag(json!({"structures": [], "triggers": ["<f"]}));
        assert!(empty.to_lark(|_| None).is_err());
        let bad_schema = tag(json!({
            "structures": [{"begin": "<f>", "schema": 3, "end": ""}],
            "triggers": ["<f"]
        }));
        assert!(bad_schema.to_lark(|_| None).is_err());
    }
}
