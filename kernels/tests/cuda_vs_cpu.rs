//! Each CUDA kernel against its CPU twin on random inputs of several shapes.
//!
//! Needs a GPU: without one every test says "skipped: no usable GPU" on
//! stderr and passes, except under PAGODA_REQUIRE_GPU=1 (scripts/gpu-check.sh
//! sets it), where it fails. Outputs are poisoned with NaN before each launch
//! so that an element a kernel forgets to write shows; NaN never passes.
//! Inputs are rounded to the device type first, and the CPU reference runs
//! in f32 on the rounded values, so the tolerance covers only the device's
//! own rounding (bf16: 2^-8 relative per rounding).
#![cfg(feature = "cuda")]

use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

use half::{bf16, f16};
use pagoda_kernels::cpu;
use pagoda_kernels::cuda::sampling::{bias_row, penalty_row, CsrRows};
use pagoda_kernels::cuda::sampling_reference;
use pagoda_kernels::cuda::{
    AttentionMetadata, AttentionShape, AttentionWorkspace, CudaDType, CudaKernels, CudaRope,
    DeviceBuffer, NormStyle, SamplingTensors,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

static DEVICE: OnceLock<Option<Mutex<CudaKernels>>> = OnceLock::new();

/// The device (tests take turns on its one stream), or None after saying why.
fn gpu() -> Option<MutexGuard<'static, CudaKernels>> {
    let dev = DEVICE.get_or_init(|| match CudaKernels::new(0) {
        Ok(k) => {
            let i = k.info();
            say(&format!(
                "GPU: {} (sm_{}{}, {} SMs, NVRTC {}.{})",
                i.name,
                i.compute_capability.0,
                i.compute_capability.1,
                i.num_sms,
                i.nvrtc_version.0,
                i.nvrtc_version.1
            ));
            Some(Mutex::new(k))
        }
        Err(e) => {
            if std::env::var("PAGODA_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("PAGODA_REQUIRE_GPU=1 but no usable GPU: {e}");
            }
            say(&format!("skipped: no usable GPU ({e})"));
            None
        }
    });
    dev.as_ref()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randn(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// Rounds through `T` (the values the device sees).
fn round<T: CudaDType>(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| T::from_f32(x).to_f32()).collect()
}

fn up<T: CudaDType>(k: &CudaKernels, v: &[f32]) -> DeviceBuffer<T> {
    let h: Vec<T> = v.iter().map(|&x| T::from_f32(x)).collect();
    k.upload(&h).expect("upload")
}

fn poisoned<T: CudaDType>(k: &CudaKernels, n: usize) -> DeviceBuffer<T> {
    up::<T>(k, &vec![f32::NAN; n.max(1)])
}

fn down<T: CudaDType>(k: &CudaKernels, s: &DeviceBuffer<T>) -> Vec<f32> {
    k.download(s)
        .expect("download")
        .into_iter()
        .map(|x| x.to_f32())
        .collect()
}

/// Every element finite and within `tol` relative to max(|want|, rms(want)).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert!(
        got.len() >= want.len(),
        "{what}: {} results for {} expected",
        got.len(),
        want.len()
    );
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

#[test]
fn opening_a_device_without_one_is_an_error_not_a_panic() {
    let r = std::panic::catch_unwind(|| CudaKernels::with_head_dims(0, &[64]).map(|_| ()));
    let r = r.expect("CudaKernels::new panicked");
    if let Err(e) = &r {
        say(&format!("CudaKernels::new(0) without a usable GPU: {e}"));
        assert!(!e.to_string().is_empty());
    }
    assert!(
        CudaKernels::with_head_dims(0, &[72]).is_err(),
        "unsupported head size accepted"
    );
}

/// The gain the CPU reference applies for `style` (the kernel gets `w`).
fn gain(w: &[f32], style: NormStyle) -> Vec<f32> {
    let offset = if style == NormStyle::Gemma { 1.0 } else { 0.0 };
    w.iter().map(|&x| offset + x).collect()
}

fn check_norms<T: CudaDType>(k: &CudaKernels, style: NormStyle) {
    let mut r = rng(1);
    for (rows, dim) in [(1, 64), (7, 576), (33, 4096), (3, 5120)] {
        let x = round::<T>(&randn(&mut r, rows * dim, 2.0));
        let res = round::<T>(&randn(&mut r, rows * dim, 2.0));
        let w = round::<T>(&randn(&mut r, dim, 1.0));
        let eps = 1e-6;
        // rms_norm
        let mut want = vec![0f32; rows * dim];
        cpu::rms_norm(&x, &gain(&w, style), eps, &mut want);
        let (xd, wd) = (up::<T>(k, &x), up::<T>(k, &w));
        let mut out = poisoned::<T>(k, rows * dim);
        k.rms_norm(&xd, dim, &wd, &mut out, dim, rows, dim, eps, style)
            .unwrap();
        assert_close(
            &format!("rms_norm_{} {rows}x{dim} {style:?}", T::SUFFIX),
            &down(k, &out),
            &want,
            tol::<T>(),
        );
        // fused_add_rms_norm: residual += x; x = norm(residual)
        let (mut xw, mut rw) = (x.clone(), res.clone());
        cpu::fused_add_rms_norm(&mut xw, &mut rw, &gain(&w, style), eps);
        let (mut xd, mut rd) = (up::<T>(k, &x), up::<T>(k, &res));
        k.fused_add_rms_norm(&mut xd, &mut rd, &wd, rows, dim, eps, style)
            .unwrap();
        assert_close(
            &format!("fused_add residual_{}", T::SUFFIX),
            &down(k, &rd),
            &rw,
            tol::<T>(),
        );
        assert_close(
            &format!("fused_add x_{}", T::SUFFIX),
            &down(k, &xd),
            &xw,
            2.0 * tol::<T>(),
        );
    }
    // Per-head norm (Qwen3 q/k norm), on a view of fused rows: heads 1..=3 of 6.
    for head_dim in [64, 128] {
        let (rows, per_row, width) = (5, 3, 6 * head_dim);
        let x = round::<T>(&randn(&mut r, rows * width, 3.0));
        let w = round::<T>(&randn(&mut r, head_dim, 1.0));
        let mut want = x.clone();
        for row in want.chunks_exact_mut(width) {
            let slice = &mut row[head_dim..head_dim * (1 + per_row)];
            cpu::rms_norm_inplace(slice, &gain(&w, style), 1e-6);
        }
        let mut xd = up::<T>(k, &x);
        let wd = up::<T>(k, &w);
        {
            let mut view = xd.slice_mut(head_dim..);
            k.rms_norm_heads(&mut view, width, per_row, head_dim, &wd, rows, 1e-6, style)
                .unwrap();
        }
        assert_close(
            &format!("rms_norm_heads_{} d{head_dim}", T::SUFFIX),
            &down(k, &xd),
            &want,
            tol::<T>(),
        );
    }
}

