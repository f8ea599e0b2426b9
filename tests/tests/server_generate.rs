//! End-to-end: `pagoda generate` (offline) with SmolLM2: the chat about
//! France answers Paris, `--json` lines have the documented fields and come
//! in command-line order (one per sample), `--logprobs K` gives K pairs per
//! token, highest first; bad flags exit 1 with a message.

mod server_common;

use std::process::Command;

use serde_json::Value;
use server_common::{model_or_skip, pagoda_bin};

fn generate(args: &[&str]) -> (bool, String, String) {
    let model = server_common::smollm2_gguf().unwrap();
    let out = Command::new(pagoda_bin())
        .arg("generate")
        .arg("--model")
        .arg(&model)
        .args([
            "--device",
            "cpu",
            "--max-model-len",
            "1024",
            "--kv-cache-memory",
            "256MiB",
            // HF transformers' answers ("Paris"), as `small_server_args`.
            "--cpu-matmul",
            "exact",
        ])
        .args(args)
        .output()
        .expect("running pagoda generate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn generate_offline() {
    if model_or_skip("generate_offline").is_none() {
        return;
    }
    let (ok, stdout, stderr) = generate(&[
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--prompt-ids",
        "1,504,3458",
        "--prompt",
        "Hello",
        "--max-tokens",
        "16",
        "--logprobs",
        "3",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let paris = &lines[0];
    assert!(paris["text"].as_str().unwrap().contains("Paris"), "{paris}");
    assert_eq!(
        lines[1]["prompt_token_ids"],
        serde_json::json!([1, 504, 3458]),
        "prompts keep their command-line order"
    );
    for line in &lines {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for k in [
            "prompt_token_ids",
            "output_token_ids",
            "text",
            "finish_reason",
            "logprobs",
        ] {
            assert!(keys.contains(&k), "{k} missing in {line}");
        }
        let output = line["output_token_ids"].as_array().unwrap();
        assert!(!output.is_empty() && output.len() <= 16);
        let reason = line["finish_reason"].as_str().unwrap();
        assert!(
            reason == "stop" || (reason == "length" && output.len() == 16),
            "{line}"
        );
        let logprobs = line["logprobs"].as_array().unwrap();
        assert_eq!(logprobs.len(), output.len());
        for (pos, top) in logprobs.iter().enumerate() {
            let top = top.as_array().unwrap();
            assert_eq!(top.len(), 3);
            let values: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
            assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
            // Greedy by default: the chosen token is the most likely.
            assert_eq!(top[0][0], output[pos]);
        }
    }

    // n samples: one line each; without --logprobs the field is null.
    let (ok, stdout, stderr) = generate(&[
        "--prompt",
        "Once upon a time",
        "--n",
        "2",
        "--temperature",
        "0.8",
        "--seed",
        "5",
        "--max-tokens",
        "4",
        "--ignore-eos",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["output_token_ids"].as_array().unwrap().len(), 4);
        assert_eq!(line["finish_reason"], "length");
        assert!(line["logprobs"].is_null());
    }

    // Readable text without --json.
    let (ok, stdout, stderr) =
        generate(&["--prompt", "The capital of France is", "--max-tokens", "4"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("=== Prompt 1") && stdout.contains("The capital of France is"),
        "{stdout}"
    );

    // Bad input: a clear error and exit status 1.
    let (ok, _, stderr) = generate(&["--prompt-ids", "1,99999999"]);
    assert!(!ok);
    assert!(stderr.contains("out of vocabulary"), "{stderr}");
    let (ok, _, stderr) = generate(&[]);
    assert!(!ok);
    assert!(stderr.contains("--prompt"), "{stderr}");
    let (ok, _, stderr) = generate(&["--prompt", "x", "--temperature=-1"]);
    assert!(!ok);
    assert!(stderr.contains("temperature"), "{stderr}");
}
