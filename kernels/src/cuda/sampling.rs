//! On-device sampling and logprobs over f32 logits (see sampling.cu), and
//! the host-side packing of the sparse per-row edits (logit bias, min-tokens
//! masks, penalties) into CSR lists.

use std::collections::BTreeMap;

use super::buffer::{DeviceBuffer, DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::{logit_edits_shape, sampling_shape, token_bitmask_shape, LOGPROBS_MAX_K};
use super::params::{
    LogitBiasParams, LogprobsTopkParams, PenaltiesParams, SampleTokensParams, TokenBitmaskParams,
    TokenLogprobsParams,
};
use super::sources::{unit_name, SAMPLING};
use super::{to_i32, CudaError, CudaKernels};

/// Per-row sampling parameters on the device (`[rows]` each). `uniform` is
/// the row's draw in [0, 1) from its request's own seeded generator.
#[derive(Debug, Clone, Copy)]
pub struct SamplingTensors<'a> {
    pub temperature: &'a DeviceBuffer<f32>,
    pub top_k: &'a DeviceBuffer<i32>,
    pub top_p: &'a DeviceBuffer<f32>,
    pub min_p: &'a DeviceBuffer<f32>,
    pub uniform: &'a DeviceBuffer<f32>,
}

/// Sparse per-row lists: row `r` owns entries `offsets[r]..offsets[r + 1]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsrRows<V> {
    pub offsets: Vec<u32>,
    pub ids: Vec<u32>,
    pub values: Vec<V>,
}

impl<V> CsrRows<V> {
    pub fn new() -> Self {
        Self {
            offsets: vec![0],
            ids: Vec::new(),
            values: Vec::new(),
        }
    }

    pub fn num_rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Appends one row of `(id, value)` entries; ids must be unique.
    pub fn push_row(&mut self, entries: impl IntoIterator<Item = (u32, V)>) {
        for (id, v) in entries {
            self.ids.push(id);
            self.values.push(v);
        }
        self.offsets.push(self.ids.len() as u32);
    }
}

/// One row's logit edits: `bias` added, `masked` ids set to -inf (stop
/// tokens before min_tokens), merged so each id appears once.
pub fn bias_row(bias: impl IntoIterator<Item = (u32, f32)>, masked: &[u32]) -> Vec<(u32, f32)> {
    let mut m: BTreeMap<u32, f32> = BTreeMap::new();
    for (id, b) in bias {
        *m.entry(id).or_insert(0.0) += b;
    }
    for &id in masked {
        m.insert(id, f32::NEG_INFINITY);
    }
    m.into_iter().collect()
}