#[test]
fn norms_match_cpu() {
    let Some(k) = gpu() else { return };
    for style in [NormStyle::Llama, NormStyle::Gemma] {
        check_norms::<bf16>(&k, style);
        check_norms::<f16>(&k, style);
        check_norms::<f32>(&k, style);
    }
}

fn check_rotary<T: CudaDType>(k: &CudaKernels) {
    let mut r = rng(2);
    for (heads, kv_heads, head_dim, scaling) in [
        (9, 3, 64, cpu::RopeScaling::Default),
        (
            32,
            8,
            128,
            cpu::RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
        ),
        (4, 4, 80, cpu::RopeScaling::Linear { factor: 2.0 }),
    ] {
        let tokens = 37;
        let max_pos = 4096;
        let inv = cpu::rope_inv_freq(head_dim, 500_000.0, &scaling);
        let cache = cpu::RotaryCache::new(&inv, max_pos, 1.0);
        let positions: Vec<u32> = (0..tokens)
            .map(|_| r.random_range(0..max_pos as u32))
            .collect();
        let q = round::<T>(&randn(&mut r, tokens * heads * head_dim, 2.0));
        let kk = round::<T>(&randn(&mut r, tokens * kv_heads * head_dim, 2.0));
        let (mut qw, mut kw) = (q.clone(), kk.clone());
        cpu::rotary_embedding(
            &positions, &mut qw, &mut kw, heads, kv_heads, head_dim, &cache,
        );
        let rope = CudaRope::new(k, &cache).unwrap();
        let pd = k.upload(&positions).unwrap();
        let (mut qd, mut kd) = (up::<T>(k, &q), up::<T>(k, &kk));
        k.rotary_embedding(
            &pd,
            &mut qd,
            heads * head_dim,
            &mut kd,
            kv_heads * head_dim,
            &rope,
            tokens,
            heads,
            kv_heads,
            head_dim,
        )
        .unwrap();
        assert_close(
            &format!("rotary q_{} d{head_dim}", T::SUFFIX),
            &down(k, &qd),
            &qw,
            tol::<T>(),
        );
        assert_close(
            &format!("rotary k_{} d{head_dim}", T::SUFFIX),
            &down(k, &kd),
            &kw,
            tol::<T>(),
        );
    }
}

#[test]
fn rotary_matches_cpu() {
    let Some(k) = gpu() else { return };
    check_rotary::<bf16>(&k);
    check_rotary::<f16>(&k);
    check_rotary::<f32>(&k);
}

fn check_elementwise<T: CudaDType>(k: &CudaKernels) {
    let mut r = rng(3);
    for (rows, d) in [(1, 1536), (19, 14336), (4, 100)] {
        let x = round::<T>(&randn(&mut r, rows * 2 * d, 6.0));
        let mut want = vec![0f32; rows * d];
        cpu::silu_and_mul(&x, &mut want, d);
        let xd = up::<T>(k, &x);
        let mut out = poisoned::<T>(k, rows * d);
        k.silu_and_mul(&xd, &mut out, rows, d).unwrap();
        assert_close(
            &format!("silu_and_mul_{} {rows}x{d}", T::SUFFIX),
            &down(k, &out),
            &want,
            tol::<T>(),
        );
        let mut want = vec![0f32; rows * d];
        cpu::gelu_tanh_and_mul(&x, &mut want, d);
        k.gelu_tanh_and_mul(&xd, &mut out, rows, d).unwrap();
        assert_close(
            &format!("gelu_tanh_and_mul_{} {rows}x{d}", T::SUFFIX),
            &down(k, &out),
            &want,
            tol::<T>(),
        );
        // Gemma's embedding scale and final logit cap, in place.
        let (mut scaled, mut capped) = (up::<T>(k, &x), up::<T>(k, &x));
        k.scale(&mut scaled, x.len(), 11.3137).unwrap();
        k.softcap(&mut capped, x.len(), 3.0).unwrap();
        let want: Vec<f32> = x.iter().map(|v| v * 11.3137).collect();
        assert_close("scale", &down(k, &scaled), &want, tol::<T>());
        let mut want = x.clone();
        cpu::softcap_inplace(&mut want, 3.0);
        assert_close("softcap", &down(k, &capped), &want, tol::<T>());

        let b = round::<T>(&randn(&mut r, 2 * d, 1.0));
        let mut want = x.clone();
        cpu::add_bias(&mut want, &b);
        let (mut xd, bd) = (up::<T>(k, &x), up::<T>(k, &b));
        k.add_bias(&mut xd, &bd, rows, 2 * d).unwrap();
        assert_close(
            &format!("add_bias_{}", T::SUFFIX),
            &down(k, &xd),
            &want,
            tol::<T>(),
        );
    }
    // Embedding / row gather; an index past the table gives zeros.
    let (vocab, hidden) = (1000, 576);
    let table = round::<T>(&randn(&mut r, vocab * hidden, 1.0));
    let ids: Vec<u32> = (0..50).map(|_| r.random_range(0..vocab as u32)).collect();
    let mut want = vec![0f32; ids.len() * hidden];
    cpu::embedding(&ids, &table, hidden, &mut want);
    let mut ids_oob = ids.clone();
    ids_oob.push(vocab as u32 + 5);
    want.extend(std::iter::repeat_n(0.0, hidden));
    let (td, idd) = (up::<T>(k, &table), k.upload(&ids_oob).unwrap());
    let mut out = poisoned::<T>(k, ids_oob.len() * hidden);
    k.gather_rows(&td, &idd, &mut out, ids_oob.len(), hidden)
        .unwrap();
    let got = down(k, &out);
    assert_eq!(got, want, "gather_rows_{} must copy exactly", T::SUFFIX);
}

#[test]
fn elementwise_and_gathers_match_cpu() {
    let Some(k) = gpu() else { return };
    check_elementwise::<bf16>(&k);
    check_elementwise::<f16>(&k);
    check_elementwise::<f32>(&k);
}

