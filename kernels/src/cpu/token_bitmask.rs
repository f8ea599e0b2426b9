//! Structured-output token masks (vLLM's `apply_token_bitmask_inplace`):
//! bit `i % 32` of word `i / 32` allows token `i`; every other logit becomes
//! -inf. Tokens past the mask's words (a model vocabulary padded beyond the
//! tokenizer's) are disallowed. The CUDA `apply_token_bitmask` kernel is
//! checked against this.

/// Masks one row of logits in place with its packed bitmask.
pub fn apply_token_bitmask(logits: &mut [f32], words: &[u32]) {
    for (w, chunk) in logits.chunks_mut(32).enumerate() {
        let bits = words.get(w).copied().unwrap_or(0);
        if bits == u32::MAX {
            continue;
        }
        for (b, l) in chunk.iter_mut().enumerate() {
            if bits >> b & 1 == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_exactly_the_set_bits() {
        let mut l: Vec<f32> = (0..70).map(|i| i as f32).collect();
        // Tokens 0, 33 and 63 allowed; 64.. lie past the two words.
        apply_token_bitmask(&mut l, &[1, 1 | 1 << 31]);
        for (i, v) in l.iter().enumerate() {
            let allowed = matches!(i, 0 | 32 | 63);
            assert_eq!(*v == f32::NEG_INFINITY, !allowed, "token {i}");
        }
    }

    #[test]
    fn a_full_word_leaves_its_logits_alone() {
        let mut l = vec![f32::NAN, 1.0, f32::INFINITY];
        apply_token_bitmask(&mut l, &[u32::MAX]);
        assert!(l[0].is_nan() && l[1] == 1.0 && l[2] == f32::INFINITY);
    }
}
