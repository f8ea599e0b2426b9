//! The CUDA backend's kernels: `.cu` sources embedded with `include_str!`,
//! compiled by NVRTC for the GPU found when a device is opened, launched
//! through cudarc on one stream per device; GEMMs through cuBLAS. Every
//! kernel has a CPU twin in [`crate::cpu`], its reference.
//!
//! With the `emu` feature the same launchers also drive the emulated device
//! ([`CudaKernels::emulated`]): host memory and the CPU emulator behind the
//! one device interface (`device.rs`, `gemm.rs`, `graphs.rs`).
//!
//! Nothing here panics when there is no GPU: [`CudaKernels::new`] checks the
//! driver, a device, NVRTC and cuBLAS first and returns a [`CudaError`].
//! The host-side rules (launch shapes, split-K, graph buckets, KV-cache
//! sizing, library search, the sampler's select) are plain functions with
//! unit tests that need no GPU.

pub mod activation;
pub mod attention;
mod buffer;
pub mod cache;
mod device;
mod device_info;
mod dtype;
#[cfg(feature = "emu")]
pub mod emu;
#[cfg(feature = "emu")]
mod emulated;
mod error;
pub mod gemm;
pub mod graphs;
pub mod kernel_cache;
pub mod launch;
pub mod layout;
pub mod libraries;
pub mod memory;
pub mod moe;
pub mod norm;
pub mod nvrtc;
pub mod params;
pub mod rotary;
pub mod sampling;
pub mod sampling_reference;
pub mod sources;

pub use attention::{AttentionMetadata, AttentionShape, AttentionWorkspace};
pub use device::{device_count, CudaKernels, DeviceInfo};
pub use dtype::{kernel_name, CudaDType, Half16};
pub use error::CudaError;
pub use graphs::DeviceGraph;
pub use norm::NormStyle;
pub use rotary::CudaRope;
pub use sampling::{CsrRows, SamplingTensors};

pub use buffer::{DeviceBuffer, DeviceMem, DeviceMemMut, DeviceView, DeviceViewMut};
#[cfg(feature = "emu")]
pub use emulated::EmuConfig;

/// The element-type bounds of device buffers, so callers need not name cudarc.
pub use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// A size as a kernel's `int`, or an error naming the op.
pub(crate) fn to_i32(op: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::invalid(op, format!("{v} exceeds a 32-bit int")))
}
