//! The CUDA backend: bf16 buffers on one device and the kernels of
//! `pagoda_kernels::cuda` (f32 accumulation inside every kernel and GEMM).
//!
//! Batch metadata lives in buffers allocated once (`alloc_inputs`) and
//! refilled each step, so recorded graphs keep valid addresses.
//!
//! Status: compiled, never run on a GPU. The op methods of [`Backend`]
//! return `()`, so a failed launch is recorded here (the first error wins)
//! and returned by the next fallible call (`prepare_inputs`, `gather_rows`,
//! `to_host`): a CUDA failure becomes an engine error, never a panic.

use super::{AttentionDims, Backend, ForwardBatch, InputLimits};
use crate::outputs::TokenLogprobs;
use crate::sampler::{Draw, Sampled, SamplingRow};
use crate::weights::HostTensor;
use anyhow::Context as _;
use half::bf16;
use pagoda_kernels::cpu::RotaryCache;
use pagoda_kernels::cuda::{
    AttentionMetadata, AttentionShape, AttentionWorkspace, CsrRows, CudaError, CudaKernels,
    CudaRope, DeviceBuffer, DeviceGraph, DeviceMem, DeviceMemMut, DeviceRepr, NormStyle,
    SamplingTensors, ValidAsZeroBits,
};
use parking_lot::Mutex;

mod grammar_mask;

use super::cuda_moe::MoeScratch;

/// One step's batch metadata on the device, in buffers sized for the
/// largest step; the sizes say how much of each the step uses.
pub struct CudaInputs {
    pub token_ids: DeviceBuffer<u32>,
    pub positions: DeviceBuffer<u32>,
    pub slot_mapping: DeviceBuffer<i64>,
    pub query_start_loc: DeviceBuffer<u32>,
    pub seq_lens: DeviceBuffer<u32>,
    pub block_tables: DeviceBuffer<u32>,
    pub max_blocks_per_seq: usize,
    pub num_tokens: usize,
    pub num_seqs: usize,
    /// Sequences with exactly one new token this step.
    pub num_decodes: usize,
    /// Bounds every `seq_len` of the step (sizes the decode grid).
    pub max_seq_len: usize,
    /// KV-cache groups 1.. of a hybrid or windowed layout (group 0 is above).
    pub kv_groups: Vec<CudaKvGroup>,
    limits: InputLimits,
}

/// One more KV-cache group's slots and block tables, on the device.
pub struct CudaKvGroup {
    pub slot_mapping: DeviceBuffer<i64>,
    pub block_tables: DeviceBuffer<u32>,
    pub max_blocks_per_seq: usize,
}

impl CudaInputs {
    /// KV-cache group `group`'s slots, or an error naming a group the
    /// layout does not have.
    fn group_slots(&self, group: usize) -> Result<&DeviceBuffer<i64>, CudaError> {
        match group {
            0 => Ok(&self.slot_mapping),
            g => self
                .kv_groups
                .get(g - 1)
                .map(|kg| &kg.slot_mapping)
                .ok_or_else(|| missing_group(g)),
        }
    }

    /// KV-cache group `group`'s block tables and their width.
    fn group_block_tables(&self, group: usize) -> Result<(&DeviceBuffer<u32>, usize), CudaError> {
        match group {
            0 => Ok((&self.block_tables, self.max_blocks_per_seq)),
            g => self
                .kv_groups
                .get(g - 1)
                .map(|kg| (&kg.block_tables, kg.max_blocks_per_seq))
                .ok_or_else(|| missing_group(g)),
        }
    }
}

fn missing_group(group: usize) -> CudaError {
    CudaError::InvalidArgument {
        op: "kv_cache_group",
        message: format!("KV-cache group {group} is not in this step's inputs"),
    }
}

/// The attention workspace and the head layout `(num_heads, num_kv_heads,
/// head_dim)` it was sized for.
struct Attention {
    heads: (usize, usize, usize),
    ws: AttentionWorkspace,
}

