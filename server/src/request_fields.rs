//! What Pagoda does with every top-level field a completions or chat
//! request may carry, so that nothing a client sends is dropped silently.
//!
//! A field is honoured, refused with a 400 that names it (a field OpenAI or
//! vLLM defines that Pagoda does not do yet, unless its value is one that
//! changes nothing), or ignored with a warning, as vLLM ignores fields its
//! request model does not declare ("The following fields were present in
//! the request but ignored"). The tables are checked against the official
//! `openai` package's request types by `tests/tests/server_request_fields.rs`.

use std::collections::HashSet;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Which API a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    ChatCompletions,
}

/// Pagoda's decision for one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldPolicy {
    /// Read and applied (some refuse particular values themselves).
    Honoured,
    /// Defined by OpenAI or vLLM, not done by Pagoda: a 400 naming it,
    /// unless the value is null or one of `neutral` (JSON texts).
    Unsupported {
        neutral: &'static [&'static str],
        why: &'static str,
    },
    /// Not in vLLM's request model either: vLLM logs and drops it, so does
    /// Pagoda (once per field name, to keep the log readable).
    Ignored,
}

use FieldPolicy::{Honoured, Ignored, Unsupported};

const NOT_YET: &str = "is not supported by Pagoda yet";

/// Fields both endpoints read the same way.
const SHARED: &[(&str, FieldPolicy)] = &[
    ("model", Honoured),
    ("max_tokens", Honoured),
    ("stream", Honoured),
    ("stream_options", Honoured),
    ("logprobs", Honoured),
    ("user", Honoured),
    ("n", Honoured),
    ("temperature", Honoured),
    ("top_p", Honoured),
    ("stop", Honoured),
    ("seed", Honoured),
    ("presence_penalty", Honoured),
    ("frequency_penalty", Honoured),
    ("logit_bias", Honoured),
    ("top_k", Honoured),
    ("min_p", Honoured),
    ("repetition_penalty", Honoured),
    ("min_tokens", Honoured),
    ("ignore_eos", Honoured),
    ("stop_token_ids", Honoured),
    ("skip_special_tokens", Honoured),
    ("include_stop_str_in_output", Honoured),
    ("priority", Honoured),
    ("cache_salt", Honoured),
    ("prompt_logprobs", Honoured),
    (
        "use_beam_search",
        Unsupported {
            neutral: &["false"],
            why: "beam search is not supported",
        },
    ),
    (
        "length_penalty",
        Unsupported {
            neutral: &["1", "1.0"],
            why: "length_penalty applies to beam search, which is not supported",
        },
    ),
    (
        "spaces_between_special_tokens",
        Unsupported {
            neutral: &["true"],
            why: NOT_YET,
        },
    ),
    (
        "truncate_prompt_tokens",
        Unsupported {
            neutral: &[],
            why: NOT_YET,
        },
    ),
    (
        "allowed_token_ids",
        Unsupported {
            neutral: &[],
            why: NOT_YET,
        },
    ),
    (
        "bad_words",
        Unsupported {
            neutral: &["[]"],
            why: NOT_YET,
        },
    ),
    (
        "logits_processors",
        Unsupported {
            neutral: &["[]"],
            why: "custom logits processors are not supported",
        },
    ),
    (
        "return_tokens_as_token_ids",
        Unsupported {
            neutral: &["false"],
            why: NOT_YET,
        },
    ),
    (
        "return_token_ids",
        Unsupported {
            neutral: &["false"],
            why: NOT_YET,
        },
    ),
    (
        "request_id",
        Unsupported {
            neutral: &[],
            why: "set the X-Request-Id header instead",
        },
    ),
    (
        "kv_transfer_params",
        Unsupported {
            neutral: &[],
            why: "disaggregated prefill (KV transfer) is not supported",
        },
    ),
    (
        "vllm_xargs",
        Unsupported {
            neutral: &["{}"],
            why: "there are no custom extensions to pass them to",
        },
    ),
    (
        "mm_processor_kwargs",
        Unsupported {
            neutral: &["{}"],
            why: "multimodal inputs are not supported",
        },
    ),
    ("response_format", Honoured),
    ("structured_outputs", Honoured),
    ("guided_json", Honoured),
    ("guided_regex", Honoured),
    ("guided_choice", Honoured),
    ("guided_grammar", Honoured),
    (
        "guided_decoding_backend",
        Unsupported {
            neutral: &[],
            why: "is not supported (Pagoda's structured outputs use llguidance, with its defaults)",
        },
    ),
    (
        "guided_whitespace_pattern",
        Unsupported {
            neutral: &[],
            why: "is not supported (Pagoda's structured outputs use llguidance, with its defaults)",
        },
    ),
    ("structural_tag", Honoured),
];

