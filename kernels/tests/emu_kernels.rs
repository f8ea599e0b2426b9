//! Every CUDA kernel executed on the CPU emulator (`cuda::emu`) against its
//! `cpu::` twin, with the launch shapes and parameter structs of the GPU
//! path (`cuda::launch`, `cuda::attention::attention_launches`). Each check
//! runs under round robin and one adversarial thread order, so a missing
//! barrier shows. Outputs start as NaN so an element a kernel forgets to
//! write fails. Inputs are rounded to the kernel's type first; the CPU
//! reference runs in f32 on the rounded values, so the tolerance covers only
//! the kernel's own rounding. No GPU involved: this runs on every machine.
#![cfg(feature = "emu")]

use half::{bf16, f16};
use pagoda_kernels::cpu;
use pagoda_kernels::cuda::attention::{
    attention_launches, workspace_len_for, AttentionBatch, AttentionPtrs,
};
use pagoda_kernels::cuda::emu::{launch, ThreadOrder};
use pagoda_kernels::cuda::launch::{
    decode_plan, elementwise_shape, logit_edits_shape, reshape_and_cache_shape, rotary_shape,
    rows_shape, sampling_shape, token_bitmask_shape, warp_rows_shape, LaunchShape, ROW_THREADS,
};
use pagoda_kernels::cuda::params::*;
use pagoda_kernels::cuda::sampling::{bias_row, penalty_row, CsrRows};
use pagoda_kernels::cuda::sampling_reference;
use pagoda_kernels::cuda::{AttentionShape, CudaDType, Half16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Round robin, then an adversarial order picked by `i`.
fn orders(i: u64) -> [ThreadOrder; 2] {
    let adversarial = match i % 3 {
        0 => ThreadOrder::HighestFirst,
        1 => ThreadOrder::LowestFirst,
        _ => ThreadOrder::Random(i),
    };
    [ThreadOrder::RoundRobin, adversarial]
}

fn run<P: KernelParams>(kernel: &str, shape: &LaunchShape, order: ThreadOrder, params: &P) {
    // SAFETY: every test builds `params` from live host buffers of the sizes
    // the kernel's launch contract needs (the same the GPU wrappers check).
    unsafe { launch(kernel, shape, order, params) }
        .unwrap_or_else(|e| panic!("{kernel} under {order:?}: {e}"));
}

fn ptr<T>(v: &[T]) -> u64 {
    v.as_ptr() as u64
}
fn mptr<T>(v: &mut [T]) -> u64 {
    v.as_mut_ptr() as u64
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// Rounds through `T` (the values the kernel sees).
fn round<T: CudaDType>(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| T::from_f32(x).to_f32()).collect()
}
fn to_t<T: CudaDType>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}
fn nan<T: CudaDType>(n: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); n.max(1)]
}
fn to_f32<T: CudaDType>(v: &[T]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Every element finite and within `tol` relative to max(|want|, rms(want)).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert!(got.len() >= want.len(), "{what}: too few results");
    let rms =
        (want.iter().map(|w| (w * w) as f64).sum::<f64>() / want.len().max(1) as f64).sqrt() as f32;
    let floor = rms.max(1e-6);
    let mut worst = (0.0f32, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
        let e = (g - w).abs() / w.abs().max(floor);
        if e > worst.0 {
            worst = (e, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: element {} is {} (want {}), relative error {}",
        worst.1,
        got[worst.1],
        want[worst.1],
        worst.0
    );
}

fn tol<T: CudaDType>() -> f32 {
    match T::SUFFIX {
        "f32" => 1e-4,
        "f16" => 4e-3,
        _ => 2e-2,
    }
}

// ---- attention and the KV cache -------------------------------------------------

/// A random flat batch: per sequence (new tokens, context length); `(1, 0)`
/// is a padding row of a graph-padded decode batch (slot -1, seq_len 0,
/// block-table row of null blocks).
struct Batch {
    qsl: Vec<u32>,
    seq_lens: Vec<u32>,
    block_tables: Vec<u32>,
    max_blocks: usize,
    slots: Vec<i64>,
    num_blocks: usize,
}

fn make_batch(r: &mut StdRng, seqs: &[(usize, usize)], block_size: usize) -> Batch {
    let max_blocks = seqs
        .iter()
        .map(|&(_, c)| c.div_ceil(block_size))
        .max()
        .unwrap_or(0)
        .max(1);
    let total: usize = seqs.iter().map(|&(_, c)| c.div_ceil(block_size)).sum();
    let num_blocks = total + 3;
    // Shuffled physical blocks, never block 0 (the null block).
    let mut pool: Vec<u32> = (1..num_blocks as u32).collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, r.random_range(0..=i));
    }
    let mut b = Batch {
        qsl: vec![0],
        seq_lens: Vec::new(),
        block_tables: vec![0; seqs.len() * max_blocks],
        max_blocks,
        slots: Vec::new(),
        num_blocks,
    };
    for (s, &(q_len, ctx)) in seqs.iter().enumerate() {
        for j in 0..ctx.div_ceil(block_size) {
            b.block_tables[s * max_blocks + j] = pool.pop().unwrap();
        }
        b.qsl.push(b.qsl.last().unwrap() + q_len as u32);
        b.seq_lens.push(ctx as u32);
        if ctx == 0 {
            b.slots.extend(std::iter::repeat_n(-1, q_len));
            continue;
        }
        for p in ctx - q_len..ctx {
            let blk = b.block_tables[s * max_blocks + p / block_size] as i64;
            b.slots
                .push(blk * block_size as i64 + (p % block_size) as i64);
        }
    }
    b
}

/// One attention case: reshape_and_cache of this step's K/V (exact), then
/// every launch `attention_launches` plans (prefill / decode / reduce),
/// against `cpu::paged_attention`.
struct AttnCase<'a> {
    seed: u64,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    seqs: &'a [(usize, usize)],
    /// The decode grid's bound (a captured graph's max length), if not the batch's.
    graph_max_seq_len: Option<usize>,
    /// The GPU's multiprocessor count the decode split is planned for.
    num_sms: usize,
    /// Sliding window: K/V slots before each sequence's first new token's
    /// window hold NaN (the KV manager may have freed those blocks), so a
    /// kernel that reads one poisons its output.
    window: Option<usize>,
    /// Attention logit soft-cap.
    softcap: Option<f32>,
}

