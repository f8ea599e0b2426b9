//! Compiles every CUDA compile unit with NVRTC for sm_90 (and sm_80, the
//! oldest supported architecture) — no GPU needed, only libnvrtc. Checks
//! that each kernel the host wrappers launch is in the CUBIN and that
//! ptxas spills (almost) nothing.
//!
//! Without libnvrtc the test says "skipped" on stderr and passes, unless
//! PAGODA_REQUIRE_NVRTC=1 (CI sets it), where it fails. libnvrtc is found on
//! the loader path, or through PAGODA_NVRTC_LIB / CUDA_INCLUDE_DIR (pip
//! wheels: nvidia/cuda_nvrtc/lib next to nvidia/cuda_runtime/include),
//! CUDA_HOME or /usr/local/cuda.
#![cfg(feature = "cuda")]

use std::io::Write;

use pagoda_kernels::cuda::libraries::{ensure_loaded, CudaLibrary};
use pagoda_kernels::cuda::nvrtc::{compile_unit, nvrtc_version};
use pagoda_kernels::cuda::sources::{compile_units, kernel_names};

/// Written to the process's stderr directly: the test harness captures
/// `eprintln!` of passing tests, and a skip must be seen.
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn nvrtc_or_skip() -> bool {
    match ensure_loaded(CudaLibrary::Nvrtc) {
        Ok(found) => {
            say(&format!("libnvrtc: {found:?}"));
            true
        }
        Err(e) => {
            if std::env::var("PAGODA_REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("PAGODA_REQUIRE_NVRTC=1 but NVRTC is unusable: {e}");
            }
            say(&format!("skipped: libnvrtc not found ({e})"));
            false
        }
    }
}

/// Spill bytes reported by ptxas per kernel: (kernel, stores + loads).
fn spills(log: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = rest.trim().to_string();
        }
        if line.contains("spill stores") {
            let nums: Vec<usize> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            // "N bytes stack frame, S bytes spill stores, L bytes spill loads"
            if nums.len() >= 3 {
                out.push((current.clone(), nums[1] + nums[2]));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.windows(n.len()).any(|w| w == n)
}

#[test]
fn every_unit_compiles_for_sm90_and_sm80() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc_version().expect("nvrtcVersion");
    say(&format!("NVRTC {major}.{minor}"));
    let units = compile_units(&[]);
    for arch in ["sm_90", "sm_80"] {
        for unit in &units {
            let verbose = arch == "sm_90";
            let c = compile_unit(unit, arch, verbose).unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert!(
                c.cubin.len() > 1000,
                "{arch} {}: CUBIN of {} bytes",
                unit.name,
                c.cubin.len()
            );
            assert_eq!(
                &c.cubin[..4],
                b"\x7fELF",
                "{arch} {}: not an ELF CUBIN",
                unit.name
            );
            for k in kernel_names(&unit.name) {
                assert!(
                    contains(&c.cubin, &k),
                    "{arch} {}: kernel {k} missing",
                    unit.name
                );
            }
            if verbose {
                let s = spills(&c.log);
                assert!(!s.is_empty(), "{}: no ptxas report in the log", unit.name);
                for (k, bytes) in s {
                    assert!(bytes <= 64, "{k} spills {bytes} bytes");
                }
                let warnings: Vec<&str> = c.log.lines().filter(|l| l.contains("warning")).collect();
                assert!(warnings.is_empty(), "{}: {warnings:?}", unit.name);
            }
        }
    }
}

#[test]
fn a_compile_error_is_an_error_with_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let mut unit = compile_units(&[64]).remove(0);
    unit.defines.push(("int".into(), "float float".into()));
    let e = compile_unit(&unit, "sm_90", false).unwrap_err().to_string();
    assert!(
        e.contains("attention_prefill_d64") && e.contains("NVRTC_ERROR_COMPILATION"),
        "{e}"
    );
}
