//! What a device reports about itself, and the error for a kernel unit it
//! did not compile: shared by the GPU and the emulated device, so neither
//! file needs the other's.

use super::CudaError;

/// What the device reports, for logs and /metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub arch: String,
    pub num_sms: usize,
    pub total_memory: usize,
    /// Largest dynamic shared memory a CTA may opt in to.
    pub max_smem_optin: usize,
    pub nvrtc_version: (i32, i32),
}

/// A unit that was not compiled for this device.
pub(crate) fn missing_unit(unit: &str) -> CudaError {
    CudaError::invalid(
        "kernel lookup",
        format!("module {unit} was not compiled (head size not requested?)"),
    )
}