fn check_attention<T: Half16>(c: &AttnCase<'_>, order: ThreadOrder) -> Vec<String> {
    let (heads, kv_heads, head_dim, bs) = (c.heads, c.kv_heads, c.head_dim, c.block_size);
    let mut r = rng(c.seed);
    let b = make_batch(&mut r, c.seqs, bs);
    let tokens = *b.qsl.last().unwrap() as usize;
    let row = kv_heads * head_dim;
    let cache_len = b.num_blocks * bs * row;
    let mut kc = round::<T>(&randn(&mut r, cache_len, 1.0));
    let mut vc = round::<T>(&randn(&mut r, cache_len, 1.0));
    let q = round::<T>(&randn(&mut r, tokens * heads * head_dim, 1.0));
    let knew = round::<T>(&randn(&mut r, tokens * row, 1.0));
    let vnew = round::<T>(&randn(&mut r, tokens * row, 1.0));
    if let Some(w) = c.window {
        poison_before_window(&b, c.seqs, w, bs, row, &mut kc, &mut vc);
    }
    let (mut kcd, mut vcd) = (to_t::<T>(&kc), to_t::<T>(&vc));
    cpu::reshape_and_cache(
        &knew,
        &vnew,
        cpu::KvSliceMut::F32(&mut kc),
        cpu::KvSliceMut::F32(&mut vc),
        &b.slots,
        kv_heads,
        head_dim,
    );
    let (kn, vn) = (to_t::<T>(&knew), to_t::<T>(&vnew));
    let p = ReshapeAndCacheParams {
        key: ptr(&kn),
        value: ptr(&vn),
        k_cache: mptr(&mut kcd),
        v_cache: mptr(&mut vcd),
        slot_mapping: ptr(&b.slots),
        key_stride: row as i32,
        value_stride: row as i32,
        row_len: row as i32,
    };
    let name = format!("reshape_and_cache_{}", T::SUFFIX);
    run(&name, &reshape_and_cache_shape(tokens, row), order, &p);
    // Bit patterns: the NaN that poisons slots outside a window equals itself.
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&to_f32(&kcd)), bits(&kc), "reshape_and_cache K");
    assert_eq!(bits(&to_f32(&vcd)), bits(&vc), "reshape_and_cache V");

    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut want = vec![0f32; tokens * heads * head_dim];
    let params = cpu::PagedAttentionParams {
        query_start_loc: &b.qsl,
        seq_lens: &b.seq_lens,
        block_tables: &b.block_tables,
        max_blocks_per_seq: b.max_blocks,
        block_size: bs,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        scale,
        sliding_window: c.window,
        logit_softcap: c.softcap,
    };
    cpu::paged_attention(
        &q,
        cpu::KvSlice::F32(&kc),
        cpu::KvSlice::F32(&vc),
        &params,
        &mut want,
    );

    let max_seq_len = c
        .graph_max_seq_len
        .unwrap_or(*b.seq_lens.iter().max().unwrap() as usize);
    let shape = AttentionShape {
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        block_size: bs,
        scale,
        q_stride: heads * head_dim,
        out_stride: heads * head_dim,
        sliding_window: c.window,
        logit_softcap: c.softcap,
    };
    let (ws_out, ws_stats) = workspace_len_for(c.seqs.len(), &shape, max_seq_len, c.num_sms);
    let mut tmp_out = vec![f32::NAN; ws_out.max(1)];
    let mut tmp_max = vec![f32::NAN; ws_stats.max(1)];
    let mut tmp_sum = vec![f32::NAN; ws_stats.max(1)];
    let qd = to_t::<T>(&q);
    let mut out = nan::<T>(tokens * heads * head_dim);
    let ptrs = AttentionPtrs {
        out: mptr(&mut out),
        q: ptr(&qd),
        k_cache: ptr(&kcd),
        v_cache: ptr(&vcd),
        block_tables: ptr(&b.block_tables),
        query_start_loc: ptr(&b.qsl),
        seq_lens: ptr(&b.seq_lens),
        tmp_out: mptr(&mut tmp_out),
        tmp_max: mptr(&mut tmp_max),
        tmp_sum: mptr(&mut tmp_sum),
    };
    let batch = AttentionBatch {
        max_blocks_per_seq: b.max_blocks,
        num_tokens: tokens,
        num_seqs: c.seqs.len(),
        num_decodes: c.seqs.iter().filter(|&&(q, _)| q == 1).count(),
        max_seq_len,
    };
    let ws_lens = [tmp_out.len(), tmp_max.len(), tmp_sum.len()];
    let launches =
        attention_launches(T::SUFFIX, &ptrs, &batch, &shape, ws_lens, c.num_sms).unwrap();
    for l in &launches {
        run(&l.kernel, &l.shape, order, &l.params);
    }
    let what = format!(
        "attention_{} h{heads}/{kv_heads} d{head_dim} bs{bs} {:?} window {:?} cap {:?} under \
         {order:?}",
        T::SUFFIX,
        c.seqs,
        c.window,
        c.softcap
    );
    assert_close(&what, &to_f32(&out), &want, 2.0 * tol::<T>());
    launches.iter().map(|l| l.kernel.clone()).collect()
}

/// NaN in every cached K/V slot before the window of each sequence's first
/// new token (positions `0..ctx - q_len + 1 - window`).
fn poison_before_window(
    b: &Batch,
    seqs: &[(usize, usize)],
    window: usize,
    bs: usize,
    row: usize,
    kc: &mut [f32],
    vc: &mut [f32],
) {
    for (s, &(q_len, ctx)) in seqs.iter().enumerate() {
        for p in 0..(ctx + 1).saturating_sub(q_len + window) {
            let slot = b.block_tables[s * b.max_blocks + p / bs] as usize * bs + p % bs;
            kc[slot * row..(slot + 1) * row].fill(f32::NAN);
            vc[slot * row..(slot + 1) * row].fill(f32::NAN);
        }
    }
}

fn attention_both_orders<T: Half16>(c: &AttnCase<'_>) -> Vec<String> {
    let mut ran = Vec::new();
    for order in orders(c.seed) {
        ran = check_attention::<T>(c, order);
    }
    ran
}

fn case<'a>(
    seed: u64,
    heads: usize,
    kv: usize,
    d: usize,
    seqs: &'a [(usize, usize)],
) -> AttnCase<'a> {
    AttnCase {
        seed,
        heads,
        kv_heads: kv,
        head_dim: d,
        block_size: 16,
        seqs,
        graph_max_seq_len: None,
        num_sms: 132,
        window: None,
        softcap: None,
    }
}

/// Prefill at every head size in both types: a chunk starting mid-context
/// that spans two query tiles, a fresh prompt, and a one-token prompt (a
/// decode: the prefill kernel must skip it); GQA.
#[test]
fn prefill_attention_every_head_size_and_type() {
    let seqs: &[(usize, usize)] = &[(70, 90), (1, 1), (5, 5)];
    for (i, d) in [64, 80, 96, 128, 256].into_iter().enumerate() {
        let c = case(100 + i as u64, 4, 2, d, seqs);
        let ran = attention_both_orders::<bf16>(&c);
        assert_eq!(ran[0], format!("paged_attention_prefill_bf16_d{d}"));
        attention_both_orders::<f16>(&AttnCase {
            seed: 200 + i as u64,
            ..c
        });
    }
}

