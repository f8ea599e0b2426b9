//! One GPU: its context, the stream every kernel runs on, the cuBLAS handle,
//! and the module cache (one module per compile unit, compiled by NVRTC for
//! this GPU's architecture when the device is opened; candle-kernels' shape).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::buffer::{DeviceBuffer, DeviceMem, DeviceMemMut};
use super::device_info::missing_unit;
pub use super::device_info::DeviceInfo;
#[cfg(feature = "emu")]
use super::emulated::{EmuConfig, EmuDevice};
use super::error::ensure;
use super::kernel_cache::{compile_all_cached, KernelCache};
use super::launch::{LaunchShape, DEFAULT_SMEM_LIMIT};
use super::libraries::{driver_present, ensure_loaded, CudaLibrary};
use super::nvrtc::{arch_for, nvrtc_version};
use super::params::KernelParams;
use super::sources::{compile_units, HEAD_DIMS};
use super::CudaError;

/// The oldest driver accepted, as `cuDriverGetVersion` reports it (CUDA
/// 12.0: the first with everything the kernels and cudarc's calls use on
/// Hopper).
pub const MIN_DRIVER_VERSION: i32 = 12000;

/// The CUDA version the driver supports (`major * 1000 + minor * 10`).
pub fn driver_version() -> Result<i32, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    let mut v = 0;
    // SAFETY: libcuda is present; cuDriverGetVersion exists in every
    // driver and needs no cuInit.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok(v)
}

/// `Ok` when the driver is new enough.
pub fn check_driver_version(found: i32) -> Result<(), CudaError> {
    if found < MIN_DRIVER_VERSION {
        return Err(CudaError::DriverTooOld {
            found,
            needed: MIN_DRIVER_VERSION,
        });
    }
    Ok(())
}

/// Number of CUDA devices, or why there are none (never panics).
pub fn device_count() -> Result<usize, CudaError> {
    check_driver_version(driver_version()?)?;
    match CudaContext::device_count() {
        Ok(0) => Err(CudaError::NoDevice(
            "the driver reports no CUDA device".into(),
        )),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(CudaError::NoDevice(format!(
            "the driver failed to start: {e}"
        ))),
    }
}

/// The kernels of one device: a GPU through cudarc, or (feature `emu`) the
/// emulated device, whose memory is host memory and whose kernels run on
/// the CPU emulator. Every launcher, GEMM, copy and graph goes through the
/// few methods here and in `gemm.rs` / `graphs.rs` that tell them apart.
pub struct CudaKernels {
    device: Device,
    info: DeviceInfo,
}

/// The two implementations of the device operations.
pub(crate) enum Device {
    Cuda(CudaDevice),
    #[cfg(feature = "emu")]
    Emu(EmuDevice),
}

/// One GPU's context, stream, cuBLAS handle and compiled modules.
pub(crate) struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    /// cuBLAS's workspace, set explicitly so that a GEMM never allocates
    /// (an allocation inside CUDA graph capture fails the capture).
    _blas_workspace: CudaSlice<u8>,
    modules: HashMap<String, Arc<CudaModule>>,
    /// Loaded functions and the dynamic shared memory each may use.
    functions: RwLock<HashMap<String, (CudaFunction, usize)>>,
}

/// A loaded kernel: a CUDA function, or the emulator's kernel name.
#[derive(Clone)]
pub(crate) enum Kernel {
    Cuda(CudaFunction),
    #[cfg(feature = "emu")]
    Emu(String),
}

impl std::fmt::Debug for CudaKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernels")
            .field("info", &self.info)
            .field("emulated", &self.is_emulated())
            .finish()
    }
}

