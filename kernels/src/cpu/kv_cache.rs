//! The paged KV cache's storage on CPU, in one of three element types
//! (`--kv-cache-dtype`): f32, or bf16 / f16 at half the bytes. Kernels
//! compute in f32 either way: `reshape_and_cache` rounds each new K/V row
//! once (to nearest even) on its way in, and attention widens the rows it
//! reads, so a token's result still depends only on what is in the cache.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvCacheDtype {
    F32,
    BF16,
    F16,
}

impl KvCacheDtype {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            KvCacheDtype::F32 => 4,
            KvCacheDtype::BF16 | KvCacheDtype::F16 => 2,
        }
    }

    /// The torch name vLLM logs (`bfloat16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KvCacheDtype::F32 => "float32",
            KvCacheDtype::BF16 => "bfloat16",
            KvCacheDtype::F16 => "float16",
        }
    }
}

impl std::fmt::Display for KvCacheDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer's K (or V) cache, owned.
#[derive(Debug)]
pub enum KvBuffer {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

/// A K or V cache, borrowed for reading.
#[derive(Debug, Clone, Copy)]
pub enum KvSlice<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

/// A K or V cache, borrowed for writing.
#[derive(Debug)]
pub enum KvSliceMut<'a> {
    F32(&'a mut [f32]),
    BF16(&'a mut [bf16]),
    F16(&'a mut [f16]),
}

/// Types whose all-zero bit pattern is the value zero.
///
/// # Safety
/// Implementors must be plain data for which every zero byte is a valid
/// value.
pub unsafe trait ZeroBits: Copy {}
// SAFETY: IEEE-754 (and bfloat16) zero is all zero bits.
unsafe impl ZeroBits for f32 {}
// SAFETY: as above.
unsafe impl ZeroBits for bf16 {}
// SAFETY: as above.
unsafe impl ZeroBits for f16 {}

/// A zeroed buffer from the allocator's zeroed path: large buffers (the KV
/// cache) come as fresh pages from the OS, so start-up does not write
/// gigabytes of zeros. `None` when the allocation fails or cannot exist.
pub fn zeroed_vec<T: ZeroBits>(len: usize) -> Option<Vec<T>> {
    if len == 0 || std::mem::size_of::<T>() == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).ok()?;
    // SAFETY: the layout has non-zero size; a non-null pointer from
    // alloc_zeroed with this layout owns `len` zero-initialized `T`s (valid
    // values by `ZeroBits`), which is what Vec::from_raw_parts requires with
    // capacity `len`.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        (!ptr.is_null()).then(|| Vec::from_raw_parts(ptr, len, len))
    }
}

impl KvBuffer {
    /// `len` zero elements of `dtype`; `None` when memory runs out.
    pub fn zeroed(dtype: KvCacheDtype, len: usize) -> Option<Self> {
        Some(match dtype {
            KvCacheDtype::F32 => KvBuffer::F32(zeroed_vec(len)?),
            KvCacheDtype::BF16 => KvBuffer::BF16(zeroed_vec(len)?),
            KvCacheDtype::F16 => KvBuffer::F16(zeroed_vec(len)?),
        })
    }

    pub fn dtype(&self) -> KvCacheDtype {
        match self {
            KvBuffer::F32(_) => KvCacheDtype::F32,
            KvBuffer::BF16(_) => KvCacheDtype::BF16,
            KvBuffer::F16(_) => KvCacheDtype::F16,
        }
    }

    pub fn as_slice(&self) -> KvSlice<'_> {
        match self {
            KvBuffer::F32(v) => KvSlice::F32(v),
            KvBuffer::BF16(v) => KvSlice::BF16(v),
            KvBuffer::F16(v) => KvSlice::F16(v),
        }
    }

    pub fn as_mut_slice(&mut self) -> KvSliceMut<'_> {
        match self {
            KvBuffer::F32(v) => KvSliceMut::F32(v),
            KvBuffer::BF16(v) => KvSliceMut::BF16(v),
            KvBuffer::F16(v) => KvSliceMut::F16(v),
        }
    }
}

impl KvSlice<'_> {
    pub fn len(&self) -> usize {
        match self {
            KvSlice::F32(v) => v.len(),
            KvSlice::BF16(v) => v.len(),
            KvSlice::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Widens elements `start..start + out.len()` into `out`.
    #[inline]
    pub fn read_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            KvSlice::F32(v) => out.copy_from_slice(&v[start..end]),
            KvSlice::BF16(v) => v[start..end].convert_to_f32_slice(out),
            KvSlice::F16(v) => v[start..end].convert_to_f32_slice(out),
        }
    }
}

impl KvSliceMut<'_> {
    pub fn len(&self) -> usize {
        match self {
            KvSliceMut::F32(v) => v.len(),
            KvSliceMut::BF16(v) => v.len(),
            KvSliceMut::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `src` at `start..`, rounded to the element type.
    #[inline]
    pub fn write_from(&mut self, start: usize, src: &[f32]) {
        let end = start + src.len();
        match self {
            KvSliceMut::F32(v) => v[start..end].copy_from_slice(src),
            KvSliceMut::BF16(v) => v[start..end].convert_from_f32_slice(src),
            KvSliceMut::F16(v) => v[start..end].convert_from_f32_slice(src),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_round_to_nearest() {
        let src = [1.0f32, -2.5, 1.0 + 1.0 / 256.0, 2.71, 65504.0];
        for dtype in [KvCacheDtype::F32, KvCacheDtype::BF16, KvCacheDtype::F16] {
            let mut buf = KvBuffer::zeroed(dtype, 8).unwrap();
            assert_eq!(buf.dtype(), dtype);
            buf.as_mut_slice().write_from(2, &src);
            let mut back = [0f32; 7];
            buf.as_slice().read_into(1, &mut back);
            assert_eq!(
                (back[0], back[6]),
                (0.0, 0.0),
                "{dtype}: neighbours untouched"
            );
            for (got, want) in back[1..6].iter().zip(src) {
                let tol = match dtype {
                    KvCacheDtype::F32 => 0.0,
                    KvCacheDtype::BF16 => want.abs() / 256.0,
                    KvCacheDtype::F16 => want.abs() / 2048.0,
                };
                assert!((got - want).abs() <= tol, "{dtype}: {got} vs {want}");
            }
        }
        // bf16 keeps 8 bits of mantissa: 1 + 2^-8 is a tie, rounded to even (1).
        let mut b = KvBuffer::zeroed(KvCacheDtype::BF16, 1).unwrap();
        b.as_mut_slice().write_from(0, &[1.0 + 1.0 / 256.0]);
        let mut x = [0f32];
        b.as_slice().read_into(0, &mut x);
        assert_eq!(x[0], 1.0);
    }

    #[test]
    fn zeroed_buffers_are_zero_and_huge_ones_fail() {
        let v: Vec<bf16> = zeroed_vec(1 << 16).unwrap();
        assert!(v.iter().all(|x| x.to_f32() == 0.0));
        assert!(zeroed_vec::<f32>(usize::MAX / 2).is_none());
        assert_eq!(KvCacheDtype::BF16.bytes(), 2);
    }
}
