//! reshape_and_cache on the GPU (the CPU `reshape_and_cache` is the reference).

use super::buffer::{DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::reshape_and_cache_shape;
use super::params::ReshapeAndCacheParams;
use super::sources::{unit_name, CACHE};
use super::{to_i32, CudaError, CudaKernels, Half16};

/// Checks lengths and the 16-byte row alignment the kernel relies on.
pub fn validate_reshape_and_cache(
    key_len: usize,
    key_stride: usize,
    value_len: usize,
    value_stride: usize,
    cache_len: usize,
    num_tokens: usize,
    row: usize,
) -> Result<(), CudaError> {
    let op = "reshape_and_cache";
    ensure(row > 0 && row.is_multiple_of(8), op, || {
        format!("num_kv_heads * head_dim = {row} must be a non-zero multiple of 8")
    })?;
    for (name, len, stride) in [
        ("key", key_len, key_stride),
        ("value", value_len, value_stride),
    ] {
        ensure(stride >= row && stride.is_multiple_of(8), op, || {
            format!("{name} stride {stride} must be >= {row}, a multiple of 8")
        })?;
        if num_tokens > 0 {
            let need = (num_tokens - 1) * stride + row;
            ensure(len >= need, op, || {
                format!("{name} holds {len} elements, {need} needed")
            })?;
        }
    }
    ensure(cache_len.is_multiple_of(row), op, || {
        format!("cache of {cache_len} elements is not whole slots of {row}")
    })
}

impl CudaKernels {
    /// Copies token `t`'s K and V rows to slot `slot_mapping[t]` of the
    /// caches (negative slots are skipped). Slots are trusted: the scheduler
    /// hands out only slots of allocated blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn reshape_and_cache<T: Half16>(
        &self,
        key: &impl DeviceMem<T>,
        key_stride: usize,
        value: &impl DeviceMem<T>,
        value_stride: usize,
        k_cache: &mut impl DeviceMemMut<T>,
        v_cache: &mut impl DeviceMemMut<T>,
        slot_mapping: &impl DeviceMem<i64>,
        num_tokens: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), CudaError> {
        let op = "reshape_and_cache";
        let row = num_kv_heads * head_dim;
        validate_reshape_and_cache(
            key.len(),
            key_stride,
            value.len(),
            value_stride,
            k_cache.len(),
            num_tokens,
            row,
        )?;
        ensure(k_cache.len() == v_cache.len(), op, || {
            "K and V caches differ in length".into()
        })?;
        ensure(slot_mapping.len() >= num_tokens, op, || {
            format!("slot_mapping shorter than {num_tokens}")
        })?;
        if num_tokens == 0 {
            return Ok(());
        }
        let f = self.function(
            &unit_name(&CACHE),
            &format!("reshape_and_cache_{}", T::SUFFIX),
            0,
        )?;
        let k_p = key.addr();
        let v_p = value.addr();
        let kc_p = k_cache.addr_mut();
        let vc_p = v_cache.addr_mut();
        let s_p = slot_mapping.addr();
        let (ks, vs, r) = (
            to_i32(op, key_stride)?,
            to_i32(op, value_stride)?,
            to_i32(op, row)?,
        );
        let params = ReshapeAndCacheParams {
            key: k_p,
            value: v_p,
            k_cache: kc_p,
            v_cache: vc_p,
            slot_mapping: s_p,
            key_stride: ks,
            value_stride: vs,
            row_len: r,
        };
        self.launch_kernel(&f, &reshape_and_cache_shape(num_tokens, row), &params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        validate_reshape_and_cache(3 * 128, 128, 3 * 128, 128, 10 * 128, 3, 128).unwrap();
        // Views into fused qkv rows of 384 (k at offset 256): the last row needs only `row`.
        validate_reshape_and_cache(2 * 384 + 128, 384, 2 * 384 + 128, 384, 1280, 3, 128).unwrap();
        assert!(validate_reshape_and_cache(3 * 128, 128, 3 * 128, 128, 10 * 128, 4, 128).is_err());
        assert!(validate_reshape_and_cache(3 * 120, 120, 3 * 120, 120, 1200, 3, 120).is_ok());
        assert!(validate_reshape_and_cache(3 * 12, 12, 36, 12, 120, 3, 12).is_err());
        assert!(validate_reshape_and_cache(3 * 128, 130, 3 * 128, 128, 1280, 1, 128).is_err());
        assert!(validate_reshape_and_cache(128, 128, 128, 128, 1000, 1, 128).is_err());
    }
}