pub struct CudaBackend {
    kernels: CudaKernels,
    attention: Mutex<Attention>,
    /// f32 logits for the sampler and for copies to the host, grown to the
    /// largest step seen.
    sampling_logits: Mutex<Option<DeviceBuffer<f32>>>,
    /// The first failure of an op since the last fallible call, with its
    /// cause.
    error: Mutex<Option<anyhow::Error>>,
    /// How every RMSNorm of the model applies its gain.
    norm_style: NormStyle,
    /// Mixture-of-experts scratch and expert tables (`cuda_moe.rs`).
    moe: Mutex<MoeScratch>,
}

impl CudaBackend {
    /// A backend over `kernels`, with an attention workspace for up to
    /// `max_num_seqs` sequences of up to `max_seq_len` tokens in the head
    /// layout of `dims` (the model's; `paged_attention` checks it).
    pub fn new(
        kernels: CudaKernels,
        dims: AttentionDims,
        max_num_seqs: usize,
        max_seq_len: usize,
    ) -> Result<Self, CudaError> {
        let shape = attention_shape(&dims);
        let ws = AttentionWorkspace::new(&kernels, max_num_seqs, &shape, max_seq_len)?;
        Ok(Self {
            kernels,
            attention: Mutex::new(Attention {
                heads: (dims.num_heads, dims.num_kv_heads, dims.head_dim),
                ws,
            }),
            sampling_logits: Mutex::new(None),
            error: Mutex::new(None),
            norm_style: NormStyle::Llama,
            moe: Mutex::new(MoeScratch::default()),
        })
    }

    /// The model's RMSNorm gains: Gemma's `1 + w` (added in the kernels, the
    /// weights loaded as stored) or Llama's `w`.
    pub fn with_norm_style(self, style: NormStyle) -> Self {
        Self {
            norm_style: style,
            ..self
        }
    }

    pub fn kernels(&self) -> &CudaKernels {
        &self.kernels
    }

    /// Records the first error of an op.
    fn record(&self, op: &str, result: Result<(), CudaError>) {
        if let Err(e) = result {
            let mut slot = self.error.lock();
            if slot.is_none() {
                tracing::error!("CUDA {op} failed: {}", crate::error_chain(&e));
                *slot = Some(anyhow::Error::new(e).context(format!("CUDA {op}")));
            }
        }
    }

    /// Returns (and clears) the recorded error, if any.
    fn check(&self) -> anyhow::Result<()> {
        match self.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Uploads `data`, at least one element long (a zero-length device
    /// buffer is avoided; the kernels check only lower bounds on lengths).
    fn upload<T: DeviceRepr + Copy + Default>(
        &self,
        data: &[T],
    ) -> anyhow::Result<DeviceBuffer<T>> {
        let r = if data.is_empty() {
            self.kernels.upload(&[T::default()])
        } else {
            self.kernels.upload(data)
        };
        r.context("CUDA upload")
    }

    /// The f32 scratch buffer, grown (the old one freed first) to hold `len`.
    fn f32_scratch<'a>(
        &self,
        slot: &'a mut Option<DeviceBuffer<f32>>,
        len: usize,
    ) -> anyhow::Result<&'a mut DeviceBuffer<f32>> {
        if slot.as_ref().is_none_or(|s| s.len() < len) {
            *slot = None;
            let buf = self
                .kernels
                .alloc_zeros::<f32>(len)
                .with_context(|| format!("CUDA alloc of {len} f32 logits"))?;
            return Ok(slot.insert(buf));
        }
        slot.as_mut().context("logits scratch missing")
    }

    /// A zeroed metadata buffer of `len` (at least one) elements.
    fn alloc_meta<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> anyhow::Result<DeviceBuffer<T>> {
        self.kernels
            .alloc_zeros(len.max(1))
            .context("CUDA alloc of step metadata")
    }
}

/// Copies `data` into the front of `dst`, refusing (not panicking) when it
/// does not fit.
fn copy_into<T: DeviceRepr>(
    kernels: &CudaKernels,
    name: &str,
    data: &[T],
    dst: &mut DeviceBuffer<T>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        data.len() <= dst.len(),
        "step metadata {name}: {} elements, room for {}",
        data.len(),
        dst.len()
    );
    if data.is_empty() {
        return Ok(());
    }
    kernels
        .copy_htod(data, dst)
        .with_context(|| format!("CUDA copy of {name}"))
}