/// MQA (one KV head for 6 query heads) and MHA, a block size of 32, and
/// prefills mixed with decodes (the prefill kernel skips the decodes).
#[test]
fn prefill_with_decodes_mqa_and_mha() {
    let mixed: &[(usize, usize)] = &[(3, 40), (1, 17), (17, 17), (1, 300)];
    let ran = attention_both_orders::<bf16>(&case(300, 6, 1, 64, mixed));
    assert_eq!(ran.len(), 3, "prefill, decode and reduce: {ran:?}");
    attention_both_orders::<f16>(&AttnCase {
        block_size: 32,
        ..case(301, 2, 2, 128, mixed)
    });
    // Three query tiles of one chunk over five K/V tiles, beside a decode.
    let long: &[(usize, usize)] = &[(150, 310), (1, 64)];
    attention_both_orders::<bf16>(&case(302, 4, 1, 96, long));
}

/// Decode + reduce for the split plans `decode_plan` returns: one partition
/// (no reduce), 128-, 256- and 512-token partitions, head groups of 1, 4
/// and 6 (MQA in two chunks), and graph-padded rows (seq_len 0, slot -1).
#[test]
fn decode_and_reduce_every_split_plan() {
    let mut partitions = Vec::new();
    for (i, (heads, kv, d, seqs, sms, graph)) in [
        (8, 2, 64, &[(1, 1), (1, 16), (1, 33)][..], 132, None),
        (8, 2, 64, &[(1, 600), (1, 0), (1, 130)][..], 132, None),
        (12, 1, 128, &[(1, 700), (1, 3)][..], 5, None),
        (4, 4, 80, &[(1, 1100), (1, 0)][..], 1, Some(1200)),
        (8, 2, 256, &[(1, 257), (1, 5)][..], 132, Some(2048)),
    ]
    .into_iter()
    .enumerate()
    {
        let c = AttnCase {
            num_sms: sms,
            graph_max_seq_len: graph,
            ..case(400 + i as u64, heads, kv, d, seqs)
        };
        let max_len = graph.unwrap_or(seqs.iter().map(|s| s.1).max().unwrap());
        let plan = decode_plan(seqs.len(), heads, kv, d, max_len, sms);
        partitions.push((plan.partition_size, plan.max_partitions > 1));
        let ran = attention_both_orders::<bf16>(&c);
        assert_eq!(ran.len(), 1 + plan.needs_reduce() as usize, "{ran:?}");
        if i % 2 == 1 {
            attention_both_orders::<f16>(&AttnCase {
                seed: 500 + i as u64,
                ..c
            });
        }
    }
    for want in [(512, false), (128, true), (256, true), (512, true)] {
        assert!(
            partitions.contains(&want),
            "{want:?} not covered: {partitions:?}"
        );
    }
}

