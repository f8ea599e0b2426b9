//! End-to-end: the official `openai` Python package (what users run)
//! against `pagoda serve`: completions, chat (Paris), streaming, logprobs and
//! errors. Skips loudly when `openai` is not installed (CI installs it).

mod server_common;

use std::path::Path;
use std::process::Command;

use server_common::{model_or_skip, python_imports, set_flag, small_server_args, TestServer};

#[test]
fn official_openai_client() {
    let Some(model) = model_or_skip("official_openai_client") else {
        return;
    };
    if !python_imports("openai") {
        eprintln!(
            "\n*** SKIPPED official_openai_client: `python3 -c \"import openai\"` failed; \
             install it with `python3 -m pip install openai`. ***\n"
        );
        return;
    }
    let mut args = small_server_args(&model);
    set_flag(&mut args, "--served-model-name", "smollm2");
    let server = TestServer::start(&args, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([server.base.as_str(), "smollm2"])
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_client.py failed ({}):\n{stdout}\n{stderr}\n---- server log ----\n{}",
        out.status,
        server.log()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
