//! Varlen paged attention over block tables, for one flat batch that mixes
//! prefill chunks and decodes (vLLM v1's `unified_attention` shape).
//!
//! Sequence `s` has `q_len = query_start_loc[s + 1] - query_start_loc[s]` new
//! tokens; its token `j` sits at position `seq_len - q_len + j` and attends,
//! causally, to KV positions `0..=position` of its own sequence. Query head
//! `h` reads KV head `h / (num_heads / num_kv_heads)` (GQA, MQA).
//!
//! Work is split into items (sequence, run of query tokens, run of query
//! heads: all of them, so a block's slots are read as one contiguous run; or,
//! when that leaves threads idle, one KV head's group or a single head) spread
//! over rayon. An item walks its sequence's blocks once for all its rows: the
//! heads of a token that share a KV head go through a block together, each K
//! and V row loaded once for all of them. Scores are 16-lane FMA chains with
//! a horizontal sum; the softmax is online (running max and sum, f32), one
//! block at a time. A 16-bit cache (bf16/f16) is widened block by block,
//! only the KV heads an item reads, into a per-item f32 buffer; an f32 cache
//! is read in place.
//!
//! Long contexts are also split along the keys (flash-decoding): the blocks
//! of a sequence go in spans of [`KV_SPLIT_TOKENS`] positions, each span an
//! item of its own with an unnormalized output, running max and sum per row,
//! merged afterwards span by span in order. One decode of a long sequence
//! then spreads over every thread, and each span's 16-bit K/V is widened
//! once for the heads that share it instead of once per head.
//!
//! A query row's arithmetic depends only on its own query, its position and
//! the KV cache, never on which other rows share its item: the spans are
//! fixed by position, and merged in order, so the result for a token is
//! bit-identical whether it is decoded alone, batched, or part of a prefill
//! chunk of any size.

use rayon::prelude::*;

use super::kv_cache::KvSlice;
use super::num_threads;
use super::simd::{dispatch, exp, fmadd, hsum, max, Isa, LANES};

/// Shapes and metadata of one flat batch (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct PagedAttentionParams<'a> {
    /// `[num_seqs + 1]`: prefix sums of new tokens per sequence, from 0.
    pub query_start_loc: &'a [u32],
    /// `[num_seqs]`: tokens in the KV cache after this step, new ones included.
    pub seq_lens: &'a [u32],
    /// `[num_seqs, max_blocks_per_seq]`: block ids per sequence.
    pub block_tables: &'a [u32],
    pub max_blocks_per_seq: usize,
    pub block_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Softmax scale, usually `head_dim^-0.5`.
    pub scale: f32,
    /// Keys a token sees, itself included (this layer's sliding window);
    /// `None`: every earlier position.
    pub sliding_window: Option<usize>,
    /// `cap * tanh(score / cap)` on the scaled scores before the softmax
    /// (Gemma's `attn_logit_softcapping`); `None`: raw scores.
    pub logit_softcap: Option<f32>,
}

/// Query rows (tokens x heads) an item aims for: enough to amortize loading a
/// K/V block, few enough to stay in L1/L2 and give the pool many items.
const TARGET_ROWS: usize = 32;

/// Key positions per span of a long context (a whole number of blocks;
/// fixed, so a row's spans never depend on the batch).
const KV_SPLIT_TOKENS: usize = 512;

/// `out = softmax(q · Kᵀ · scale) · V` per query head, causal, over the paged
/// cache (`[num_blocks, block_size, num_kv_heads, head_dim]` each).
/// `q` and `out` are `[num_tokens, num_heads, head_dim]`.
///
/// # Panics
/// If the metadata is inconsistent: lengths, head counts, a sequence with more
/// new tokens than its length or more blocks than its table row, a block id
/// past the cache.
pub fn paged_attention(
    q: &[f32],
    key_cache: KvSlice<'_>,
    value_cache: KvSlice<'_>,
    params: &PagedAttentionParams<'_>,
    out: &mut [f32],
) {
    paged_attention_with(super::simd::isa(), q, key_cache, value_cache, params, out);
}

