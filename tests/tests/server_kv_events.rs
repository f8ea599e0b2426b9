//! End-to-end: `pagoda serve --kv-events-config` publishes KV-cache events
//! that a Python subscriber decodes with vLLM's msgspec schema (PUB stream
//! and replay). Skips loudly without pyzmq and msgspec (CI installs them).

mod server_common;

use std::path::Path;
use std::process::Command;

use server_common::{
    free_port, model_or_skip, python_imports, set_flag, small_server_args, TestServer,
};

#[test]
fn kv_events_reach_a_vllm_style_subscriber() {
    let Some(model) = model_or_skip("kv_events_reach_a_vllm_style_subscriber") else {
        return;
    };
    if !python_imports("zmq, msgspec") {
        eprintln!(
            "\n*** SKIPPED kv_events_reach_a_vllm_style_subscriber: install pyzmq and \
             msgspec (`python3 -m pip install pyzmq msgspec`). ***\n"
        );
        return;
    }
    let (pub_port, replay_port) = (free_port(), free_port());
    let config = format!(
        r#"{{"enable_kv_cache_events": true, "publisher": "zmq", "endpoint": "tcp://*:{pub_port}", "replay_endpoint": "tcp://*:{replay_port}", "topic": "kv-events"}}"#
    );
    let mut args = small_server_args(&model);
    set_flag(&mut args, "--served-model-name", "smollm2");
    set_flag(&mut args, "--kv-events-config", &config);
    let server = TestServer::start(&args, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kv_events_subscriber.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            server.base.as_str(),
            "smollm2",
            &format!("tcp://127.0.0.1:{pub_port}"),
            &format!("tcp://127.0.0.1:{replay_port}"),
            "kv-events",
        ])
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "kv_events_subscriber.py failed ({}):\n{stdout}\n{stderr}\n---- server log ----\n{}",
        out.status,
        server.log()
    );
}
