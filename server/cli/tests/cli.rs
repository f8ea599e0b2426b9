//! The `pagoda` binary itself. Having an integration test also makes `cargo
//! test --workspace` build `target/<profile>/pagoda`, which the end-to-end
//! tests in tests/ run (see tests/tests/server_common/mod.rs).

use std::process::Command;

fn pagoda(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .args(args)
        .output()
        .expect("running pagoda");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn help_lists_the_commands() {
    let (ok, text) = pagoda(&["--help"]);
    assert!(ok, "{text}");
    for cmd in ["serve", "generate", "bench"] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
}

#[test]
fn help_says_how_sizes_are_read() {
    for cmd in [&["serve", "--help"][..], &["bench", "throughput", "--help"]] {
        let (ok, text) = pagoda(cmd);
        assert!(ok, "{text}");
        assert!(text.contains("512M = 512MB = 512MiB"), "{cmd:?}:\n{text}");
    }
}

#[test]
fn a_bad_flag_is_refused() {
    let (ok, text) = pagoda(&["serve", "--kv-cache-memory", "lots"]);
    assert!(!ok);
    assert!(text.contains("--kv-cache-memory"), "{text}");
}