#[test]
fn split_qkv_and_converts_are_exact() {
    let Some(k) = gpu() else { return };
    let mut r = rng(4);
    let (rows, q_dim, kv_dim) = (13, 4096, 1024);
    let width = q_dim + 2 * kv_dim;
    let x = round::<bf16>(&randn(&mut r, rows * width, 1.0));
    let xd = up::<bf16>(&k, &x);
    let (mut q, mut kk, mut v) = (
        poisoned::<bf16>(&k, rows * q_dim),
        poisoned::<bf16>(&k, rows * kv_dim),
        poisoned::<bf16>(&k, rows * kv_dim),
    );
    k.split_qkv(&xd, &mut q, &mut kk, &mut v, rows, q_dim, kv_dim)
        .unwrap();
    let (q, kk, v) = (down(&k, &q), down(&k, &kk), down(&k, &v));
    for row in 0..rows {
        let src = &x[row * width..][..width];
        assert_eq!(&q[row * q_dim..][..q_dim], &src[..q_dim]);
        assert_eq!(&kk[row * kv_dim..][..kv_dim], &src[q_dim..q_dim + kv_dim]);
        assert_eq!(&v[row * kv_dim..][..kv_dim], &src[q_dim + kv_dim..]);
    }
    let f = randn(&mut r, 10_001, 100.0);
    let fd = k.upload(&f).unwrap();
    let mut b = poisoned::<bf16>(&k, f.len());
    k.convert(&fd, &mut b, f.len()).unwrap();
    assert_eq!(
        down(&k, &b),
        round::<bf16>(&f),
        "f32 -> bf16 rounds to nearest even"
    );
    let mut back = k.alloc_zeros::<f32>(f.len()).unwrap();
    k.convert(&b, &mut back, f.len()).unwrap();
    assert_eq!(k.download(&back).unwrap(), round::<bf16>(&f));
}

#[test]
fn gemm_matches_cpu() {
    let Some(k) = gpu() else { return };
    let mut r = rng(5);
    for (m, kk, n) in [
        (1, 576, 1536),
        (7, 4096, 1024),
        (33, 128, 4096),
        (256, 1024, 512),
        (3, 576, 49152),
    ] {
        let x = round::<bf16>(&randn(&mut r, m * kk, 1.0));
        let w = round::<bf16>(&randn(&mut r, n * kk, 0.05));
        let mut want = vec![0f32; m * n];
        cpu::matmul_transb(&x, &w, &mut want, m, kk, n);
        let (xd, wd) = (up::<bf16>(&k, &x), up::<bf16>(&k, &w));
        let mut y = poisoned::<bf16>(&k, m * n);
        k.matmul(&xd, &wd, &mut y, m, kk, n).unwrap();
        assert_close(
            &format!("matmul bf16 {m}x{kk}x{n}"),
            &down(&k, &y),
            &want,
            2e-2,
        );
        let mut y32 = k.upload(&vec![f32::NAN; m * n]).unwrap();
        k.matmul(&xd, &wd, &mut y32, m, kk, n).unwrap();
        assert_close(
            &format!("matmul ->f32 {m}x{kk}x{n}"),
            &k.download(&y32).unwrap(),
            &want,
            2e-3,
        );
    }
}

/// A random flat batch: per sequence (new tokens, context length); `(1, 0)`
/// is a padding row of a graph-padded decode batch (slot -1, seq_len 0,
/// block-table row of null blocks).
struct Batch {
    qsl: Vec<u32>,
    seq_lens: Vec<u32>,
    block_tables: Vec<u32>,
    max_blocks: usize,
    slots: Vec<i64>,
    positions: Vec<u32>,
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
        positions: Vec::new(),
        num_blocks,
    };
    for (s, &(q_len, ctx)) in seqs.iter().enumerate() {
        for j in 0..ctx.div_ceil(block_size) {
            b.block_tables[s * max_blocks + j] = pool.pop().unwrap();
        }
        b.qsl.push(b.qsl.last().unwrap() + q_len as u32);
        b.seq_lens.push(ctx as u32);
        if ctx == 0 {
            b.positions.extend(std::iter::repeat_n(0, q_len));
            b.slots.extend(std::iter::repeat_n(-1, q_len));
            continue;
        }
        for p in ctx - q_len..ctx {
            b.positions.push(p as u32);
            let blk = b.block_tables[s * max_blocks + p / block_size] as i64;
            b.slots
                .push(blk * block_size as i64 + (p % block_size) as i64);
        }
    }
    b
}

#[allow(clippy::too_many_arguments)]
fn check_attention<T: CudaDType + pagoda_kernels::cuda::Half16>(
    k: &CudaKernels,
    seed: u64,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    seqs: &[(usize, usize)],
    graph_max_seq_len: Option<usize>,
) {
    let plain = Masking {
        window: None,
        softcap: None,
    };
    check_attention_masked::<T>(
        k,
        seed,
        (heads, kv_heads, head_dim, block_size),
        seqs,
        graph_max_seq_len,
        plain,
    );
}

/// A layer's sliding window and logit soft-cap; slots before each
/// sequence's first new token's window hold NaN (freed blocks are never read).
#[derive(Debug, Clone, Copy)]
struct Masking {
    window: Option<usize>,
    softcap: Option<f32>,
}

