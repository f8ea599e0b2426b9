//! The one error type of the CUDA backend: every failure is a value, never a
//! panic (cudarc panics when a library is missing, so presence is checked
//! before cudarc is asked to load anything).

use cudarc::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver: libcuda could not be loaded (is the NVIDIA driver installed?)")]
    NoDriver,
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error(
        "{library} not found (searched the loader path and {searched}); set LD_LIBRARY_PATH or {env} to its folder"
    )]
    LibraryNotFound {
        library: &'static str,
        env: &'static str,
        searched: String,
    },
    #[error("the NVIDIA driver supports CUDA {}.{}; Pagoda needs a driver for CUDA {}.{} or newer", .found / 1000, .found % 1000 / 10, .needed / 1000, .needed % 1000 / 10)]
    DriverTooOld { found: i32, needed: i32 },
    #[error("GPU compute capability {major}.{minor} is not supported: Pagoda's CUDA kernels need 8.0 (Ampere) or newer")]
    UnsupportedArch { major: i32, minor: i32 },
    /// The driver's own error is the source (the chain says what failed).
    #[error("CUDA driver error")]
    Driver(#[from] DriverError),
    #[error("NVRTC failed on {unit}: {message}")]
    Compile { unit: String, message: String },
    #[error("cuBLAS error: {0}")]
    Cublas(String),
    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },
    /// A launch the CPU emulator refused (the emulated device).
    #[cfg(feature = "emu")]
    #[error(transparent)]
    Emulator(#[from] super::emu::EmuError),
}

impl CudaError {
    pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        CudaError::InvalidArgument {
            op,
            message: message.into(),
        }
    }
}

/// Returns `InvalidArgument` for `op` unless `cond` holds.
pub(crate) fn ensure(
    cond: bool,
    op: &'static str,
    message: impl FnOnce() -> String,
) -> Result<(), CudaError> {
    if cond {
        Ok(())
    } else {
        Err(CudaError::invalid(op, message()))
    }
}