fn paged_attention_with(
    isa: Isa,
    q: &[f32],
    key_cache: KvSlice<'_>,
    value_cache: KvSlice<'_>,
    params: &PagedAttentionParams<'_>,
    out: &mut [f32],
) {
    validate(q, key_cache.len(), value_cache.len(), params, out);
    let p = params;
    let d = p.head_dim;
    let group = p.num_heads / p.num_kv_heads;
    // Widest items first (every head of a token: a block's K/V slots are then
    // read as one contiguous run); narrower ones while the pool would idle.
    let mut items = plan(p, p.num_heads);
    for heads_per_item in [group, 1] {
        if items.len() >= 4 * num_threads() {
            break;
        }
        if heads_per_item < p.num_heads {
            items = plan(p, heads_per_item);
        }
    }
    let results: Vec<Partial> = items
        .par_iter()
        .with_max_len(1)
        .map(|item| {
            let mut part = Partial::default();
            attend_with(isa, q, key_cache, value_cache, p, item, &mut part);
            part
        })
        .collect();
    // Merge every row's spans in span order into `out` (unnormalized), then
    // divide by the sums. A row with one span gets exactly `o · (1 / l)`.
    // Padding rows (vLLM's padded decode batches: `seq_len` 0) attend to
    // nothing and read nothing; their output is zero.
    out.fill(0.0);
    let rows = out.len() / d;
    let mut row_max = vec![f32::NEG_INFINITY; rows];
    let mut row_sum = vec![0f32; rows];
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].kb0);
    for i in order {
        let (item, part) = (&items[i], &results[i]);
        let heads = item.h1 - item.h0;
        for ti in 0..item.t1 - item.t0 {
            for hi in 0..heads {
                let (r, pr) = ((item.t0 + ti) * p.num_heads + item.h0 + hi, ti * heads + hi);
                let l = part.sum[pr];
                if l == 0.0 {
                    continue; // the row sees no key of this span
                }
                let m = part.max[pr];
                let m_new = row_max[r].max(m);
                let (a, b) = ((row_max[r] - m_new).exp(), (m - m_new).exp());
                row_sum[r] = row_sum[r] * a + l * b;
                row_max[r] = m_new;
                let src = &part.o[pr * d..][..d];
                for (v, &o) in out[r * d..][..d].iter_mut().zip(src) {
                    *v = *v * a + o * b;
                }
            }
        }
    }
    for (orow, &l) in out.chunks_exact_mut(d).zip(&row_sum) {
        if l > 0.0 {
            let inv = 1.0 / l;
            for v in orow.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// An item's rows over its span: outputs not yet divided by their sums,
/// with the running max and sum of each row (`[tokens, heads]`).
#[derive(Default)]
struct Partial {
    o: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

/// One unit of parallel work: tokens `t0..t1` (flat indices) of sequence
/// `seq`, query heads `h0..h1`, a run of whole KV-head groups or part of one,
/// against the sequence's blocks `kb0..kb1` (one span).
#[derive(Debug, Clone, Copy)]
struct WorkItem {
    seq: usize,
    t0: usize,
    t1: usize,
    h0: usize,
    h1: usize,
    /// Position of token `t0`.
    pos0: usize,
    kb0: usize,
    kb1: usize,
}

fn plan(p: &PagedAttentionParams<'_>, heads_per_item: usize) -> Vec<WorkItem> {
    let tokens_per_item = (TARGET_ROWS / heads_per_item).max(1);
    // Blocks per span (first-key block rounded down to a span start).
    let span = (KV_SPLIT_TOKENS / p.block_size).max(1);
    let mut items = Vec::new();
    for (seq, w) in p.query_start_loc.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        if p.seq_lens[seq] == 0 {
            continue; // a padding row: zeroed by the caller
        }
        let pos_start = p.seq_lens[seq] as usize - (end - start);
        for h0 in (0..p.num_heads).step_by(heads_per_item) {
            for t0 in (start..end).step_by(tokens_per_item) {
                let t1 = (t0 + tokens_per_item).min(end);
                let pos0 = pos_start + (t0 - start);
                let last_pos = pos0 + (t1 - t0) - 1;
                // Spans from the first row's window (if any) to the last row.
                let first = first_key(p, pos0) / p.block_size / span * span;
                for kb0 in (first..last_pos / p.block_size + 1).step_by(span) {
                    items.push(WorkItem {
                        seq,
                        t0,
                        t1,
                        h0,
                        h1: h0 + heads_per_item,
                        pos0,
                        kb0,
                        kb1: kb0 + span,
                    });
                }
            }
        }
    }
    // Most keys first, so the pool does not end on a straggler.
    items.sort_by_key(|it| {
        let keys = (it.pos0 + it.t1 - it.t0).min(it.kb1 * p.block_size);
        std::cmp::Reverse(keys - (it.kb0 * p.block_size).min(keys))
    });
    items
}

/// First key position a token at `pos` sees (its sliding window).
fn first_key(p: &PagedAttentionParams<'_>, pos: usize) -> usize {
    p.sliding_window.map_or(0, |w| (pos + 1).saturating_sub(w))
}

fn validate(
    q: &[f32],
    key_cache_len: usize,
    value_cache_len: usize,
    p: &PagedAttentionParams<'_>,
    out: &[f32],
) {
    assert!(
        p.num_kv_heads > 0 && p.head_dim > 0 && p.block_size > 0,
        "paged_attention: zero dimension"
    );
    assert!(
        p.num_heads.is_multiple_of(p.num_kv_heads) && p.num_heads > 0,
        "paged_attention: num_heads {} is not a multiple of num_kv_heads {}",
        p.num_heads,
        p.num_kv_heads
    );
    let num_seqs = p.seq_lens.len();
    let qsl = p.query_start_loc;
    assert_eq!(
        qsl.len(),
        num_seqs + 1,
        "paged_attention: query_start_loc is not [num_seqs + 1]"
    );
    assert_eq!(
        qsl[0], 0,
        "paged_attention: query_start_loc must start at 0"
    );
    let num_tokens = qsl[num_seqs] as usize;
    let row = p.num_heads * p.head_dim;
    assert_eq!(
        q.len(),
        num_tokens * row,
        "paged_attention: q is not [{num_tokens}, num_heads, head_dim]"
    );
    assert_eq!(
        out.len(),
        q.len(),
        "paged_attention: out and q differ in length"
    );
    let slot = p.num_kv_heads * p.head_dim;
    let block = p.block_size * slot;
    assert!(
        key_cache_len == value_cache_len && key_cache_len.is_multiple_of(block),
        "paged_attention: caches are not [num_blocks, block_size, num_kv_heads, head_dim]"
    );
    let num_blocks = key_cache_len / block;
    assert!(
        p.block_tables.len() >= num_seqs * p.max_blocks_per_seq,
        "paged_attention: block_tables is not [num_seqs, max_blocks_per_seq]"
    );
    for s in 0..num_seqs {
        assert!(
            qsl[s] <= qsl[s + 1],
            "paged_attention: query_start_loc decreases at {s}"
        );
        let (q_len, seq_len) = ((qsl[s + 1] - qsl[s]) as usize, p.seq_lens[s] as usize);
        assert!(
            q_len <= seq_len || seq_len == 0,
            "paged_attention: sequence {s} has {q_len} new tokens > seq_len {seq_len}"
        );
        if q_len == 0 || seq_len == 0 {
            continue;
        }
        let needed = seq_len.div_ceil(p.block_size);
        assert!(
            needed <= p.max_blocks_per_seq,
            "paged_attention: sequence {s} needs {needed} blocks > max_blocks_per_seq {}",
            p.max_blocks_per_seq
        );
        let table = &p.block_tables[s * p.max_blocks_per_seq..][..needed];
        if let Some(b) = table.iter().find(|&&b| b as usize >= num_blocks) {
            panic!("paged_attention: sequence {s} uses block {b} >= {num_blocks} blocks");
        }
    }
}

dispatch! {
    /// Computes one item's span into `part` (`[tokens, heads, head_dim]` of
    /// the item, not yet divided by the sums).
    fn attend / attend_with(
        q: &[f32],
        key_cache: KvSlice<'_>,
        value_cache: KvSlice<'_>,
        p: &PagedAttentionParams<'_>,
        item: &WorkItem,
        part: &mut Partial,
    ) = attend_body;
}

#[inline(always)]
fn attend_body<const ISA: u8>(
    q: &[f32],
    key_cache: KvSlice<'_>,
    value_cache: KvSlice<'_>,
    p: &PagedAttentionParams<'_>,
    item: &WorkItem,
    part: &mut Partial,
) {
    let d = p.head_dim;
    let bs = p.block_size;
    let heads = item.h1 - item.h0;
    let tokens = item.t1 - item.t0;
    let rows = tokens * heads;
    // Scores of a block, padded to whole lane chunks so the masked softmax
    // runs the same fixed-width loop for every row.
    let kc = bs.next_multiple_of(LANES);
    let slot_stride = p.num_kv_heads * d;
    let group = p.num_heads / p.num_kv_heads;

    // Queries, pre-scaled, one row per (token, head).
    let mut qs = vec![0f32; rows * d];
    for ti in 0..tokens {
        let src = &q[((item.t0 + ti) * p.num_heads + item.h0) * d..][..heads * d];
        for (dst, src) in qs[ti * heads * d..][..heads * d].iter_mut().zip(src) {
            *dst = src * p.scale;
        }
    }
    let Partial {
        o,
        max: row_max,
        sum: row_sum,
    } = part;
    o.clear();
    o.resize(rows * d, 0.0);
    row_max.clear();
    row_max.resize(rows, f32::NEG_INFINITY);
    row_sum.clear();
    row_sum.resize(rows, 0.0);
    // Probabilities of the current block, one row of `kc` per query row.
    let mut s = vec![0f32; rows * kc];
    // A 16-bit cache's current block, widened: the item's KV heads only.
    let widen = !matches!((key_cache, value_cache), (KvSlice::F32(_), KvSlice::F32(_)));
    let (mut kbuf, mut vbuf) = if widen {
        (vec![0f32; bs * slot_stride], vec![0f32; bs * slot_stride])
    } else {
        (Vec::new(), Vec::new())
    };
    let kv_heads = item.h0 / group..(item.h1 - 1) / group + 1;

    let last_pos = item.pos0 + tokens - 1;
    let n_blocks = (last_pos / bs + 1).min(item.kb1);
    let first_key = |pos: usize| first_key(p, pos);
    let table = &p.block_tables[item.seq * p.max_blocks_per_seq..][..n_blocks];
    // Blocks before the first row's window are read by no row of the item.
    let skip = (first_key(item.pos0) / bs).max(item.kb0);
    for (bi, &block) in table.iter().enumerate().skip(skip) {
        let start = bi * bs;
        // Keys of this block that the item's last row sees.
        let nk = (last_pos + 1 - start).min(bs);
        let base = block as usize * bs * slot_stride;
        let (kblk, vblk): (&[f32], &[f32]) = match (key_cache, value_cache) {
            (KvSlice::F32(kc), KvSlice::F32(vc)) => (
                &kc[base..][..nk * slot_stride],
                &vc[base..][..nk * slot_stride],
            ),
            _ => {
                widen_block::<ISA>(key_cache, base, nk, slot_stride, d, &kv_heads, &mut kbuf);
                widen_block::<ISA>(value_cache, base, nk, slot_stride, d, &kv_heads, &mut vbuf);
                (&kbuf[..nk * slot_stride], &vbuf[..nk * slot_stride])
            }
        };
        // Tokens before `t_first` sit before this block and see none of it.
        let t_first = start.saturating_sub(item.pos0);
        for ti in t_first..tokens {
            // A token's heads share its position, hence its visible keys: they
            // go through the block together, K and V rows loaded once for all.
            let pos = item.pos0 + ti;
            // Keys `lo..nv` of the block are in the token's window.
            let lo = first_key(pos).saturating_sub(start);
            let end = (pos + 1 - start).min(bs);
            if lo >= end {
                continue;
            }
            let nv = end - lo;
            let (kblk, vblk) = (&kblk[lo * slot_stride..], &vblk[lo * slot_stride..]);
            let r0 = ti * heads;
            let mut h = item.h0;
            while h < item.h1 {
                // Rows of one KV head (at most ROW_GROUP of them) at a time.
                let kv_end = (h / group + 1) * group;
                let g = (item.h1.min(kv_end) - h).min(ROW_GROUP);
                let kv_off = h / group * d;
                let rows = r0 + h - item.h0..r0 + h - item.h0 + g;
                let (q_rows, s_rows) = (
                    &qs[rows.start * d..rows.end * d],
                    &mut s[rows.start * kc..rows.end * kc],
                );
                match g {
                    1 => scores::<ISA, 1>(q_rows, &kblk[kv_off..], slot_stride, nv, kc, s_rows),
                    2 => scores::<ISA, 2>(q_rows, &kblk[kv_off..], slot_stride, nv, kc, s_rows),
                    3 => scores::<ISA, 3>(q_rows, &kblk[kv_off..], slot_stride, nv, kc, s_rows),
                    _ => scores::<ISA, 4>(q_rows, &kblk[kv_off..], slot_stride, nv, kc, s_rows),
                }
                for r in rows.clone() {
                    let sr = &mut s[r * kc..][..kc];
                    if let Some(cap) = p.logit_softcap {
                        super::softcap::softcap_inplace(&mut sr[..nv], cap);
                    }
                    let corr = online_softmax::<ISA>(sr, nv, &mut row_max[r], &mut row_sum[r]);
                    if corr != 1.0 {
                        for v in o[r * d..][..d].iter_mut() {
                            *v *= corr;
                        }
                    }
                }
                let (p_rows, o_rows) = (
                    &s[rows.start * kc..rows.end * kc],
                    &mut o[rows.start * d..rows.end * d],
                );
                match g {
                    1 => pv::<ISA, 1>(p_rows, kc, nv, &vblk[kv_off..], slot_stride, o_rows),
                    2 => pv::<ISA, 2>(p_rows, kc, nv, &vblk[kv_off..], slot_stride, o_rows),
                    3 => pv::<ISA, 3>(p_rows, kc, nv, &vblk[kv_off..], slot_stride, o_rows),
                    _ => pv::<ISA, 4>(p_rows, kc, nv, &vblk[kv_off..], slot_stride, o_rows),
                }
                h += g;
            }
        }
    }
}

/// Widens slots `0..nk` of the block at `base`, KV heads `heads` only, into
/// `buf` (same layout; other heads' columns are left as they were).
#[inline(always)]
fn widen_block<const ISA: u8>(
    cache: KvSlice<'_>,
    base: usize,
    nk: usize,
    slot_stride: usize,
    d: usize,
    heads: &std::ops::Range<usize>,
    buf: &mut [f32],
) {
    let (c0, c1) = (heads.start * d, heads.end * d);
    if c1 - c0 == slot_stride {
        widen::<ISA>(cache, base, &mut buf[..nk * slot_stride]);
        return;
    }
    for j in 0..nk {
        let at = j * slot_stride;
        widen::<ISA>(cache, base + at + c0, &mut buf[at + c0..at + c1]);
    }
}

/// Elements `start..start + out.len()` of a 16-bit cache as f32, inlined
/// into the kernel (F16C `vcvtph2ps`, or bf16's shift by 16) where the level
/// has it: `KvSlice::read_into` through `half` was a call per row of a head
/// and 8% of a batch-1 decode step. Same values either way (widening is
/// exact).
#[inline(always)]
fn widen<const ISA: u8>(cache: KvSlice<'_>, start: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if ISA >= super::simd::LEVEL_AVX2 {
        use std::arch::x86_64::*;
        let n = out.len();
        let whole = n / 8 * 8;
        let done = match cache {
            KvSlice::F16(v) => {
                let src = &v[start..start + n];
                for (o, h) in out[..whole].chunks_exact_mut(8).zip(src.chunks_exact(8)) {
                    // SAFETY: F16C at this level (see `dispatch!`); 8 halves
                    // read, 8 floats written.
                    unsafe {
                        let bits = _mm_loadu_si128(h.as_ptr() as *const __m128i);
                        _mm256_storeu_ps(o.as_mut_ptr(), _mm256_cvtph_ps(bits));
                    }
                }
                true
            }
            KvSlice::BF16(v) => {
                let src = &v[start..start + n];
                for (o, h) in out[..whole].chunks_exact_mut(8).zip(src.chunks_exact(8)) {
                    // SAFETY: AVX2 at this level; 8 bf16 read, 8 f32 written.
                    unsafe {
                        let bits = _mm_loadu_si128(h.as_ptr() as *const __m128i);
                        let wide = _mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16);
                        _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, wide);
                    }
                }
                true
            }
            KvSlice::F32(_) => false,
        };
        if done {
            if whole < n {
                cache.read_into(start + whole, &mut out[whole..]);
            }
            return;
        }
    }
    cache.read_into(start, out)
}