/// Fields only `/v1/completions` reads.
const COMPLETIONS: &[(&str, FieldPolicy)] = &[
    ("prompt", Honoured),
    ("suffix", Honoured),
    ("echo", Honoured),
    ("best_of", Honoured),
    ("add_special_tokens", Honoured),
    (
        "prompt_embeds",
        Unsupported {
            neutral: &[],
            why: "prompt embeddings are not supported",
        },
    ),
];

/// Fields only `/v1/chat/completions` reads.
const CHAT: &[(&str, FieldPolicy)] = &[
    ("messages", Honoured),
    ("max_completion_tokens", Honoured),
    ("top_logprobs", Honoured),
    ("add_generation_prompt", Honoured),
    ("continue_final_message", Honoured),
    (
        "echo",
        Unsupported {
            neutral: &["false"],
            why: NOT_YET,
        },
    ),
    (
        "best_of",
        Unsupported {
            neutral: &["1"],
            why: "best_of is not supported for chat",
        },
    ),
    (
        "add_special_tokens",
        Unsupported {
            neutral: &["false"],
            why: "the chat template writes the special tokens",
        },
    ),
    // Tool calling: `crate::tool_calling` (`"auto"` needs the server's
    // --enable-auto-tool-choice, else a 400 naming `tool_choice`).
    ("tools", Honoured),
    ("tool_choice", Honoured),
    // False keeps the first call only, as vLLM filters it.
    ("parallel_tool_calls", Honoured),
    (
        "reasoning_effort",
        Unsupported {
            neutral: &[],
            why: "reasoning models' effort settings are not supported",
        },
    ),
    (
        "include_reasoning",
        Unsupported {
            neutral: &["false"],
            why: "reasoning output parsing is not supported",
        },
    ),
    (
        "documents",
        Unsupported {
            neutral: &["[]"],
            why: NOT_YET,
        },
    ),
    (
        "chat_template",
        Unsupported {
            neutral: &[],
            why: "per-request chat templates are not supported; the model's own template is used",
        },
    ),
    (
        "chat_template_kwargs",
        Unsupported {
            neutral: &["{}"],
            why: NOT_YET,
        },
    ),
    // OpenAI fields that vLLM's request model does not declare: it logs
    // them as ignored, and so does Pagoda.
    ("store", Ignored),
    ("metadata", Ignored),
    ("service_tier", Ignored),
    ("modalities", Ignored),
    ("audio", Ignored),
    ("prediction", Ignored),
    ("web_search_options", Ignored),
    ("verbosity", Ignored),
    ("prompt_cache_key", Ignored),
    ("prompt_cache_retention", Ignored),
    ("prompt_cache_options", Ignored),
    ("moderation", Ignored),
    ("safety_identifier", Ignored),
    ("functions", Ignored),
    ("function_call", Ignored),
];

/// Pagoda's decision for `field` on `endpoint`; `None` for a field neither
/// OpenAI nor vLLM defines there (ignored with a warning, as vLLM does).
pub fn field_policy(endpoint: Endpoint, field: &str) -> Option<FieldPolicy> {
    let own = match endpoint {
        Endpoint::Completions => COMPLETIONS,
        Endpoint::ChatCompletions => CHAT,
    };
    own.iter()
        .chain(SHARED)
        .find(|(name, _)| *name == field)
        .map(|&(_, policy)| policy)
}