fn attention_shape(dims: &AttentionDims) -> AttentionShape {
    AttentionShape {
        num_heads: dims.num_heads,
        num_kv_heads: dims.num_kv_heads,
        head_dim: dims.head_dim,
        block_size: dims.block_size,
        scale: dims.scale,
        q_stride: dims.num_heads * dims.head_dim,
        out_stride: dims.num_heads * dims.head_dim,
        sliding_window: dims.sliding_window,
        logit_softcap: dims.logit_softcap,
    }
}

impl Backend for CudaBackend {
    type Tensor = DeviceBuffer<bf16>;
    type Weight = DeviceBuffer<bf16>;
    type Rope = CudaRope;
    type Inputs = CudaInputs;
    type Graph = DeviceGraph;
    type KvCache = DeviceBuffer<bf16>;

    fn device_name(&self) -> String {
        let i = self.kernels.info();
        // The emulated device says so in every log line and /v1/models.
        let kind = if self.kernels.is_emulated() {
            "cuda-emu"
        } else {
            "cuda"
        };
        format!(
            "{kind}:{} ({}, sm_{}{}, {} GiB)",
            i.ordinal,
            i.name,
            i.compute_capability.0,
            i.compute_capability.1,
            i.total_memory >> 30
        )
    }

    fn kv_cache_element_bytes(&self) -> usize {
        2
    }

