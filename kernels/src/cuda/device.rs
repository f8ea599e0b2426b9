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

use super::kernel_cache::{compile_all_cached, KernelCache};
use super::launch::{LaunchShape, DEFAULT_SMEM_LIMIT};
use super::libraries::{driver_present, ensure_loaded, CudaLibrary};
use super::nvrtc::{arch_for, nvrtc_version};
use super::params::KernelParams;
use super::sources::{compile_units, HEAD_DIMS};
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

/// The kernels of one device.
pub struct CudaKernels {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// cuBLAS's workspace, set explicitly so that a GEMM never allocates
    /// (an allocation inside CUDA graph capture fails the capture).
    _blas_workspace: CudaSlice<u8>,
    modules: HashMap<String, Arc<CudaModule>>,
    /// Loaded functions and the dynamic shared memory each may use.
    functions: RwLock<HashMap<String, (CudaFunction, usize)>>,
    info: DeviceInfo,
}

impl std::fmt::Debug for CudaKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaKernels")
            .field("info", &self.info)
            .field("modules", &self.modules.len())
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
            ctx,
            stream,
            blas,
            _blas_workspace: blas_workspace,
            modules,
            functions: RwLock::new(HashMap::new()),
            info,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every kernel and GEMM of this device is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// `(free, total)` device memory in bytes.
    pub fn mem_get_info(&self) -> Result<(usize, usize), CudaError> {
        Ok(self.ctx.mem_get_info()?)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// A zeroed buffer on this device's stream.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.alloc_zeros(len)?)
    }

    /// Copies host data to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.clone_htod(data)?)
    }

    /// Copies a device buffer to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        data: &CudaSlice<T>,
    ) -> Result<Vec<T>, CudaError> {
        Ok(self.stream.clone_dtoh(data)?)
    }

    /// Launches `f` on the stream with its one parameter struct.
    pub(crate) fn launch_kernel<P: KernelParams>(
        &self,
        f: &CudaFunction,
        shape: &LaunchShape,
        params: &P,
    ) -> Result<(), CudaError> {
        let mut b = self.stream.launch_builder(f);
        b.arg(params);
        // SAFETY: the kernel takes exactly one `P` by value (`KERNEL(name, P)`
        // in its source; the layout test holds P equal to the CUDA struct),
        // and the caller validated every length the kernel reads and writes.
        unsafe { b.launch(shape.config()) }?;
        Ok(())
    }

    /// Kernel `name` of unit `unit`, with its dynamic shared memory limit
    /// raised to `smem_bytes` when that exceeds the default 48 KiB.
    pub(crate) fn function(
        &self,
        unit: &str,
        name: &str,
        smem_bytes: usize,
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
        let module = self.modules.get(unit).ok_or_else(|| {
            CudaError::invalid(
                "kernel lookup",
                format!("module {unit} was not compiled (head size not requested?)"),
            )
        })?;
        let f = module.load_function(name)?;
        // Opt in to the largest amount this kernel may need (one split-K
        // plan may need more than the last), so the limit is raised once.
        let mut limit = DEFAULT_SMEM_LIMIT;
        if smem_bytes > DEFAULT_SMEM_LIMIT {
            if smem_bytes > self.info.max_smem_optin {
                return Err(CudaError::invalid(
                    "kernel lookup",
                    format!(
                        "{name} needs {smem_bytes} B of shared memory, the GPU allows {}",
                        self.info.max_smem_optin
                    ),
                ));
            }
            limit = self.info.max_smem_optin;
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
