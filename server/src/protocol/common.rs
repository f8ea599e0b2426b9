//! Request and response pieces shared by the completions and chat APIs.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tools::HistoryToolCall;

/// `prompt`: a string, a list of strings, a list of token ids, or a list of
/// lists of token ids (OpenAI's four forms).
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Texts(Vec<String>),
    TokenIds(Vec<Vec<u32>>),
}

/// One prompt of a request, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    TokenIds(Vec<u32>),
}

impl Prompt {
    /// The prompts of the request, in order.
    pub fn into_inputs(self) -> Vec<PromptInput> {
        match self {
            Prompt::Texts(t) => t.into_iter().map(PromptInput::Text).collect(),
            Prompt::TokenIds(t) => t.into_iter().map(PromptInput::TokenIds).collect(),
        }
    }
}

const PROMPT_FORMS: &str =
    "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids";

fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

fn token_ids(items: &[Value]) -> Option<Vec<u32>> {
    items.iter().map(token_id).collect()
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let bad = || de::Error::custom(PROMPT_FORMS);
        match v {
            Value::String(s) => Ok(Prompt::Texts(vec![s])),
            Value::Array(items) => {
                if items.is_empty() {
                    return Ok(Prompt::Texts(Vec::new()));
                }
                if items.iter().all(Value::is_string) {
                    let texts = items
                        .into_iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect();
                    return Ok(Prompt::Texts(texts));
                }
                if items.iter().all(Value::is_number) {
                    return token_ids(&items)
                        .map(|ids| Prompt::TokenIds(vec![ids]))
                        .ok_or_else(|| {
                            de::Error::custom("prompt token ids must be integers in [0, 2^32)")
                        });
                }
                if items.iter().all(Value::is_array) {
                    let mut batches = Vec::with_capacity(items.len());
                    for item in &items {
                        let ids = item.as_array().and_then(|a| token_ids(a)).ok_or_else(bad)?;
                        batches.push(ids);
                    }
                    return Ok(Prompt::TokenIds(batches));
                }
                Err(bad())
            }
            _ => Err(bad()),
        }
    }
}

/// `stop`: one string or a list of strings.
pub fn deserialize_stop<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Stop>::deserialize(d) {
        Ok(None) => None,
        Ok(Some(Stop::One(s))) => Some(vec![s]),
        Ok(Some(Stop::Many(v))) => Some(v),
        Err(_) => {
            return Err(de::Error::custom(
                "stop must be a string or a list of strings",
            ))
        }
    })
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and no choices.
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// vLLM's: with `include_usage`, every chunk also carries the usage so
    /// far (prompt tokens, completion tokens up to that chunk).
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

impl StreamOptions {
    /// `(include_usage, continuous_usage_stats)`; the second only counts
    /// with the first, as in vLLM.
    pub fn usage_flags(options: Option<&StreamOptions>) -> (bool, bool) {
        let include = options.and_then(|o| o.include_usage).unwrap_or(false);
        let continuous = options
            .and_then(|o| o.continuous_usage_stats)
            .unwrap_or(false);
        (include, include && continuous)
    }
}

/// vLLM's `prompt_logprobs`: per prompt token, `null` for the first, else
/// the token and its top alternatives keyed by token id.
pub type PromptLogprobs = Vec<Option<PromptTokenLogprobs>>;

/// One prompt position: `{"<token id>": {"logprob", "rank", "decoded_token"}}`,
/// the prompt's own token first, then the alternatives by rank.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptTokenLogprobs(pub Vec<(u32, PromptLogprob)>);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptLogprob {
    pub logprob: f32,
    pub rank: usize,
    pub decoded_token: String,
}

impl Serialize for PromptTokenLogprobs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, lp) in &self.0 {
            map.serialize_entry(&id.to_string(), lp)?;
        }
        map.end()
    }
}

/// A chat message; `content` is a string or a list of `{"type": "text"}` parts.
/// An assistant message may carry the calls it made (`tool_calls`, content
/// then often null), a `tool` message the id of the call it answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, deserialize_with = "deserialize_content")]
    pub content: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<HistoryToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// Text parts are joined with newlines, as vLLM's "string" content format does.
