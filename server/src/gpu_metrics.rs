//! GPU readings through NVML for /metrics: memory in use and utilization of
//! the GPU the engine runs on (CUDA device 0 of this process).
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`); where it is missing
//! (no driver, a CPU machine) the server exports no GPU metrics and says so
//! once in the log. KV-cache sizing does not use NVML: the engine asks the
//! CUDA driver (`cuMemGetInfo`), which reports the same device memory and
//! exists wherever the engine can run on the GPU at all.
//!
//! Reading the GPU (`GpuMonitor::read`) and setting the gauges
//! (`Metrics::update_gpu`) are separate so the latter is tested with plain
//! values.

use std::sync::atomic::{AtomicBool, Ordering};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

/// The labels of the GPU's gauges: NVML index and device name.
#[derive(Debug, Clone)]
pub struct GpuLabels {
    pub gpu: String,
    pub gpu_name: String,
}

/// How to find CUDA device 0 of this process among NVML's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelector {
    /// NVML index (CUDA_VISIBLE_DEVICES names devices by index, or unset).
    Index(u32),
    /// A UUID or unique UUID prefix (`GPU-...`, `MIG-...`).
    Uuid(String),
}

/// CUDA device 0 under `CUDA_VISIBLE_DEVICES` (its first entry; `None` when
/// it hides every device or cannot be read). As in CUDA, an empty value or
/// an invalid first entry (`-1`, `foo`) leaves no device visible. An index
/// is taken as an NVML index, which is CUDA's numbering only under
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` (NVML's order); on one-GPU machines and
/// with UUIDs the two always agree.
pub fn cuda_device0(cuda_visible_devices: Option<&str>) -> Option<GpuSelector> {
    let Some(v) = cuda_visible_devices else {
        return Some(GpuSelector::Index(0));
    };
    let first = v.split(',').next()?.trim();
    if let Ok(i) = first.parse::<u32>() {
        return Some(GpuSelector::Index(i));
    }
    let is_uuid = ["GPU-", "MIG-"]
        .iter()
        .any(|p| first.len() > p.len() && first.starts_with(p));
    is_uuid.then(|| GpuSelector::Uuid(first.to_string()))
}

/// NVML's utilization percentage as a ratio in 0..=1.
pub fn utilization_ratio(percent: u32) -> f64 {
    f64::from(percent.min(100)) / 100.0
}

/// One reading of the GPU, in Prometheus base units. A field is `None` when
/// NVML could not read it this time (e.g. utilization is not supported on a
/// MIG instance): its gauge is left out of that scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuReading {
    /// Device memory allocated, all processes (NVML's `used`, bytes).
    pub memory_used_bytes: Option<u64>,
    /// Device memory installed (bytes).
    pub memory_total_bytes: Option<u64>,
    /// 0..=1: the share of NVML's last sample period a kernel was running.
    pub utilization_ratio: Option<f64>,
}

/// An open NVML handle on the engine's GPU.
pub struct GpuMonitor {
    nvml: Nvml,
    /// How each scrape finds the device again (a `Device` borrows `nvml`);
    /// a UUID selector holds the full UUID once resolved.
    selector: GpuSelector,
    /// The `gpu` label: the NVML index (the UUID where NVML gives none).
    pub index: String,
    /// The `gpu_name` label.
    pub name: String,
    /// A failed reading is logged at warn once, then at debug.
    warned: AtomicBool,
}

impl GpuMonitor {
    /// Opens NVML on CUDA device 0 of this process (see `cuda_device0`), or
    /// `None`, logged. Call it only when the engine runs on CUDA.
    pub fn open() -> Option<Self> {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let Some(selector) = cuda_device0(visible.as_deref()) else {
            tracing::warn!("CUDA_VISIBLE_DEVICES={visible:?} names no GPU: no GPU metrics");
            return None;
        };
        Self::open_selected(&selector)
    }

