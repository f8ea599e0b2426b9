//! CPU kernel micro-benchmarks. Throughput is reported in "elements/s" where
//! one element is one floating-point operation, so `Gelem/s` reads GFLOP/s.
//!
//! `cargo bench -p pagoda-benches --bench kernels`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pagoda_kernels::cpu;
use std::hint::black_box;
use std::time::Duration;

/// Deterministic values in [-1, 1) (benchmarks need no statistical quality).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// SmolLM2-135M shapes (hidden 576, ffn 1536, vocab 49152) at decode, batch-64 and prefill sizes,
/// then the large square GEMM that stands for the machine's f32 peak.
fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_transb");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let shapes = [
        ("576x1536", 576, 1536, &[1, 64, 512][..]),
        ("576x49152", 576, 49152, &[1, 64, 512][..]),
        ("2048x2048", 2048, 2048, &[2048][..]),
    ];
    for (name, k, n, ms) in shapes {
        let w = values(n * k, 1);
        for &m in ms {
            let x = values(m * k, 2);
            let mut out = vec![0f32; m * n];
            let flops = 2 * m * n * k;
            g.throughput(Throughput::Elements(flops as u64));
            g.sample_size(if flops > 1 << 30 { 10 } else { 30 });
            g.bench_function(BenchmarkId::new(name, format!("m={m}")), |b| {
                b.iter(|| cpu::matmul_transb(black_box(&x), black_box(&w), &mut out, m, k, n))
            });
        }
    }
    g.finish();
}

/// Rows of random blocks of `ty` with f16 scales of a sane size.
fn quant_rows(ty: cpu::QuantType, n: usize, k: usize) -> Vec<u8> {
    let ts = ty.type_size();
    let mut bytes: Vec<u8> = values(n * k / ty.block_size() * ts, 3)
        .iter()
        .map(|v| (v.to_bits() >> 7) as u8)
        .collect();
    let scale_at = match ty {
        cpu::QuantType::Q6_K => 208,
        _ => 0,
    };
    for blk in bytes.chunks_exact_mut(ts) {
        blk[scale_at..scale_at + 2].copy_from_slice(&0x2000u16.to_le_bytes());
    }
    bytes
}

/// The same SmolLM2 shapes with the weights kept as GGUF blocks: integer dot
/// products on this CPU's best path (`fast`) and per-tile dequantization
/// (`exact`), beside `matmul_transb` above on f32 weights.
fn quant_matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for ty in [
        cpu::QuantType::Q4_1,
        cpu::QuantType::Q4_K,
        cpu::QuantType::Q8_0,
    ] {
        for (name, k, n, ms) in [
            ("576x1536", 576usize, 1536usize, &[1usize, 64, 512][..]),
            ("576x49152", 576, 49152, &[1, 64][..]),
        ] {
            if !k.is_multiple_of(ty.block_size()) {
                continue;
            }
            let w = quant_rows(ty, n, k);
            // As the engine keeps it: eight rows interleaved, where it can.
            let x8 = cpu::quant::repack::repack_x8(ty, &w, n, k);
            for &m in ms {
                let x = values(m * k, 2);
                let mut out = vec![0f32; m * n];
                let flops = 2 * m * n * k;
                g.throughput(Throughput::Elements(flops as u64));
                g.sample_size(if flops > 1 << 30 { 10 } else { 30 });
                for mode in [cpu::MatmulMode::Fast, cpu::MatmulMode::Exact] {
                    let id = BenchmarkId::new(format!("{ty}/{mode:?}/{name}"), format!("m={m}"));
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            let wr = cpu::WeightRef::Quant(ty, black_box(&w));
                            cpu::linear(black_box(&x), wr, &mut out, m, k, n, n, mode)
                        })
                    });
                }
                if let Some(x8) = &x8 {
                    let id = BenchmarkId::new(format!("{ty}/FastX8/{name}"), format!("m={m}"));
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            let wr = cpu::WeightRef::QuantX8(ty, black_box(x8));
                            let mode = cpu::MatmulMode::Fast;
                            cpu::linear(black_box(&x), wr, &mut out, m, k, n, n, mode)
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

/// Decode at context 1024 with SmolLM2's attention (9 heads, 3 KV heads, head_dim 64, block 16),
/// on an f32 cache and on f16 (the default for GGUF models).
fn attention_decode(c: &mut Criterion) {
    let (heads, kv_heads, d, bs, ctx) = (9usize, 3usize, 64usize, 16usize, 1024usize);
    let mut g = c.benchmark_group("paged_attention_decode_ctx1024");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for batch in [1usize, 64] {
        let blocks_per_seq = ctx / bs;
        let num_blocks = batch * blocks_per_seq + 1;
        let k_cache = values(num_blocks * bs * kv_heads * d, 3);
        let v_cache = values(num_blocks * bs * kv_heads * d, 4);
        // Interleave the sequences' blocks, as a running block pool does.
        let tables: Vec<u32> = (0..batch)
            .flat_map(|s| (0..blocks_per_seq).map(move |b| (1 + b * batch + s) as u32))
            .collect();
        let qsl: Vec<u32> = (0..=batch as u32).collect();
        let seq_lens = vec![ctx as u32; batch];
        let q = values(batch * heads * d, 5);
        let mut out = vec![0f32; q.len()];
        let params = cpu::PagedAttentionParams {
            query_start_loc: &qsl,
            seq_lens: &seq_lens,
            block_tables: &tables,
            max_blocks_per_seq: blocks_per_seq,
            block_size: bs,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: d,
            scale: 0.125,
            sliding_window: None,
            logit_softcap: None,
        };
        // q·K and p·V: 2 flops per multiply-add, 2 products per (head, key, dim).
        g.throughput(Throughput::Elements((batch * heads * ctx * d * 4) as u64));
        g.bench_function(BenchmarkId::new("smollm2", format!("batch={batch}")), |b| {
            b.iter(|| {
                cpu::paged_attention(
                    black_box(&q),
                    cpu::KvSlice::F32(&k_cache),
                    cpu::KvSlice::F32(&v_cache),
                    &params,
                    &mut out,
                )
            })
        });
        let k16: Vec<half::f16> = k_cache.iter().map(|&v| half::f16::from_f32(v)).collect();
        let v16: Vec<half::f16> = v_cache.iter().map(|&v| half::f16::from_f32(v)).collect();
        g.bench_function(
            BenchmarkId::new("smollm2_f16", format!("batch={batch}")),
            |b| {
                b.iter(|| {
                    cpu::paged_attention(
                        black_box(&q),
                        cpu::KvSlice::F16(&k16),
                        cpu::KvSlice::F16(&v16),
                        &params,
                        &mut out,
                    )
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, matmul, quant_matmul, attention_decode);
criterion_main!(benches);