fn deserialize_content<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in &parts {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(text)) => texts.push(text),
                    (Some("text"), None) => {
                        return Err(de::Error::custom(
                            "a text content part needs a string `text`",
                        ))
                    }
                    (Some(other), _) => {
                        return Err(de::Error::custom(format!(
                            "content parts of type `{other}` are not supported; only `text` is"
                        )))
                    }
                    (None, _) => return Err(de::Error::custom("each content part needs a `type`")),
                }
            }
            Ok(Some(texts.join("\n")))
        }
        Some(_) => Err(de::Error::custom(
            "content must be a string or a list of content parts",
        )),
    }
}

/// Token counts of a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

/// vLLM's `stop_reason`: the matched stop string, the stop token id, or null.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StopReasonValue {
    Text(String),
    Token(u32),
}

/// Logprobs must be finite in JSON; vLLM writes -inf as -9999.0.
pub fn finite_logprob(lp: f32) -> f32 {
    if lp.is_finite() {
        lp
    } else {
        -9999.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(json: &str) -> Result<Prompt, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn prompt_accepts_openai_forms() {
        assert_eq!(prompt(r#""hi""#).unwrap(), Prompt::Texts(vec!["hi".into()]));
        assert_eq!(
            prompt(r#"["a", "b"]"#).unwrap(),
            Prompt::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            prompt("[1, 2]").unwrap(),
            Prompt::TokenIds(vec![vec![1, 2]])
        );
        assert_eq!(
            prompt("[[1], [2, 3]]").unwrap(),
            Prompt::TokenIds(vec![vec![1], vec![2, 3]])
        );
        assert_eq!(prompt("[]").unwrap(), Prompt::Texts(vec![]));
        assert_eq!(
            prompt("[[1], [2, 3]]").unwrap().into_inputs(),
            vec![
                PromptInput::TokenIds(vec![1]),
                PromptInput::TokenIds(vec![2, 3])
            ]
        );
    }

    #[test]
    fn prompt_refuses_other_forms() {
        for bad in [
            "3",
            "null",
            r#"{"a": 1}"#,
            "[1, \"a\"]",
            "[-1]",
            "[1.5]",
            "[4294967296]",
            "[[1], [\"a\"]]",
            "[[1], 2]",
        ] {
            assert!(prompt(bad).is_err(), "{bad}");
        }
    }

    #[derive(Deserialize)]
    struct WithStop {
        #[serde(default, deserialize_with = "deserialize_stop")]
        stop: Option<Vec<String>>,
    }

    #[test]
    fn stop_is_string_or_list() {
        let s: WithStop = serde_json::from_str(r#"{"stop": "x"}"#).unwrap();
        assert_eq!(s.stop, Some(vec!["x".to_string()]));
        let s: WithStop = serde_json::from_str(r#"{"stop": ["x", "y"]}"#).unwrap();
        assert_eq!(s.stop, Some(vec!["x".to_string(), "y".to_string()]));
        let s: WithStop = serde_json::from_str(r#"{"stop": null}"#).unwrap();
        assert_eq!(s.stop, None);
        let s: WithStop = serde_json::from_str("{}").unwrap();
        assert_eq!(s.stop, None);
        assert!(serde_json::from_str::<WithStop>(r#"{"stop": 3}"#).is_err());
    }

    #[test]
    fn message_content_string_or_text_parts() {
        let m: ChatMessage = serde_json::from_str(r#"{"role": "user", "content": "hi"}"#).unwrap();
        assert_eq!(m.content.as_deref(), Some("hi"));
        let m: ChatMessage = serde_json::from_str(
            r#"{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content.as_deref(), Some("a\nb"));
        let m: ChatMessage = serde_json::from_str(r#"{"role": "assistant"}"#).unwrap();
        assert_eq!(m.content, None);
        for bad in [
            r#"{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}"#,
            r#"{"role": "user", "content": [{"text": "a"}]}"#,
            r#"{"role": "user", "content": 5}"#,
            r#"{"content": "no role"}"#,
        ] {
            assert!(serde_json::from_str::<ChatMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_serializes_cached_tokens() {
        let v = serde_json::to_value(Usage::new(10, 5, 4)).unwrap();
        assert_eq!(v["total_tokens"], 15);
        assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 4);
    }

    #[test]
    fn stop_reason_is_string_or_int() {
        assert_eq!(
            serde_json::to_string(&StopReasonValue::Text("x".into())).unwrap(),
            r#""x""#
        );
        assert_eq!(
            serde_json::to_string(&StopReasonValue::Token(7)).unwrap(),
            "7"
        );
        assert_eq!(finite_logprob(f32::NEG_INFINITY), -9999.0);
        assert_eq!(finite_logprob(-1.5), -1.5);
    }
}