/// Sliding windows and soft-capping on every path: prefill chunks whose
/// query tiles start inside and past the window (whole key tiles skipped),
/// windows narrower than a block, than a key tile and wider than the
/// context; decodes whose window spans one partition or several
/// (partitions, and the reduce pass, count from the window's first key);
/// padded rows. Slots before each window hold NaN.
#[test]
fn sliding_window_and_softcap_on_every_path() {
    let prefill: &[(usize, usize)] = &[(70, 200), (40, 40), (1, 90), (5, 5)];
    let decode: &[(usize, usize)] = &[(1, 1), (1, 300), (1, 0), (1, 1100), (1, 37)];
    let mut ran = Vec::new();
    for (i, (window, softcap, seqs, d, sms)) in [
        (Some(1), None, prefill, 64, 132),
        (Some(7), Some(2.0), prefill, 128, 132),
        (Some(50), None, prefill, 96, 132),
        (Some(100), Some(5.0), prefill, 256, 132),
        (Some(1000), None, prefill, 64, 132),
        (None, Some(1.5), prefill, 80, 132),
        (Some(20), Some(3.0), decode, 64, 132),
        (Some(300), None, decode, 128, 1),
        (Some(700), Some(30.0), decode, 64, 1),
        (None, Some(0.5), decode, 96, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let c = AttnCase {
            window,
            softcap,
            num_sms: sms,
            ..case(600 + i as u64, 4, 2, d, seqs)
        };
        ran.extend(attention_both_orders::<bf16>(&c));
        if i % 3 == 0 {
            attention_both_orders::<f16>(&AttnCase {
                seed: 700 + i as u64,
                ..c
            });
        }
    }
    assert!(
        ran.iter().any(|k| k.starts_with("paged_attention_reduce")),
        "no windowed case split its context: {ran:?}"
    );
}

// ---- row-wise kernels ---------------------------------------------------------------

/// The gain the CPU reference applies: `w`, or Gemma's `1 + w` (the kernel
/// gets `w` and the flag).
fn gain(w: &[f32], gemma: bool) -> Vec<f32> {
    w.iter().map(|&x| if gemma { 1.0 + x } else { x }).collect()
}

fn check_norms<T: CudaDType>(seed: u64, gemma: bool) {
    let mut r = rng(seed);
    for (i, (rows, dim)) in [(1, 64), (3, 576), (2, 1000)].into_iter().enumerate() {
        for order in orders(seed + i as u64) {
            let x = round::<T>(&randn(&mut r, rows * dim, 2.0));
            let res = round::<T>(&randn(&mut r, rows * dim, 2.0));
            let w = round::<T>(&randn(&mut r, dim, 1.0));
            let eps = 1e-6;
            let mut want = vec![0f32; rows * dim];
            cpu::rms_norm(&x, &gain(&w, gemma), eps, &mut want);
            let (xd, wd) = (to_t::<T>(&x), to_t::<T>(&w));
            let mut out = nan::<T>(rows * dim);
            let p = RmsNormParams {
                out: mptr(&mut out),
                x: ptr(&xd),
                weight: ptr(&wd),
                out_stride: dim as i32,
                x_stride: dim as i32,
                dim: dim as i32,
                eps,
                gemma: gemma as i32,
            };
            let shape = rows_shape(rows, dim, ROW_THREADS);
            run(&format!("rms_norm_{}", T::SUFFIX), &shape, order, &p);
            let what = format!("rms_norm_{} {rows}x{dim} gemma {gemma}", T::SUFFIX);
            assert_close(&what, &to_f32(&out), &want, tol::<T>());

            let (mut xw, mut rw) = (x.clone(), res.clone());
            cpu::fused_add_rms_norm(&mut xw, &mut rw, &gain(&w, gemma), eps);
            let (mut xd, mut rd) = (to_t::<T>(&x), to_t::<T>(&res));
            let p = FusedAddRmsNormParams {
                x: mptr(&mut xd),
                residual: mptr(&mut rd),
                weight: ptr(&wd),
                dim: dim as i32,
                eps,
                gemma: gemma as i32,
            };
            run(
                &format!("fused_add_rms_norm_{}", T::SUFFIX),
                &shape,
                order,
                &p,
            );
            assert_close("fused_add residual", &to_f32(&rd), &rw, tol::<T>());
            assert_close("fused_add x", &to_f32(&xd), &xw, 2.0 * tol::<T>());
        }
    }
    // Per-head norm on a view of fused rows: heads 1..=3 of 6; 15 sub-rows
    // leave the last CTA a warp with nothing to do.
    for (i, head_dim) in [64, 128].into_iter().enumerate() {
        let order = orders(seed + 7 + i as u64)[1];
        let (rows, per_row, width) = (5, 3, 6 * head_dim);
        let x = round::<T>(&randn(&mut r, rows * width, 3.0));
        let w = round::<T>(&randn(&mut r, head_dim, 1.0));
        let mut want = x.clone();
        for row in want.chunks_exact_mut(width) {
            let slice = &mut row[head_dim..head_dim * (1 + per_row)];
            cpu::rms_norm_inplace(slice, &gain(&w, gemma), 1e-6);
        }
        let (mut xd, wd) = (to_t::<T>(&x), to_t::<T>(&w));
        let p = RmsNormHeadsParams {
            x: mptr(&mut xd[head_dim..]),
            weight: ptr(&wd),
            row_stride: width as i32,
            per_row: per_row as i32,
            dim: head_dim as i32,
            num_sub_rows: (rows * per_row) as i32,
            eps: 1e-6,
            gemma: gemma as i32,
        };
        let name = format!("rms_norm_heads_{}", T::SUFFIX);
        run(&name, &warp_rows_shape(rows * per_row), order, &p);
        assert_close(&name, &to_f32(&xd), &want, tol::<T>());
    }
}

#[test]
fn norms_match_cpu() {
    for gemma in [false, true] {
        check_norms::<bf16>(10, gemma);
        check_norms::<f16>(20, gemma);
        check_norms::<f32>(30, gemma);
    }
}

/// Gemma's norm rounds once, from f32, with the stored bf16 `w` (HF:
/// `(x·r·(1 + w.float())).to(bf16)`): nearly every output equals that value
/// rounded, bit for bit (the kernel's sum order may flip a rare tie). A gain
/// `1 + w` rounded to bf16 first, or Llama's rounding before the gain, would
/// miss by an ulp in a large share of elements, inside `norms_match_cpu`'s
/// tolerance.
#[test]
fn gemma_norm_rounds_once_from_the_stored_gain() {
    let mut r = rng(77);
    let (rows, dim) = (8, 1024);
    let x = round::<bf16>(&randn(&mut r, rows * dim, 2.0));
    let w = round::<bf16>(&randn(&mut r, dim, 0.5));
    let mut want = vec![0f32; rows * dim];
    for (row, out) in x.chunks_exact(dim).zip(want.chunks_exact_mut(dim)) {
        let ms = row.iter().map(|v| (v * v) as f64).sum::<f64>() / dim as f64;
        let rs = (1.0 / (ms + 1e-6).sqrt()) as f32;
        for ((o, &v), &g) in out.iter_mut().zip(row).zip(&w) {
            *o = bf16::from_f32(v * rs * (1.0 + g)).to_f32();
        }
    }
    let (xd, wd) = (to_t::<bf16>(&x), to_t::<bf16>(&w));
    let mut out = nan::<bf16>(rows * dim);
    let p = RmsNormParams {
        out: mptr(&mut out),
        x: ptr(&xd),
        weight: ptr(&wd),
        out_stride: dim as i32,
        x_stride: dim as i32,
        dim: dim as i32,
        eps: 1e-6,
        gemma: 1,
    };
    run(
        "rms_norm_bf16",
        &rows_shape(rows, dim, ROW_THREADS),
        orders(77)[0],
        &p,
    );
    let got = to_f32(&out);
    let differ = got.iter().zip(&want).filter(|(g, w)| g != w).count();
    assert!(
        differ * 200 < got.len(),
        "{differ} of {} outputs differ from one rounding of x·r·(1 + w)",
        got.len()
    );
}

/// The MoE kernels by their raw launches, under both thread orders (and, in
/// `kernels_under_asan_and_ubsan`, under the sanitizers): routing and
/// grouping equal the CPU's exactly, the grouped matmul and the combine
/// (with a gated shared expert) match the CPU to bf16 tolerance.
#[test]
fn moe_kernels_match_the_cpu_routing() {
    let mut r = rng(91);
    let (tokens, e, top_k, h, n) = (19, 8, 3, 32, 40);
    let pairs = tokens * top_k;
    let logits = round::<bf16>(&randn(&mut r, tokens * e, 3.0));
    let mut want = cpu::ExpertRouting::default();
    want.route(&logits, e, top_k, true);
    let x = round::<bf16>(&randn(&mut r, tokens * h, 1.0));
    let mut gathered = vec![0f32; pairs * h];
    cpu::moe_gather(&x, &want, &mut gathered, h);
    let ws: Vec<Vec<f32>> = (0..e)
        .map(|_| round::<bf16>(&randn(&mut r, n * h, 0.3)))
        .collect();
    let wd: Vec<Vec<bf16>> = ws.iter().map(|w| to_t::<bf16>(w)).collect();
    let addrs: Vec<u64> = wd.iter().map(|w| ptr(w)).collect();
    let mut want_mm = vec![0f32; pairs * n];
    for (ex, range) in want.active_experts() {
        for row in range {
            let y = &mut want_mm[row * n..(row + 1) * n];
            cpu::matmul_transb(&gathered[row * h..(row + 1) * h], &ws[ex], y, 1, h, n);
        }
    }
    let expert_out = round::<bf16>(&randn(&mut r, pairs * h, 1.0));
    let shared = round::<bf16>(&randn(&mut r, tokens * h, 1.0));
    let gate = round::<bf16>(&randn(&mut r, tokens, 2.0));
    let mut want_h = vec![0f32; tokens * h];
    cpu::moe_scatter_weighted(&expert_out, &want, &mut want_h, h);
    for (t, row) in want_h.chunks_exact_mut(h).enumerate() {
        let g = 1.0 / (1.0 + (-gate[t]).exp());
        for (o, &v) in row.iter_mut().zip(&shared[t * h..(t + 1) * h]) {
            *o += g * v;
        }
    }
    let shape = |grid: (u32, u32), block: u32| LaunchShape {
        grid: (grid.0, grid.1, 1),
        block,
        smem_bytes: 0,
    };
    for order in orders(91) {
        let ld = to_t::<bf16>(&logits);
        let (mut ids, mut weights) = (vec![u32::MAX; pairs], vec![f32::NAN; pairs]);
        let p = MoeRouteParams {
            logits: ptr(&ld),
            expert_ids: mptr(&mut ids),
            weights: mptr(&mut weights),
            num_tokens: tokens as i32,
            num_experts: e as i32,
            top_k: top_k as i32,
            renormalize: 1,
        };
        run(
            "moe_route_bf16",
            &shape(((tokens as u32).div_ceil(128), 1), 128),
            order,
            &p,
        );
        assert_eq!(ids, want.expert_ids, "moe_route ids under {order:?}");
        assert_close("moe_route weights", &weights, &want.weights, 1e-6);
        let mut offsets = vec![u32::MAX; e + 1];
        let (mut row_token, mut row_expert, mut gathered_row) = (
            vec![u32::MAX; pairs],
            vec![u32::MAX; pairs],
            vec![u32::MAX; pairs],
        );
        let p = MoeAlignParams {
            expert_ids: ptr(&ids),
            expert_offsets: mptr(&mut offsets),
            row_token: mptr(&mut row_token),
            row_expert: mptr(&mut row_expert),
            gathered_row: mptr(&mut gathered_row),
            num_pairs: pairs as i32,
            num_experts: e as i32,
            top_k: top_k as i32,
        };
        run("moe_align", &shape((1, 1), 256), order, &p);
        let offsets: Vec<usize> = offsets.iter().map(|&v| v as usize).collect();
        assert_eq!(offsets, want.expert_offsets, "moe_align offsets");
        assert_eq!(row_token, want.row_token, "moe_align row_token");
        assert_eq!(gathered_row, want.gathered_row, "moe_align gathered_row");

        let gd = to_t::<bf16>(&gathered);
        let mut out = nan::<bf16>(pairs * n);
        let p = MoeMatmulParams {
            out: mptr(&mut out),
            x: ptr(&gd),
            weights: ptr(&addrs),
            row_expert: ptr(&row_expert),
            rows: pairs as i32,
            k: h as i32,
            n: n as i32,
        };
        run(
            "moe_matmul_bf16",
            &shape((pairs as u32, (n as u32).div_ceil(128)), 128),
            order,
            &p,
        );
        assert_close("moe_matmul_bf16", &to_f32(&out), &want_mm, tol::<bf16>());

        let (eo, sd, gdt) = (
            to_t::<bf16>(&expert_out),
            to_t::<bf16>(&shared),
            to_t::<bf16>(&gate),
        );
        let mut hidden = nan::<bf16>(tokens * h);
        let p = MoeCombineParams {
            hidden: mptr(&mut hidden),
            expert_out: ptr(&eo),
            gathered_row: ptr(&gathered_row),
            weights: ptr(&weights),
            shared_out: ptr(&sd),
            shared_gate: ptr(&gdt),
            num_tokens: tokens as i32,
            top_k: top_k as i32,
            dim: h as i32,
        };
        run(
            "moe_combine_bf16",
            &rows_shape(tokens, h, ROW_THREADS),
            order,
            &p,
        );
        assert_close("moe_combine_bf16", &to_f32(&hidden), &want_h, tol::<bf16>());
    }
}

fn check_rotary<T: CudaDType>(seed: u64) {
    let mut r = rng(seed);
    // (.., rotary dims): the last case is partial (Phi-4-mini's 96 of 128).
    for (i, (heads, kv_heads, head_dim, rot, scaling)) in [
        (3, 1, 64, 64, cpu::RopeScaling::Default),
        (
            4,
            2,
            128,
            128,
            cpu::RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
        ),
        (2, 2, 80, 80, cpu::RopeScaling::Linear { factor: 2.0 }),
        (4, 2, 128, 96, cpu::RopeScaling::Default),
    ]
    .into_iter()
    .enumerate()
    {
        let order = orders(seed + i as u64)[i % 2];
        let tokens = 9;
        let max_pos = 4096;
        let inv = cpu::rope_inv_freq(rot, 500_000.0, &scaling);
        let cache = cpu::RotaryCache::new(&inv, max_pos, 1.0);
        let (cos, sin) = cache.cos_sin();
        let half = cache.rotary_dim() / 2;
        let positions: Vec<u32> = (0..tokens)
            .map(|_| r.random_range(0..max_pos as u32))
            .collect();
        let q = round::<T>(&randn(&mut r, tokens * heads * head_dim, 2.0));
        let k = round::<T>(&randn(&mut r, tokens * kv_heads * head_dim, 2.0));
        let (mut qw, mut kw) = (q.clone(), k.clone());
        cpu::rotary_embedding(
            &positions, &mut qw, &mut kw, heads, kv_heads, head_dim, &cache,
        );
        let (mut qd, mut kd) = (to_t::<T>(&q), to_t::<T>(&k));
        let p = RotaryParams {
            positions: ptr(&positions),
            q: mptr(&mut qd),
            k: mptr(&mut kd),
            cos: ptr(cos),
            sin: ptr(sin),
            q_stride: (heads * head_dim) as i32,
            k_stride: (kv_heads * head_dim) as i32,
            max_position: max_pos as i32,
            half: half as i32,
            num_heads: heads as i32,
            num_kv_heads: kv_heads as i32,
            head_dim: head_dim as i32,
        };
        let name = format!("rotary_embedding_{}", T::SUFFIX);
        run(
            &name,
            &rotary_shape(tokens, heads + kv_heads, half),
            order,
            &p,
        );
        assert_close(
            &format!("{name} q d{head_dim}"),
            &to_f32(&qd),
            &qw,
            tol::<T>(),
        );
        assert_close(
            &format!("{name} k d{head_dim}"),
            &to_f32(&kd),
            &kw,
            tol::<T>(),
        );
    }
}

#[test]
fn rotary_matches_cpu() {
    check_rotary::<bf16>(40);
    check_rotary::<f16>(50);
    check_rotary::<f32>(60);
}

fn check_elementwise<T: CudaDType>(seed: u64) {
    let mut r = rng(seed);
    for (i, (rows, d)) in [(1, 1536), (3, 100)].into_iter().enumerate() {
        let order = orders(seed + i as u64)[i % 2];
        let x = round::<T>(&randn(&mut r, rows * 2 * d, 6.0));
        let mut want = vec![0f32; rows * d];
        cpu::silu_and_mul(&x, &mut want, d);
        let xd = to_t::<T>(&x);
        let mut out = nan::<T>(rows * d);
        let p = SiluAndMulParams {
            out: mptr(&mut out),
            x: ptr(&xd),
            out_stride: d as i32,
            x_stride: 2 * d as i32,
            d: d as i32,
        };
        let name = format!("silu_and_mul_{}", T::SUFFIX);
        run(&name, &rows_shape(rows, d, ROW_THREADS), order, &p);
        assert_close(&name, &to_f32(&out), &want, tol::<T>());

        let mut want = vec![0f32; rows * d];
        cpu::gelu_tanh_and_mul(&x, &mut want, d);
        let name = format!("gelu_tanh_and_mul_{}", T::SUFFIX);
        run(&name, &rows_shape(rows, d, ROW_THREADS), order, &p);
        assert_close(&name, &to_f32(&out), &want, tol::<T>());

        // Gemma's embedding scale and final logit cap, in place.
        let n = rows * 2 * d;
        for (op, value) in [("scale", 11.3137f32), ("softcap", 3.0)] {
            let mut want = x.clone();
            if op == "scale" {
                want.iter_mut().for_each(|v| *v *= value);
            } else {
                cpu::softcap_inplace(&mut want, value);
            }
            let mut xd = to_t::<T>(&x);
            let p = ScalarMapParams {
                x: mptr(&mut xd),
                n: n as u64,
                value,
            };
            let name = format!("{op}_{}", T::SUFFIX);
            run(&name, &elementwise_shape(n), order, &p);
            assert_close(&name, &to_f32(&xd), &want, tol::<T>());
        }

        let bias = round::<T>(&randn(&mut r, 2 * d, 1.0));
        let mut want = x.clone();
        cpu::add_bias(&mut want, &bias);
        let (mut xd, bd) = (to_t::<T>(&x), to_t::<T>(&bias));
        let p = AddBiasParams {
            x: mptr(&mut xd),
            bias: ptr(&bd),
            cols: 2 * d as i32,
        };
        let name = format!("add_bias_{}", T::SUFFIX);
        run(&name, &rows_shape(rows, 2 * d, ROW_THREADS), order, &p);
        assert_close(&name, &to_f32(&xd), &want, tol::<T>());
    }
    // Embedding / row gather; an index past the table gives zeros.
    let (vocab, hidden) = (300, 96);
    let table = round::<T>(&randn(&mut r, vocab * hidden, 1.0));
    let mut ids: Vec<u32> = (0..20).map(|_| r.random_range(0..vocab as u32)).collect();
    let mut want = vec![0f32; ids.len() * hidden];
    cpu::embedding(&ids, &table, hidden, &mut want);
    ids.push(vocab as u32 + 5);
    want.extend(std::iter::repeat_n(0.0, hidden));
    let td = to_t::<T>(&table);
    let mut out = nan::<T>(ids.len() * hidden);
    let p = GatherRowsParams {
        out: mptr(&mut out),
        src: ptr(&td),
        idx: ptr(&ids),
        num_src_rows: vocab as u32,
        row_len: hidden as i32,
    };
    let word = if std::mem::size_of::<T>() == 2 {
        "b16"
    } else {
        "b32"
    };
    let shape = rows_shape(ids.len(), hidden, ROW_THREADS);
    run(&format!("gather_rows_{word}"), &shape, orders(seed)[1], &p);
    assert_eq!(to_f32(&out), want, "gather_rows_{word} must copy exactly");
}

#[test]
fn elementwise_and_gathers_match_cpu() {
    check_elementwise::<bf16>(70);
    check_elementwise::<f16>(80);
    check_elementwise::<f32>(90);
}

#[test]
fn split_qkv_and_converts_are_exact() {
    let mut r = rng(4);
    let (rows, q_dim, kv_dim) = (3, 512, 128);
    let width = q_dim + 2 * kv_dim;
    let x = to_t::<bf16>(&randn(&mut r, rows * width, 1.0));
    let (mut q, mut k, mut v) = (
        nan::<bf16>(rows * q_dim),
        nan::<bf16>(rows * kv_dim),
        nan::<bf16>(rows * kv_dim),
    );
    let p = SplitQkvParams {
        qkv: ptr(&x),
        q: mptr(&mut q),
        k: mptr(&mut k),
        v: mptr(&mut v),
        q_dim: q_dim as i32,
        kv_dim: kv_dim as i32,
    };
    let shape = rows_shape(rows, width, ROW_THREADS);
    run("split_qkv_b16", &shape, ThreadOrder::HighestFirst, &p);
    for row in 0..rows {
        let src = &x[row * width..][..width];
        assert_eq!(&q[row * q_dim..][..q_dim], &src[..q_dim]);
        assert_eq!(&k[row * kv_dim..][..kv_dim], &src[q_dim..q_dim + kv_dim]);
        assert_eq!(&v[row * kv_dim..][..kv_dim], &src[q_dim + kv_dim..]);
    }
    // f32 -> bf16/f16 round to nearest even (ties and overflow included), and back.
    let mut f = randn(&mut r, 3001, 100.0);
    f.extend([1.0 + 1.0 / 256.0, 65520.0, -1e30, 1e-30, f32::INFINITY]);
    let n = f.len();
    let mut b = nan::<bf16>(n);
    let p = ConvertParams {
        out: mptr(&mut b),
        input: ptr(&f),
        n: n as u64,
    };
    run(
        "convert_f32_bf16",
        &elementwise_shape(n),
        ThreadOrder::Random(3),
        &p,
    );
    assert_eq!(b, to_t::<bf16>(&f), "f32 -> bf16");
    let mut back = vec![f32::NAN; n];
    let p = ConvertParams {
        out: mptr(&mut back),
        input: ptr(&b),
        n: n as u64,
    };
    run(
        "convert_bf16_f32",
        &elementwise_shape(n),
        ThreadOrder::RoundRobin,
        &p,
    );
    assert_eq!(back, round::<bf16>(&f));
    let mut h = nan::<f16>(n);
    let p = ConvertParams {
        out: mptr(&mut h),
        input: ptr(&f),
        n: n as u64,
    };
    run(
        "convert_f32_f16",
        &elementwise_shape(n),
        ThreadOrder::LowestFirst,
        &p,
    );
    assert_eq!(
        h.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        to_t::<f16>(&f)
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>(),
        "f32 -> f16"
    );
    let p = ConvertParams {
        out: mptr(&mut back),
        input: ptr(&h),
        n: n as u64,
    };
    run(
        "convert_f16_f32",
        &elementwise_shape(n),
        ThreadOrder::RoundRobin,
        &p,
    );
    assert_eq!(back, round::<f16>(&f));
}

// ---- the sampler ------------------------------------------------------------------------

fn random_logits(r: &mut StdRng, rows: usize, vocab: usize) -> Vec<f32> {
    let mut l = randn(r, rows * vocab, 8.0);
    for row in l.chunks_exact_mut(vocab) {
        // A peaked head and bf16-like ties, as real logits have.
        for _ in 0..5 {
            row[r.random_range(0..vocab)] += 12.0;
        }
        row.iter_mut()
            .step_by(7)
            .for_each(|x| *x = bf16::from_f32(*x).to_f32());
        row[r.random_range(0..vocab)] = f32::NEG_INFINITY;
    }
    l
}

/// Greedy, temperature, top-k, top-p, min-p and seeded draws, bit for bit
/// against the host reference of the same rules; a row alone samples what
/// it samples in the batch.
#[test]
fn sampling_matches_the_reference_bit_for_bit() {
    let mut r = rng(40);
    // Peaked logits (as real ones), then flat ones, where every cut changes
    // which token a draw lands on.
    for (i, (vocab, flat)) in [(1000, false), (5000, false), (1000, true)]
        .into_iter()
        .enumerate()
    {
        let rows = if flat { 24 } else { 10 };
        let logits = if flat {
            randn(&mut r, rows * vocab, 0.5)
        } else {
            random_logits(&mut r, rows, vocab)
        };
        let temp: Vec<f32> = (0..rows).map(|i| [0.0, 1.0, 0.7, 1.5][i % 4]).collect();
        let ks: &[i32] = if flat {
            &[2, 3, 5, 40]
        } else {
            &[0, 1, 20, 1000, -1]
        };
        let top_k: Vec<i32> = (0..rows).map(|i| ks[i % ks.len()]).collect();
        let top_p: Vec<f32> = (0..rows).map(|i| [1.0, 0.9, 0.5][i % 3]).collect();
        let min_p: Vec<f32> = (0..rows).map(|i| [0.0, 0.0, 0.05][(i / 3) % 3]).collect();
        let uni: Vec<f32> = (0..rows).map(|_| r.random::<f32>()).collect();
        let order = orders(i as u64 + 1)[1];
        let mut out = vec![u32::MAX; rows];
        let p = SampleTokensParams {
            logits: ptr(&logits),
            temperature: ptr(&temp),
            top_k: ptr(&top_k),
            top_p: ptr(&top_p),
            min_p: ptr(&min_p),
            uniform: ptr(&uni),
            out: mptr(&mut out),
            vocab: vocab as i32,
        };
        run("sample_tokens", &sampling_shape(rows), order, &p);
        for i in 0..rows {
            let row = &logits[i * vocab..][..vocab];
            let want =
                sampling_reference::sample(row, temp[i], top_k[i], top_p[i], min_p[i], uni[i]);
            assert_eq!(
                out[i], want,
                "vocab {vocab} row {i}: T {} k {} p {} min_p {} u {}",
                temp[i], top_k[i], top_p[i], min_p[i], uni[i]
            );
        }
        // Batch invariance: row 5 alone, under round robin.
        let mut one = [u32::MAX];
        let p1 = SampleTokensParams {
            logits: ptr(&logits[5 * vocab..]),
            temperature: ptr(&temp[5..]),
            top_k: ptr(&top_k[5..]),
            top_p: ptr(&top_p[5..]),
            min_p: ptr(&min_p[5..]),
            uniform: ptr(&uni[5..]),
            out: mptr(&mut one),
            vocab: vocab as i32,
        };
        run(
            "sample_tokens",
            &sampling_shape(1),
            ThreadOrder::RoundRobin,
            &p1,
        );
        assert_eq!(one[0], out[5]);
    }
}

#[test]
fn logprobs_match_a_full_sort() {
    let mut r = rng(41);
    let (rows, vocab, topk) = (3, 3000, 20);
    let logits = random_logits(&mut r, rows, vocab);
    let tokens: Vec<u32> = (0..rows).map(|_| r.random_range(0..vocab as u32)).collect();
    for order in orders(41) {
        let mut ids = vec![u32::MAX; rows * topk];
        let mut lps = vec![f32::NAN; rows * topk];
        let p = LogprobsTopkParams {
            logits: ptr(&logits),
            top_ids: mptr(&mut ids),
            top_logprobs: mptr(&mut lps),
            vocab: vocab as i32,
            k: topk as i32,
        };
        run("logprobs_topk", &sampling_shape(rows), order, &p);
        let mut lp = vec![f32::NAN; rows];
        let mut rank = vec![0u32; rows];
        let p = TokenLogprobsParams {
            logits: ptr(&logits),
            tokens: ptr(&tokens),
            out_logprob: mptr(&mut lp),
            out_rank: mptr(&mut rank),
            vocab: vocab as i32,
        };
        run("token_logprobs", &sampling_shape(rows), order, &p);
        for i in 0..rows {
            let row = &logits[i * vocab..][..vocab];
            let mut row_ls = row.to_vec();
            cpu::log_softmax_inplace(&mut row_ls);
            let mut sorted: Vec<u32> = (0..vocab as u32).collect();
            sorted.sort_by(|&a, &b| {
                row[b as usize]
                    .partial_cmp(&row[a as usize])
                    .unwrap()
                    .then(a.cmp(&b))
            });
            assert_eq!(&ids[i * topk..][..topk], &sorted[..topk], "row {i} top ids");
            for j in 0..topk {
                let id = sorted[j] as usize;
                assert!(
                    (lps[i * topk + j] - row_ls[id]).abs() < 1e-4,
                    "row {i} logprob {j}"
                );
            }
            let t = tokens[i] as usize;
            assert!((lp[i] - row_ls[t]).abs() < 1e-4, "row {i} token logprob");
            let larger = row.iter().filter(|&&l| l > row[t]).count();
            assert_eq!(rank[i] as usize, 1 + larger, "row {i} rank");
        }
    }
}

/// Logit bias (min_tokens masks as -inf) and vLLM's penalties, exactly as
/// the CPU rules round them; an id past the vocab is skipped.
#[test]
fn logit_edits_match_the_cpu_rules() {
    let mut r = rng(42);
    let (rows, vocab) = (4, 2000);
    let logits = random_logits(&mut r, rows, vocab);
    let prompts: Vec<Vec<u32>> = (0..rows)
        .map(|_| (0..30).map(|_| r.random_range(0..vocab as u32)).collect())
        .collect();
    let outputs: Vec<Vec<u32>> = (0..rows)
        .map(|_| (0..12).map(|_| r.random_range(0..200u32)).collect())
        .collect();
    let rep = [1.0f32, 1.3, 0.8, 2.0];
    let freq = [0.0f32, 0.5, -0.3, 1.0];
    let pres = [0.0f32, 1.0, 0.2, -0.5];
    let mut want = logits.clone();
    let mut bias = CsrRows::new();
    let mut pen = CsrRows::new();
    for i in 0..rows {
        let row = &mut want[i * vocab..][..vocab];
        let b = bias_row(
            [(7, 2.5), (prompts[i][0], -1.0), (vocab as u32 + 3, 9.0)],
            &[11],
        );
        for &(id, v) in &b {
            if let Some(l) = row.get_mut(id as usize) {
                *l = if v == f32::NEG_INFINITY { v } else { *l + v };
            }
        }
        bias.push_row(b);
        let p = penalty_row(&prompts[i], &outputs[i]);
        for &(id, c) in &p {
            let l = &mut row[id as usize];
            if rep[i] != 1.0 {
                *l = if *l > 0.0 { *l / rep[i] } else { *l * rep[i] };
            }
            if c > 0 {
                *l -= freq[i] * c as f32 + pres[i];
            }
        }
        pen.push_row(p);
    }
    for order in orders(42) {
        // Slack past the last row: a write out of bounds lands there and shows.
        let mut got = logits.clone();
        got.extend([7.0f32; 16]);
        let p = LogitBiasParams {
            logits: mptr(&mut got),
            offsets: ptr(&bias.offsets),
            ids: ptr(&bias.ids),
            values: ptr(&bias.values),
            vocab: vocab as i32,
        };
        run("apply_logit_bias", &logit_edits_shape(rows), order, &p);
        let p = PenaltiesParams {
            logits: mptr(&mut got),
            offsets: ptr(&pen.offsets),
            ids: ptr(&pen.ids),
            output_counts: ptr(&pen.values),
            repetition: ptr(&rep),
            frequency: ptr(&freq),
            presence: ptr(&pres),
            vocab: vocab as i32,
        };
        run("apply_penalties", &logit_edits_shape(rows), order, &p);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g == w, "element {i}: {g} vs {w} under {order:?}");
        }
        assert_eq!(&got[want.len()..], &[7.0f32; 16], "written past the logits");
    }
}