    fn kv_cache_dtype_name(&self) -> &'static str {
        "bfloat16"
    }

    fn load_weight(&self, tensor: HostTensor) -> anyhow::Result<DeviceBuffer<bf16>> {
        self.upload(&tensor.to_bf16())
    }

    /// Uploaded as bf16 (blocks dequantized on the host first).
    fn load_norm_weight(
        &self,
        tensor: HostTensor,
        gemma: bool,
    ) -> anyhow::Result<DeviceBuffer<bf16>> {
        let want = if gemma {
            NormStyle::Gemma
        } else {
            NormStyle::Llama
        };
        anyhow::ensure!(
            want == self.norm_style,
            "a {want:?}-style norm weight on a backend built for {:?} norms",
            self.norm_style
        );
        self.load_weight(tensor)
    }

    fn load_matrix(&self, parts: Vec<HostTensor>) -> anyhow::Result<DeviceBuffer<bf16>> {
        self.upload(&HostTensor::concat_rows(parts).to_bf16())
    }

    fn weight_formats(&self, weight: &DeviceBuffer<bf16>) -> Vec<(&'static str, usize)> {
        vec![("BF16", 2 * weight.len())]
    }

    fn alloc(&self, len: usize) -> anyhow::Result<DeviceBuffer<bf16>> {
        self.kernels
            .alloc_zeros(len.max(1))
            .with_context(|| format!("CUDA alloc of {} MiB", (len * 2) >> 20))
    }

    fn alloc_kv_cache(&self, len: usize) -> anyhow::Result<DeviceBuffer<bf16>> {
        self.alloc(len)
    }

    fn rope(
        &self,
        inv_freq: &[f32],
        max_position: usize,
        attention_scaling: f32,
    ) -> anyhow::Result<CudaRope> {
        let cache = RotaryCache::new(inv_freq, max_position, attention_scaling);
        CudaRope::new(&self.kernels, &cache).context("CUDA rope")
    }

    fn alloc_inputs(&self, limits: InputLimits) -> anyhow::Result<CudaInputs> {
        let (t, n) = (limits.max_tokens, limits.max_seqs);
        Ok(CudaInputs {
            token_ids: self.alloc_meta(t)?,
            positions: self.alloc_meta(t)?,
            slot_mapping: self.alloc_meta(t)?,
            query_start_loc: self.alloc_meta(n + 1)?,
            seq_lens: self.alloc_meta(n)?,
            block_tables: self.alloc_meta(n * limits.max_blocks_per_seq)?,
            max_blocks_per_seq: 0,
            num_tokens: 0,
            num_seqs: 0,
            num_decodes: 0,
            max_seq_len: 0,
            kv_groups: (1..limits.num_kv_groups.max(1))
                .map(|_| {
                    Ok(CudaKvGroup {
                        slot_mapping: self.alloc_meta(t)?,
                        block_tables: self.alloc_meta(n * limits.max_blocks_per_seq)?,
                        max_blocks_per_seq: 0,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            limits,
        })
    }

    fn prepare_inputs(
        &mut self,
        batch: &ForwardBatch,
        inputs: &mut CudaInputs,
    ) -> anyhow::Result<()> {
        self.check()?;
        let l = inputs.limits;
        anyhow::ensure!(
            batch.num_tokens() <= l.max_tokens
                && batch.num_seqs() <= l.max_seqs
                && batch.max_blocks_per_seq <= l.max_blocks_per_seq,
            "a step of {} tokens, {} sequences and {} blocks per sequence exceeds the metadata \
             buffers ({l:?})",
            batch.num_tokens(),
            batch.num_seqs(),
            batch.max_blocks_per_seq
        );
        anyhow::ensure!(
            batch.kv_groups.len() == inputs.kv_groups.len()
                && batch
                    .kv_groups
                    .iter()
                    .all(|g| g.max_blocks_per_seq <= l.max_blocks_per_seq),
            "a step with {} more KV-cache groups does not fit the metadata buffers of {}",
            batch.kv_groups.len(),
            inputs.kv_groups.len()
        );
        let k = &self.kernels;
        for (g, dev) in batch.kv_groups.iter().zip(&mut inputs.kv_groups) {
            copy_into(
                k,
                "group slot_mapping",
                &g.slot_mapping,
                &mut dev.slot_mapping,
            )?;
            copy_into(
                k,
                "group block_tables",
                &g.block_tables,
                &mut dev.block_tables,
            )?;
            dev.max_blocks_per_seq = g.max_blocks_per_seq;
        }
        copy_into(k, "token_ids", &batch.token_ids, &mut inputs.token_ids)?;
        copy_into(k, "positions", &batch.positions, &mut inputs.positions)?;
        copy_into(
            k,
            "slot_mapping",
            &batch.slot_mapping,
            &mut inputs.slot_mapping,
        )?;
        copy_into(
            k,
            "query_start_loc",
            &batch.query_start_loc,
            &mut inputs.query_start_loc,
        )?;
        copy_into(k, "seq_lens", &batch.seq_lens, &mut inputs.seq_lens)?;
        copy_into(
            k,
            "block_tables",
            &batch.block_tables,
            &mut inputs.block_tables,
        )?;
        inputs.num_decodes = batch
            .query_start_loc
            .windows(2)
            .filter(|w| w[1].saturating_sub(w[0]) == 1)
            .count();
        let longest = batch.seq_lens.iter().copied().max().unwrap_or(0) as usize;
        inputs.max_seq_len = batch.max_seq_len.max(longest);
        inputs.max_blocks_per_seq = batch.max_blocks_per_seq;
        inputs.num_tokens = batch.num_tokens();
        inputs.num_seqs = batch.num_seqs();
        Ok(())
    }

    fn begin_capture(&self) -> anyhow::Result<()> {
        self.check()?;
        self.kernels.begin_capture().context("CUDA graph capture")
    }

    fn end_capture(&self) -> anyhow::Result<DeviceGraph> {
        let graph = self.kernels.end_capture();
        // A launch that failed while recording makes the graph unusable.
        self.check()?;
        graph.context("CUDA graph capture")
    }

    fn replay(&self, graph: &DeviceGraph) -> anyhow::Result<()> {
        self.check()?;
        graph.replay().context("CUDA graph replay")
    }

    fn embedding(
        &self,
        inputs: &CudaInputs,
        table: &DeviceBuffer<bf16>,
        out: &mut DeviceBuffer<bf16>,
        hidden: usize,
    ) {
        let r = self
            .kernels
            .gather_rows(table, &inputs.token_ids, out, inputs.num_tokens, hidden);
        self.record("embedding", r);
    }

    fn matmul(
        &self,
        x: &DeviceBuffer<bf16>,
        w: &DeviceBuffer<bf16>,
        out: &mut DeviceBuffer<bf16>,
        m: usize,
        k: usize,
        n: usize,
    ) {
        let r = self.kernels.matmul::<bf16, bf16>(x, w, out, m, k, n);
        self.record("matmul", r);
    }

    fn add_bias(
        &self,
        out: &mut DeviceBuffer<bf16>,
        bias: &DeviceBuffer<bf16>,
        rows: usize,
        n: usize,
    ) {
        let r = self.kernels.add_bias(out, bias, rows, n);
        self.record("add_bias", r);
    }

    fn rms_norm(
        &self,
        x: &DeviceBuffer<bf16>,
        weight: &DeviceBuffer<bf16>,
        out: &mut DeviceBuffer<bf16>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        let r = self
            .kernels
            .rms_norm(x, dim, weight, out, dim, rows, dim, eps, self.norm_style);
        self.record("rms_norm", r);
    }

    fn fused_add_rms_norm(
        &self,
        x: &mut DeviceBuffer<bf16>,
        residual: &mut DeviceBuffer<bf16>,
        weight: &DeviceBuffer<bf16>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        let r =
            self.kernels
                .fused_add_rms_norm(x, residual, weight, rows, dim, eps, self.norm_style);
        self.record("fused_add_rms_norm", r);
    }

    fn rms_norm_inplace(
        &self,
        x: &mut DeviceBuffer<bf16>,
        weight: &DeviceBuffer<bf16>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        let r = self
            .kernels
            .rms_norm_heads(x, dim, 1, dim, weight, rows, eps, self.norm_style);
        self.record("rms_norm_inplace", r);
    }

    fn split_qkv(
        &self,
        qkv: &DeviceBuffer<bf16>,
        q: &mut DeviceBuffer<bf16>,
        k: &mut DeviceBuffer<bf16>,
        v: &mut DeviceBuffer<bf16>,
        rows: usize,
        q_dim: usize,
        kv_dim: usize,
    ) {
        let r = self.kernels.split_qkv(qkv, q, k, v, rows, q_dim, kv_dim);
        self.record("split_qkv", r);
    }

    fn rotary(
        &self,
        inputs: &CudaInputs,
        q: &mut DeviceBuffer<bf16>,
        k: &mut DeviceBuffer<bf16>,
        rope: &CudaRope,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) {
        let r = self.kernels.rotary_embedding(
            &inputs.positions,
            q,
            num_heads * head_dim,
            k,
            num_kv_heads * head_dim,
            rope,
            inputs.num_tokens,
            num_heads,
            num_kv_heads,
            head_dim,
        );
        self.record("rotary", r);
    }

    fn silu_and_mul(
        &self,
        x: &DeviceBuffer<bf16>,
        out: &mut DeviceBuffer<bf16>,
        rows: usize,
        intermediate: usize,
    ) {
        let r = self.kernels.silu_and_mul(x, out, rows, intermediate);
        self.record("silu_and_mul", r);
    }

    fn gelu_tanh_and_mul(
        &self,
        x: &DeviceBuffer<bf16>,
        out: &mut DeviceBuffer<bf16>,
        rows: usize,
        intermediate: usize,
    ) {
        let r = self.kernels.gelu_tanh_and_mul(x, out, rows, intermediate);
        self.record("gelu_tanh_and_mul", r);
    }

    fn scale(&self, x: &mut DeviceBuffer<bf16>, len: usize, factor: f32) {
        let r = self.kernels.scale(x, len, factor);
        self.record("scale", r);
    }

    fn softcap(&self, x: &mut DeviceBuffer<bf16>, len: usize, cap: f32) {
        let r = self.kernels.softcap(x, len, cap);
        self.record("softcap", r);
    }

    fn fused_moe(
        &self,
        hidden: &mut DeviceBuffer<bf16>,
        moe: &super::moe::MoeWeights<DeviceBuffer<bf16>>,
        rows: usize,
    ) {
        let r = self.moe.lock().fused_moe(&self.kernels, hidden, moe, rows);
        self.record("fused_moe", r);
    }

    fn reshape_and_cache(
        &self,
        inputs: &CudaInputs,
        kv_group: usize,
        k: &DeviceBuffer<bf16>,
        v: &DeviceBuffer<bf16>,
        k_cache: &mut DeviceBuffer<bf16>,
        v_cache: &mut DeviceBuffer<bf16>,
        num_kv_heads: usize,
        head_dim: usize,
    ) {
        let row = num_kv_heads * head_dim;
        let r = inputs.group_slots(kv_group).and_then(|slots| {
            self.kernels.reshape_and_cache(
                k,
                row,
                v,
                row,
                k_cache,
                v_cache,
                slots,
                inputs.num_tokens,
                num_kv_heads,
                head_dim,
            )
        });
        self.record("reshape_and_cache", r);
    }

    fn paged_attention(
        &self,
        inputs: &CudaInputs,
        q: &DeviceBuffer<bf16>,
        k_cache: &DeviceBuffer<bf16>,
        v_cache: &DeviceBuffer<bf16>,
        out: &mut DeviceBuffer<bf16>,
        dims: AttentionDims,
    ) {
        let shape = attention_shape(&dims);
        let mut att = self.attention.lock();
        let heads = (dims.num_heads, dims.num_kv_heads, dims.head_dim);
        if heads != att.heads {
            let msg = format!(
                "(heads, kv heads, head_dim) {heads:?} differ from the workspace's {:?}",
                att.heads
            );
            self.record(
                "paged_attention",
                Err(CudaError::InvalidArgument {
                    op: "paged_attention",
                    message: msg,
                }),
            );
            return;
        }
        let (block_tables, max_blocks_per_seq) = match inputs.group_block_tables(dims.kv_group) {
            Ok(t) => t,
            Err(e) => return self.record("paged_attention", Err(e)),
        };
        let meta = AttentionMetadata {
            query_start_loc: &inputs.query_start_loc,
            seq_lens: &inputs.seq_lens,
            block_tables,
            max_blocks_per_seq,
            num_tokens: inputs.num_tokens,
            num_seqs: inputs.num_seqs,
            num_decodes: inputs.num_decodes,
            max_seq_len: inputs.max_seq_len,
        };
        let r = self
            .kernels
            .paged_attention(q, k_cache, v_cache, out, &meta, &shape, &mut att.ws);
        self.record("paged_attention", r);
    }

    fn gather_rows(
        &self,
        x: &DeviceBuffer<bf16>,
        rows: &[u32],
        out: &mut DeviceBuffer<bf16>,
        dim: usize,
    ) -> anyhow::Result<()> {
        self.check()?;
        for &r in rows {
            let src = r as usize * dim;
            anyhow::ensure!(src + dim <= x.len(), "gather_rows: row {r} out of range");
        }
        let indices = self.upload(rows)?;
        self.kernels
            .gather_rows(x, &indices, out, rows.len(), dim)
            .context("CUDA gather_rows")
    }

    fn samples_on_device(&self) -> bool {
        true
    }

    /// The `sample_tokens` kernel walks the CDF with a uniform; the
    /// exponential race of seeded rows has no kernel yet: such steps are
    /// sampled on the host. Structured-output masks are applied on the
    /// device (`apply_token_bitmask`).
    fn can_sample(&self, row: &SamplingRow) -> bool {
        matches!(row.draw, Draw::Uniform(_))
    }

    /// Widens the logits to f32 on the device; logprobs (of the raw row)
    /// from one copy, processors applied to another, then `sample_tokens`;
    /// only ids and the requested logprobs come back.
    fn sample(
        &self,
        logits: &DeviceBuffer<bf16>,
        vocab: usize,
        rows: &[SamplingRow],
        out: &mut Vec<Sampled>,
    ) -> anyhow::Result<()> {
        self.check()?;
        let n_rows = rows.len();
        if n_rows == 0 {
            return Ok(());
        }
        let n = n_rows * vocab;
        anyhow::ensure!(
            n <= logits.len(),
            "sample: {n_rows} rows of {vocab} exceed the logits"
        );
        let top_k = rows.iter().filter_map(|r| r.logprobs).max();
        // [processed | raw], the raw half only when logprobs are asked for.
        let need = if top_k.is_some() { 2 * n } else { n };
        let mut scratch = self.sampling_logits.lock();
        let wide = self.f32_scratch(&mut scratch, need)?;
        let (mut proc_l, mut raw_l) = wide.split_at_mut(n);
        self.kernels
            .convert::<bf16, f32>(logits, &mut proc_l, n)
            .context(SAMPLING)?;
        if top_k.is_some() {
            self.kernels
                .convert::<bf16, f32>(logits, &mut raw_l, n)
                .context(SAMPLING)?;
        }
        // The grammar masks come first, to both copies (logprobs are of the
        // allowed tokens, as on the host).
        if let Some(masks) = self.upload_grammar_masks(rows, vocab)? {
            self.apply_grammar_masks(&masks, &mut proc_l, n_rows, vocab)?;
            if top_k.is_some() {
                self.apply_grammar_masks(&masks, &mut raw_l, n_rows, vocab)?;
            }
        }
        if rows
            .iter()
            .any(|r| !r.bias.is_empty() || r.penalties.is_some())
        {
            self.apply_row_edits(&mut proc_l, rows, vocab)?;
        }
        let (tokens, host_tokens) = self.sample_rows(&proc_l, rows, vocab)?;
        let logprobs = match top_k {
            Some(k) => self.row_logprobs(&raw_l, rows, vocab, k, &tokens, &host_tokens)?,
            None => vec![None; n_rows],
        };
        self.check()?;
        out.extend(
            host_tokens
                .into_iter()
                .zip(logprobs)
                .map(|(token_id, logprobs)| Sampled { token_id, logprobs }),
        );
        Ok(())
    }

    /// Widens on the device, then copies f32: twice the bytes over the bus,
    /// but no per-element conversion on one host thread (256 rows of a
    /// 128k vocabulary are 32M elements).
    fn to_host(
        &self,
        x: &DeviceBuffer<bf16>,
        len: usize,
        out: &mut Vec<f32>,
    ) -> anyhow::Result<()> {
        self.check()?;
        anyhow::ensure!(len <= x.len(), "to_host: {len} elements of {}", x.len());
        if len == 0 {
            return Ok(());
        }
        const COPY: &str = "CUDA copy to host";
        let mut scratch = self.sampling_logits.lock();
        let wide = self.f32_scratch(&mut scratch, len)?;
        self.kernels
            .convert::<bf16, f32>(x, wide, len)
            .context(COPY)?;
        let start = out.len();
        out.resize(start + len, 0.0);
        self.kernels
            .copy_dtoh(&wide.slice(..len), &mut out[start..])
            .context(COPY)?;
        // The copy is asynchronous: wait for it (and for the kernels before it,
        // whose errors surface here too).
        self.kernels.synchronize().context(COPY)?;
        self.check()?;
        Ok(())
    }
}

/// Where the logits are processed before the draw, if any.
const SAMPLING: &str = "CUDA sampling";

/// The steps of [`CudaBackend::sample`], apart so each reads as one stage
/// of vLLM's sampler: processors, the draw, logprobs.
impl CudaBackend {
    /// Applies each row's logit bias, then its repetition, frequency and
    /// presence penalties, to the processed logits in place. Rows without
    /// them get empty CSR rows and neutral penalties, so one launch each
    /// covers the batch.
    fn apply_row_edits(
        &self,
        logits: &mut impl DeviceMemMut<f32>,
        rows: &[SamplingRow],
        vocab: usize,
    ) -> anyhow::Result<()> {
        let mut bias = CsrRows::new();
        let mut pen = CsrRows::new();
        let (mut rep, mut freq, mut pres) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            bias.push_row(r.bias.iter().copied());
            match &r.penalties {
                Some(p) => {
                    pen.push_row(p.entries.iter().copied());
                    rep.push(p.repetition);
                    freq.push(p.frequency);
                    pres.push(p.presence);
                }
                None => {
                    pen.push_row(std::iter::empty());
                    rep.push(1.0);
                    freq.push(0.0);
                    pres.push(0.0);
                }
            }
        }
        let n_rows = rows.len();
        let (o, i, v) = (
            self.upload(&bias.offsets)?,
            self.upload(&bias.ids)?,
            self.upload(&bias.values)?,
        );
        self.kernels
            .apply_logit_bias(logits, n_rows, vocab, &o, &i, &v)
            .context(SAMPLING)?;
        let (o, i, c) = (
            self.upload(&pen.offsets)?,
            self.upload(&pen.ids)?,
            self.upload(&pen.values)?,
        );
        let (rp, fp, pp) = (self.upload(&rep)?, self.upload(&freq)?, self.upload(&pres)?);
        self.kernels
            .apply_penalties(logits, n_rows, vocab, &o, &i, &c, &rp, &fp, &pp)
            .context(SAMPLING)
    }

    /// Draws one token per row with `sample_tokens` (temperature, top-k,
    /// top-p, min-p, then the row's uniform). Returns the ids on the device,
    /// which the logprob kernels read, and on the host.
    fn sample_rows(
        &self,
        logits: &impl DeviceMem<f32>,
        rows: &[SamplingRow],
        vocab: usize,
    ) -> anyhow::Result<(DeviceBuffer<u32>, Vec<u32>)> {
        let column = |f: fn(&SamplingRow) -> f32| rows.iter().map(f).collect::<Vec<f32>>();
        let temperature = self.upload(&column(|r| r.temperature))?;
        let top_p = self.upload(&column(|r| r.top_p))?;
        let min_p = self.upload(&column(|r| r.min_p))?;
        let uniform = self.upload(&column(|r| match r.draw {
            Draw::Uniform(u) => u,
            // `can_sample` keeps race rows off the device.
            Draw::Race(_) => 0.0,
        }))?;
        let top_k_rows = self.upload(&rows.iter().map(|r| r.top_k).collect::<Vec<i32>>())?;
        let tensors = SamplingTensors {
            temperature: &temperature,
            top_k: &top_k_rows,
            top_p: &top_p,
            min_p: &min_p,
            uniform: &uniform,
        };
        let n_rows = rows.len();
        let mut tokens = self.kernels.alloc_zeros::<u32>(n_rows).context(SAMPLING)?;
        self.kernels
            .sample_tokens(logits, n_rows, vocab, &tensors, &mut tokens)
            .context(SAMPLING)?;
        let host_tokens = self.kernels.download(&tokens).context(SAMPLING)?;
        Ok((tokens, host_tokens))
    }

    /// The logprobs of the raw (unprocessed) logits, as vLLM returns them:
    /// the top `k` of every row and the sampled token's own logprob and
    /// rank, cut to what each row asked for (`None` where it asked none).
    fn row_logprobs(
        &self,
        raw: &impl DeviceMem<f32>,
        rows: &[SamplingRow],
        vocab: usize,
        k: usize,
        tokens: &DeviceBuffer<u32>,
        host_tokens: &[u32],
    ) -> anyhow::Result<Vec<Option<TokenLogprobs>>> {
        let n_rows = rows.len();
        let alloc_u32 = |len: usize| self.kernels.alloc_zeros::<u32>(len).context(SAMPLING);
        let alloc_f32 = |len: usize| self.kernels.alloc_zeros::<f32>(len).context(SAMPLING);
        let (mut ids, mut lps) = (
            alloc_u32((n_rows * k).max(1))?,
            alloc_f32((n_rows * k).max(1))?,
        );
        self.kernels
            .logprobs_topk(raw, n_rows, vocab, k, &mut ids, &mut lps)
            .context(SAMPLING)?;
        let (mut lp, mut rank) = (alloc_f32(n_rows)?, alloc_u32(n_rows)?);
        self.kernels
            .token_logprobs(raw, n_rows, vocab, tokens, &mut lp, &mut rank)
            .context(SAMPLING)?;
        let download_u32 = |b: &DeviceBuffer<u32>| self.kernels.download(b).context(SAMPLING);
        let download_f32 = |b: &DeviceBuffer<f32>| self.kernels.download(b).context(SAMPLING);
        let (ids, lps) = (download_u32(&ids)?, download_f32(&lps)?);
        let (lp, rank) = (download_f32(&lp)?, download_u32(&rank)?);
        let logprobs = rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let want = row.logprobs?;
                let top = (0..want.min(k))
                    .map(|j| (ids[r * k + j], lps[r * k + j]))
                    .collect();
                Some(TokenLogprobs {
                    token_id: host_tokens[r],
                    logprob: lp[r],
                    rank: rank[r] as usize,
                    top,
                })
            })
            .collect();
        Ok(logprobs)
    }
}