fn check_attention_masked<T: CudaDType + pagoda_kernels::cuda::Half16>(
    k: &CudaKernels,
    seed: u64,
    (heads, kv_heads, head_dim, block_size): (usize, usize, usize, usize),
    seqs: &[(usize, usize)],
    graph_max_seq_len: Option<usize>,
    masking: Masking,
) {
    let mut r = rng(seed);
    let b = make_batch(&mut r, seqs, block_size);
    let tokens = *b.qsl.last().unwrap() as usize;
    let cache_len = b.num_blocks * block_size * kv_heads * head_dim;
    // The whole cache random (written earlier steps), then this step's K/V through reshape_and_cache.
    let mut kc = round::<T>(&randn(&mut r, cache_len, 1.0));
    let mut vc = round::<T>(&randn(&mut r, cache_len, 1.0));
    let q = round::<T>(&randn(&mut r, tokens * heads * head_dim, 1.0));
    let knew = round::<T>(&randn(&mut r, tokens * kv_heads * head_dim, 1.0));
    let vnew = round::<T>(&randn(&mut r, tokens * kv_heads * head_dim, 1.0));
    if let Some(w) = masking.window {
        let row = kv_heads * head_dim;
        for (s, &(q_len, ctx)) in seqs.iter().enumerate() {
            for p in 0..(ctx + 1).saturating_sub(q_len + w) {
                let blk = b.block_tables[s * b.max_blocks + p / block_size] as usize;
                let slot = blk * block_size + p % block_size;
                kc[slot * row..(slot + 1) * row].fill(f32::NAN);
                vc[slot * row..(slot + 1) * row].fill(f32::NAN);
            }
        }
    }
    let (mut kcd, mut vcd) = (up::<T>(k, &kc), up::<T>(k, &vc));
    cpu::reshape_and_cache(
        &knew,
        &vnew,
        cpu::KvSliceMut::F32(&mut kc),
        cpu::KvSliceMut::F32(&mut vc),
        &b.slots,
        kv_heads,
        head_dim,
    );
    let slots = k.upload(&b.slots).unwrap();
    let row = kv_heads * head_dim;
    k.reshape_and_cache(
        &up::<T>(k, &knew),
        row,
        &up::<T>(k, &vnew),
        row,
        &mut kcd,
        &mut vcd,
        &slots,
        tokens,
        kv_heads,
        head_dim,
    )
    .unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&down(k, &kcd)), bits(&kc), "reshape_and_cache K");
    assert_eq!(bits(&down(k, &vcd)), bits(&vc), "reshape_and_cache V");

    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut want = vec![0f32; tokens * heads * head_dim];
    let params = cpu::PagedAttentionParams {
        query_start_loc: &b.qsl,
        seq_lens: &b.seq_lens,
        block_tables: &b.block_tables,
        max_blocks_per_seq: b.max_blocks,
        block_size,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        scale,
        sliding_window: masking.window,
        logit_softcap: masking.softcap,
    };
    cpu::paged_attention(
        &q,
        cpu::KvSlice::F32(&kc),
        cpu::KvSlice::F32(&vc),
        &params,
        &mut want,
    );

    let (qsl, sl, bt) = (
        k.upload(&b.qsl).unwrap(),
        k.upload(&b.seq_lens).unwrap(),
        k.upload(&b.block_tables).unwrap(),
    );
    let max_seq_len = graph_max_seq_len.unwrap_or(*b.seq_lens.iter().max().unwrap() as usize);
    let num_decodes = seqs.iter().filter(|&&(q, _)| q == 1).count();
    let meta = AttentionMetadata {
        query_start_loc: &qsl,
        seq_lens: &sl,
        block_tables: &bt,
        max_blocks_per_seq: b.max_blocks,
        num_tokens: tokens,
        num_seqs: seqs.len(),
        num_decodes,
        max_seq_len,
    };
    let shape = AttentionShape {
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        block_size,
        scale,
        q_stride: heads * head_dim,
        out_stride: heads * head_dim,
        sliding_window: masking.window,
        logit_softcap: masking.softcap,
    };
    let mut ws = AttentionWorkspace::new(k, seqs.len(), &shape, max_seq_len).unwrap();
    let qd = up::<T>(k, &q);
    let mut out = poisoned::<T>(k, tokens * heads * head_dim);
    k.paged_attention(&qd, &kcd, &vcd, &mut out, &meta, &shape, &mut ws)
        .unwrap();
    let what = format!(
        "attention_{} h{heads}/{kv_heads} d{head_dim} bs{block_size} {seqs:?} {masking:?}",
        T::SUFFIX
    );
    assert_close(&what, &down(k, &out), &want, 2.0 * tol::<T>());
}

#[test]
fn attention_matches_cpu() {
    let Some(k) = gpu() else { return };
    // (new tokens, context): prefill chunks (some starting mid-context), decodes,
    // single-token prefills of a 1-token prompt, long contexts (split + reduce).
    let mixed: &[(usize, usize)] = &[
        (5, 5),
        (1, 17),
        (70, 300),
        (1, 1),
        (129, 129),
        (1, 700),
        (3, 40),
    ];
    let decodes: &[(usize, usize)] = &[(1, 1), (1, 16), (1, 33), (1, 513), (1, 2049), (1, 5000)];
    let prefills: &[(usize, usize)] = &[(64, 64), (65, 65), (200, 1200), (1, 1), (17, 17)];
    for (h, kvh) in [(8, 8), (9, 3), (32, 8), (12, 1), (16, 2)] {
        for d in [64, 80, 96, 128, 256] {
            if d == 256 && h > 16 {
                continue;
            }
            check_attention::<bf16>(&k, 10 + d as u64, h, kvh, d, 16, mixed, None);
        }
    }
    for d in [64, 128, 256] {
        check_attention::<bf16>(&k, 20, 32, 8, d, 16, decodes, None);
        check_attention::<bf16>(&k, 21, 32, 8, d, 16, prefills, None);
        check_attention::<f16>(&k, 22, 32, 8, d, 16, mixed, None);
        check_attention::<bf16>(&k, 23, 8, 2, d, 32, mixed, None);
    }
    // A graph-sized decode grid (max_seq_len far above the batch's) changes nothing.
    check_attention::<bf16>(&k, 24, 32, 8, 128, 16, decodes, Some(16_384));
    // Batch 1 decode over a long context: the finest split.
    check_attention::<bf16>(&k, 25, 32, 8, 128, 16, &[(1, 30_000)], None);
    check_attention::<bf16>(&k, 26, 64, 8, 128, 16, &[(1, 9000), (1, 3)], None);
}

