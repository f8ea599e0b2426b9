//! Turns a `SchedulerOutput` into one flat batch, runs one forward pass over
//! it, samples, and returns the tokens (and the host logits of requests that
//! want every row). Pure-decode steps that fit a captured size are padded to
//! it and replay its graph.

use crate::backend::{Backend, ForwardBatch, InputLimits, KvGroupBatch};
use crate::decode_graphs::DecodeGraphs;
use crate::model::{DecoderModel, KvCache, Workspace};
use crate::runner_io::{sample_on_host, HostLogits, LogitsNeed, ModelRunnerOutput};
use crate::sampler::{Sampled, SamplingRow};
use pagoda_scheduler::SchedulerOutput;
use std::ops::Range;

/// What the engine needs from a runner, whatever its backend.
pub trait Runner: Send {
    /// Runs one step: `needs[i]` says what scheduled request i needs from
    /// the logits. Sampling happens where the logits are when the backend
    /// can take every row and no request wants all rows; otherwise the
    /// logits come to the host and are sampled there.
    fn execute(
        &mut self,
        sched: &SchedulerOutput,
        needs: Vec<LogitsNeed>,
    ) -> anyhow::Result<ModelRunnerOutput>;
    fn device_name(&self) -> String;
    /// Hands a step's host logits back so their buffer serves the next step.
    fn recycle(&mut self, logits: HostLogits);
}

pub struct ModelRunner<B: Backend> {
    backend: B,
    model: DecoderModel<B>,
    ws: Workspace<B>,
    kv: KvCache<B>,
    batch: ForwardBatch,
    /// Step metadata where the kernels read it, allocated once.
    inputs: B::Inputs,
    logit_rows: Vec<u32>,
    /// The host logits buffer, reused across steps.
    spare_logits: Vec<f32>,
    /// Padded decode steps (with graphs where the backend records them).
    graphs: Option<DecodeGraphs<B>>,
}

impl<B: Backend> ModelRunner<B> {
    /// A runner whose metadata buffers hold steps of up to `max_seqs`
    /// sequences (at least the largest decode size to be captured) and
    /// `max_model_len` tokens each; the token bound is the workspace's.
    pub fn new(
        backend: B,
        model: DecoderModel<B>,
        ws: Workspace<B>,
        kv: KvCache<B>,
        max_seqs: usize,
        max_model_len: usize,
    ) -> anyhow::Result<Self> {
        let inputs = backend.alloc_inputs(InputLimits {
            max_tokens: ws.max_tokens,
            max_seqs,
            max_blocks_per_seq: max_model_len.div_ceil(kv.block_size),
            num_kv_groups: kv.layout.num_groups(),
        })?;
        Ok(Self {
            backend,
            model,
            ws,
            kv,
            batch: ForwardBatch::default(),
            inputs,
            logit_rows: Vec::new(),
            spare_logits: Vec::new(),
            graphs: None,
        })
    }

