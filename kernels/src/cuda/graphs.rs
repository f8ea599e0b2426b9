//! CUDA graphs: decode steps are padded up to the nearest captured batch
//! size and replay that graph (vLLM's buckets); a batch larger than the
//! largest captured size runs eagerly. Capture and replay live here too.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use super::device::Device;
use super::{CudaError, CudaKernels};

/// A captured, instantiated graph of this device's stream (the emulated
/// device: the recorded launches and GEMMs, replayed in order).
pub struct DeviceGraph(GraphInner);

enum GraphInner {
    Cuda(CudaGraph),
    #[cfg(feature = "emu")]
    Emu(Vec<super::emulated::EmuOp>),
}

// SAFETY: a graph is used by one thread at a time: it is owned by the model
// runner, which only the engine thread drives (CUDA requires external
// synchronization, not thread affinity).
unsafe impl Send for DeviceGraph {}

impl DeviceGraph {
    /// Queues the whole graph on the stream it was captured from.
    pub fn replay(&self) -> Result<(), CudaError> {
        match &self.0 {
            GraphInner::Cuda(g) => Ok(g.launch()?),
            #[cfg(feature = "emu")]
            GraphInner::Emu(ops) => ops.iter().try_for_each(|op| op()),
        }
    }

    /// Operations recorded (kernel launches and GEMMs) on the emulated
    /// device; None for a CUDA graph.
    pub fn emulated_len(&self) -> Option<usize> {
        match &self.0 {
            GraphInner::Cuda(_) => None,
            #[cfg(feature = "emu")]
            GraphInner::Emu(ops) => Some(ops.len()),
        }
    }
}

impl CudaKernels {
    /// Starts recording this device's stream. Thread-local mode: a call of
    /// this thread that is illegal during capture (an allocation, a
    /// synchronous copy) fails the capture rather than running uncaptured
    /// (the emulated device refuses the same calls while recording).
    pub fn begin_capture(&self) -> Result<(), CudaError> {
        match self.device() {
            Device::Cuda(d) => Ok(d
                .stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?),
            #[cfg(feature = "emu")]
            Device::Emu(d) => d.begin_capture(),
        }
    }

    /// Ends the recording and instantiates it. Always ends the capture, so
    /// the stream is usable again whatever happened while recording.
    pub fn end_capture(&self) -> Result<DeviceGraph, CudaError> {
        match self.device() {
            Device::Cuda(d) => {
                let graph = d
                    .stream
                    .end_capture(CUgraphInstantiate_flags(0))?
                    .ok_or_else(|| CudaError::invalid("graph capture", "nothing was captured"))?;
                graph.upload()?;
                Ok(DeviceGraph(GraphInner::Cuda(graph)))
            }
            #[cfg(feature = "emu")]
            Device::Emu(d) => Ok(DeviceGraph(GraphInner::Emu(d.end_capture()?))),
        }
    }
}

/// vLLM's default capture sizes: 1, 2, 4, then every 8 up to 256, then every
/// 16, up to `max_capture_size` (vLLM: min(2 * max_num_seqs, 512)); never
/// above `max_num_seqs` except to round the last bucket up to a size that
/// holds it.
pub fn cudagraph_capture_sizes(max_num_seqs: usize, max_capture_size: usize) -> Vec<usize> {
    let cap = max_capture_size.min(max_num_seqs.max(1));
    let mut sizes: Vec<usize> = [1, 2, 4].into_iter().collect();
    sizes.extend((8..256).step_by(8));
    sizes.extend((256..=max_capture_size.max(256)).step_by(16));
    let mut out: Vec<usize> = sizes.iter().copied().filter(|&s| s <= cap).collect();
    // Make sure a batch of exactly `cap` has a bucket.
    if out.last() != Some(&cap) {
        if let Some(&next) = sizes.iter().find(|&&s| s >= cap) {
            if next <= max_capture_size {
                out.push(next);
            }
        }
    }
    out
}

/// vLLM's default largest capture size for `max_num_seqs`.
pub fn default_max_capture_size(max_num_seqs: usize) -> usize {
    (2 * max_num_seqs).min(512)
}

/// The captured size a decode batch of `batch` runs as, or None (eager).
pub fn padded_batch_size(capture_sizes: &[usize], batch: usize) -> Option<usize> {
    if batch == 0 {
        return None;
    }
    let i = capture_sizes.partition_point(|&s| s < batch);
    capture_sizes.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_match_vllm() {
        let s = cudagraph_capture_sizes(256, default_max_capture_size(256));
        assert_eq!(&s[..6], &[1, 2, 4, 8, 16, 24]);
        assert_eq!(*s.last().unwrap(), 256);
        assert_eq!(s.len(), 3 + 31 + 1);
        let s = cudagraph_capture_sizes(1024, 512);
        assert_eq!(*s.last().unwrap(), 512);
        assert!(s.contains(&272) && !s.contains(&264));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn small_max_num_seqs_rounds_the_last_bucket_up() {
        assert_eq!(cudagraph_capture_sizes(3, 6), vec![1, 2, 4]);
        assert_eq!(cudagraph_capture_sizes(10, 20), vec![1, 2, 4, 8, 16]);
        assert_eq!(cudagraph_capture_sizes(1, 2), vec![1]);
    }

    #[test]
    fn batches_pad_to_the_next_bucket() {
        let s = cudagraph_capture_sizes(256, 512);
        assert_eq!(padded_batch_size(&s, 1), Some(1));
        assert_eq!(padded_batch_size(&s, 3), Some(4));
        assert_eq!(padded_batch_size(&s, 9), Some(16));
        assert_eq!(padded_batch_size(&s, 256), Some(256));
        assert_eq!(padded_batch_size(&s, 257), None);
        assert_eq!(padded_batch_size(&s, 0), None);
        for b in 1..=256 {
            let p = padded_batch_size(&s, b).unwrap();
            assert!(p >= b && p - b < 16, "{b} -> {p}");
        }
    }
}