/// Structured-output masks: rows 0 and 2 of 4 masked (row 3 untouched),
/// masks shorter than the vocabulary (padded vocab: the rest is masked),
/// all-ones and all-zero words, a NaN logit an allowed bit keeps, and a
/// row index past the batch that must be skipped.
#[test]
fn token_bitmask_matches_the_cpu_mask() {
    let mut r = rng(77);
    let (rows, vocab) = (4, 1000);
    let mut logits = random_logits(&mut r, rows, vocab);
    logits[5] = f32::NAN;
    let mask_words = 30; // 960 tokens: the last 40 of each row are masked.
                         // Row `rows` lies in the slack row after the logits: it must be skipped.
    let mask_rows: Vec<u32> = vec![2, 0, rows as u32];
    let mut bitmask: Vec<u32> = (0..mask_rows.len() * mask_words)
        .map(|_| r.random::<u32>())
        .collect();
    bitmask[0] = u32::MAX;
    bitmask[1] = 0;
    bitmask[mask_words] = u32::MAX; // row 0's first word: the NaN stays.
    let mut want = logits.clone();
    for (j, &row) in mask_rows.iter().enumerate() {
        if (row as usize) < rows {
            cpu::apply_token_bitmask(
                &mut want[row as usize * vocab..][..vocab],
                &bitmask[j * mask_words..][..mask_words],
            );
        }
    }
    assert!(want[5].is_nan(), "the test keeps a NaN allowed");
    for order in orders(77) {
        let mut got = logits.clone();
        got.extend(vec![7.0f32; vocab]);
        let p = TokenBitmaskParams {
            logits: mptr(&mut got),
            bitmask: ptr(&bitmask),
            mask_rows: ptr(&mask_rows),
            num_rows: rows as i32,
            vocab: vocab as i32,
            mask_words: mask_words as i32,
        };
        run(
            "apply_token_bitmask",
            &token_bitmask_shape(mask_rows.len(), vocab),
            order,
            &p,
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w || (g.is_nan() && w.is_nan()),
                "element {i}: {g} vs {w} under {order:?}"
            );
        }
        assert!(
            got[want.len()..].iter().all(|&g| g == 7.0),
            "written past the logits"
        );
    }
}