impl CudaKernels {
    /// Opens device `ordinal` with attention for every supported head size.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        Self::with_head_dims(ordinal, &HEAD_DIMS)
    }

    /// Opens device `ordinal`, compiling attention only for `head_dims`.
    /// Checks, in order and without panicking: the driver library, a device,
    /// NVRTC, cuBLAS, the compute capability (8.0+).
    pub fn with_head_dims(ordinal: usize, head_dims: &[usize]) -> Result<Self, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice(format!(
                "device {ordinal} requested, {count} present"
            )));
        }
        if let Some(d) = head_dims.iter().find(|d| !HEAD_DIMS.contains(d)) {
            return Err(CudaError::invalid(
                "CudaKernels",
                format!("head size {d} has no kernels (have {HEAD_DIMS:?})"),
            ));
        }
        ensure_loaded(CudaLibrary::Nvrtc)?;
        ensure_loaded(CudaLibrary::Cublas)?;
        let ctx = CudaContext::new(ordinal)?;
        // One stream carries all work (and graph capture), so cudarc's
        // cross-stream event tracking is not needed.
        // SAFETY: no other stream of this context touches our buffers.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability()?;
        if major < 8 {
            return Err(CudaError::UnsupportedArch { major, minor });
        }
        let attr = |a| ctx.attribute(a).map(|v| v.max(0) as usize);
        let info = DeviceInfo {
            ordinal,
            name: ctx.name()?,
            compute_capability: (major, minor),
            arch: arch_for(major, minor),
            num_sms: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            total_memory: ctx.total_mem()?,
            max_smem_optin: attr(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?,
            nvrtc_version: nvrtc_version()?,
        };
        let stream = ctx.new_stream()?;
        let units = compile_units(head_dims);
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4);
        // CUBINs of an earlier start on this GPU model come from the disk cache.
        let cache = KernelCache::from_env();
        let (compiled, _cached) = compile_all_cached(
            &units,
            &info.arch,
            info.nvrtc_version,
            threads,
            cache.as_ref(),
        )?;
        let mut modules = HashMap::new();
        for c in compiled {
            let module = ctx.load_module(Ptx::from_binary(c.cubin))?;
            modules.insert(c.name, module);
        }
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| CudaError::Cublas(format!("{e:?}")))?;
        let blas_workspace = set_blas_workspace(&blas, &stream)?;
        Ok(Self {
            device: Device::Cuda(CudaDevice {
                ctx,
                stream,
                blas,
                _blas_workspace: blas_workspace,
                modules,
                functions: RwLock::new(HashMap::new()),
            }),
            info,
        })
    }

    #[cfg(feature = "emu")]
    pub(crate) fn from_emulated(dev: EmuDevice, info: DeviceInfo) -> Self {
        Self {
            device: Device::Emu(dev),
            info,
        }
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Whether this is the emulated device (host memory, CPU emulator).
    pub fn is_emulated(&self) -> bool {
        !matches!(self.device, Device::Cuda(_))
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// `(free, total)` device memory in bytes (the emulated device: its
    /// configured total less its live allocations).
    pub fn mem_get_info(&self) -> Result<(usize, usize), CudaError> {
        match &self.device {
            Device::Cuda(d) => Ok(d.ctx.mem_get_info()?),
            #[cfg(feature = "emu")]
            Device::Emu(d) => Ok(d.mem_get_info()),
        }
    }

    /// Waits for all queued work (the emulated device runs each op when
    /// it is issued).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        match &self.device {
            Device::Cuda(d) => Ok(d.stream.synchronize()?),
            #[cfg(feature = "emu")]
            Device::Emu(_) => Ok(()),
        }
    }

    /// A zeroed buffer on this device.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<DeviceBuffer<T>, CudaError> {
        match &self.device {
            Device::Cuda(d) => Ok(DeviceBuffer::from_cuda(d.stream.alloc_zeros(len)?)),
            #[cfg(feature = "emu")]
            Device::Emu(d) => d.alloc_zeros(len),
        }
    }

    /// Copies host data to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<DeviceBuffer<T>, CudaError> {
        match &self.device {
            Device::Cuda(d) => Ok(DeviceBuffer::from_cuda(d.stream.clone_htod(data)?)),
            #[cfg(feature = "emu")]
            Device::Emu(d) => {
                let mut b = d.alloc_zeros(data.len())?;
                self.copy_htod(data, &mut b)?;
                Ok(b)
            }
        }
    }

    /// Copies device memory to a new host vector (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        data: &impl DeviceMem<T>,
    ) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::default(); data.len()];
        self.copy_dtoh(data, &mut out)?;
        Ok(out)
    }

    /// Copies `src` into the front of `dst`, in stream order (`src` may be
    /// reused when this returns).
    pub fn copy_htod<T: DeviceRepr>(
        &self,
        src: &[T],
        dst: &mut impl DeviceMemMut<T>,
    ) -> Result<(), CudaError> {
        ensure(src.len() <= dst.len(), "copy to device", || {
            format!("{} elements into {}", src.len(), dst.len())
        })?;
        if src.is_empty() {
            return Ok(());
        }
        let dst = dst.addr_mut();
        match &self.device {
            // SAFETY: `dst` holds `src.len()` elements of `T` on this
            // device; a copy from pageable memory returns once `src` is
            // staged.
            Device::Cuda(d) => Ok(unsafe {
                cudarc::driver::result::memcpy_htod_async(dst, src, d.stream.cu_stream())
            }?),
            #[cfg(feature = "emu")]
            // SAFETY: as above, in host memory.
            Device::Emu(d) => unsafe { d.copy_htod(src, dst) },
        }
    }

    /// Copies the first `dst.len()` elements of `src` to the host, after
    /// all queued work (waits).
    pub fn copy_dtoh<T: DeviceRepr>(
        &self,
        src: &impl DeviceMem<T>,
        dst: &mut [T],
    ) -> Result<(), CudaError> {
        ensure(dst.len() <= src.len(), "copy to host", || {
            format!("{} elements from {}", dst.len(), src.len())
        })?;
        if dst.is_empty() {
            return Ok(());
        }
        let src = src.addr();
        match &self.device {
            Device::Cuda(d) => {
                // SAFETY: `src` holds `dst.len()` elements of `T`; the
                // stream is synchronized before `dst` is read.
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(dst, src, d.stream.cu_stream())
                }?;
                Ok(d.stream.synchronize()?)
            }
            #[cfg(feature = "emu")]
            // SAFETY: as above, in host memory.
            Device::Emu(d) => unsafe { d.copy_dtoh(src, dst) },
        }
    }

    /// Launches `f` with its one parameter struct (recorded instead while
    /// a graph is being captured).
    pub(crate) fn launch_kernel<P: KernelParams>(
        &self,
        f: &Kernel,
        shape: &LaunchShape,
        params: &P,
    ) -> Result<(), CudaError> {
        match (&self.device, f) {
            (Device::Cuda(d), Kernel::Cuda(f)) => {
                let mut b = d.stream.launch_builder(f);
                b.arg(params);
                // SAFETY: the kernel takes exactly one `P` by value
                // (`KERNEL(name, P)` in its source; the layout test holds P
                // equal to the CUDA struct), and the caller validated every
                // length the kernel reads and writes.
                unsafe { b.launch(shape.config()) }?;
                Ok(())
            }
            #[cfg(feature = "emu")]
            (Device::Emu(d), Kernel::Emu(name)) => d.launch(name, shape, params),
            #[cfg(feature = "emu")]
            _ => Err(CudaError::invalid("launch", "a kernel of another device")),
        }
    }

    /// Kernel `name` of unit `unit`, with its dynamic shared memory limit
    /// raised to `smem_bytes` when that exceeds the default 48 KiB.
    pub(crate) fn function(
        &self,
        unit: &str,
        name: &str,
        smem_bytes: usize,
    ) -> Result<Kernel, CudaError> {
        if smem_bytes > DEFAULT_SMEM_LIMIT && smem_bytes > self.info.max_smem_optin {
            return Err(CudaError::invalid(
                "kernel lookup",
                format!(
                    "{name} needs {smem_bytes} B of shared memory, the GPU allows {}",
                    self.info.max_smem_optin
                ),
            ));
        }
        match &self.device {
            Device::Cuda(d) => d
                .function(unit, name, smem_bytes, self.info.max_smem_optin)
                .map(Kernel::Cuda),
            #[cfg(feature = "emu")]
            Device::Emu(d) => d.function(unit, name).map(Kernel::Emu),
        }
    }
}

