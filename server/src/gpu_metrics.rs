//! GPU readings through NVML for /metrics: memory in use and utilization of
//! the GPU the engine runs on (CUDA device 0 of this process).
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`); where it is missing
//! (no driver, a CPU machine) the server exports no GPU metrics and says so
//! once in the log. KV-cache sizing does not use NVML: the engine asks the
//! CUDA driver (`cuMemGetInfo`), which reports the same device memory and
//! exists wherever the engine can run on the GPU at all.

use nvml_wrapper::Nvml;
use parking_lot::Mutex;

/// How to find CUDA device 0 of this process among NVML's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelector {
    /// NVML index (CUDA_VISIBLE_DEVICES names devices by index, or unset).
    Index(u32),
    /// A UUID or unique UUID prefix (`GPU-...`).
    Uuid(String),
}

/// CUDA device 0 under `CUDA_VISIBLE_DEVICES` (its first entry; `None` when
/// it hides every device or cannot be read).
pub fn cuda_device0(cuda_visible_devices: Option<&str>) -> Option<GpuSelector> {
    let Some(v) = cuda_visible_devices else {
        return Some(GpuSelector::Index(0));
    };
    let first = v.split(',').next()?.trim();
    if first.is_empty() {
        return None;
    }
    if let Ok(i) = first.parse::<u32>() {
        return Some(GpuSelector::Index(i));
    }
    if first.starts_with("GPU-") || first.starts_with("MIG-") {
        return Some(GpuSelector::Uuid(first.to_string()));
    }
    None
}

/// One reading of the GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuReading {
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// 0..=1: the share of the last sample period a kernel was running.
    pub utilization: f64,
}

/// An open NVML handle on the engine's GPU.
pub struct GpuMonitor {
    nvml: Nvml,
    selector: GpuSelector,
    /// The `gpu` label: the NVML index.
    pub index: String,
    /// The `gpu_name` label.
    pub name: String,
    warned: Mutex<bool>,
}

impl GpuMonitor {
    /// Opens NVML and the process's CUDA device 0, or `None` (logged).
    pub fn open() -> Option<Self> {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let Some(selector) = cuda_device0(visible.as_deref()) else {
            tracing::warn!("CUDA_VISIBLE_DEVICES={visible:?} names no GPU: no GPU metrics");
            return None;
        };
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("NVML is not available ({e}): no GPU metrics in /metrics");
                return None;
            }
        };
        let (index, name) = {
            let device = match &selector {
                GpuSelector::Index(i) => nvml.device_by_index(*i),
                GpuSelector::Uuid(u) => nvml.device_by_uuid(u.as_str()),
            };
            let device = match device {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("NVML cannot open {selector:?} ({e}): no GPU metrics");
                    return None;
                }
            };
            let index = device.index().map(|i| i.to_string()).unwrap_or_default();
            (index, device.name().unwrap_or_default())
        };
        Some(Self {
            nvml,
            selector,
            index,
            name,
            warned: Mutex::new(false),
        })
    }

    /// Reads memory and utilization now; `None` (warned once) on failure.
    pub fn read(&self) -> Option<GpuReading> {
        let reading = (|| {
            let device = match &self.selector {
                GpuSelector::Index(i) => self.nvml.device_by_index(*i)?,
                GpuSelector::Uuid(u) => self.nvml.device_by_uuid(u.as_str())?,
            };
            let memory = device.memory_info()?;
            let utilization = device.utilization_rates()?;
            Ok::<_, nvml_wrapper::error::NvmlError>(GpuReading {
                memory_used_bytes: memory.used,
                memory_total_bytes: memory.total,
                utilization: f64::from(utilization.gpu) / 100.0,
            })
        })();
        match reading {
            Ok(r) => Some(r),
            Err(e) => {
                let mut warned = self.warned.lock();
                if !*warned {
                    tracing::warn!(
                        "NVML reading failed ({e}); GPU metrics read NaN until it works"
                    );
                    *warned = true;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_visible_devices_picks_the_first_entry() {
        assert_eq!(cuda_device0(None), Some(GpuSelector::Index(0)));
        assert_eq!(cuda_device0(Some("1,0")), Some(GpuSelector::Index(1)));
        assert_eq!(cuda_device0(Some(" 2 ")), Some(GpuSelector::Index(2)));
        assert_eq!(
            cuda_device0(Some("GPU-8f2a,GPU-1")),
            Some(GpuSelector::Uuid("GPU-8f2a".into()))
        );
        assert_eq!(cuda_device0(Some("")), None);
        assert_eq!(cuda_device0(Some("-1")), None);
        assert_eq!(cuda_device0(Some("nope")), None);
    }

    #[test]
    fn no_driver_means_no_monitor() {
        // Where libnvidia-ml is absent, opening returns None and never panics.
        let has_nvml = [
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
            "/usr/lib64/libnvidia-ml.so.1",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
        if !has_nvml {
            assert!(GpuMonitor::open().is_none());
        }
    }
}