/// The MoE kernels against the CPU routing: routing and grouping exact
/// (ids, offsets, gathered rows), weights to f32 rounding; the grouped
/// matmul and the weighted combine (with and without a shared expert) to
/// the type's tolerance. Experts of 6 with top-2 (renormalized) and of 16
/// with top-4 (not), with ties in the logits.
fn check_moe<T: CudaDType>(k: &CudaKernels) {
    use pagoda_kernels::cuda::moe::MoeRouting;
    use pagoda_kernels::cuda::DeviceMem as _;
    let mut r = rng(7);
    for (tokens, e, top_k, renormalize, h, n) in [
        (23, 6, 2, true, 64, 48),
        (9, 16, 4, false, 32, 96),
        (1, 8, 8, true, 16, 16),
    ] {
        let mut logits = round::<T>(&randn(&mut r, tokens * e, 3.0));
        if tokens > 1 {
            logits[e..2 * e].fill(0.5); // a token whose experts all tie
        }
        let mut want = cpu::ExpertRouting::default();
        want.route(&logits, e, top_k, renormalize);
        let mut routing = MoeRouting::new(k, tokens * top_k, e).unwrap();
        k.moe_route(
            &up::<T>(k, &logits),
            tokens,
            e,
            top_k,
            renormalize,
            &mut routing,
        )
        .unwrap();
        let what = format!("moe {} t{tokens} e{e} k{top_k}", T::SUFFIX);
        assert_eq!(
            k.download(&routing.expert_ids).unwrap(),
            want.expert_ids,
            "{what} ids"
        );
        let offsets: Vec<usize> = k
            .download(&routing.expert_offsets)
            .unwrap()
            .into_iter()
            .map(|v| v as usize)
            .collect();
        assert_eq!(offsets, want.expert_offsets, "{what} offsets");
        assert_eq!(
            k.download(&routing.row_token).unwrap(),
            want.row_token,
            "{what} rows"
        );
        assert_eq!(
            k.download(&routing.gathered_row).unwrap(),
            want.gathered_row,
            "{what} gathered"
        );
        assert_close(
            &format!("{what} weights"),
            &k.download(&routing.weights).unwrap(),
            &want.weights,
            1e-6,
        );

        // Grouped matmul over the gathered rows.
        let pairs = tokens * top_k;
        let x = round::<T>(&randn(&mut r, tokens * h, 1.0));
        let mut gathered = vec![0f32; pairs * h];
        cpu::moe_gather(&x, &want, &mut gathered, h);
        let ws: Vec<Vec<f32>> = (0..e)
            .map(|_| round::<T>(&randn(&mut r, n * h, 0.2)))
            .collect();
        let wd: Vec<DeviceBuffer<T>> = ws.iter().map(|w| up::<T>(k, w)).collect();
        let addrs = k
            .upload(&wd.iter().map(|w| w.addr()).collect::<Vec<_>>())
            .unwrap();
        let mut out = poisoned::<T>(k, pairs * n);
        k.moe_matmul(
            &up::<T>(k, &gathered),
            &addrs,
            &routing,
            &mut out,
            pairs,
            h,
            n,
        )
        .unwrap();
        let mut want_out = vec![0f32; pairs * n];
        for (ex, range) in want.active_experts() {
            for row in range {
                let xr = &gathered[row * h..(row + 1) * h];
                let y = &mut want_out[row * n..(row + 1) * n];
                cpu::matmul_transb(xr, &ws[ex], y, 1, h, n);
            }
        }
        assert_close(
            &format!("{what} matmul"),
            &down(k, &out),
            &want_out,
            tol::<T>(),
        );

        // Combine, then with a shared expert.
        let expert_out = round::<T>(&randn(&mut r, pairs * h, 1.0));
        let mut want_h = vec![0f32; tokens * h];
        cpu::moe_scatter_weighted(&expert_out, &want, &mut want_h, h);
        let eo = up::<T>(k, &expert_out);
        let mut hidden = poisoned::<T>(k, tokens * h);
        k.moe_combine(&eo, &routing, None, &mut hidden, tokens, top_k, h)
            .unwrap();
        assert_close(
            &format!("{what} combine"),
            &down(k, &hidden),
            &want_h,
            tol::<T>(),
        );
        let shared = round::<T>(&randn(&mut r, tokens * h, 1.0));
        let gate = round::<T>(&randn(&mut r, tokens, 2.0));
        for (t, row) in want_h.chunks_exact_mut(h).enumerate() {
            let g = 1.0 / (1.0 + (-gate[t]).exp());
            for (o, &v) in row.iter_mut().zip(&shared[t * h..(t + 1) * h]) {
                *o += g * v;
            }
        }
        let (sd, gd) = (up::<T>(k, &shared), up::<T>(k, &gate));
        k.moe_combine(
            &eo,
            &routing,
            Some((&sd, &gd)),
            &mut hidden,
            tokens,
            top_k,
            h,
        )
        .unwrap();
        assert_close(
            &format!("{what} shared"),
            &down(k, &hidden),
            &want_h,
            tol::<T>(),
        );
    }
}

#[test]
fn moe_kernels_match_cpu() {
    let Some(k) = gpu() else { return };
    check_moe::<bf16>(&k);
    check_moe::<f16>(&k);
    check_moe::<f32>(&k);
}

/// Sliding windows (narrower than a block, than a key tile, spanning several
/// decode partitions, wider than the context) and soft-capping, on the
/// prefill, decode and reduce paths; slots before each window hold NaN.
#[test]
fn windowed_and_softcapped_attention_matches_cpu() {
    let Some(k) = gpu() else { return };
    let mixed: &[(usize, usize)] = &[(70, 300), (1, 17), (1, 5000), (129, 129), (1, 0), (3, 40)];
    for (i, (window, softcap)) in [
        (Some(1), None),
        (Some(7), Some(2.0)),
        (Some(100), Some(50.0)),
        (Some(1024), None),
        (Some(4096), Some(30.0)),
        (None, Some(5.0)),
    ]
    .into_iter()
    .enumerate()
    {
        let m = Masking { window, softcap };
        for d in [64, 128, 256] {
            let seed = 50 + i as u64;
            check_attention_masked::<bf16>(&k, seed, (32, 8, d, 16), mixed, None, m);
            check_attention_masked::<f16>(&k, seed, (12, 1, d, 16), mixed, Some(8192), m);
        }
    }
}

/// CUDA graph replay pads decode batches with rows of seq_len 0 and slot -1:
/// reshape_and_cache skips them, attention writes them zeros (as the CPU
/// does) and the real rows are unchanged, on the direct and the split path.
#[test]
fn padded_decode_batches_match_cpu() {
    let Some(k) = gpu() else { return };
    let padded: &[(usize, usize)] = &[(1, 17), (1, 0), (1, 700), (1, 0), (1, 0)];
    for d in [64, 128] {
        check_attention::<bf16>(&k, 40, 32, 8, d, 16, padded, None);
        check_attention::<bf16>(&k, 41, 32, 8, d, 16, padded, Some(16_384));
        check_attention::<f16>(&k, 42, 12, 1, d, 16, padded, Some(4096));
    }
    check_attention::<bf16>(&k, 43, 8, 2, 64, 16, &[(1, 0)], Some(2048));
}

