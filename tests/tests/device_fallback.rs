//! Models the CUDA path cannot run (mixtures of experts: no fused-MoE
//! kernels yet) are refused on `--device cuda` with the feature named, and
//! run on the CPU under `--device auto`.

use pagoda_engine::{generate_all, Device, EngineConfig, EngineHandle, SamplingParams};
use std::path::Path;

fn config(device: Device) -> EngineConfig {
    EngineConfig {
        model: Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/mixtral_e8_top2_f32"),
        device,
        max_num_seqs: 2,
        kv_cache_memory: Some(16 << 20),
        max_model_len: Some(256),
        ..EngineConfig::default()
    }
}

#[test]
fn a_mixture_of_experts_is_refused_on_cuda_and_runs_on_auto() {
    let err = match EngineHandle::start(config(Device::Cuda)) {
        Ok(_) => panic!("--device cuda accepted a Mixtral model"),
        Err(e) => pagoda_engine::error_chain(&e),
    };
    for needle in ["mixture-of-experts", "8 experts", "fused-MoE"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let handle = EngineHandle::start(config(Device::Auto)).expect("--device auto falls back");
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: Some(4),
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let out = generate_all(&handle, vec![((1..40).collect(), params)]).unwrap();
    assert_eq!(out[0].samples[0].token_ids.len(), 4);
    handle.shutdown();
}
