//! Helpers shared by the engine integration tests: the tiny fixture model
//! and waiting for an engine to drain.

use pagoda_engine::{EngineHandle, EngineStats};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tiny random Qwen2 checkpoint (bias, tied embeddings, bf16).
pub fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/qwen2_bias_tied_bf16")
}

/// The engine's stats once nothing runs or waits (or after 5 s, whatever
/// they are then: the caller's asserts say what was expected).
pub fn wait_idle(h: &EngineHandle) -> EngineStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = h.stats();
        if s.num_running + s.num_waiting == 0 || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