    /// The sizes decode steps may be padded to: those the workspace holds
    /// (tokens and logits rows), ascending.
    pub fn usable_decode_sizes(&self, sizes: &[usize]) -> Vec<usize> {
        let cap = self.ws.max_tokens.min(self.ws.max_logits_rows);
        let mut s: Vec<usize> = sizes
            .iter()
            .copied()
            .filter(|&b| b > 0 && b <= cap)
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Records one graph per size (largest first, as vLLM does) for decode
    /// steps of sequences up to `max_seq_len` tokens. Each size first runs
    /// once eagerly, so kernels are loaded and cuBLAS has chosen its
    /// algorithms before recording. On error nothing is kept and steps run
    /// eagerly. Returns the sizes captured.
    pub fn capture_decode_graphs(
        &mut self,
        sizes: &[usize],
        max_seq_len: usize,
    ) -> anyhow::Result<Vec<usize>> {
        let sizes = self.usable_decode_sizes(sizes);
        let max_blocks = max_seq_len.div_ceil(self.kv.block_size);
        let mut graphs: Vec<Option<B::Graph>> = Vec::with_capacity(sizes.len());
        for &size in sizes.iter().rev() {
            self.batch.clear();
            self.batch.pad_decodes(size, max_blocks, max_seq_len);
            self.backend.prepare_inputs(&self.batch, &mut self.inputs)?;
            self.run_dense(size);
            self.backend.begin_capture()?;
            self.run_dense(size);
            graphs.push(Some(self.backend.end_capture()?));
        }
        graphs.reverse();
        self.graphs = Some(DecodeGraphs::new(
            sizes.clone(),
            graphs,
            max_blocks,
            max_seq_len,
        ));
        Ok(sizes)
    }

    /// Pads decode steps to `sizes` and runs them eagerly: the graph path
    /// without recording, on any backend (how the padding is tested on CPU).
    pub fn pad_decodes(&mut self, sizes: &[usize], max_seq_len: usize) {
        let sizes = self.usable_decode_sizes(sizes);
        let graphs = sizes.iter().map(|_| None).collect();
        let max_blocks = max_seq_len.div_ceil(self.kv.block_size);
        self.graphs = Some(DecodeGraphs::new(sizes, graphs, max_blocks, max_seq_len));
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Swaps the KV cache for one of `num_blocks` blocks (after profiling
    /// with a one-block cache). Graphs record the cache's addresses, so
    /// this comes before `capture_decode_graphs`.
    pub fn replace_kv_cache(&mut self, num_blocks: usize) -> anyhow::Result<()> {
        debug_assert!(self.graphs.is_none());
        let block_size = self.kv.block_size;
        let layout = self.kv.layout.clone();
        let d = &self.model.dims;
        // Free the old cache first.
        self.kv = KvCache::new(&self.backend, d, &layout, 1, block_size)?;
        self.kv = KvCache::new(&self.backend, d, &layout, num_blocks, block_size)?;
        Ok(())
    }

    /// One forward pass at the largest step: `max_tokens` tokens over as
    /// few sequences of up to `max_model_len` as hold them (at most
    /// `max_num_seqs`), then the LM head over the most logits rows. Padding
    /// slots write no KV and block tables point at the null block, so any
    /// cache of one block serves. Every kernel the serving path uses is
    /// loaded here, a failing launch shows before the first request, and
    /// the device's memory high-water mark is reached before the KV cache
    /// is sized (vLLM's profile run).
    pub fn profile_run(
        &mut self,
        max_tokens: usize,
        max_num_seqs: usize,
        max_model_len: usize,
    ) -> anyhow::Result<()> {
        let max_tokens = max_tokens.min(self.ws.max_tokens).max(1);
        let per_seq = max_model_len.min(max_tokens).max(1);
        let seqs = max_tokens.div_ceil(per_seq).clamp(1, max_num_seqs.max(1));
        let tokens = (seqs * per_seq).min(max_tokens);
        let width = per_seq.div_ceil(self.kv.block_size);
        let b = &mut self.batch;
        b.clear();
        b.query_start_loc.push(0);
        b.max_blocks_per_seq = width;
        for s in 0..seqs {
            let len = per_seq.min(tokens - s * per_seq);
            b.token_ids.extend(std::iter::repeat_n(0, len));
            b.positions.extend(0..len as u32);
            b.slot_mapping.extend(std::iter::repeat_n(-1, len));
            b.query_start_loc.push(b.token_ids.len() as u32);
            b.seq_lens.push(len as u32);
            b.block_tables.extend(std::iter::repeat_n(0, width));
            b.max_seq_len = b.max_seq_len.max(len);
        }
        let group0 = KvGroupBatch {
            slot_mapping: b.slot_mapping.clone(),
            block_tables: b.block_tables.clone(),
            max_blocks_per_seq: width,
        };
        b.kv_groups = vec![group0; self.kv.layout.num_groups() - 1];
        self.backend.prepare_inputs(&self.batch, &mut self.inputs)?;
        self.run_dense_tokens(tokens, tokens.min(self.ws.max_logits_rows));
        // Copying a row back waits for the pass and surfaces its errors.
        let mut row = Vec::new();
        self.backend
            .to_host(&self.ws.logits, self.model.dims.vocab_size, &mut row)
    }

    /// The sizes decode steps are padded to (empty: every step is eager).
    pub fn decode_sizes(&self) -> &[usize] {
        self.graphs.as_ref().map_or(&[], |g| g.sizes())
    }

    /// The forward pass and the LM head over the first `rows` rows (all of
    /// which sample): what a decode graph records.
    fn run_dense(&mut self, rows: usize) {
        self.run_dense_tokens(rows, rows);
    }

    fn run_dense_tokens(&mut self, tokens: usize, logits_rows: usize) {
        self.model.forward_hidden(
            &self.backend,
            &self.inputs,
            tokens,
            &mut self.ws,
            &mut self.kv,
        );
        self.model
            .lm_head_dense(&self.backend, &mut self.ws, logits_rows);
    }

    /// Runs the pure-decode batch in `self.batch` padded to bucket `i`,
    /// LM head included: logits row j is request j's, and `rows` are
    /// renumbered so.
    fn run_padded(&mut self, i: usize, rows: &mut [Range<usize>]) -> anyhow::Result<()> {
        let graphs = self.graphs.as_ref().expect("a bucket implies graphs");
        let (size, max_blocks, max_seq_len) = (
            graphs.sizes()[i],
            graphs.max_blocks_per_seq,
            graphs.max_seq_len,
        );
        self.batch.pad_decodes(size, max_blocks, max_seq_len);
        self.backend.prepare_inputs(&self.batch, &mut self.inputs)?;
        match self.graphs.as_ref().and_then(|g| g.graph(i)) {
            Some(graph) => self.backend.replay(graph)?,
            None => self.run_dense(size),
        }
        for (j, r) in rows.iter_mut().enumerate() {
            if r.start < r.end {
                *r = j..j + 1;
            }
        }
        Ok(())
    }

    /// Runs the forward pass of the batch in `self.batch`: padded to a
    /// graph bucket when it is a pure decode that fits one (the LM head then
    /// already ran densely; returns true), else eagerly without the LM head.
    fn forward(&mut self, rows: &mut [Range<usize>]) -> anyhow::Result<bool> {
        if self.batch.is_pure_decode() {
            let bucket = self
                .graphs
                .as_ref()
                .and_then(|g| g.bucket(self.batch.num_seqs(), self.batch.max_blocks_per_seq));
            if let Some(i) = bucket {
                self.run_padded(i, rows)?;
                return Ok(true);
            }
        }
        let num_tokens = self.batch.num_tokens();
        anyhow::ensure!(
            num_tokens <= self.ws.max_tokens,
            "step of {num_tokens} tokens exceeds the workspace of {}",
            self.ws.max_tokens
        );
        self.backend.prepare_inputs(&self.batch, &mut self.inputs)?;
        self.model.forward_hidden(
            &self.backend,
            &self.inputs,
            num_tokens,
            &mut self.ws,
            &mut self.kv,
        );
        Ok(false)
    }

    /// Samples where the logits are: one result per logits row. `padded`:
    /// row j is request j (every request gets a row; those without a need
    /// sample a greedy placeholder that is dropped); else rows are the
    /// requests with one, in order, and the LM head runs chunk by chunk.
    fn sample_on_device(
        &mut self,
        padded: bool,
        needs: Vec<LogitsNeed>,
    ) -> anyhow::Result<Vec<Sampled>> {
        let vocab = self.model.dims.vocab_size;
        let params: Vec<SamplingRow> = needs
            .into_iter()
            .filter_map(|n| match n {
                LogitsNeed::Sample(row) => Some(row),
                _ if padded => Some(SamplingRow::greedy()),
                _ => None,
            })
            .collect();
        let mut out = Vec::with_capacity(params.len());
        if padded {
            self.backend
                .sample(&self.ws.logits, vocab, &params, &mut out)?;
        } else {
            anyhow::ensure!(
                params.len() == self.logit_rows.len(),
                "sampling: {} rows for {} logits rows",
                params.len(),
                self.logit_rows.len()
            );
            self.model.for_logits_chunks(
                &self.backend,
                &mut self.ws,
                &self.logit_rows,
                |backend, chunk_logits, first, len| {
                    backend.sample(chunk_logits, vocab, &params[first..first + len], &mut out)
                },
            )?;
        }
        Ok(out)
    }

    /// The step's logits rows on the host (`rows` per request).
    fn logits_to_host(
        &mut self,
        padded: bool,
        rows: Vec<Range<usize>>,
    ) -> anyhow::Result<HostLogits> {
        let vocab = self.model.dims.vocab_size;
        let mut logits = std::mem::take(&mut self.spare_logits);
        if padded {
            logits.clear();
            self.backend
                .to_host(&self.ws.logits, rows.len() * vocab, &mut logits)?;
        } else {
            self.model.compute_logits(
                &self.backend,
                &mut self.ws,
                &self.logit_rows,
                &mut logits,
            )?;
        }
        Ok(HostLogits {
            vocab_size: vocab,
            logits,
            rows,
        })
    }

    /// Fills `self.batch` from the scheduler's decision.
    fn build_batch(&mut self, sched: &SchedulerOutput, needs: &[LogitsNeed]) -> Vec<Range<usize>> {
        let block_size = self.kv.block_size;
        let b = &mut self.batch;
        b.clear();
        self.logit_rows.clear();
        let reqs = sched.requests();
        let width = |g: usize| {
            (0..reqs.len())
                .map(|i| sched.group_block_table(g, i).len())
                .max()
                .unwrap_or(0)
                .max(1)
        };
        b.max_blocks_per_seq = width(0);
        let num_groups = sched.num_groups().max(1);
        b.kv_groups.resize_with(num_groups - 1, Default::default);
        for (g, kg) in b.kv_groups.iter_mut().enumerate() {
            kg.max_blocks_per_seq = width(g + 1);
        }
        b.query_start_loc.push(0);
        b.max_seq_len = reqs
            .iter()
            .map(|r| r.start_position + r.num_tokens)
            .max()
            .unwrap_or(0);
        let mut rows = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            let first = b.token_ids.len();
            b.token_ids.extend_from_slice(sched.token_ids(i));
            let positions = r.start_position..r.start_position + r.num_tokens;
            b.positions.extend(positions.clone().map(|p| p as u32));
            push_group_rows(
                sched.block_table(i),
                positions.clone(),
                block_size,
                &mut b.slot_mapping,
                &mut b.block_tables,
                b.max_blocks_per_seq,
            );
            for (g, kg) in b.kv_groups.iter_mut().enumerate() {
                push_group_rows(
                    sched.group_block_table(g + 1, i),
                    positions.clone(),
                    block_size,
                    &mut kg.slot_mapping,
                    &mut kg.block_tables,
                    kg.max_blocks_per_seq,
                );
            }
            b.query_start_loc.push(b.token_ids.len() as u32);
            b.seq_lens.push((r.start_position + r.num_tokens) as u32);
            let start = self.logit_rows.len();
            match &needs[i] {
                LogitsNeed::AllRows(_) => self
                    .logit_rows
                    .extend((first..b.token_ids.len()).map(|t| t as u32)),
                LogitsNeed::Sample(_) => self.logit_rows.push((b.token_ids.len() - 1) as u32),
                LogitsNeed::None => {}
            }
            rows.push(start..self.logit_rows.len());
        }
        rows
    }
}

/// One sequence's rows in one KV-cache group: the slots of the tokens at
/// `positions` and its block table padded to `width` with the null block.
fn push_group_rows(
    table: &[u32],
    positions: Range<usize>,
    block_size: usize,
    slot_mapping: &mut Vec<i64>,
    block_tables: &mut Vec<u32>,
    width: usize,
) {
    for p in positions {
        let block = table[p / block_size] as i64;
        slot_mapping.push(block * block_size as i64 + (p % block_size) as i64);
    }
    block_tables.extend_from_slice(table);
    block_tables.resize(block_tables.len() + width - table.len(), 0);
}

impl<B: Backend> Runner for ModelRunner<B> {
    fn execute(
        &mut self,
        sched: &SchedulerOutput,
        needs: Vec<LogitsNeed>,
    ) -> anyhow::Result<ModelRunnerOutput> {
        B::on_compute_threads(|| self.execute_here(sched, needs))
    }

    fn device_name(&self) -> String {
        self.backend.device_name()
    }

    fn recycle(&mut self, logits: HostLogits) {
        self.spare_logits = logits.logits;
    }
}

impl<B: Backend> ModelRunner<B> {
    /// [`Runner::execute`] on the calling thread.
    fn execute_here(
        &mut self,
        sched: &SchedulerOutput,
        needs: Vec<LogitsNeed>,
    ) -> anyhow::Result<ModelRunnerOutput> {
        anyhow::ensure!(
            needs.len() == sched.requests().len(),
            "{} logits needs for {} requests",
            needs.len(),
            sched.requests().len()
        );
        let mut rows = self.build_batch(sched, &needs);
        let padded = self.forward(&mut rows)?;
        let on_device = needs.iter().all(|n| match n {
            LogitsNeed::None => true,
            LogitsNeed::Sample(row) => self.backend.can_sample(row),
            LogitsNeed::AllRows(_) => false,
        });
        if on_device {
            let out = self.sample_on_device(padded, needs)?;
            return Ok(ModelRunnerOutput {
                sampled: per_request(&rows, out),
                prompt_logits: None,
            });
        }
        let mut host = self.logits_to_host(padded, rows)?;
        let sampled = sample_on_host(&host, &needs);
        if !needs.iter().any(LogitsNeed::wants_all_rows) {
            self.recycle(host);
            return Ok(ModelRunnerOutput {
                sampled,
                prompt_logits: None,
            });
        }
        for (r, need) in host.rows.iter_mut().zip(&needs) {
            if !need.wants_all_rows() {
                *r = r.start..r.start;
            }
        }
        Ok(ModelRunnerOutput {
            sampled,
            prompt_logits: Some(host),
        })
    }
}

/// Per request, the result of its logits row (`sampled` in row order).
fn per_request(rows: &[Range<usize>], sampled: Vec<Sampled>) -> Vec<Option<Sampled>> {
    let mut sampled: Vec<Option<Sampled>> = sampled.into_iter().map(Some).collect();
    rows.iter()
        .map(|r| {
            (r.start < r.end)
                .then(|| sampled.get_mut(r.end - 1).and_then(Option::take))
                .flatten()
        })
        .collect()
}
