//! The emulated CUDA device (`--device cuda-emu`): the device operations of
//! [`CudaKernels`] over host memory. Buffers are 256-byte aligned host
//! allocations whose addresses are the kernels' device pointers; launches
//! run the `.cu` kernels on the CPU emulator (`emu::launch`) with the
//! launchers' own parameter structs and launch shapes; GEMMs round as
//! cuBLAS's `CUBLAS_COMPUTE_32F` does (16-bit inputs widened exactly, f32
//! accumulation, one rounding to the output type); graph capture records
//! launches and GEMMs and replay runs them in order; memory info reports a
//! configured total less the live allocations.
//!
//! A test device: every kernel runs one CUDA thread at a time, thousands of
//! times slower than a GPU. What it proves: ARCHITECTURE.md, "CUDA kernels
//! on the emulator".

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::DeviceRepr;

use super::buffer::{DeviceBuffer, HostAlloc};
use super::device_info::{missing_unit, DeviceInfo};
use super::emu::{self, ThreadOrder};
use super::launch::LaunchShape;
use super::params::KernelParams;
use super::sources::compile_units;
use super::{CudaDType, CudaError, Half16};

/// One recorded operation of a graph.
pub(crate) type EmuOp = Box<dyn Fn() -> Result<(), CudaError> + Send + Sync>;

/// How the emulated device presents itself.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// Bytes `mem_get_info` reports as the device's total (the engine sizes
    /// the KV cache from it, as on a GPU).
    pub total_memory: usize,
    /// Multiprocessors the launch plans assume (the decode split depends on
    /// it): an H100's by default.
    pub num_sms: usize,
    /// Thread order of every launch.
    pub order: ThreadOrder,
    /// Head sizes whose attention units the device "compiled" (empty: all),
    /// so a missing unit fails as on a GPU.
    pub head_dims: Vec<usize>,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            total_memory: 2 << 30,
            num_sms: 132,
            order: ThreadOrder::RoundRobin,
            head_dims: Vec::new(),
        }
    }
}

/// The emulated device's state.
pub(crate) struct EmuDevice {
    order: ThreadOrder,
    total_memory: usize,
    /// Bytes of live allocations.
    meter: Arc<AtomicUsize>,
    /// The operations recorded since `begin_capture`, while capturing.
    capture: Mutex<Option<Vec<EmuOp>>>,
    units: HashSet<String>,
}

impl EmuDevice {
    /// The device `config` describes, and what it reports.
    pub(crate) fn new(config: EmuConfig) -> (Self, DeviceInfo) {
        let info = DeviceInfo {
            ordinal: 0,
            name: "emulated on the CPU".into(),
            compute_capability: (9, 0),
            arch: "sm_90".into(),
            num_sms: config.num_sms,
            total_memory: config.total_memory,
            max_smem_optin: 227 * 1024,
            nvrtc_version: (0, 0),
        };
        let dev = EmuDevice {
            order: config.order,
            total_memory: config.total_memory,
            meter: Arc::new(AtomicUsize::new(0)),
            capture: Mutex::new(None),
            units: compile_units(&config.head_dims)
                .into_iter()
                .map(|u| u.name)
                .collect(),
        };
        (dev, info)
    }

    fn capturing(&self) -> bool {
        self.capture.lock().map(|c| c.is_some()).unwrap_or(false)
    }

    /// What a GPU refuses during a thread-local capture, refused here too.
    fn refuse_while_capturing(&self, what: &str) -> Result<(), CudaError> {
        if self.capturing() {
            return Err(CudaError::invalid(
                "graph capture",
                format!("{what} while a graph is being captured"),
            ));
        }
        Ok(())
    }

    /// Runs `op`, or records it while capturing.
    pub(crate) fn record_or_run(&self, op: EmuOp) -> Result<(), CudaError> {
        {
            let mut c = self
                .capture
                .lock()
                .map_err(|_| CudaError::invalid("emulated device", "poisoned capture state"))?;
            if let Some(ops) = c.as_mut() {
                ops.push(op);
                return Ok(());
            }
        }
        op()
    }

    pub(crate) fn begin_capture(&self) -> Result<(), CudaError> {
        let mut c = self
            .capture
            .lock()
            .map_err(|_| CudaError::invalid("emulated device", "poisoned capture state"))?;
        if c.is_some() {
            return Err(CudaError::invalid(
                "graph capture",
                "a capture is already under way",
            ));
        }
        *c = Some(Vec::new());
        Ok(())
    }

