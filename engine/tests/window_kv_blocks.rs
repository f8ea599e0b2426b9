//! KV-cache groups end to end: a model whose every layer has an 8-token
//! sliding window keeps a bounded number of KV blocks however long its
//! sequence grows (blocks its window no longer reads go back to the pool as
//! the sequence moves on), while the same checkpoint with its window
//! removed holds a block per 4 tokens to the end. Measured through the
//! engine's own `kv_cache_usage` (what `/metrics` serves as
//! `vllm:kv_cache_usage_perc`), polled after every streamed token. And
//! prefix-cache hits on a hybrid model give the uncached tokens.

use pagoda_engine::{Device, EngineConfig, EngineHandle, RequestOptions, SamplingParams};
use std::path::{Path, PathBuf};

const BLOCK: usize = 4;
const PROMPT: usize = 20;
const OUTPUT: usize = 80;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/phi3_window8_bf16")
}

/// The fixture as is, or copied (to a folder removed afterwards) with
/// `sliding_window: null`.
fn model(windowed: bool) -> (PathBuf, Option<RemoveOnDrop>) {
    if windowed {
        return (fixture(), None);
    }
    let dir =
        RemoveOnDrop(std::env::temp_dir().join(format!("pagoda-window-kv-{}", std::process::id())));
    std::fs::create_dir_all(dir.path()).unwrap();
    for f in ["model.safetensors", "generation_config.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    config["sliding_window"] = serde_json::Value::Null;
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    (dir.path().to_path_buf(), Some(dir))
}

struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Peak `kv_cache_usage` while one sequence of PROMPT + OUTPUT tokens runs.
fn peak_usage(windowed: bool) -> f64 {
    let (path, _keep) = model(windowed);
    let h = EngineHandle::start(EngineConfig {
        model: path,
        device: Device::Cpu,
        max_num_seqs: 1,
        max_model_len: Some(256),
        block_size: BLOCK,
        // The same pool either way: usage is comparable.
        kv_cache_memory: Some(1 << 20),
        enable_prefix_caching: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(OUTPUT),
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| 3 + i * 7 % 300).collect();
    let mut stream = h
        .add_request(prompt, params, RequestOptions::default())
        .unwrap();
    let mut peak = 0f64;
    let mut tokens = 0;
    while let Some(out) = stream.blocking_next() {
        let out = out.unwrap();
        tokens += out.outputs.iter().map(|d| d.token_ids.len()).sum::<usize>();
        peak = peak.max(h.stats().kv_cache_usage);
        if out.finished {
            break;
        }
    }
    assert_eq!(tokens, OUTPUT);
    h.shutdown();
    peak
}

#[test]
fn windowed_layers_hold_a_bounded_number_of_blocks() {
    let windowed = peak_usage(true);
    let full = peak_usage(false);
    eprintln!("peak kv_cache_usage: windowed {windowed:.4}, full {full:.4}");
    assert!(windowed > 0.0, "usage never seen");
    // Full attention ends holding (20 + 80) / 4 = 25 blocks; the window
    // reads at most 8 tokens: 3 blocks, 4 with the one being filled (and
    // a prefill chunk's own blocks while the prompt is written).
    assert!(
        windowed * 3.0 < full,
        "windowed peak {windowed} is not well under full attention's {full}"
    );
}

/// Greedy tokens and the prompt's cached-token count of one request.
fn run_one(h: &EngineHandle, prompt: &[u32]) -> (Vec<u32>, usize) {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(16),
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let mut stream = h
        .add_request(prompt.to_vec(), params, RequestOptions::default())
        .unwrap();
    let (mut tokens, mut cached) = (Vec::new(), 0);
    while let Some(out) = stream.blocking_next() {
        let out = out.unwrap();
        cached = out.num_cached_tokens.max(cached);
        for d in &out.outputs {
            tokens.extend_from_slice(&d.token_ids);
        }
        if out.finished {
            break;
        }
    }
    (tokens, cached)
}

/// Prefix-cache hits on a hybrid model (Qwen2 `max_window_layers`: layer 0
/// full attention, layers 1-2 windowed, two KV-cache groups): a prompt
/// seen before is served from the cache, as far as both groups agree (the
/// windowed group needs only its window's blocks), and gives the tokens the
/// uncached run gave; a prompt that shares only a long prefix too.
#[test]
fn prefix_hits_on_a_hybrid_model_give_the_uncached_tokens() {
    let h = EngineHandle::start(EngineConfig {
        model: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/qwen2_window8_layers_f32"),
        device: Device::Cpu,
        max_num_seqs: 2,
        max_model_len: Some(256),
        block_size: BLOCK,
        kv_cache_memory: Some(1 << 20),
        enable_prefix_caching: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let prompt: Vec<u32> = (0..40u32).map(|i| 3 + i * 11 % 250).collect();
    let (first, cached0) = run_one(&h, &prompt);
    assert_eq!(cached0, 0);
    let (again, cached1) = run_one(&h, &prompt);
    eprintln!("cached: {cached1} of 40");
    assert!(cached1 >= 32, "only {cached1} of 40 prompt tokens cached");
    assert_eq!(again, first, "a prefix hit changed the tokens");

    // Shares 36 tokens, then differs: compare with a cold engine's run.
    let mut other = prompt[..36].to_vec();
    other.extend([7, 9, 11, 13, 17]);
    let (warm, cached2) = run_one(&h, &other);
    assert!(
        cached2 >= 32,
        "only {cached2} of the shared 36 tokens cached"
    );
    h.shutdown();
    let cold = EngineHandle::start(EngineConfig {
        model: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/qwen2_window8_layers_f32"),
        device: Device::Cpu,
        max_model_len: Some(256),
        block_size: BLOCK,
        enable_prefix_caching: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let (want, _) = run_one(&cold, &other);
    cold.shutdown();
    assert_eq!(warm, want, "a partial prefix hit changed the tokens");
}
