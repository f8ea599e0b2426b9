//! The emulator built a second time with AddressSanitizer and UBSan
//! (`libpagoda_emu_sanitized.so`, see build.rs). A process started with
//! `PAGODA_EMU_SANITIZED=1` and the ASan runtime preloaded (the Rust test
//! binary itself is not instrumented, so the runtime must come first)
//! launches every kernel through that library: a kernel that reads or
//! writes past a host buffer, or does undefined arithmetic (a shift past
//! the width, a signed overflow, a misaligned load), aborts the process
//! with the sanitizer's report. `kernels/tests/emu_kernels.rs` reruns its
//! kernel checks that way (`kernels_under_asan_and_ubsan`).

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use super::{EmuError, EmuLaunch};

/// The variable that selects the sanitized build for a process.
pub const ENV: &str = "PAGODA_EMU_SANITIZED";

/// `pagoda_emu_launch`'s signature (runtime.cpp), in either build.
pub(super) type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    *const EmuLaunch,
    *const c_void,
    usize,
    *mut c_char,
    usize,
    *mut u64,
) -> i32;

/// Where build.rs put the sanitized library, and the ASan runtime a process
/// must preload to use it. `None` when the compiler had no sanitizers.
#[derive(Debug, Clone, Copy)]
pub struct SanitizedBuild {
    pub library: &'static str,
    pub asan_runtime: &'static str,
}

pub fn sanitized_build() -> Option<SanitizedBuild> {
    Some(SanitizedBuild {
        library: option_env!("PAGODA_EMU_SANITIZED_LIB")?,
        asan_runtime: option_env!("PAGODA_EMU_ASAN_RUNTIME")?,
    })
}

/// Whether this process asked for the sanitized build.
pub fn requested() -> bool {
    std::env::var(ENV).as_deref() == Ok("1")
}

/// The sanitized library's launch entry, loaded once per process.
pub(super) fn launch_fn() -> Result<LaunchFn, EmuError> {
    static ENTRY: OnceLock<Result<LaunchFn, String>> = OnceLock::new();
    ENTRY.get_or_init(load).clone().map_err(EmuError)
}

fn load() -> Result<LaunchFn, String> {
    let build = sanitized_build().ok_or_else(|| {
        format!("{ENV}=1 but this build has no sanitized emulator (see build.rs)")
    })?;
    // SAFETY: the library is ours (build.rs), with no initializers beyond
    // kernel registration; it is never unloaded, so the symbol stays valid.
    unsafe {
        let lib = libloading::Library::new(build.library)
            .map_err(|e| format!("loading {}: {e}", build.library))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        let f = lib
            .get::<LaunchFn>(b"pagoda_emu_launch\0")
            .map_err(|e| format!("{}: {e}", build.library))?;
        Ok(*f)
    }
}
