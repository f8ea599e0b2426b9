//! The CUDA kernels executed on the CPU: the `.cu` sources compiled by g++
//! with `-DPAGODA_EMU` (`runtime.hpp` supplies CUDA's built-ins,
//! `runtime.cpp` runs one fiber per CUDA thread), launched by name with the
//! same parameter structs and launch shapes as on a GPU.
//!
//! What it proves and what still needs a GPU: ARCHITECTURE.md, "CUDA
//! kernels on the emulator".

use std::ffi::{c_char, c_void, CStr, CString};

use super::launch::LaunchShape;
use super::params::{FieldLayout, KernelParams};

pub mod sanitized;

/// The order in which a block's threads run between the points where they
/// wait. A kernel that is right does not depend on it; a missing barrier
/// usually shows under an order other than round robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadOrder {
    /// Every runnable thread in turn, in thread order.
    RoundRobin,
    /// Always the lowest-numbered runnable thread: warp 0 runs far ahead.
    LowestFirst,
    /// Always the highest-numbered one: the last warp runs ahead.
    HighestFirst,
    /// A seeded random pick at every switch.
    Random(u64),
}

impl ThreadOrder {
    fn code(self) -> (u32, u64) {
        match self {
            ThreadOrder::RoundRobin => (0, 0),
            ThreadOrder::LowestFirst => (1, 0),
            ThreadOrder::HighestFirst => (2, 0),
            ThreadOrder::Random(seed) => (3, seed),
        }
    }
}

/// A launch the emulator refused or a kernel misuse it saw (message names
/// the kernel and what went wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("emulated launch: {0}")]
pub struct EmuError(pub String);

/// Mirrors `PagodaEmuLaunch` in runtime.cpp.
#[repr(C)]
struct EmuLaunch {
    grid: [u32; 3],
    block: [u32; 3],
    dyn_smem_bytes: u64,
    order: u32,
    reserved: u32,
    seed: u64,
    stack_bytes: u64,
}

/// Mirrors `PagodaEmuField` in layouts.cpp.
#[repr(C)]
struct EmuField {
    params: *const c_char,
    field: *const c_char,
    offset: usize,
    size: usize,
    params_size: usize,
}

extern "C" {
    fn pagoda_emu_launch(
        kernel: *const c_char,
        launch: *const EmuLaunch,
        params: *const c_void,
        params_size: usize,
        err: *mut c_char,
        err_len: usize,
        switches: *mut u64,
    ) -> i32;
    fn pagoda_emu_param_fields(n: *mut usize) -> *const EmuField;
}

/// Runs `kernel` over `shape` with `params`; returns the number of thread
/// switches (a cost measure).
///
/// # Safety
/// Every pointer in `params` must be valid, in host memory, for what the
/// kernel reads and writes with these sizes (the same contract as a GPU
/// launch, with host addresses for device ones).
pub unsafe fn launch<P: KernelParams>(
    kernel: &str,
    shape: &LaunchShape,
    order: ThreadOrder,
    params: &P,
) -> Result<u64, EmuError> {
    let name = CString::new(kernel).map_err(|_| EmuError(format!("bad kernel name {kernel:?}")))?;
    let (order, seed) = order.code();
    let l = EmuLaunch {
        grid: [shape.grid.0, shape.grid.1, shape.grid.2],
        block: [shape.block, 1, 1],
        dyn_smem_bytes: shape.smem_bytes as u64,
        order,
        reserved: 0,
        seed,
        stack_bytes: 0,
    };
    if shape.grid.0 == 0 || shape.grid.1 == 0 || shape.grid.2 == 0 {
        return Ok(0); // nothing to run, as a GPU launch of an empty grid would be refused before
    }
    let entry: sanitized::LaunchFn = if sanitized::requested() {
        sanitized::launch_fn()?
    } else {
        pagoda_emu_launch
    };
    let mut err = vec![0 as c_char; 2048];
    let mut switches = 0u64;
    // SAFETY: the strings and structs outlive the call; the caller vouches
    // for the pointers inside `params`.
    let rc = unsafe {
        entry(
            name.as_ptr(),
            &l,
            params as *const P as *const c_void,
            std::mem::size_of::<P>(),
            err.as_mut_ptr(),
            err.len(),
            &mut switches,
        )
    };
    if rc == 0 {
        Ok(switches)
    } else {
        // SAFETY: the runtime wrote a NUL-terminated message into `err`.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
        Err(EmuError(msg.to_string_lossy().into_owned()))
    }
}