/// Every check of this file again, in a child process that launches through
/// the emulator built with AddressSanitizer and UBSan
/// (`cuda::emu::sanitized`): a kernel that touches memory past a buffer, or
/// does undefined arithmetic, aborts the child with the sanitizer's report.
/// A second child runs a launch with a buffer one row short and must be
/// reported, so a sanitizer that silently did nothing fails here.
#[test]
fn kernels_under_asan_and_ubsan() {
    use pagoda_kernels::cuda::emu::sanitized;
    if sanitized::requested() {
        return; // the child: its own checks are the others
    }
    let Some(build) = sanitized::sanitized_build() else {
        let why = "the C++ compiler has no sanitizers (build.rs warned)";
        if std::env::var("PAGODA_REQUIRE_SANITIZERS").as_deref() == Ok("1") {
            panic!("PAGODA_REQUIRE_SANITIZERS=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return;
    };
    let child = |args: &[&str]| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env(sanitized::ENV, "1")
            .env("LD_PRELOAD", build.asan_runtime)
            // Leaks of the test harness are not the kernels'.
            .env("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
            .output()
            .expect("the test binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = child(&["--test-threads=2", "--skip", "kernels_under_asan_and_ubsan"]);
    assert!(ok, "a kernel check failed under ASan + UBSan:\n{text}");
    let passed = text
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert!(passed.unwrap_or(0) >= 10, "too few checks ran:\n{text}");

    let (ok, text) = child(&[
        "--ignored",
        "--exact",
        "sanitizer_sees_a_read_past_a_buffer",
    ]);
    assert!(
        !ok && text.contains("heap-buffer-overflow"),
        "a read past a buffer went unreported:\n{text}"
    );
}

/// Deliberately wrong: `rms_norm` over two rows of an input that holds one.
/// Run only by `kernels_under_asan_and_ubsan`, in its sanitized child.
#[test]
#[ignore = "run by kernels_under_asan_and_ubsan in a sanitized child"]
fn sanitizer_sees_a_read_past_a_buffer() {
    if !pagoda_kernels::cuda::emu::sanitized::requested() {
        return; // never read past a buffer unwatched
    }
    let dim = 64;
    let x = vec![bf16::ONE; dim];
    let w = vec![bf16::ONE; dim];
    let mut out = nan::<bf16>(2 * dim);
    let p = RmsNormParams {
        out: mptr(&mut out),
        x: ptr(&x),
        weight: ptr(&w),
        out_stride: dim as i32,
        x_stride: dim as i32,
        dim: dim as i32,
        eps: 1e-6,
        gemma: 0,
    };
    run(
        "rms_norm_bf16",
        &rows_shape(2, dim, ROW_THREADS),
        ThreadOrder::RoundRobin,
        &p,
    );
}