    pub(crate) fn end_capture(&self) -> Result<Vec<EmuOp>, CudaError> {
        let ops = self
            .capture
            .lock()
            .map_err(|_| CudaError::invalid("emulated device", "poisoned capture state"))?
            .take();
        match ops {
            Some(ops) if !ops.is_empty() => Ok(ops),
            Some(_) => Err(CudaError::invalid("graph capture", "nothing was captured")),
            None => Err(CudaError::invalid("graph capture", "no capture under way")),
        }
    }

    pub(crate) fn mem_get_info(&self) -> (usize, usize) {
        let used = self.meter.load(Ordering::Relaxed);
        (self.total_memory.saturating_sub(used), self.total_memory)
    }

    /// Zeroed memory (a `T` not valid as zero bits is overwritten by the
    /// caller before use: `upload`).
    pub(crate) fn alloc_zeros<T: DeviceRepr>(
        &self,
        len: usize,
    ) -> Result<DeviceBuffer<T>, CudaError> {
        self.refuse_while_capturing("an allocation")?;
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        let (free, _) = self.mem_get_info();
        if bytes > free {
            return Err(CudaError::invalid(
                "alloc",
                format!("out of memory: {bytes} B asked, {free} B free on the emulated device"),
            ));
        }
        HostAlloc::zeroed(len, &self.meter)
            .map(DeviceBuffer::from_host)
            .ok_or_else(|| {
                CudaError::invalid("alloc", format!("host allocation of {bytes} B failed"))
            })
    }

    /// # Safety
    /// `dst` addresses `src.len()` writable elements of this device.
    pub(crate) unsafe fn copy_htod<T>(&self, src: &[T], dst: u64) -> Result<(), CudaError> {
        self.refuse_while_capturing("a copy to the device")?;
        // SAFETY: the caller's contract; host memory distinct from `src`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut T, src.len()) };
        Ok(())
    }

    /// # Safety
    /// `src` addresses `dst.len()` readable elements of this device.
    pub(crate) unsafe fn copy_dtoh<T>(&self, src: u64, dst: &mut [T]) -> Result<(), CudaError> {
        self.refuse_while_capturing("a copy to the host")?;
        // SAFETY: the caller's contract; host memory distinct from `dst`.
        unsafe { std::ptr::copy_nonoverlapping(src as *const T, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// The kernel of `unit` named `name`, when the unit was "compiled".
    pub(crate) fn function(&self, unit: &str, name: &str) -> Result<String, CudaError> {
        if !self.units.contains(unit) {
            return Err(missing_unit(unit));
        }
        Ok(name.to_string())
    }

    /// Launches (or records) kernel `name` with `params`.
    pub(crate) fn launch<P: KernelParams>(
        &self,
        name: &str,
        shape: &LaunchShape,
        params: &P,
    ) -> Result<(), CudaError> {
        let (name, shape, params, order) = (name.to_string(), *shape, *params, self.order);
        self.record_or_run(Box::new(move || {
            // SAFETY: the launcher validated every length the kernel reads
            // and writes; the addresses are live allocations of this device
            // (for a recorded launch: as long as the graph is replayed, the
            // contract of a CUDA graph).
            unsafe { emu::launch(&name, &shape, order, &params) }?;
            Ok(())
        }))
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` as cuBLAS computes it with
/// `CUBLAS_COMPUTE_32F`: 16-bit inputs widened (exactly) to f32, f32
/// accumulation, one rounding to `O`. The summation order differs from
/// cuBLAS's, so results agree to f32 rounding, not bit for bit.
///
/// # Safety
/// `w`, `x`, `y` address `n·k`, `m·k` and `m·n` elements of their types,
/// live whenever the op runs, `y` overlapping neither input.
pub(crate) unsafe fn gemm_op<T: Half16, O: CudaDType>(
    w: u64,
    x: u64,
    y: u64,
    m: usize,
    k: usize,
    n: usize,
) -> EmuOp {
    Box::new(move || {
        let widen = |addr: u64, len: usize| -> Vec<f32> {
            // SAFETY: the contract of `gemm_op`.
            let s = unsafe { std::slice::from_raw_parts(addr as *const T, len) };
            s.iter().map(|v| v.to_f32()).collect()
        };
        let (xf, wf) = (widen(x, m * k), widen(w, n * k));
        let mut yf = vec![0f32; m * n];
        crate::cpu::matmul_transb(&xf, &wf, &mut yf, m, k, n);
        // SAFETY: the contract of `gemm_op`.
        let out = unsafe { std::slice::from_raw_parts_mut(y as *mut O, m * n) };
        for (o, v) in out.iter_mut().zip(yf) {
            *o = O::from_f32(v);
        }
        Ok(())
    })
}
