//! KV memory of one long sequence of a Gemma-shaped model, with every layer
//! keeping every block (one full-attention group, before KV-cache groups)
//! and with vLLM-style groups (windowed groups free what their window no
//! longer reads). The scheduler runs the sequence to its end (chunked
//! prefill, then decode) and the peak of blocks in use is turned into bytes
//! with the layout's block size. Figures in BENCHMARKS.md:
//! `cargo test -p pagoda-scheduler --test window_memory -- --nocapture`.

use pagoda_scheduler::{
    KvCacheSpec, Request, Scheduler, SchedulerConfig, SchedulingPolicy, StopConditions,
};

const BLOCK: usize = 16;
const BUDGET: usize = 2048;

/// Peak blocks in use while one `prompt + output` sequence runs alone.
fn peak_blocks(specs: Vec<KvCacheSpec>, prompt: usize, output: usize) -> usize {
    let max_model_len = prompt + output;
    let mut cfg = SchedulerConfig {
        block_size: BLOCK,
        num_blocks: 0,
        max_num_seqs: 1,
        max_num_batched_tokens: BUDGET,
        max_model_len,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        policy: SchedulingPolicy::Fcfs,
        kv_cache_specs: specs,
    };
    cfg.num_blocks = cfg.max_blocks_per_request() + 1;
    let mut s = Scheduler::new(cfg).unwrap();
    let stop = StopConditions {
        eos_token_ids: vec![],
        stop_token_ids: vec![],
        max_tokens: output,
        min_tokens: 0,
        ignore_eos: true,
    };
    let prompt_ids = (0..prompt as u32).map(|t| t % 1000).collect();
    s.add_request(Request::new(0, prompt_ids, stop, 0, 0.0, None));
    let mut peak = 0;
    while s.has_unfinished_requests() {
        let out = s.schedule();
        peak = peak.max(s.kv_cache_manager().block_pool().num_used_blocks());
        let sampled: Vec<_> = out
            .requests()
            .iter()
            .map(|r| r.sample.then_some(7))
            .collect();
        s.update_from_output(&out, &sampled);
    }
    assert_eq!(s.kv_cache_manager().block_pool().num_used_blocks(), 0);
    peak
}

struct Shape {
    name: &'static str,
    /// Layer counts: (full, windowed), and the window.
    full_layers: usize,
    window_layers: usize,
    window: usize,
    /// K/V bytes per token per layer (2 · kv_heads · head_dim · 2 bytes).
    layer_bytes_per_token: usize,
}

/// Bytes in use at the peak: before (one group of every layer) and after
/// (groups of `min(full, windowed)` layers, as `KvCacheLayout` builds them).
fn measure(shape: &Shape, prompt: usize, output: usize) -> (usize, usize) {
    let layers = shape.full_layers + shape.window_layers;
    let before_blocks = peak_blocks(vec![KvCacheSpec::FullAttention], prompt, output);
    let before = before_blocks * BLOCK * layers * shape.layer_bytes_per_token;

    let group_size = shape.full_layers.min(shape.window_layers);
    let mut specs = vec![KvCacheSpec::FullAttention; shape.full_layers.div_ceil(group_size)];
    let window = KvCacheSpec::SlidingWindow {
        window: shape.window,
    };
    specs.extend(std::iter::repeat_n(
        window,
        shape.window_layers.div_ceil(group_size),
    ));
    let after_blocks = peak_blocks(specs, prompt, output);
    let after = after_blocks * BLOCK * group_size * shape.layer_bytes_per_token;
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "{}: {} tokens ({prompt} prompt + {output} output): before {before_blocks} blocks = \
         {:.1} MiB, after {after_blocks} blocks = {:.1} MiB ({:.0}% of before)",
        shape.name,
        prompt + output,
        mib(before),
        mib(after),
        100.0 * after as f64 / before as f64
    );
    (before, after)
}

#[test]
fn windowed_groups_hold_less_kv_than_full_attention() {
    // Gemma 2 2B: 26 layers alternating local (window 4096) and global,
    // 4 KV heads of 256 (bf16).
    let gemma2 = Shape {
        name: "Gemma 2 2B",
        full_layers: 13,
        window_layers: 13,
        window: 4096,
        layer_bytes_per_token: 2 * 4 * 256 * 2,
    };
    // Gemma 3 1B: 26 layers, 5 local (window 512) to 1 global, one KV head of 256.
    let gemma3 = Shape {
        name: "Gemma 3 1B",
        full_layers: 4,
        window_layers: 22,
        window: 512,
        layer_bytes_per_token: 2 * 256 * 2,
    };
    // Mistral 7B v0.1: every layer windowed (4096), 8 KV heads of 128.
    let mistral = Shape {
        name: "Mistral 7B v0.1",
        full_layers: 0,
        window_layers: 32,
        window: 4096,
        layer_bytes_per_token: 2 * 8 * 128 * 2,
    };
    let (b, a) = measure(&gemma2, 8000, 192);
    assert!(a < b);
    let (b, a) = measure(&gemma3, 32_000, 768);
    assert!(a * 3 < b, "Gemma 3 keeps under a third");
    // Mistral: one windowed group of all layers.
    let before = peak_blocks(vec![KvCacheSpec::FullAttention], 16_000, 384);
    let after = peak_blocks(
        vec![KvCacheSpec::SlidingWindow {
            window: mistral.window,
        }],
        16_000,
        384,
    );
    let per_block = BLOCK * mistral.window_layers * mistral.layer_bytes_per_token;
    println!(
        "{}: 16384 tokens: before {before} blocks = {:.1} MiB, after {after} blocks = {:.1} MiB",
        mistral.name,
        (before * per_block) as f64 / (1 << 20) as f64,
        (after * per_block) as f64 / (1 << 20) as f64
    );
    assert!(after * 2 < before);
}