    /// Opens NVML on the device `selector` names, or `None`, logged.
    pub fn open_selected(selector: &GpuSelector) -> Option<Self> {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("NVML is not available ({e}): no GPU metrics in /metrics");
                return None;
            }
        };
        let (selector, index, name) = match find_device(&nvml, selector) {
            Ok(device) => {
                let uuid = device.uuid().ok();
                let index = device.index().ok();
                let name = device.name().unwrap_or_else(|e| {
                    tracing::debug!("NVML has no name for {selector:?} ({e})");
                    String::new()
                });
                // Scrapes look the device up the way that names it exactly.
                let resolved = match (selector, uuid) {
                    (GpuSelector::Uuid(_), Some(u)) => GpuSelector::Uuid(u),
                    _ => selector.clone(),
                };
                let label = match (index, &resolved) {
                    (Some(i), _) => i.to_string(),
                    (None, GpuSelector::Uuid(u)) => u.clone(),
                    (None, GpuSelector::Index(i)) => i.to_string(),
                };
                (resolved, label, name)
            }
            Err(e) => {
                tracing::warn!("NVML cannot open {selector:?} ({e}): no GPU metrics");
                return None;
            }
        };
        tracing::info!("GPU metrics from NVML: device {index} ({name})");
        Some(Self {
            nvml,
            selector,
            index,
            name,
            warned: AtomicBool::new(false),
        })
    }

    /// The `gpu` and `gpu_name` labels of the GPU gauges.
    pub fn labels(&self) -> GpuLabels {
        GpuLabels {
            gpu: self.index.clone(),
            gpu_name: self.name.clone(),
        }
    }

    /// Reads memory and utilization now (microseconds). `None` when the
    /// device cannot be found at all; a field NVML fails to read is `None`.
    pub fn read(&self) -> Option<GpuReading> {
        let device = match find_device(&self.nvml, &self.selector) {
            Ok(d) => d,
            Err(e) => {
                self.failed("device handle", &e);
                return None;
            }
        };
        let mut reading = GpuReading::default();
        match device.memory_info() {
            Ok(m) => {
                reading.memory_used_bytes = Some(m.used);
                reading.memory_total_bytes = Some(m.total);
            }
            Err(e) => self.failed("memory info", &e),
        }
        match device.utilization_rates() {
            Ok(u) => reading.utilization_ratio = Some(utilization_ratio(u.gpu)),
            Err(e) => self.failed("utilization", &e),
        }
        Some(reading)
    }

    fn failed(&self, what: &str, e: &NvmlError) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!("NVML {what} reading failed ({e})");
        } else {
            tracing::warn!(
                "NVML {what} reading failed ({e}); GPU gauges NVML cannot read are left out \
                 of /metrics (logged once)"
            );
        }
    }
}

/// The NVML device a selector names. A UUID that is not a full UUID is
/// matched as a prefix, as CUDA does, and must match one device only.
fn find_device<'n>(nvml: &'n Nvml, selector: &GpuSelector) -> Result<Device<'n>, NvmlError> {
    let uuid = match selector {
        GpuSelector::Index(i) => return nvml.device_by_index(*i),
        GpuSelector::Uuid(u) => u,
    };
    let by_uuid_err = match nvml.device_by_uuid(uuid.as_str()) {
        Ok(d) => return Ok(d),
        Err(e) => e,
    };
    let mut found = None;
    for i in 0..nvml.device_count()? {
        let device = nvml.device_by_index(i)?;
        if device.uuid().is_ok_and(|u| u.starts_with(uuid.as_str())) {
            if found.is_some() {
                // Ambiguous prefix: CUDA rejects it too.
                return Err(by_uuid_err);
            }
            found = Some(device);
        }
    }
    found.ok_or(by_uuid_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn cuda_visible_devices_picks_the_first_entry() {
        assert_eq!(cuda_device0(None), Some(GpuSelector::Index(0)));
        assert_eq!(cuda_device0(Some("1,0")), Some(GpuSelector::Index(1)));
        assert_eq!(cuda_device0(Some(" 2 ")), Some(GpuSelector::Index(2)));
        assert_eq!(cuda_device0(Some("3")), Some(GpuSelector::Index(3)));
        assert_eq!(
            cuda_device0(Some("GPU-8f2a,GPU-1")),
            Some(GpuSelector::Uuid("GPU-8f2a".into()))
        );
        assert_eq!(
            cuda_device0(Some(" MIG-5c1d0b2e-aaaa ,0")),
            Some(GpuSelector::Uuid("MIG-5c1d0b2e-aaaa".into()))
        );
    }

    #[test]
    fn cuda_visible_devices_can_hide_every_gpu() {
        for hidden in ["", " ", ",0", "-1", "-1,0", "nope", "GPU-", "gpu-12"] {
            assert_eq!(cuda_device0(Some(hidden)), None, "{hidden:?}");
        }
    }

    #[test]
    fn utilization_percent_becomes_a_ratio() {
        assert_eq!(utilization_ratio(0), 0.0);
        assert_eq!(utilization_ratio(87), 0.87);
        assert_eq!(utilization_ratio(100), 1.0);
        // NVML never reports more; a bogus value still stays in range.
        assert_eq!(utilization_ratio(250), 1.0);
    }

    /// Without libnvidia-ml (CI, this build machine) opening gives `None`
    /// without a panic and /metrics has no GPU lines; where NVML loads and
    /// has a device 0, the gauges appear.
    #[test]
    fn gpu_lines_only_where_nvml_opens_a_device() {
        let nvml_has_gpu = Nvml::init().is_ok_and(|n| n.device_count().is_ok_and(|c| c > 0));
        let monitor = GpuMonitor::open_selected(&GpuSelector::Index(0));
        let metrics = Metrics::with_gpu("m", monitor.as_ref().map(GpuMonitor::labels));
        if let Some(g) = &monitor {
            metrics.update_gpu(g.read().as_ref());
        }
        let text = metrics.render();
        assert_eq!(monitor.is_some(), nvml_has_gpu);
        assert_eq!(metrics.has_gpu(), nvml_has_gpu);
        if nvml_has_gpu {
            assert!(
                text.contains("pagoda:gpu_memory_total_bytes{model_name=\"m\",gpu=\"0\""),
                "{text}"
            );
        } else {
            assert!(!text.contains("pagoda:gpu"), "{text}");
            assert!(text.contains("pagoda:num_requests_running"), "{text}");
        }
    }
}