#[test]
fn attention_reads_q_through_a_fused_qkv_view() {
    let Some(k) = gpu() else { return };
    let mut r = rng(30);
    let (heads, kvh, d, bs) = (8, 2, 64, 16);
    let seqs = [(9usize, 20usize), (1, 50)];
    let b = make_batch(&mut r, &seqs, bs);
    let tokens = 10;
    let width = (heads + 2 * kvh) * d;
    let qkv = round::<bf16>(&randn(&mut r, tokens * width, 1.0));
    let cache_len = b.num_blocks * bs * kvh * d;
    let (kc, vc) = (
        round::<bf16>(&randn(&mut r, cache_len, 1.0)),
        round::<bf16>(&randn(&mut r, cache_len, 1.0)),
    );
    let q: Vec<f32> = qkv
        .chunks_exact(width)
        .flat_map(|row| row[..heads * d].to_vec())
        .collect();
    let mut want = vec![0f32; tokens * heads * d];
    let params = cpu::PagedAttentionParams {
        query_start_loc: &b.qsl,
        seq_lens: &b.seq_lens,
        block_tables: &b.block_tables,
        max_blocks_per_seq: b.max_blocks,
        block_size: bs,
        num_heads: heads,
        num_kv_heads: kvh,
        head_dim: d,
        scale: 0.125,
        sliding_window: None,
        logit_softcap: None,
    };
    cpu::paged_attention(
        &q,
        cpu::KvSlice::F32(&kc),
        cpu::KvSlice::F32(&vc),
        &params,
        &mut want,
    );
    let (qsl, sl, bt) = (
        k.upload(&b.qsl).unwrap(),
        k.upload(&b.seq_lens).unwrap(),
        k.upload(&b.block_tables).unwrap(),
    );
    let meta = AttentionMetadata {
        query_start_loc: &qsl,
        seq_lens: &sl,
        block_tables: &bt,
        max_blocks_per_seq: b.max_blocks,
        num_tokens: tokens,
        num_seqs: 2,
        num_decodes: 1,
        max_seq_len: 50,
    };
    let shape = AttentionShape {
        num_heads: heads,
        num_kv_heads: kvh,
        head_dim: d,
        block_size: bs,
        scale: 0.125,
        q_stride: width,
        out_stride: heads * d,
        sliding_window: None,
        logit_softcap: None,
    };
    let mut ws = AttentionWorkspace::new(&k, 2, &shape, 50).unwrap();
    let qkvd = up::<bf16>(&k, &qkv);
    let mut out = poisoned::<bf16>(&k, tokens * heads * d);
    k.paged_attention(
        &qkvd,
        &up::<bf16>(&k, &kc),
        &up::<bf16>(&k, &vc),
        &mut out,
        &meta,
        &shape,
        &mut ws,
    )
    .unwrap();
    assert_close("attention via qkv view", &down(&k, &out), &want, 4e-2);
}

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

#[test]
fn sampling_matches_the_reference_bit_for_bit() {
    let Some(k) = gpu() else { return };
    let mut r = rng(40);
    for vocab in [1000, 32_000, 151_936] {
        let rows = 48;
        let logits = random_logits(&mut r, rows, vocab);
        let temp: Vec<f32> = (0..rows).map(|i| [0.0, 1.0, 0.7, 1.5][i % 4]).collect();
        let top_k: Vec<i32> = (0..rows).map(|i| [0, 1, 20, 1000, -1][i % 5]).collect();
        let top_p: Vec<f32> = (0..rows).map(|i| [1.0, 0.9, 0.5][i % 3]).collect();
        let min_p: Vec<f32> = (0..rows).map(|i| [0.0, 0.0, 0.05][(i / 3) % 3]).collect();
        let uni: Vec<f32> = (0..rows).map(|_| r.random::<f32>()).collect();
        let dev = |v: &[f32]| k.upload(v).unwrap();
        let (ld, td, pd, md, ud) = (
            dev(&logits),
            dev(&temp),
            dev(&top_p),
            dev(&min_p),
            dev(&uni),
        );
        let kd = k.upload(&top_k).unwrap();
        let params = SamplingTensors {
            temperature: &td,
            top_k: &kd,
            top_p: &pd,
            min_p: &md,
            uniform: &ud,
        };
        let mut out = k.upload(&vec![u32::MAX; rows]).unwrap();
        k.sample_tokens(&ld, rows, vocab, &params, &mut out)
            .unwrap();
        let got = k.download(&out).unwrap();
        for i in 0..rows {
            let row = &logits[i * vocab..][..vocab];
            let want =
                sampling_reference::sample(row, temp[i], top_k[i], top_p[i], min_p[i], uni[i]);
            assert_eq!(
                got[i], want,
                "vocab {vocab} row {i}: T {} k {} p {} min_p {} u {}",
                temp[i], top_k[i], top_p[i], min_p[i], uni[i]
            );
        }
        // Batch invariance: row 5 alone samples the same token.
        let one = k.upload(&logits[5 * vocab..6 * vocab]).unwrap();
        let p1 = |v: &[f32]| k.upload(&v[5..6]).unwrap();
        let (t1, p1p, m1, u1) = (p1(&temp), p1(&top_p), p1(&min_p), p1(&uni));
        let k1 = k.upload(&top_k[5..6]).unwrap();
        let params1 = SamplingTensors {
            temperature: &t1,
            top_k: &k1,
            top_p: &p1p,
            min_p: &m1,
            uniform: &u1,
        };
        let mut out1 = k.upload(&[u32::MAX]).unwrap();
        k.sample_tokens(&one, 1, vocab, &params1, &mut out1)
            .unwrap();
        assert_eq!(k.download(&out1).unwrap()[0], got[5]);
    }
}

