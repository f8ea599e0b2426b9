//! The engine's per-token logprobs in OpenAI's two shapes: parallel lists
//! for completions, a list of token objects for chat.

use pagoda_engine::TokenLogprobs;

use crate::protocol::chat::{ChatTokenLogprob, ChatTopLogprob};
use crate::protocol::common::{finite_logprob, PromptLogprob, PromptLogprobs, PromptTokenLogprobs};
use crate::protocol::completion::{CompletionLogprobs, TopLogprobs};

/// Completions logprobs for `tokens`; `text_offset` is where the first
/// token's text starts in the choice's text (in characters, as OpenAI counts).
/// Each `top_logprobs` entry holds the top-k plus the sampled token.
pub fn completion_logprobs(
    tokens: &[TokenLogprobs],
    text_offset: &mut usize,
    token_text: &impl Fn(u32) -> String,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in tokens {
        push_completion_token(&mut out, t.token_id, Some(t), text_offset, token_text);
    }
    out
}

/// Completions logprobs of an echoed prompt (`echo` with `logprobs`), from
/// the engine's prompt logprobs: the first token has none (null in
/// `token_logprobs` and `top_logprobs`, as OpenAI and vLLM send it).
pub fn echo_logprobs(
    prompt_ids: &[u32],
    prompt_logprobs: &[Option<TokenLogprobs>],
    text_offset: &mut usize,
    token_text: &impl Fn(u32) -> String,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for (i, &id) in prompt_ids.iter().enumerate() {
        let lp = prompt_logprobs.get(i).and_then(Option::as_ref);
        push_completion_token(&mut out, id, lp, text_offset, token_text);
    }
    out
}

fn push_completion_token(
    out: &mut CompletionLogprobs,
    token_id: u32,
    lp: Option<&TokenLogprobs>,
    text_offset: &mut usize,
    token_text: &impl Fn(u32) -> String,
) {
    let text = token_text(token_id);
    out.text_offset.push(*text_offset);
    *text_offset += text.chars().count();
    match lp {
        Some(t) => {
            out.token_logprobs.push(Some(finite_logprob(t.logprob)));
            let mut top: Vec<(String, f32)> = t
                .top
                .iter()
                .map(|&(id, lp)| (token_text(id), finite_logprob(lp)))
                .collect();
            top.push((text.clone(), finite_logprob(t.logprob)));
            out.top_logprobs.push(Some(TopLogprobs::new(top)));
        }
        None => {
            out.token_logprobs.push(None);
            out.top_logprobs.push(None);
        }
    }
    out.tokens.push(text);
}

/// vLLM's `prompt_logprobs` from the engine's: per position the prompt
/// token (with its rank) and then its top alternatives.
pub fn prompt_logprobs(
    tokens: &[Option<TokenLogprobs>],
    token_text: &impl Fn(u32) -> String,
) -> PromptLogprobs {
    tokens
        .iter()
        .map(|t| {
            t.as_ref().map(|t| {
                let entry = |id: u32, logprob: f32, rank: usize| PromptLogprob {
                    logprob: finite_logprob(logprob),
                    rank,
                    decoded_token: token_text(id),
                };
                let mut entries = vec![(t.token_id, entry(t.token_id, t.logprob, t.rank))];
                for (i, &(id, lp)) in t.top.iter().enumerate() {
                    if id != t.token_id {
                        entries.push((id, entry(id, lp, i + 1)));
                    }
                }
                PromptTokenLogprobs(entries)
            })
        })
        .collect()
}

/// Chat logprobs for `tokens`, each with its `top_n` best alternatives.
pub fn chat_logprobs(
    tokens: &[TokenLogprobs],
    top_n: usize,
    token_text: &impl Fn(u32) -> String,
) -> Vec<ChatTokenLogprob> {
    tokens
        .iter()
        .map(|t| {
            let text = token_text(t.token_id);
            ChatTokenLogprob {
                bytes: Some(text.as_bytes().to_vec()),
                logprob: finite_logprob(t.logprob),
                top_logprobs: t
                    .top
                    .iter()
                    .take(top_n)
                    .map(|&(id, lp)| {
                        let alt = token_text(id);
                        ChatTopLogprob {
                            bytes: Some(alt.as_bytes().to_vec()),
                            token: alt,
                            logprob: finite_logprob(lp),
                        }
                    })
                    .collect(),
                token: text,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(id: u32) -> String {
        ["a", "bc", "é", "d"][id as usize].to_string()
    }

    fn lp(token_id: u32, logprob: f32, top: Vec<(u32, f32)>) -> TokenLogprobs {
        TokenLogprobs {
            token_id,
            logprob,
            rank: 1,
            top,
        }
    }

    #[test]
    fn completion_shape_with_offsets_and_sampled_token_in_top() {
        let tokens = vec![
            lp(1, -0.5, vec![(1, -0.5), (0, -1.0)]),
            lp(3, -3.0, vec![(2, -0.1)]),
            lp(2, f32::NEG_INFINITY, vec![]),
        ];
        let mut offset = 4;
        let out = completion_logprobs(&tokens, &mut offset, &text);
        assert_eq!(out.tokens, vec!["bc", "d", "é"]);
        assert_eq!(out.text_offset, vec![4, 6, 7]);
        assert_eq!(offset, 8);
        assert_eq!(
            out.token_logprobs,
            vec![Some(-0.5), Some(-3.0), Some(-9999.0)]
        );
        let top1 = out.top_logprobs[1].as_ref().unwrap();
        assert_eq!(top1.len(), 2);
        assert_eq!(top1.get("d"), Some(-3.0));
        assert_eq!(top1.get("é"), Some(-0.1));
        assert_eq!(out.top_logprobs[0].as_ref().unwrap().len(), 2);
        // Most likely first, whatever the texts' order.
        let json = serde_json::to_string(top1).unwrap();
        assert_eq!(json, r#"{"é":-0.1,"d":-3.0}"#);
    }

    #[test]
    fn echoed_prompt_starts_with_a_null_and_prompt_logprobs_key_by_id() {
        let lps = vec![None, Some(lp(3, -2.0, vec![(2, -0.5), (3, -2.0)]))];
        let mut offset = 0;
        let out = echo_logprobs(&[1, 3], &lps, &mut offset, &text);
        assert_eq!(out.tokens, vec!["bc", "d"]);
        assert_eq!(out.text_offset, vec![0, 2]);
        assert_eq!(out.token_logprobs, vec![None, Some(-2.0)]);
        assert_eq!(out.top_logprobs[0], None);
        assert_eq!(out.top_logprobs[1].as_ref().unwrap().len(), 2);
        let v = serde_json::to_value(prompt_logprobs(&lps, &text)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([null, {
                "3": {"logprob": -2.0, "rank": 1, "decoded_token": "d"},
                "2": {"logprob": -0.5, "rank": 1, "decoded_token": "é"}
            }])
        );
    }

    #[test]
    fn chat_shape_with_bytes_and_top_n() {
        let tokens = vec![lp(2, -0.25, vec![(2, -0.25), (0, -2.0), (1, -3.0)])];
        let out = chat_logprobs(&tokens, 2, &text);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].token, "é");
        assert_eq!(out[0].bytes.as_deref(), Some("é".as_bytes()));
        assert_eq!(out[0].top_logprobs.len(), 2);
        assert_eq!(out[0].top_logprobs[1].token, "a");
        let v = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(v["top_logprobs"][0]["logprob"], -0.25);
    }
}