/// Sizes and field layouts of `common.cuh`'s parameter structs as the C++
/// compiler lays them out: (struct, size, fields).
pub fn cuda_param_layouts() -> Vec<(String, usize, Vec<FieldLayout>)> {
    let mut n = 0usize;
    // SAFETY: returns a static table of `n` entries with static strings.
    let table = unsafe { std::slice::from_raw_parts(pagoda_emu_param_fields(&mut n), n) };
    let mut out: Vec<(String, usize, Vec<FieldLayout>)> = Vec::new();
    for f in table {
        // SAFETY: static NUL-terminated names.
        let (s, field) = unsafe { (CStr::from_ptr(f.params), CStr::from_ptr(f.field)) };
        let s = s.to_string_lossy().into_owned();
        let name: &'static str = Box::leak(field.to_string_lossy().into_owned().into_boxed_str());
        let layout = FieldLayout {
            name,
            offset: f.offset,
            size: f.size,
        };
        match out.last_mut() {
            Some(last) if last.0 == s => last.2.push(layout),
            _ => out.push((s, f.params_size, vec![layout])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::params::all_layouts;
    use super::*;

    /// The argument ABI: every Rust struct is the CUDA struct, field by field.
    #[test]
    fn params_layout_matches_common_cuh() {
        let rust = all_layouts();
        let cuda = cuda_param_layouts();
        let names = |v: Vec<&str>| v.join(", ");
        assert_eq!(
            names(rust.iter().map(|r| r.0).collect()),
            names(cuda.iter().map(|c| c.0.as_str()).collect()),
            "the same structs in the same order"
        );
        for ((name, size, fields), (_, csize, cfields)) in rust.iter().zip(&cuda) {
            assert_eq!(fields, cfields, "{name}: fields");
            assert_eq!(size, csize, "{name}: size");
        }
    }
}

/// The emulator's diagnostics, on the deliberately wrong kernels of
/// selftest.cpp: each mistake is an error naming it, never a crash.
#[cfg(test)]
mod diagnostics {
    use super::*;

    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct SelftestParams {
        out: u64,
        mode: i32,
    }
    // SAFETY: repr(C) integers, as selftest.cpp's struct.
    unsafe impl cudarc::driver::DeviceRepr for SelftestParams {}
    impl KernelParams for SelftestParams {
        const NAME: &'static str = "SelftestParams";
        fn fields() -> Vec<FieldLayout> {
            Vec::new()
        }
    }

    fn run_mode(mode: i32, threads: u32, order: ThreadOrder) -> Result<Vec<f32>, EmuError> {
        let mut out = vec![f32::NAN; 1024];
        let p = SelftestParams {
            out: out.as_mut_ptr() as u64,
            mode,
        };
        let shape = LaunchShape {
            grid: (2, 1, 1),
            block: threads,
            smem_bytes: 1024,
        };
        // SAFETY: `out` holds a float for every thread.
        unsafe { launch("emu_selftest", &shape, order, &p) }?;
        Ok(out)
    }

    fn error_of(mode: i32, threads: u32) -> String {
        match run_mode(mode, threads, ThreadOrder::RoundRobin) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("mode {mode}: the misuse went unnoticed"),
        }
    }

    #[test]
    fn lanes_at_different_collectives() {
        let e = error_of(0, 64);
        assert!(
            e.contains("different collectives") && e.contains("vote.ballot"),
            "{e}"
        );
    }

    #[test]
    fn a_full_mask_collective_in_a_partial_warp() {
        let e = error_of(1, 48);
        assert!(e.contains("16 live lanes"), "{e}");
        let e = error_of(6, 64);
        assert!(
            e.contains("live lanes") || e.contains("exited while"),
            "{e}"
        );
    }

    #[test]
    fn deadlock_and_divergent_barriers() {
        let e = error_of(2, 64);
        assert!(
            e.contains("deadlock") && e.contains("32 threads wait at __syncthreads"),
            "{e}"
        );
        let e = error_of(5, 64);
        assert!(e.contains("different barriers"), "{e}");
    }

    #[test]
    fn bad_ldmatrix_addresses() {
        let e = error_of(3, 32);
        assert!(e.contains("not 16-byte aligned"), "{e}");
        let e = error_of(4, 32);
        assert!(e.contains("outside the 1024 bytes"), "{e}");
    }

    #[test]
    fn launch_contract_violations_are_errors() {
        let mut out = [0f32; 4];
        let p = SelftestParams {
            out: out.as_mut_ptr() as u64,
            mode: 7,
        };
        let shape = |block| LaunchShape {
            grid: (1, 1, 1),
            block,
            smem_bytes: 0,
        };
        // SAFETY: refused before any thread runs.
        let e = unsafe { launch("no_such_kernel", &shape(32), ThreadOrder::RoundRobin, &p) };
        assert!(e.unwrap_err().0.contains("no such kernel"));
        // SAFETY: as above.
        let e = unsafe { launch("emu_selftest", &shape(2048), ThreadOrder::RoundRobin, &p) };
        assert!(e.unwrap_err().0.contains("2048 threads"));
        // SAFETY: refused before any thread runs (a struct of another kernel).
        let e = unsafe {
            launch(
                "emu_selftest",
                &shape(32),
                ThreadOrder::RoundRobin,
                &crate::cuda::params::AddBiasParams::default(),
            )
        };
        assert!(e.unwrap_err().0.contains("parameter struct of 24 bytes"));
        // A kernel's __launch_bounds__ is enforced.
        let e = unsafe {
            // SAFETY: refused before any thread runs.
            launch(
                "paged_attention_prefill_bf16_d64",
                &shape(256),
                ThreadOrder::RoundRobin,
                &crate::cuda::params::AttentionParams::default(),
            )
        };
        assert!(e.unwrap_err().0.contains("__launch_bounds__(128)"));
    }

    /// A barrier-protected reduction is right in every order; without the
    /// barrier, round robin (thread 0 reads before the others write) shows
    /// the race while highest-first happens to hide it: why every kernel
    /// test runs under two orders.
    #[test]
    fn thread_orders_expose_a_missing_barrier() {
        let want = (1..=128).sum::<i32>() as f32;
        let all = [
            ThreadOrder::RoundRobin,
            ThreadOrder::LowestFirst,
            ThreadOrder::HighestFirst,
            ThreadOrder::Random(7),
        ];
        for order in all {
            assert_eq!(run_mode(7, 128, order).unwrap()[0], want, "{order:?}");
        }
        let racy: Vec<bool> = all
            .iter()
            .map(|&o| run_mode(8, 128, o).unwrap()[0] != want)
            .collect();
        assert!(racy[0], "round robin shows the race");
        assert!(!racy[2], "highest-first hides it");
    }
}

/// Inline PTX outside `common.cuh`'s wrappers has no emulation: the
/// emulator build refuses to compile it (rather than run something else).
#[cfg(test)]
mod unknown_ptx {
    use std::process::Command;

    fn compile(body: &str) -> (bool, String) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cuda/emu");
        let file = std::env::temp_dir().join(format!("pagoda-emu-ptx-{}.cpp", std::process::id()));
        let src = format!("#include \"runtime.hpp\"\n#include \"../cu/common.cuh\"\n{body}\n");
        std::fs::write(&file, src).unwrap();
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(cxx)
            .args(["-std=c++17", "-fsyntax-only", "-DPAGODA_EMU", "-I", dir])
            .arg(&file)
            .output()
            .expect("the C++ compiler that built the emulator");
        let _ = std::fs::remove_file(&file);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn inline_ptx_outside_the_wrappers_is_a_compile_error() {
        let wrapped = "__device__ float f(float x) { return ptx_ex2_approx_ftz(x); }";
        let (ok, log) = compile(wrapped);
        assert!(ok, "the wrapped form compiles: {log}");
        let raw = "__device__ float f(float x) { float y; \
                   asm(\"sqrt.approx.f32 %0, %1;\" : \"=f\"(y) : \"f\"(x)); return y; }";
        let (ok, log) = compile(raw);
        assert!(!ok, "raw inline PTX compiled for the emulator");
        assert!(
            log.contains("PAGODA_EMU_ERROR_inline_PTX_outside_the_common_cuh_wrappers"),
            "{log}"
        );
    }
}
