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

/// Decode at context 1024 with SmolLM2's attention (9 heads, 3 KV heads, head_dim 64, block 16).
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
        };
        // q·K and p·V: 2 flops per multiply-add, 2 products per (head, key, dim).
        g.throughput(Throughput::Elements((batch * heads * ctx * d * 4) as u64));
        g.bench_function(BenchmarkId::new("smollm2", format!("batch={batch}")), |b| {
            b.iter(|| cpu::paged_attention(black_box(&q), &k_cache, &v_cache, &params, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, matmul, attention_decode);
criterion_main!(benches);