/// Query rows of one token processed together (their K/V loads are shared).
const ROW_GROUP: usize = 4;

/// `s[r, j] = q[r] · K[j]` for `R` query rows and the block's first `nv` keys.
/// Each score is a 16-lane FMA chain over `d` then a horizontal sum: the
/// same arithmetic whatever rows share the call.
#[inline(always)]
fn scores<const ISA: u8, const R: usize>(
    q: &[f32],
    k: &[f32],
    slot_stride: usize,
    nv: usize,
    kc: usize,
    s: &mut [f32],
) {
    let d = q.len() / R;
    let full = d / LANES * LANES;
    let q_rows: [&[f32]; R] = std::array::from_fn(|r| &q[r * d..][..d]);
    for j in 0..nv {
        let kj = &k[j * slot_stride..][..d];
        let mut acc = [[0f32; LANES]; R];
        for c in (0..full).step_by(LANES) {
            let kc_: &[f32; LANES] = kj[c..c + LANES].try_into().unwrap();
            for r in 0..R {
                let qc: &[f32; LANES] = q_rows[r][c..c + LANES].try_into().unwrap();
                for l in 0..LANES {
                    acc[r][l] = fmadd::<ISA>(qc[l], kc_[l], acc[r][l]);
                }
            }
        }
        for r in 0..R {
            let mut v = hsum::<ISA>(acc[r]);
            for i in full..d {
                v = fmadd::<ISA>(q_rows[r][i], kj[i], v);
            }
            s[r * kc + j] = v;
        }
    }
}

