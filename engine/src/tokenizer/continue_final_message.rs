//! HF's `continue_final_message`: the rendered chat is cut right after the
//! final message's content, so the template's end-of-turn markup is gone and
//! the model continues that message ("prefilling" part of its answer).
//!
//! This mirrors transformers' `apply_chat_template` (which vLLM calls): the
//! content is searched from the end of the rendered text, and a template
//! that trims the content's trailing whitespace is cut after the trimmed
//! text.

use super::TokenizerError;

/// Cuts `rendered` after the last occurrence of `final_content`.
pub fn continue_final_message(
    rendered: &str,
    final_content: &str,
) -> Result<String, TokenizerError> {
    let stripped = final_content.trim();
    let Some(loc) = rendered.rfind(stripped) else {
        return Err(TokenizerError::Template(
            "continue_final_message is set but the final message does not appear in the chat \
             after applying the chat template"
                .into(),
        ));
    };
    let lstripped = final_content.trim_start();
    let end = if rendered[loc..].starts_with(lstripped) {
        // The template kept the content's trailing spacing.
        loc + lstripped.len()
    } else {
        loc + stripped.len()
    };
    Ok(rendered[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str =
        "<|im_start|>user\nWrite a poem<|im_end|>\n<|im_start|>assistant\nRoses are<|im_end|>\n";

    #[test]
    fn cuts_the_closing_markup() {
        let out = continue_final_message(CHATML, "Roses are").unwrap();
        assert!(out.ends_with("<|im_start|>assistant\nRoses are"), "{out:?}");
    }

    #[test]
    fn trailing_space_kept_when_the_template_keeps_it() {
        let rendered = "<|user|>hi<|end|><|assistant|>Roses are <|end|>";
        assert_eq!(
            continue_final_message(rendered, "Roses are ").unwrap(),
            "<|user|>hi<|end|><|assistant|>Roses are "
        );
        // A template that trims it: cut after the trimmed text.
        let trimmed = "<|user|>hi<|end|><|assistant|>Roses are<|end|>";
        assert_eq!(
            continue_final_message(trimmed, "Roses are ").unwrap(),
            "<|user|>hi<|end|><|assistant|>Roses are"
        );
    }

    #[test]
    fn the_last_occurrence_is_the_final_message() {
        let rendered = "<u>Roses are</u><a>Roses are</a>";
        assert_eq!(
            continue_final_message(rendered, "Roses are").unwrap(),
            "<u>Roses are</u><a>Roses are"
        );
    }

    #[test]
    fn content_missing_from_the_rendering_is_an_error() {
        assert!(continue_final_message("<u>hello</u>", "bye").is_err());
    }
}