impl CudaDevice {
    fn function(
        &self,
        unit: &str,
        name: &str,
        smem_bytes: usize,
        max_smem_optin: usize,
    ) -> Result<CudaFunction, CudaError> {
        let key = format!("{unit}/{name}");
        // A cached function whose opt-in limit already covers this launch.
        if let Some((f, limit)) = self
            .functions
            .read()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            if smem_bytes <= limit.max(DEFAULT_SMEM_LIMIT) {
                return Ok(f);
            }
        }
        let module = self.modules.get(unit).ok_or_else(|| missing_unit(unit))?;
        let f = module.load_function(name)?;
        // Opt in to the largest amount this kernel may need (one split-K
        // plan may need more than the last), so the limit is raised once.
        let mut limit = DEFAULT_SMEM_LIMIT;
        if smem_bytes > DEFAULT_SMEM_LIMIT {
            limit = max_smem_optin;
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                limit as i32,
            )?;
        }
        if let Ok(mut m) = self.functions.write() {
            m.insert(key, (f.clone(), limit));
        }
        Ok(f)
    }
}

/// Bytes of the cuBLAS workspace: NVIDIA recommends 32 MiB on Hopper.
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// Gives cuBLAS a fixed workspace on `stream`.
fn set_blas_workspace(
    blas: &CudaBlas,
    stream: &Arc<CudaStream>,
) -> Result<CudaSlice<u8>, CudaError> {
    let ws = stream.alloc_zeros::<u8>(BLAS_WORKSPACE_BYTES)?;
    let (ptr, _guard) = ws.device_ptr(stream);
    // SAFETY: the handle is live; `ws` outlives it (both owned by CudaKernels,
    // the handle declared first so it is destroyed first).
    let status = unsafe {
        cudarc::cublas::sys::cublasSetWorkspace_v2(
            *blas.handle(),
            ptr as *mut std::ffi::c_void,
            BLAS_WORKSPACE_BYTES,
        )
    };
    if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        return Err(CudaError::Cublas(format!("cublasSetWorkspace: {status:?}")));
    }
    drop(_guard);
    Ok(ws)
}

