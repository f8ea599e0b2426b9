//! Structured-output masks on the device: the rows' bitmasks (computed on
//! the mask worker while the forward pass ran) packed into one upload and
//! applied by the `apply_token_bitmask` kernel before any other processor,
//! to the processed logits and to the raw copy the logprobs read (as the
//! host sampler masks `raw`: logprobs are of the allowed tokens, as vLLM's).

use super::{CudaBackend, SAMPLING};
use crate::sampler::SamplingRow;
use anyhow::Context as _;
use pagoda_kernels::cuda::{DeviceBuffer, DeviceMemMut};

/// The masked rows' bitmasks on the device: `words` per row, packed.
pub(super) struct DeviceMasks {
    bitmask: DeviceBuffer<u32>,
    rows: DeviceBuffer<u32>,
    num_masked: usize,
    words: usize,
}

/// Each masked row's words cut or zero-padded to `words` (tokens past the
/// tokenizer's vocabulary are masked), with the row indices.
pub(super) fn pack_masks(rows: &[SamplingRow], words: usize) -> (Vec<u32>, Vec<u32>) {
    let mut bitmask = Vec::new();
    let mut indices = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let Some(pending) = &row.grammar_mask else {
            continue;
        };
        let mask = pending.wait();
        let w = mask.words();
        let n = w.len().min(words);
        bitmask.extend_from_slice(&w[..n]);
        bitmask.resize(bitmask.len() + words - n, 0);
        indices.push(r as u32);
    }
    (bitmask, indices)
}

impl CudaBackend {
    /// Uploads the masks of the rows that have one; `None` when none has.
    pub(super) fn upload_grammar_masks(
        &self,
        rows: &[SamplingRow],
        vocab: usize,
    ) -> anyhow::Result<Option<DeviceMasks>> {
        if rows.iter().all(|r| r.grammar_mask.is_none()) {
            return Ok(None);
        }
        let words = vocab.div_ceil(32);
        let (bitmask, indices) = pack_masks(rows, words);
        Ok(Some(DeviceMasks {
            bitmask: self.upload(&bitmask)?,
            rows: self.upload(&indices)?,
            num_masked: indices.len(),
            words,
        }))
    }

    /// Sets every disallowed logit of the masked rows to -inf.
    pub(super) fn apply_grammar_masks(
        &self,
        masks: &DeviceMasks,
        logits: &mut impl DeviceMemMut<f32>,
        num_rows: usize,
        vocab: usize,
    ) -> anyhow::Result<()> {
        self.kernels
            .apply_token_bitmask(
                logits,
                num_rows,
                vocab,
                &masks.bitmask,
                &masks.rows,
                masks.num_masked,
                masks.words,
            )
            .context(SAMPLING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structured_output::{PendingMask, TokenBitmask};

    fn masked(ids: &[u32], vocab: usize) -> SamplingRow {
        let mut row = SamplingRow::greedy();
        row.grammar_mask = Some(PendingMask::ready(TokenBitmask::only(ids, vocab)));
        row
    }

    #[test]
    fn packs_only_masked_rows_to_the_logits_width() {
        // Tokenizer vocab 40 (2 words), logits padded to 100 (4 words).
        let rows = [
            SamplingRow::greedy(),
            masked(&[1, 33], 40),
            masked(&[39], 40),
        ];
        let (bitmask, indices) = pack_masks(&rows, 4);
        assert_eq!(indices, [1, 2]);
        assert_eq!(bitmask, [1 << 1, 1 << 1, 0, 0, 0, 1 << 7, 0, 0]);
        // A mask wider than the logits is cut.
        let (bitmask, _) = pack_masks(&rows[1..2], 1);
        assert_eq!(bitmask, [1 << 1]);
    }
}
