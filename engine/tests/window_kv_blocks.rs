//! KV-cache groups end to end: a model whose every layer has an 8-token
//! sliding window keeps a bounded number of KV blocks however long its
//! sequence grows (blocks its window no longer reads go back to the pool as
//! the sequence moves on), while the same checkpoint with its window
//! removed holds a block per 4 tokens to the end. Measured through the
//! engine's own `kv_cache_usage` (what `/metrics` serves as
//! `vllm:kv_cache_usage_perc`), polled after every streamed token.

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
