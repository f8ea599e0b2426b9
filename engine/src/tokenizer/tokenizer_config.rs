//! The tokenizer settings that are not in `tokenizer.json`: the chat
//! template, the BOS/EOS token strings and whether encode adds them. Read from
//! an HF folder (`tokenizer_config.json`, `chat_template.jinja`) or from GGUF
//! metadata.

use std::path::Path;

use serde_json::Value;

use super::TokenizerError;
use crate::weights::gguf::{GgufFile, GgufValue};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    /// The Jinja chat template (the "default" one when several are named).
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub add_bos_token: bool,
    pub add_eos_token: bool,
    /// The config states `add_bos_token` or `add_eos_token`; HF transformers
    /// then rebuilds the post-processor from the two flags
    /// (`Tokenizer::from_dir` does the same).
    pub add_bos_eos_explicit: bool,
    /// Named chat templates other than "default" (e.g. "tool_use"), in file order.
    pub named_chat_templates: Vec<(String, String)>,
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` and a separate `chat_template.jinja`
    /// (which wins, as in HF) or legacy `chat_template.json` from `dir`.
    /// `Ok(None)` when the folder has none of them.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, TokenizerError> {
        let config_path = dir.join("tokenizer_config.json");
        let mut config = match read_optional(&config_path)? {
            Some(text) => {
                Self::from_json_str(&text).map_err(|message| TokenizerError::InvalidFile {
                    path: config_path.clone(),
                    message,
                })?
            }
            None => Self::default(),
        };
        let mut found = config_path.is_file();
        let jinja_path = dir.join("chat_template.jinja");
        let json_path = dir.join("chat_template.json");
        if let Some(template) = read_optional(&jinja_path)? {
            config.chat_template = Some(template);
            found = true;
        } else if config.chat_template.is_none() {
            if let Some(text) = read_optional(&json_path)? {
                let invalid = |message: String| TokenizerError::InvalidFile {
                    path: json_path.clone(),
                    message,
                };
                let json: Value =
                    serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
                let (default, named) =
                    chat_templates(json.get("chat_template").unwrap_or(&Value::Null))
                        .map_err(invalid)?;
                config.chat_template = default;
                config.named_chat_templates = named;
                found = true;
            }
        }
        Ok(found.then_some(config))
    }

    /// Parses the text of a `tokenizer_config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let obj = json.as_object().ok_or("not a JSON object")?;
        let (chat_template, named_chat_templates) =
            chat_templates(obj.get("chat_template").unwrap_or(&Value::Null))?;
        let flag = |key: &str| -> Result<Option<bool>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(format!("`{key}` must be a boolean, got {other}")),
            }
        };
        let add_bos = flag("add_bos_token")?;
        let add_eos = flag("add_eos_token")?;
        Ok(Self {
            chat_template,
            bos_token: special_token(obj.get("bos_token"), "bos_token")?,
            eos_token: special_token(obj.get("eos_token"), "eos_token")?,
            pad_token: special_token(obj.get("pad_token"), "pad_token")?,
            unk_token: special_token(obj.get("unk_token"), "unk_token")?,
            add_bos_token: add_bos.unwrap_or(false),
            add_eos_token: add_eos.unwrap_or(false),
            add_bos_eos_explicit: add_bos.is_some() || add_eos.is_some(),
            named_chat_templates,
        })
    }

    /// From GGUF metadata: `tokenizer.chat_template`, BOS/EOS strings from
    /// their ids, `tokenizer.ggml.add_bos_token` / `add_eos_token` (absent:
    /// false, except for SentencePiece "llama" vocabularies, as HF does).
    pub fn from_gguf(g: &GgufFile) -> Self {
        Self::from_gguf_metadata(|key| g.metadata(key))
    }

    /// [`TokenizerConfig::from_gguf`] over any metadata lookup.
    pub fn from_gguf_metadata<'g>(meta: impl Fn(&str) -> Option<&'g GgufValue>) -> Self {
        let tokens = meta("tokenizer.ggml.tokens").and_then(GgufValue::as_array);
        let token_at = |key: &str| -> Option<String> {
            let id = usize::try_from(meta(key)?.as_u64()?).ok()?;
            tokens?.get(id)?.as_str().map(str::to_string)
        };
        let flag = |key: &str| meta(key).and_then(GgufValue::as_bool);
        let sentencepiece =
            meta("tokenizer.ggml.model").and_then(GgufValue::as_str) == Some("llama");
        let add_bos = flag("tokenizer.ggml.add_bos_token");
        let add_eos = flag("tokenizer.ggml.add_eos_token");
        Self {
            chat_template: meta("tokenizer.chat_template")
                .and_then(GgufValue::as_str)
                .map(str::to_string),
            bos_token: token_at("tokenizer.ggml.bos_token_id"),
            eos_token: token_at("tokenizer.ggml.eos_token_id"),
            pad_token: token_at("tokenizer.ggml.padding_token_id"),
            unk_token: token_at("tokenizer.ggml.unknown_token_id"),
            add_bos_token: add_bos.unwrap_or(sentencepiece),
            add_eos_token: add_eos.unwrap_or(false),
            add_bos_eos_explicit: add_bos.is_some() || add_eos.is_some() || sentencepiece,
            named_chat_templates: Vec::new(),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, TokenizerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `chat_template` is a string, or a list of `{"name", "template"}`; the
/// one named "default" is the template, the others are kept by name.
type ChatTemplates = (Option<String>, Vec<(String, String)>);

fn chat_templates(value: &Value) -> Result<ChatTemplates, String> {
    match value {
        Value::Null => Ok((None, Vec::new())),
        Value::String(s) => Ok((Some(s.clone()), Vec::new())),
        Value::Array(items) => {
            let mut default = None;
            let mut named = Vec::new();
            for item in items {
                let name = item.get("name").and_then(Value::as_str);
                let template = item.get("template").and_then(Value::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => default = Some(t.to_string()),
                    (Some(n), Some(t)) => named.push((n.to_string(), t.to_string())),
                    _ => return Err(format!("chat_template entry without name/template: {item}")),
                }
            }
            Ok((default, named))
        }
        other => Err(format!(
            "chat_template must be a string or a list, got {other}"
        )),
    }
}

/// A special token is a string, an AddedToken object `{"content": ...}`, or null.
fn special_token(value: Option<&Value>, key: &str) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(format!("`{key}` object has no string `content`")),
        },
        Some(other) => Err(format!(
            "`{key}` must be a string or an object, got {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn string_template_and_token_forms() {
        let c = TokenizerConfig::from_json_str(
            r#"{"chat_template": "{{ x }}", "bos_token": {"__type": "AddedToken", "content": "<s>"},
                "eos_token": "</s>", "pad_token": null, "add_bos_token": true}"#,
        )
        .unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("{{ x }}"));
        assert_eq!(c.bos_token.as_deref(), Some("<s>"));
        assert_eq!(c.eos_token.as_deref(), Some("</s>"));
        assert_eq!(c.pad_token, None);
        assert!(c.add_bos_token && !c.add_eos_token && c.add_bos_eos_explicit);
    }

    #[test]
    fn named_templates_pick_default() {
        let c = TokenizerConfig::from_json_str(
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        )
        .unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("D"));
        assert_eq!(
            c.named_chat_templates,
            vec![("tool_use".to_string(), "T".to_string())]
        );
        assert!(!c.add_bos_eos_explicit);
    }

    #[test]
    fn malformed_configs_are_errors() {
        assert!(TokenizerConfig::from_json_str("[1]").is_err());
        assert!(TokenizerConfig::from_json_str(r#"{"chat_template": 3}"#).is_err());
        assert!(TokenizerConfig::from_json_str(r#"{"bos_token": 3}"#).is_err());
        assert!(TokenizerConfig::from_json_str(r#"{"add_bos_token": "yes"}"#).is_err());
    }

    #[test]
    fn folder_with_separate_jinja_file() {
        let dir = std::env::temp_dir().join(format!("pagoda-tokcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(TokenizerConfig::from_dir(&dir).unwrap(), None);
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"chat_template": "old", "eos_token": "E"}"#,
        )
        .unwrap();
        assert_eq!(
            TokenizerConfig::from_dir(&dir)
                .unwrap()
                .unwrap()
                .chat_template
                .as_deref(),
            Some("old")
        );
        std::fs::write(dir.join("chat_template.jinja"), "new").unwrap();
        let c = TokenizerConfig::from_dir(&dir).unwrap().unwrap();
        assert_eq!(c.chat_template.as_deref(), Some("new"));
        assert_eq!(c.eos_token.as_deref(), Some("E"));
        std::fs::write(dir.join("tokenizer_config.json"), "{not json").unwrap();
        let err = TokenizerConfig::from_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_gguf_metadata_reads_ids_and_flags() {
        let s = |v: &str| GgufValue::String(v.to_string());
        let meta = HashMap::from([
            ("tokenizer.ggml.model", s("gpt2")),
            (
                "tokenizer.ggml.tokens",
                GgufValue::Array(vec![s("<a>"), s("<b>"), s("x")]),
            ),
            ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", GgufValue::U32(0)),
            ("tokenizer.ggml.padding_token_id", GgufValue::U32(7)),
            ("tokenizer.chat_template", s("{{ messages }}")),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(false)),
        ]);
        let c = TokenizerConfig::from_gguf_metadata(|k| meta.get(k));
        assert_eq!(c.bos_token.as_deref(), Some("<b>"));
        assert_eq!(c.eos_token.as_deref(), Some("<a>"));
        assert_eq!(c.pad_token, None, "out-of-range id");
        assert_eq!(c.chat_template.as_deref(), Some("{{ messages }}"));
        assert!(!c.add_bos_token && c.add_bos_eos_explicit);
    }
}