#[cfg(feature = "emu")]
impl CudaKernels {
    /// The emulated device with the defaults of [`EmuConfig`].
    pub fn emulated() -> Result<Self, CudaError> {
        Self::emulated_with(EmuConfig::default())
    }

    /// The emulated device as `config` describes it.
    pub fn emulated_with(config: EmuConfig) -> Result<Self, CudaError> {
        if let Some(d) = config.head_dims.iter().find(|d| !HEAD_DIMS.contains(d)) {
            return Err(CudaError::invalid(
                "CudaKernels",
                format!("head size {d} has no kernels (have {HEAD_DIMS:?})"),
            ));
        }
        let (dev, info) = EmuDevice::new(config);
        Ok(Self::from_emulated(dev, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_can_move_to_the_engine_thread_and_be_shared() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CudaKernels>();
    }

    #[test]
    fn old_drivers_are_refused_by_name() {
        let e = check_driver_version(11080).unwrap_err().to_string();
        assert!(
            e.contains("supports CUDA 11.8") && e.contains("CUDA 12.0"),
            "{e}"
        );
        check_driver_version(12000).unwrap();
        check_driver_version(13000).unwrap();
    }

    #[test]
    fn no_driver_is_an_error() {
        if !driver_present() {
            assert!(matches!(device_count(), Err(CudaError::NoDriver)));
            assert!(matches!(CudaKernels::new(0), Err(CudaError::NoDriver)));
        }
    }
}