/// One row's penalty entries: every distinct prompt or output token with its
/// count in the output.
pub fn penalty_row(prompt: &[u32], output: &[u32]) -> Vec<(u32, u32)> {
    let mut m: BTreeMap<u32, u32> = BTreeMap::new();
    for &t in prompt {
        m.entry(t).or_insert(0);
    }
    for &t in output {
        *m.entry(t).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

fn check_logits(op: &'static str, len: usize, rows: usize, vocab: usize) -> Result<(), CudaError> {
    ensure(vocab > 0 && vocab <= i32::MAX as usize, op, || {
        format!("vocab {vocab}")
    })?;
    ensure(len >= rows * vocab, op, || {
        format!("logits hold {len} elements, {rows} x {vocab} needed")
    })
}

impl CudaKernels {
    /// One token per row into `out` (see sampling.cu for the exact rules).
    pub fn sample_tokens(
        &self,
        logits: &impl DeviceMem<f32>,
        rows: usize,
        vocab: usize,
        params: &SamplingTensors<'_>,
        out: &mut impl DeviceMemMut<u32>,
    ) -> Result<(), CudaError> {
        let op = "sample_tokens";
        check_logits(op, logits.len(), rows, vocab)?;
        let p = params;
        ensure(
            [
                p.temperature.len(),
                p.top_k.len(),
                p.top_p.len(),
                p.min_p.len(),
                p.uniform.len(),
                out.len(),
            ]
            .iter()
            .all(|&l| l >= rows),
            op,
            || format!("a parameter array is shorter than {rows} rows"),
        )?;
        if rows == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&SAMPLING), "sample_tokens", 0)?;
        let l_p = logits.addr();
        let t_p = p.temperature.addr();
        let k_p = p.top_k.addr();
        let pp = p.top_p.addr();
        let m_p = p.min_p.addr();
        let u_p = p.uniform.addr();
        let o_p = out.addr_mut();
        let v = to_i32(op, vocab)?;
        let params = SampleTokensParams {
            logits: l_p,
            temperature: t_p,
            top_k: k_p,
            top_p: pp,
            min_p: m_p,
            uniform: u_p,
            out: o_p,
            vocab: v,
        };
        self.launch_kernel(&f, &sampling_shape(rows), &params)
    }

    /// The `k` most likely tokens of each row, `[rows, k]` ids and logprobs,
    /// highest first.
    #[allow(clippy::too_many_arguments)]
    pub fn logprobs_topk(
        &self,
        logits: &impl DeviceMem<f32>,
        rows: usize,
        vocab: usize,
        k: usize,
        ids: &mut impl DeviceMemMut<u32>,
        logprobs: &mut impl DeviceMemMut<f32>,
    ) -> Result<(), CudaError> {
        let op = "logprobs_topk";
        check_logits(op, logits.len(), rows, vocab)?;
        ensure(k <= vocab && k <= LOGPROBS_MAX_K, op, || {
            format!("k {k} above the vocab or {LOGPROBS_MAX_K}")
        })?;
        ensure(
            ids.len() >= rows * k && logprobs.len() >= rows * k,
            op,
            || format!("outputs shorter than {rows} x {k}"),
        )?;
        if rows == 0 || k == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&SAMPLING), "logprobs_topk", 0)?;
        let l_p = logits.addr();
        let i_p = ids.addr_mut();
        let o_p = logprobs.addr_mut();
        let (v, kk) = (to_i32(op, vocab)?, to_i32(op, k)?);
        let params = LogprobsTopkParams {
            logits: l_p,
            top_ids: i_p,
            top_logprobs: o_p,
            vocab: v,
            k: kk,
        };
        self.launch_kernel(&f, &sampling_shape(rows), &params)
    }

    /// Logprob and rank (1 + number of larger logits) of `tokens[r]` in row r.
    #[allow(clippy::too_many_arguments)]
    pub fn token_logprobs(
        &self,
        logits: &impl DeviceMem<f32>,
        rows: usize,
        vocab: usize,
        tokens: &impl DeviceMem<u32>,
        logprob: &mut impl DeviceMemMut<f32>,
        rank: &mut impl DeviceMemMut<u32>,
    ) -> Result<(), CudaError> {
        let op = "token_logprobs";
        check_logits(op, logits.len(), rows, vocab)?;
        ensure(
            tokens.len() >= rows && logprob.len() >= rows && rank.len() >= rows,
            op,
            || format!("arrays shorter than {rows}"),
        )?;
        if rows == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&SAMPLING), "token_logprobs", 0)?;
        let l_p = logits.addr();
        let t_p = tokens.addr();
        let lp_p = logprob.addr_mut();
        let r_p = rank.addr_mut();
        let v = to_i32(op, vocab)?;
        let params = TokenLogprobsParams {
            logits: l_p,
            tokens: t_p,
            out_logprob: lp_p,
            out_rank: r_p,
            vocab: v,
        };
        self.launch_kernel(&f, &sampling_shape(rows), &params)
    }

    /// `logits[r, ids[e]] += values[e]` for row r's entries (CSR, unique ids per row).
    pub fn apply_logit_bias(
        &self,
        logits: &mut impl DeviceMemMut<f32>,
        rows: usize,
        vocab: usize,
        offsets: &impl DeviceMem<u32>,
        ids: &impl DeviceMem<u32>,
        values: &impl DeviceMem<f32>,
    ) -> Result<(), CudaError> {
        let op = "apply_logit_bias";
        check_logits(op, logits.len(), rows, vocab)?;
        ensure(
            offsets.len() > rows && values.len() >= ids.len(),
            op,
            || "CSR arrays too short".into(),
        )?;
        if rows == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&SAMPLING), "apply_logit_bias", 0)?;
        let l_p = logits.addr_mut();
        let o_p = offsets.addr();
        let i_p = ids.addr();
        let v_p = values.addr();
        let v = to_i32(op, vocab)?;
        // Ids past the vocab are skipped in the kernel.
        let params = LogitBiasParams {
            logits: l_p,
            offsets: o_p,
            ids: i_p,
            values: v_p,
            vocab: v,
        };
        self.launch_kernel(&f, &logit_edits_shape(rows), &params)
    }

    /// Structured-output masks: `bitmask` row j (`mask_words` packed words,
    /// bit `i % 32` of word `i / 32` allows token i) sets every disallowed
    /// logit of row `mask_rows[j]` to -inf (`cpu::apply_token_bitmask`).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_token_bitmask(
        &self,
        logits: &mut impl DeviceMemMut<f32>,
        rows: usize,
        vocab: usize,
        bitmask: &impl DeviceMem<u32>,
        mask_rows: &impl DeviceMem<u32>,
        num_masked: usize,
        mask_words: usize,
    ) -> Result<(), CudaError> {
        let op = "apply_token_bitmask";
        check_logits(op, logits.len(), rows, vocab)?;
        ensure(
            num_masked <= rows && mask_rows.len() >= num_masked,
            op,
            || format!("{num_masked} masked rows of {rows}"),
        )?;
        ensure(bitmask.len() >= num_masked * mask_words, op, || {
            format!("bitmask shorter than {num_masked} x {mask_words} words")
        })?;
        if num_masked == 0 || vocab == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&SAMPLING), "apply_token_bitmask", 0)?;
        let l_p = logits.addr_mut();
        let b_p = bitmask.addr();
        let r_p = mask_rows.addr();
        // Row indices live on the device: the kernel skips any past `rows`.
        let params = TokenBitmaskParams {
            logits: l_p,
            bitmask: b_p,
            mask_rows: r_p,
            num_rows: to_i32(op, rows)?,
            vocab: to_i32(op, vocab)?,
            mask_words: to_i32(op, mask_words)?,
        };
        self.launch_kernel(&f, &token_bitmask_shape(num_masked, vocab), &params)
    }

    /// vLLM's repetition / frequency / presence penalties (per-row values,
    /// CSR entries from [`penalty_row`]).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_penalties(
        &self,
        logits: &mut impl DeviceMemMut<f32>,
        rows: usize,
        vocab: usize,
        offsets: &impl DeviceMem<u32>,
        ids: &impl DeviceMem<u32>,
        output_counts: &impl DeviceMem<u32>,
        repetition: &impl DeviceMem<f32>,
        frequency: &impl DeviceMem<f32>,
        presence: &impl DeviceMem<f32>,
    ) -> Result<(), CudaError> {
        let op = "apply_penalties";
        check_logits(op, logits.len(), rows, vocab)?;
        ensure(
            offsets.len() > rows && output_counts.len() >= ids.len(),
            op,
            || "CSR arrays too short".into(),
        )?;
        ensure(
            repetition.len() >= rows && frequency.len() >= rows && presence.len() >= rows,
            op,
            || format!("penalty arrays shorter than {rows}"),
        )?;
        if rows == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&SAMPLING), "apply_penalties", 0)?;
        let l_p = logits.addr_mut();
        let o_p = offsets.addr();
        let i_p = ids.addr();
        let c_p = output_counts.addr();
        let r_p = repetition.addr();
        let f_p = frequency.addr();
        let p_p = presence.addr();
        let v = to_i32(op, vocab)?;
        // Ids past the vocab are skipped in the kernel.
        let params = PenaltiesParams {
            logits: l_p,
            offsets: o_p,
            ids: i_p,
            output_counts: c_p,
            repetition: r_p,
            frequency: f_p,
            presence: p_p,
            vocab: v,
        };
        self.launch_kernel(&f, &logit_edits_shape(rows), &params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_rows_list_distinct_tokens_with_output_counts() {
        assert_eq!(
            penalty_row(&[5, 1, 5], &[2, 2, 5]),
            vec![(1, 0), (2, 2), (5, 1)]
        );
        assert!(penalty_row(&[], &[]).is_empty());
    }

    #[test]
    fn bias_rows_merge_and_mask() {
        let r = bias_row([(3, 1.0), (1, -2.0), (3, 0.5)], &[1, 7]);
        assert_eq!(
            r,
            vec![(1, f32::NEG_INFINITY), (3, 1.5), (7, f32::NEG_INFINITY)]
        );
    }

    #[test]
    fn csr_rows() {
        let mut c = CsrRows::new();
        c.push_row(penalty_row(&[1], &[2]));
        c.push_row(Vec::new());
        c.push_row([(9, 3u32)]);
        assert_eq!(c.num_rows(), 3);
        assert_eq!(c.offsets, vec![0, 2, 2, 3]);
        assert_eq!(c.ids, vec![1, 2, 9]);
        assert_eq!(c.values, vec![0, 1, 3]);
    }
}
