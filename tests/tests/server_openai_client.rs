//! End-to-end: the official `openai` Python package (what users run)
//! against `pagoda serve`: completions, chat (Paris), streaming, logprobs and
//! errors. Skips loudly when `openai` is not installed (CI installs it).

mod server_common;

use server_common::{
    model_or_skip, python_imports, run_client_script, set_flag, small_server_args, TestServer,
};

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
    run_client_script(&server, "openai_client.py", "smollm2");
}