/// Every field with a decision on `endpoint` (for the test that walks the
/// OpenAI SDK's request types).
pub fn known_fields(endpoint: Endpoint) -> impl Iterator<Item = &'static str> {
    let own = match endpoint {
        Endpoint::Completions => COMPLETIONS,
        Endpoint::ChatCompletions => CHAT,
    };
    own.iter().chain(SHARED).map(|(name, _)| *name)
}

/// Refuses the first unsupported field with a non-neutral value; logs
/// fields Pagoda ignores (each name once per process).
pub fn check_fields(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(), ApiError> {
    let mut ignored = Vec::new();
    for (field, value) in body {
        match field_policy(endpoint, field) {
            Some(Honoured) => {}
            Some(Unsupported { neutral, why }) => {
                if !is_neutral(value, neutral) {
                    return Err(ApiError::invalid_param(
                        field,
                        format!("`{field}` {why}; leave it out of the request."),
                    ));
                }
            }
            Some(Ignored) | None => ignored.push(field.as_str()),
        }
    }
    if !ignored.is_empty() {
        warn_ignored(&ignored);
    }
    Ok(())
}

fn is_neutral(value: &Value, neutral: &[&str]) -> bool {
    value.is_null()
        || neutral
            .iter()
            .any(|text| serde_json::from_str::<Value>(text).is_ok_and(|n| same_json(&n, value)))
}

/// Equal as JSON, with numbers compared by value (`1` and `1.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn warn_ignored(fields: &[&str]) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock();
    let new: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| seen.insert((*f).to_owned()))
        .collect();
    if !new.is_empty() {
        tracing::warn!(
            fields = ?new,
            "The following fields were present in the request but ignored (logged once per field)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unsupported_fields_are_refused_by_name_unless_neutral() {
        let e = check_fields(
            Endpoint::ChatCompletions,
            &body(r#"{"model": "m", "reasoning_effort": "low"}"#),
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
        assert!(e.message.contains("reasoning_effort"), "{e:?}");
        for neutral in [
            r#"{"tools": null, "tool_choice": "none"}"#,
            r#"{"use_beam_search": false, "length_penalty": 1}"#,
            r#"{"response_format": {"type": "text"}}"#,
        ] {
            check_fields(Endpoint::ChatCompletions, &body(neutral)).unwrap();
        }
        let e = check_fields(
            Endpoint::Completions,
            &body(r#"{"guided_decoding_backend": "outlines"}"#),
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("guided_decoding_backend"));
        let e =
            check_fields(Endpoint::Completions, &body(r#"{"length_penalty": 0.5}"#)).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("length_penalty"));
    }

    #[test]
    fn ignored_and_unknown_fields_pass() {
        check_fields(
            Endpoint::ChatCompletions,
            &body(r#"{"store": true, "metadata": {"a": "b"}, "no_such_field": 1}"#),
        )
        .unwrap();
    }

    #[test]
    fn endpoints_keep_their_own_fields() {
        assert_eq!(
            field_policy(Endpoint::Completions, "prompt"),
            Some(Honoured)
        );
        assert_eq!(field_policy(Endpoint::ChatCompletions, "prompt"), None);
        assert_eq!(field_policy(Endpoint::Completions, "messages"), None);
        assert!(matches!(
            field_policy(Endpoint::ChatCompletions, "documents"),
            Some(Unsupported { .. })
        ));
        assert_eq!(
            field_policy(Endpoint::ChatCompletions, "tools"),
            Some(Honoured)
        );
        assert_eq!(field_policy(Endpoint::Completions, "tools"), None);
        // No field is listed twice for one endpoint.
        for endpoint in [Endpoint::Completions, Endpoint::ChatCompletions] {
            let names: Vec<_> = known_fields(endpoint).collect();
            let unique: HashSet<_> = names.iter().collect();
            assert_eq!(names.len(), unique.len(), "{endpoint:?}");
        }
    }
}