/// Folds one block's scores (`sr[..nv]` valid) into a row's running max and
/// sum; leaves the probabilities in `sr` (0 past `nv`) and returns the factor
/// that rescales the row's output so far.
#[inline(always)]
fn online_softmax<const ISA: u8>(
    sr: &mut [f32],
    nv: usize,
    row_max: &mut f32,
    row_sum: &mut f32,
) -> f32 {
    sr[nv..].fill(f32::NEG_INFINITY);
    let m_old = *row_max;
    let m_blk = max(sr);
    let m_new = if m_blk > m_old { m_blk } else { m_old };
    let corr = exp::<ISA>(m_old - m_new);
    let mut acc = [0f32; LANES];
    for c in sr.chunks_exact_mut(LANES) {
        for l in 0..LANES {
            c[l] = exp::<ISA>(c[l] - m_new);
            acc[l] += c[l];
        }
    }
    *row_sum = *row_sum * corr + hsum::<ISA>(acc);
    *row_max = m_new;
    corr
}

/// `o[r] += Σ_j p[r, j] · V[j]` for `R` rows over the block's first `nv`
/// keys, 16 output values at a time held in registers; each output value is
/// one FMA chain over `j` in order, whatever rows share the call. (At 32
/// values, `R = 4` rows needed all sixteen AVX2 registers and LLVM fell back
/// to scalar FMAs through the stack: two thirds of attention's time.)
#[inline(always)]
fn pv<const ISA: u8, const R: usize>(
    p: &[f32],
    kc: usize,
    nv: usize,
    v: &[f32],
    slot_stride: usize,
    o: &mut [f32],
) {
    const W: usize = LANES;
    let d = o.len() / R;
    let p_rows: [&[f32]; R] = std::array::from_fn(|r| &p[r * kc..][..nv]);
    let mut d0 = 0;
    while d0 + W <= d {
        let mut acc: [[f32; W]; R] =
            std::array::from_fn(|r| o[r * d + d0..][..W].try_into().unwrap());
        for j in 0..nv {
            let vj: &[f32; W] = v[j * slot_stride + d0..][..W].try_into().unwrap();
            for r in 0..R {
                let pr = p_rows[r][j];
                for l in 0..W {
                    acc[r][l] = fmadd::<ISA>(pr, vj[l], acc[r][l]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            o[r * d + d0..][..W].copy_from_slice(a);
        }
        d0 += W;
    }
    for r in 0..R {
        for j in 0..nv {
            let vj = &v[j * slot_stride + d0..][..d - d0];
            for (o, v) in o[r * d + d0..(r + 1) * d].iter_mut().zip(vj) {
                *o = fmadd::<ISA>(p_rows[r][j], *v, *o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kv_cache::{KvBuffer, KvCacheDtype};
    use crate::cpu::test_util::{assert_close, random_vec};
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    /// A batch: per sequence (new tokens, total length), the cache and block tables.
    struct Case {
        heads: usize,
        kv_heads: usize,
        d: usize,
        bs: usize,
        qsl: Vec<u32>,
        seq_lens: Vec<u32>,
        tables: Vec<u32>,
        max_blocks: usize,
        k_cache: Vec<f32>,
        v_cache: Vec<f32>,
        q: Vec<f32>,
        window: Option<usize>,
        softcap: Option<f32>,
    }

    impl Case {
        /// Random K/V in every slot a sequence owns, NaN everywhere else (so a
        /// read past `seq_len` or of a foreign block poisons the result).
        fn new(
            heads: usize,
            kv_heads: usize,
            d: usize,
            bs: usize,
            seqs: &[(u32, u32)],
            seed: u64,
        ) -> Self {
            let max_blocks = seqs
                .iter()
                .map(|s| (s.1 as usize).div_ceil(bs))
                .max()
                .unwrap_or(0)
                + 1;
            let total_blocks: usize = seqs
                .iter()
                .map(|s| (s.1 as usize).div_ceil(bs))
                .sum::<usize>()
                + 3;
            let mut ids: Vec<u32> = (1..total_blocks as u32).collect();
            ids.shuffle(&mut StdRng::seed_from_u64(seed));
            let slot = kv_heads * d;
            let mut k_cache = vec![f32::NAN; total_blocks * bs * slot];
            let mut v_cache = k_cache.clone();
            let kv = random_vec(2 * k_cache.len(), seed + 1);
            let mut tables = vec![0u32; seqs.len() * max_blocks];
            let mut next = ids.into_iter();
            for (s, &(_, len)) in seqs.iter().enumerate() {
                for b in 0..(len as usize).div_ceil(bs) {
                    let id = next.next().unwrap();
                    tables[s * max_blocks + b] = id;
                    for off in 0..bs.min(len as usize - b * bs) {
                        let e = (id as usize * bs + off) * slot;
                        k_cache[e..e + slot].copy_from_slice(&kv[e..e + slot]);
                        v_cache[e..e + slot].copy_from_slice(&kv[kv.len() / 2 + e..][..slot]);
                    }
                }
            }
            let mut qsl = vec![0u32];
            for &(q_len, _) in seqs {
                qsl.push(qsl.last().unwrap() + q_len);
            }
            let tokens = *qsl.last().unwrap() as usize;
            // Scaled so some softmaxes are peaked.
            let q = random_vec(tokens * heads * d, seed + 2)
                .iter()
                .map(|v| v * 6.0)
                .collect();
            let seq_lens = seqs.iter().map(|s| s.1).collect();
            Self {
                heads,
                kv_heads,
                d,
                bs,
                qsl,
                seq_lens,
                tables,
                max_blocks,
                k_cache,
                v_cache,
                q,
                window: None,
                softcap: None,
            }
        }

        /// This case with a sliding window; K/V slots before every new
        /// token's window are poisoned with NaN (the kernel must not read them).
        fn windowed(mut self, window: usize, softcap: Option<f32>) -> Self {
            let slot = self.kv_heads * self.d;
            for s in 0..self.seq_lens.len() {
                let q_len = (self.qsl[s + 1] - self.qsl[s]) as usize;
                let first_pos = self.seq_lens[s] as usize - q_len;
                for p in 0..(first_pos + 1).saturating_sub(window) {
                    let block = self.tables[s * self.max_blocks + p / self.bs] as usize;
                    let e = (block * self.bs + p % self.bs) * slot;
                    self.k_cache[e..e + slot].fill(f32::NAN);
                    self.v_cache[e..e + slot].fill(f32::NAN);
                }
            }
            self.window = Some(window);
            self.softcap = softcap;
            self
        }

        fn params(&self) -> PagedAttentionParams<'_> {
            PagedAttentionParams {
                query_start_loc: &self.qsl,
                seq_lens: &self.seq_lens,
                block_tables: &self.tables,
                max_blocks_per_seq: self.max_blocks,
                block_size: self.bs,
                num_heads: self.heads,
                num_kv_heads: self.kv_heads,
                head_dim: self.d,
                scale: 1.0 / (self.d as f32).sqrt(),
                sliding_window: self.window,
                logit_softcap: self.softcap,
            }
        }

        fn run(&self, isa: Isa) -> Vec<f32> {
            let mut out = vec![f32::NAN; self.q.len()];
            paged_attention_with(
                isa,
                &self.q,
                KvSlice::F32(&self.k_cache),
                KvSlice::F32(&self.v_cache),
                &self.params(),
                &mut out,
            );
            out
        }

        /// Rounds the cache to `dtype`'s values (NaN poison stays NaN) and
        /// returns it stored in that type.
        fn round_cache(&mut self, dtype: KvCacheDtype) -> (KvBuffer, KvBuffer) {
            let store = |c: &mut Vec<f32>| {
                let mut b = KvBuffer::zeroed(dtype, c.len()).unwrap();
                b.as_mut_slice().write_from(0, c);
                b.as_slice().read_into(0, c);
                b
            };
            (store(&mut self.k_cache), store(&mut self.v_cache))
        }

        fn run_on(&self, isa: Isa, kc: &KvBuffer, vc: &KvBuffer) -> Vec<f32> {
            let mut out = vec![f32::NAN; self.q.len()];
            let p = self.params();
            paged_attention_with(isa, &self.q, kc.as_slice(), vc.as_slice(), &p, &mut out);
            out
        }

        fn naive(&self) -> Vec<f64> {
            let (d, group, slot) = (self.d, self.heads / self.kv_heads, self.kv_heads * self.d);
            let scale = 1.0 / (d as f64).sqrt();
            let mut out = vec![0f64; self.q.len()];
            for s in 0..self.seq_lens.len() {
                let (start, end) = (self.qsl[s] as usize, self.qsl[s + 1] as usize);
                for t in start..end {
                    let pos = self.seq_lens[s] as usize - (end - start) + (t - start);
                    for h in 0..self.heads {
                        let qrow = &self.q[(t * self.heads + h) * d..][..d];
                        let kv_at = |cache: &[f32], p: usize| {
                            let block = self.tables[s * self.max_blocks + p / self.bs] as usize;
                            let e = (block * self.bs + p % self.bs) * slot + (h / group) * d;
                            cache[e..e + d]
                                .iter()
                                .map(|v| *v as f64)
                                .collect::<Vec<f64>>()
                        };
                        let first = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                        let scores: Vec<f64> = (first..=pos)
                            .map(|p| {
                                let k = kv_at(&self.k_cache, p);
                                let x =
                                    qrow.iter().zip(&k).map(|(a, b)| *a as f64 * b).sum::<f64>()
                                        * scale;
                                self.softcap.map_or(x, |c| c as f64 * (x / c as f64).tanh())
                            })
                            .collect();
                        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                        let total: f64 = w.iter().sum();
                        let o = &mut out[(t * self.heads + h) * d..][..d];
                        for (p, wp) in (first..).zip(&w) {
                            for (o, v) in o.iter_mut().zip(kv_at(&self.v_cache, p)) {
                                *o += wp / total * v;
                            }
                        }
                    }
                }
            }
            out
        }
    }

    fn check(case: &Case, what: &str) {
        let want = case.naive();
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            assert_close(
                &case.run(isa),
                &want,
                1e-4,
                2e-5,
                &format!("{what} {isa:?}"),
            );
        }
    }

    #[test]
    fn decode_batches_over_gqa_ratios_head_dims_and_block_sizes() {
        // (heads, kv_heads): MHA, GQA 3 (SmolLM2), GQA 9 (MQA-like 9:1), MQA.
        let mut seed = 0;
        for (heads, kv) in [(4, 4), (9, 3), (9, 1), (6, 1)] {
            for d in [64, 80, 128] {
                for bs in [16, 32] {
                    seed += 10;
                    let seqs = [(1, 1), (1, 17), (1, 32), (1, 33), (1, 100)];
                    check(
                        &Case::new(heads, kv, d, bs, &seqs, seed),
                        &format!("decode h={heads}/{kv} d={d} bs={bs}"),
                    );
                }
            }
        }
    }

    #[test]
    fn prefill_chunks_starting_mid_sequence() {
        for (heads, kv, d, bs) in [(9, 3, 64, 16), (8, 1, 128, 32), (3, 3, 80, 16)] {
            // Whole prompt, a chunk starting mid-block, one starting on a block edge.
            let seqs = [(45, 45), (37, 100), (16, 64)];
            check(
                &Case::new(heads, kv, d, bs, &seqs, 77),
                &format!("prefill h={heads}/{kv} d={d} bs={bs}"),
            );
        }
    }

    #[test]
    fn mixed_batch_of_prefills_and_decodes() {
        let seqs = [
            (1, 300),
            (70, 70),
            (1, 5),
            (13, 200),
            (1, 1),
            (0, 9),
            (33, 65),
        ];
        check(&Case::new(9, 3, 64, 16, &seqs, 5), "mixed GQA 3");
        check(
            &Case::new(12, 4, 80, 32, &seqs, 6),
            "mixed GQA 3 d=80 bs=32",
        );
        check(&Case::new(4, 1, 128, 16, &seqs, 7), "mixed MQA d=128");
    }

    #[test]
    fn odd_head_dim_and_block_size() {
        check(
            &Case::new(6, 2, 40, 8, &[(1, 30), (11, 19)], 3),
            "d=40 bs=8",
        );
        check(&Case::new(2, 1, 24, 5, &[(7, 7), (1, 12)], 4), "d=24 bs=5");
    }

    /// A token's output bits do not depend on how it is batched: decoded
    /// alone (per-head items), in a big batch (grouped items), or as the last
    /// token of a prefill chunk.
    #[test]
    fn results_are_batch_invariant_bit_for_bit() {
        let (heads, kv, d, bs) = (9, 3, 64, 16);
        let lens: Vec<u32> = (0..24).map(|i| 20 + 7 * i).collect();
        let prefill: Vec<(u32, u32)> = lens.iter().map(|&l| (l, l)).collect();
        let big = Case::new(heads, kv, d, bs, &prefill, 11);
        let big_out = big.run(Isa::Avx512);
        let row = heads * d;
        for (s, &len) in lens.iter().enumerate() {
            let last = (big.qsl[s + 1] - 1) as usize;
            let mut alone = Case::new(heads, kv, d, bs, &[(1, len)], 11);
            // Same cache, this sequence's table, this token's query.
            alone.k_cache.clone_from(&big.k_cache);
            alone.v_cache.clone_from(&big.v_cache);
            alone.max_blocks = big.max_blocks;
            alone.tables = big.tables[s * big.max_blocks..][..big.max_blocks].to_vec();
            alone.q = big.q[last * row..][..row].to_vec();
            let alone_out = alone.run(Isa::Avx512);
            assert_eq!(alone_out, big_out[last * row..][..row], "sequence {s}");
        }
    }

    /// Contexts over several key spans (the flash-decoding split): decodes
    /// just under, at and over a span boundary, prefill chunks that cross
    /// one, odd block sizes (a span of 510 positions), windows that start
    /// mid-span (the keys before a window are NaN: never read).
    #[test]
    fn long_contexts_split_over_key_spans() {
        let seqs = [(1, 1300), (1, 513), (1, 512), (40, 1100), (3, 530), (1, 20)];
        for bs in [16, 5] {
            check(
                &Case::new(9, 3, 64, bs, &seqs, 21),
                &format!("spans bs {bs}"),
            );
            for window in [100, 700] {
                let case = Case::new(6, 2, 32, bs, &seqs, 22).windowed(window, None);
                check(&case, &format!("spans bs {bs} window {window}"));
            }
        }
    }

    /// A long sequence's last token gives the same bits alone as at the end
    /// of a prefill chunk that crosses span boundaries.
    #[test]
    fn long_contexts_are_batch_invariant_bit_for_bit() {
        let (heads, kv, d, bs) = (9, 3, 64, 16);
        let big = Case::new(heads, kv, d, bs, &[(700, 1200), (1, 900)], 31);
        let big_out = big.run(Isa::Avx512);
        let row = heads * d;
        let last = (big.qsl[1] - 1) as usize;
        let mut alone = Case::new(heads, kv, d, bs, &[(1, 1200)], 31);
        alone.k_cache.clone_from(&big.k_cache);
        alone.v_cache.clone_from(&big.v_cache);
        alone.max_blocks = big.max_blocks;
        alone.tables = big.tables[..big.max_blocks].to_vec();
        alone.q = big.q[last * row..][..row].to_vec();
        assert_eq!(alone.run(Isa::Avx512), big_out[last * row..][..row]);
    }

    /// Windows smaller than, equal to and larger than a block, in decodes
    /// and prefill chunks (HF's rule: a token sees itself and the `w - 1`
    /// positions before it); with and without soft-capping.
    #[test]
    fn sliding_window_and_softcap() {
        let seqs = [(1, 40), (40, 40), (9, 33), (1, 7), (17, 64), (1, 16)];
        for (window, bs) in [(1, 16), (8, 16), (16, 16), (17, 8), (50, 16), (5, 5)] {
            for softcap in [None, Some(2.0)] {
                let case = Case::new(6, 2, 32, bs, &seqs, window as u64).windowed(window, softcap);
                check(
                    &case,
                    &format!("window {window} bs {bs} softcap {softcap:?}"),
                );
            }
        }
        let capped = Case::new(4, 4, 64, 16, &[(30, 30), (1, 50)], 8);
        let mut capped = capped.windowed(1000, Some(0.5));
        check(&capped, "softcap alone");
        // Soft-capping changes the result (the test above can fail).
        let capped_out = capped.run(Isa::Baseline);
        capped.softcap = None;
        assert_ne!(capped.run(Isa::Baseline), capped_out);
    }

    #[test]
    fn empty_batch_is_a_no_op() {
        let p = PagedAttentionParams {
            query_start_loc: &[0],
            seq_lens: &[],
            block_tables: &[],
            max_blocks_per_seq: 0,
            block_size: 16,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 8,
            scale: 1.0,
            sliding_window: None,
            logit_softcap: None,
        };
        let cache = KvSlice::F32(&[0.0; 128]);
        paged_attention(&[], cache, cache, &p, &mut []);
    }

    #[test]
    #[should_panic(expected = "needs 3 blocks")]
    fn short_block_table_panics() {
        let case = Case::new(2, 1, 16, 16, &[(1, 40)], 1);
        let mut p = case.params();
        p.max_blocks_per_seq = 2;
        p.block_tables = &case.tables[..2];
        paged_attention(
            &case.q,
            KvSlice::F32(&case.k_cache),
            KvSlice::F32(&case.v_cache),
            &p,
            &mut vec![0.0; case.q.len()],
        );
    }

    /// Padding rows of a padded decode batch (`seq_len` 0, null block
    /// table) come out zero and leave the other rows as they were.
    #[test]
    fn padding_rows_are_zero_and_change_nothing_else() {
        let mut case = Case::new(9, 3, 64, 16, &[(1, 17), (1, 33), (1, 5)], 9);
        let want = case.naive();
        case.seq_lens[2] = 0;
        let width = case.max_blocks;
        case.tables[2 * width..3 * width].fill(0);
        let row = 9 * 64;
        for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
            let got = case.run(isa);
            assert_close(&got[..2 * row], &want[..2 * row], 1e-4, 2e-5, "real rows");
            assert!(got[2 * row..].iter().all(|&v| v == 0.0), "{isa:?}");
        }
    }

    #[test]
    #[should_panic(expected = "new tokens > seq_len")]
    fn more_new_tokens_than_length_panics() {
        let mut case = Case::new(2, 1, 16, 16, &[(4, 4)], 1);
        case.seq_lens[0] = 3;
        case.run(Isa::Baseline);
    }

    /// bf16/f16 caches: the kernel on the stored values equals the f64
    /// reference on the same (rounded) values, whole-group and per-head
    /// items alike, on every ISA path; and stays batch invariant.
    #[test]
    fn sixteen_bit_caches_match_the_reference_on_their_values() {
        let seqs = [(1, 300), (70, 70), (1, 5), (13, 200), (0, 9), (33, 65)];
        for dtype in [KvCacheDtype::BF16, KvCacheDtype::F16] {
            // d = 36: rows that are not whole vectors of 8 (the widening tail).
            for (heads, kv, d, bs) in [
                (9, 3, 64, 16),
                (4, 1, 128, 32),
                (6, 2, 40, 8),
                (4, 2, 36, 4),
            ] {
                let mut case = Case::new(heads, kv, d, bs, &seqs, 21);
                let (kc, vc) = case.round_cache(dtype);
                let want = case.naive();
                for isa in [Isa::Baseline, Isa::Avx2, Isa::Avx512] {
                    let what = format!("{dtype} h={heads}/{kv} d={d} {isa:?}");
                    let got = case.run_on(isa, &kc, &vc);
                    assert_close(&got, &want, 1e-4, 2e-5, &what);
                    // Same values, f32 storage: the same bits.
                    assert_eq!(got, case.run(isa), "{what}");
                }
            }
        }
        // One decode alone (per-head items) vs in a big batch (grouped items).
        let (heads, kv, d, bs) = (9, 3, 64, 16);
        let mut big = Case::new(heads, kv, d, bs, &[(40, 40), (1, 90), (25, 25)], 8);
        let (kc, vc) = big.round_cache(KvCacheDtype::BF16);
        let big_out = big.run_on(Isa::Avx512, &kc, &vc);
        let mut alone = Case::new(heads, kv, d, bs, &[(1, 90)], 8);
        alone.max_blocks = big.max_blocks;
        alone.tables = big.tables[big.max_blocks..][..big.max_blocks].to_vec();
        let row = heads * d;
        alone.q = big.q[40 * row..][..row].to_vec();
        assert_eq!(
            alone.run_on(Isa::Avx512, &kc, &vc),
            big_out[40 * row..][..row]
        );
    }
}
