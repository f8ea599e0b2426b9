//! Element types the kernels are instantiated for, and their kernel-name
//! suffixes (`rms_norm_bf16`, `paged_attention_decode_f16_d128`, …).

use cudarc::cublas::sys::cudaDataType_t;
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

/// A type with kernel instances.
pub trait CudaDType: DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static {
    const SUFFIX: &'static str;
    /// cuBLAS's name for the type.
    const BLAS_TYPE: cudaDataType_t;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

/// The 16-bit storage types (attention, KV cache, tensor-core GEMMs).
pub trait Half16: CudaDType {}

impl CudaDType for bf16 {
    const SUFFIX: &'static str = "bf16";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_16BF;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl CudaDType for f16 {
    const SUFFIX: &'static str = "f16";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_16F;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl CudaDType for f32 {
    const SUFFIX: &'static str = "f32";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_32F;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Half16 for bf16 {}
impl Half16 for f16 {}

/// `{base}_{suffix}`.
pub fn kernel_name<T: CudaDType>(base: &str) -> String {
    format!("{base}_{}", T::SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_sources() {
        assert_eq!(kernel_name::<bf16>("rms_norm"), "rms_norm_bf16");
        for (name, src) in [
            (
                kernel_name::<bf16>("rms_norm"),
                super::super::sources::NORM.code,
            ),
            (
                kernel_name::<f16>("silu_and_mul"),
                super::super::sources::ACTIVATION.code,
            ),
            (
                kernel_name::<f32>("rotary_embedding"),
                super::super::sources::ROTARY.code,
            ),
        ] {
            let base = name.rsplit_once('_').unwrap().0;
            assert!(src.contains(&format!("{base}_##SUFFIX")), "{name}");
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(bf16::from_f32(1.5).to_f32(), 1.5);
        assert_eq!(<f16 as CudaDType>::from_f32(-2.0).to_f32(), -2.0);
    }
}
