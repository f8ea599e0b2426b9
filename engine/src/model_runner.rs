//! Turns a `SchedulerOutput` into one flat batch, runs one forward pass over
//! it, and returns the logits of the rows that need them.

use crate::backend::{Backend, ForwardBatch};
use crate::model::{DecoderModel, KvCache, Workspace};
use pagoda_scheduler::SchedulerOutput;
use std::ops::Range;

/// Logits of one step, on the host.
#[derive(Debug, Default)]
pub struct StepLogits {
    pub vocab_size: usize,
    /// `[rows, vocab_size]`.
    pub logits: Vec<f32>,
    /// For each scheduled request, its rows in `logits`: every new token's
    /// row when all rows were asked for (prompt logprobs), else the last
    /// token's row when it samples, else none.
    pub rows: Vec<Range<usize>>,
}

impl StepLogits {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.logits[r * self.vocab_size..(r + 1) * self.vocab_size]
    }
}

/// What the engine needs from a runner, whatever its backend.
pub trait Runner: Send {
    /// `all_rows[i]`: request i wants the logits of every new token.
    fn execute(&mut self, sched: &SchedulerOutput, all_rows: &[bool])
        -> anyhow::Result<StepLogits>;
    fn device_name(&self) -> String;
    /// Hands a step's logits back so their buffer serves the next step.
    fn recycle(&mut self, logits: StepLogits);
}

pub struct ModelRunner<B: Backend> {
    backend: B,
    model: DecoderModel<B>,
    ws: Workspace<B>,
    kv: KvCache<B>,
    batch: ForwardBatch,
    logit_rows: Vec<u32>,
    /// The host logits buffer, reused across steps.
    spare_logits: Vec<f32>,
}

impl<B: Backend> ModelRunner<B> {
    pub fn new(backend: B, model: DecoderModel<B>, ws: Workspace<B>, kv: KvCache<B>) -> Self {
        Self {
            backend,
            model,
            ws,
            kv,
            batch: ForwardBatch::default(),
            logit_rows: Vec::new(),
            spare_logits: Vec::new(),
        }
    }

    /// Fills `self.batch` from the scheduler's decision.
    fn build_batch(&mut self, sched: &SchedulerOutput, all_rows: &[bool]) -> Vec<Range<usize>> {
        let block_size = self.kv.block_size;
        let b = &mut self.batch;
        b.clear();
        self.logit_rows.clear();
        let reqs = sched.requests();
        b.max_blocks_per_seq = (0..reqs.len())
            .map(|i| sched.block_table(i).len())
            .max()
            .unwrap_or(0)
            .max(1);
        b.query_start_loc.push(0);
        let mut rows = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            let table = sched.block_table(i);
            let first = b.token_ids.len();
            b.token_ids.extend_from_slice(sched.token_ids(i));
            for p in r.start_position..r.start_position + r.num_tokens {
                b.positions.push(p as u32);
                let block = table[p / block_size] as i64;
                b.slot_mapping
                    .push(block * block_size as i64 + (p % block_size) as i64);
            }
            b.query_start_loc.push(b.token_ids.len() as u32);
            b.seq_lens.push((r.start_position + r.num_tokens) as u32);
            b.block_tables.extend_from_slice(table);
            b.block_tables
                .resize(b.block_tables.len() + b.max_blocks_per_seq - table.len(), 0);
            let start = self.logit_rows.len();
            if all_rows.get(i).copied().unwrap_or(false) {
                self.logit_rows
                    .extend((first..b.token_ids.len()).map(|t| t as u32));
            } else if r.sample {
                self.logit_rows.push((b.token_ids.len() - 1) as u32);
            }
            rows.push(start..self.logit_rows.len());
        }
        rows
    }
}

impl<B: Backend> Runner for ModelRunner<B> {
    fn execute(
        &mut self,
        sched: &SchedulerOutput,
        all_rows: &[bool],
    ) -> anyhow::Result<StepLogits> {
        let rows = self.build_batch(sched, all_rows);
        let num_tokens = self.batch.num_tokens();
        anyhow::ensure!(
            num_tokens <= self.ws.max_tokens,
            "step of {num_tokens} tokens exceeds the workspace of {}",
            self.ws.max_tokens
        );
        let inputs = self.backend.prepare_inputs(&self.batch)?;
        self.model.forward_hidden(
            &self.backend,
            &inputs,
            num_tokens,
            &mut self.ws,
            &mut self.kv,
        );
        let mut logits = std::mem::take(&mut self.spare_logits);
        self.model
            .compute_logits(&self.backend, &mut self.ws, &self.logit_rows, &mut logits)?;
        Ok(StepLogits {
            vocab_size: self.model.dims.vocab_size,
            logits,
            rows,
        })
    }

    fn device_name(&self) -> String {
        self.backend.device_name()
    }

    fn recycle(&mut self, logits: StepLogits) {
        self.spare_logits = logits.logits;
    }
}