#[test]
fn logprobs_match_a_full_sort() {
    let Some(k) = gpu() else { return };
    let mut r = rng(41);
    let (rows, vocab, topk) = (9, 49_152, 20);
    let logits = random_logits(&mut r, rows, vocab);
    let ld = k.upload(&logits).unwrap();
    let mut ids = k.upload(&vec![u32::MAX; rows * topk]).unwrap();
    let mut lps = k.upload(&vec![f32::NAN; rows * topk]).unwrap();
    k.logprobs_topk(&ld, rows, vocab, topk, &mut ids, &mut lps)
        .unwrap();
    let tokens: Vec<u32> = (0..rows).map(|_| r.random_range(0..vocab as u32)).collect();
    let td = k.upload(&tokens).unwrap();
    let mut lp = k.upload(&vec![f32::NAN; rows]).unwrap();
    let mut rank = k.upload(&vec![0u32; rows]).unwrap();
    k.token_logprobs(&ld, rows, vocab, &td, &mut lp, &mut rank)
        .unwrap();
    let (ids, lps, lp, rank) = (
        k.download(&ids).unwrap(),
        k.download(&lps).unwrap(),
        k.download(&lp).unwrap(),
        k.download(&rank).unwrap(),
    );
    for i in 0..rows {
        let row = &logits[i * vocab..][..vocab];
        let mut row_ls = row.to_vec();
        cpu::log_softmax_inplace(&mut row_ls);
        let mut order: Vec<u32> = (0..vocab as u32).collect();
        order.sort_by(|&a, &b| {
            row[b as usize]
                .partial_cmp(&row[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        assert_eq!(&ids[i * topk..][..topk], &order[..topk], "row {i} top ids");
        for j in 0..topk {
            let id = order[j] as usize;
            assert!(
                (lps[i * topk + j] - row_ls[id]).abs() < 1e-4,
                "row {i} logprob {j}"
            );
        }
        let t = tokens[i] as usize;
        assert!((lp[i] - row_ls[t]).abs() < 1e-4, "row {i} token logprob");
        assert_eq!(
            rank[i] as usize,
            1 + row.iter().filter(|&&l| l > row[t]).count(),
            "row {i} rank"
        );
    }
}

#[test]
fn logit_edits_match_the_cpu_rules() {
    let Some(k) = gpu() else { return };
    let mut r = rng(42);
    let (rows, vocab) = (4, 5000);
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
        let b = bias_row([(7, 2.5), (prompts[i][0], -1.0)], &[11]);
        for &(id, v) in &b {
            row[id as usize] += v;
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
    let mut ld = k.upload(&logits).unwrap();
    let (bo, bi, bv) = (
        k.upload(&bias.offsets).unwrap(),
        k.upload(&bias.ids).unwrap(),
        k.upload(&bias.values).unwrap(),
    );
    k.apply_logit_bias(&mut ld, rows, vocab, &bo, &bi, &bv)
        .unwrap();
    let (po, pi, pc) = (
        k.upload(&pen.offsets).unwrap(),
        k.upload(&pen.ids).unwrap(),
        k.upload(&pen.values).unwrap(),
    );
    let (rd, fd, prd) = (
        k.upload(&rep).unwrap(),
        k.upload(&freq).unwrap(),
        k.upload(&pres).unwrap(),
    );
    k.apply_penalties(&mut ld, rows, vocab, &po, &pi, &pc, &rd, &fd, &prd)
        .unwrap();
    let got = k.download(&ld).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "element {i}: {g} vs {w}");
    }
}

#[test]
fn token_bitmask_matches_the_cpu_mask() {
    let Some(k) = gpu() else { return };
    check_token_bitmask(&k);
}

fn check_token_bitmask(k: &CudaKernels) {
    let mut r = rng(77);
    let (rows, vocab) = (4, 5000);
    let logits = random_logits(&mut r, rows, vocab);
    let mask_words = 150; // 4800 tokens: the rest of each row is masked.
    let mask_rows: Vec<u32> = vec![3, 1];
    let bitmask: Vec<u32> = (0..mask_rows.len() * mask_words)
        .map(|_| r.random::<u32>())
        .collect();
    let mut want = logits.clone();
    for (j, &row) in mask_rows.iter().enumerate() {
        cpu::apply_token_bitmask(
            &mut want[row as usize * vocab..][..vocab],
            &bitmask[j * mask_words..][..mask_words],
        );
    }
    let mut ld = k.upload(&logits).unwrap();
    let (bd, rd) = (k.upload(&bitmask).unwrap(), k.upload(&mask_rows).unwrap());
    k.apply_token_bitmask(&mut ld, rows, vocab, &bd, &rd, mask_rows.len(), mask_words)
        .unwrap();
    let got = k.download(&ld).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "element {i}: {g} vs {w}");
    }
}

/// The same launchers (`CudaKernels` methods) on the emulated device: host
/// memory, the `.cu` kernels on the CPU emulator, GEMMs rounded as cuBLAS
/// rounds. Shapes are cut to what the emulator runs in seconds; the kernels
/// themselves are covered shape by shape in `emu_kernels.rs`, so what this
/// checks is the device interface: allocation, copies, views, launch
/// dispatch by kernel name, the GEMM, graph capture and replay, memory info.
#[cfg(feature = "emu")]
mod emulated {
    use super::*;
    use pagoda_kernels::cuda::emu::ThreadOrder;
    use pagoda_kernels::cuda::{DeviceMem, EmuConfig};

    fn emu() -> CudaKernels {
        CudaKernels::emulated().expect("the emulated device")
    }

    #[test]
    fn norms_rotary_and_elementwise_match_cpu() {
        let k = emu();
        assert!(k.is_emulated());
        check_norms::<bf16>(&k, NormStyle::Llama);
        check_norms::<bf16>(&k, NormStyle::Gemma);
        check_rotary::<bf16>(&k);
        check_elementwise::<bf16>(&k);
        check_elementwise::<f32>(&k);
    }

    /// cuBLAS's rounding: bf16 inputs, f32 accumulation, one rounding of
    /// the output. The f32 output equals the f32 reference to summation
    /// order; the bf16 output is that value rounded once.
    #[test]
    fn gemm_rounds_as_cublas() {
        let k = emu();
        let mut r = rng(5);
        for (m, kk, n) in [(1, 576, 1536), (7, 256, 384), (33, 128, 100)] {
            let x = round::<bf16>(&randn(&mut r, m * kk, 1.0));
            let w = round::<bf16>(&randn(&mut r, n * kk, 0.05));
            let mut want = vec![0f32; m * n];
            cpu::matmul_transb(&x, &w, &mut want, m, kk, n);
            let (xd, wd) = (up::<bf16>(&k, &x), up::<bf16>(&k, &w));
            let mut y32 = k.upload(&vec![f32::NAN; m * n]).unwrap();
            k.matmul(&xd, &wd, &mut y32, m, kk, n).unwrap();
            let y32 = k.download(&y32).unwrap();
            assert_close("matmul ->f32", &y32, &want, 1e-5);
            let mut y = poisoned::<bf16>(&k, m * n);
            k.matmul(&xd, &wd, &mut y, m, kk, n).unwrap();
            assert_eq!(down(&k, &y), round::<bf16>(&y32), "one rounding to bf16");
        }
    }

    #[test]
    fn attention_and_padded_decodes_match_cpu() {
        let k = emu();
        let mixed: &[(usize, usize)] = &[(5, 5), (1, 17), (70, 300), (1, 1), (1, 700), (3, 40)];
        check_attention::<bf16>(&k, 10, 4, 2, 64, 16, mixed, None);
        let padded: &[(usize, usize)] = &[(1, 17), (1, 0), (1, 700), (1, 0)];
        check_attention::<bf16>(&k, 41, 8, 2, 64, 16, padded, Some(4096));
        // The windowed GPU test's harness (NaN before each window) on one case.
        let m = Masking {
            window: Some(7),
            softcap: Some(2.0),
        };
        check_attention_masked::<bf16>(&k, 42, (4, 2, 64, 16), mixed, None, m);
    }

    #[test]
    fn moe_kernels_match_cpu() {
        let k = emu();
        check_moe::<bf16>(&k);
        check_moe::<f32>(&k);
    }

    #[test]
    fn sampling_runs_through_the_device_interface() {
        let k = emu();
        let (rows, vocab) = (3, 500);
        let mut r = rng(7);
        let logits = random_logits(&mut r, rows, vocab);
        let ld = k.upload(&logits).unwrap();
        let col = |v: f32| k.upload(&vec![v; rows]).unwrap();
        let (t, p, mp, u) = (col(0.0), col(1.0), col(0.0), col(0.5));
        let top_k = k.upload(&vec![-1i32; rows]).unwrap();
        let params = SamplingTensors {
            temperature: &t,
            top_k: &top_k,
            top_p: &p,
            min_p: &mp,
            uniform: &u,
        };
        let mut out = k.upload(&vec![u32::MAX; rows]).unwrap();
        k.sample_tokens(&ld, rows, vocab, &params, &mut out)
            .unwrap();
        let want: Vec<u32> = logits
            .chunks_exact(vocab)
            .map(|row| {
                let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                row.iter().position(|&x| x == best).unwrap() as u32
            })
            .collect();
        assert_eq!(k.download(&out).unwrap(), want, "greedy rows");
    }

    /// Capture records launches and GEMMs without running them; replay
    /// runs them on the buffers' current contents (new inputs copied into
    /// the same addresses, as the engine's padded decode graphs do).
    #[test]
    fn graphs_record_and_replay() {
        let k = emu();
        let (rows, dim, n) = (2, 64, 32);
        let w = k.upload(&vec![bf16::ONE; dim]).unwrap();
        let lin = up::<bf16>(&k, &randn(&mut rng(8), n * dim, 0.1));
        let mut x = k.alloc_zeros::<bf16>(rows * dim).unwrap();
        let mut h = k.alloc_zeros::<bf16>(rows * dim).unwrap();
        let mut y = k.alloc_zeros::<f32>(rows * n).unwrap();
        let run =
            |x: &DeviceBuffer<bf16>, h: &mut DeviceBuffer<bf16>, y: &mut DeviceBuffer<f32>| {
                k.rms_norm(x, dim, &w, h, dim, rows, dim, 1e-6, NormStyle::Llama)
                    .unwrap();
                k.matmul(h, &lin, y, rows, dim, n).unwrap();
            };
        k.begin_capture().unwrap();
        run(&x, &mut h, &mut y);
        assert!(
            k.alloc_zeros::<f32>(4).is_err(),
            "no allocation while capturing"
        );
        assert!(
            k.download(&y).is_err(),
            "no synchronous copy while capturing"
        );
        let graph = k.end_capture().unwrap();
        assert_eq!(graph.emulated_len(), Some(2));
        assert!(
            k.download(&y).unwrap().iter().all(|&v| v == 0.0),
            "nothing ran"
        );
        for seed in [9, 10] {
            let input = round::<bf16>(&randn(&mut rng(seed), rows * dim, 1.0));
            let host: Vec<bf16> = input.iter().map(|&v| bf16::from_f32(v)).collect();
            k.copy_htod(&host, &mut x).unwrap();
            graph.replay().unwrap();
            let replayed = k.download(&y).unwrap();
            run(&x, &mut h, &mut y);
            assert_eq!(replayed, k.download(&y).unwrap(), "replay = eager run");
        }
        assert!(k.end_capture().is_err(), "no capture under way");
    }

    #[test]
    fn memory_info_counts_live_allocations() {
        let k = CudaKernels::emulated_with(EmuConfig {
            total_memory: 1 << 20,
            head_dims: vec![64],
            ..EmuConfig::default()
        })
        .unwrap();
        let (free0, total) = k.mem_get_info().unwrap();
        assert_eq!((free0, total), (1 << 20, 1 << 20));
        let mut b = k.alloc_zeros::<f32>(1000).unwrap();
        assert_eq!(k.mem_get_info().unwrap().0, free0 - 4000);
        assert!(k.alloc_zeros::<u8>(2 << 20).is_err(), "beyond the total");
        // Views and partial copies.
        k.copy_htod(&[1.0f32, 2.0], &mut b.slice_mut(10..)).unwrap();
        let mut two = [0f32; 3];
        k.copy_dtoh(&b.slice(9..12), &mut two).unwrap();
        assert_eq!(two, [0.0, 1.0, 2.0]);
        assert!(k.copy_htod(&[0f32; 5], &mut b.slice_mut(997..)).is_err());
        assert_eq!(b.slice(5..).len(), 995);
        drop(b);
        assert_eq!(k.mem_get_info().unwrap().0, free0);
        // A head size without kernels is refused, as on a GPU.
        assert!(CudaKernels::emulated_with(EmuConfig {
            head_dims: vec![72],
            ..EmuConfig::default()
        })
        .is_err());
    }

    /// An adversarial thread order through the device (a missing barrier
    /// would show here while round robin hid it).
    #[test]
    fn launchers_run_under_another_thread_order() {
        let k = CudaKernels::emulated_with(EmuConfig {
            order: ThreadOrder::HighestFirst,
            ..EmuConfig::default()
        })
        .unwrap();
        check_norms::<bf16>(&k, NormStyle::Gemma);
        let mixed: &[(usize, usize)] = &[(5, 5), (1, 17), (1, 700)];
        check_attention::<bf16>(&k, 12, 4, 1, 128, 16, mixed, None);
    }

    #[test]
    fn token_bitmask_runs_through_the_device_interface() {
        check_token_bitmask(&emu());
    }
}
