//! Device memory as the launchers and the engine see it: a buffer is a
//! length and a 64-bit device address, whether it lives on a GPU (a cudarc
//! `CudaSlice`) or in host memory for the emulated device (the address is
//! then a host address). Every launcher builds its parameter struct from
//! `addr()`, so one launcher serves both devices.

#[cfg(feature = "emu")]
use std::alloc::Layout;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
#[cfg(feature = "emu")]
use std::ptr::NonNull;
#[cfg(feature = "emu")]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "emu")]
use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};

/// Memory a kernel may read: `len` elements of `T` at device address `addr`.
pub trait DeviceMem<T> {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The device address of the first element.
    fn addr(&self) -> u64;
}

/// Memory a kernel may write (taken by `&mut`, so the borrow checker keeps
/// one writer per buffer as for host slices).
pub trait DeviceMemMut<T>: DeviceMem<T> {
    fn addr_mut(&mut self) -> u64 {
        self.addr()
    }
}

/// Alignment of emulated allocations: what `cuMemAlloc` guarantees, so the
/// kernels' 16-byte vector loads and `ldmatrix` rows stay aligned.
#[cfg(feature = "emu")]
pub(crate) const HOST_ALIGN: usize = 256;

/// An owned device allocation.
pub struct DeviceBuffer<T: DeviceRepr> {
    inner: Inner<T>,
}

enum Inner<T: DeviceRepr> {
    Cuda(CudaSlice<T>),
    #[cfg(feature = "emu")]
    Host(HostAlloc<T>),
}

impl<T: DeviceRepr> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Cuda(_) => "cuda",
            #[cfg(feature = "emu")]
            Inner::Host(_) => "emulated",
        };
        write!(f, "DeviceBuffer({kind}, {} elements)", self.len())
    }
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    pub(crate) fn from_cuda(s: CudaSlice<T>) -> Self {
        Self {
            inner: Inner::Cuda(s),
        }
    }

    #[cfg(feature = "emu")]
    pub(crate) fn from_host(h: HostAlloc<T>) -> Self {
        Self {
            inner: Inner::Host(h),
        }
    }

    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Cuda(s) => s.len(),
            #[cfg(feature = "emu")]
            Inner::Host(h) => h.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `range` (panics when out of bounds, as slice indexing does).
    pub fn slice(&self, range: impl RangeBounds<usize>) -> DeviceView<'_, T> {
        let (addr, len) = sub_range::<T>(self.addr(), self.len(), range);
        DeviceView {
            addr,
            len,
            _borrow: PhantomData,
        }
    }

    /// Elements `range`, writable (panics when out of bounds).
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> DeviceViewMut<'_, T> {
        let (addr, len) = sub_range::<T>(self.addr(), self.len(), range);
        DeviceViewMut {
            addr,
            len,
            _borrow: PhantomData,
        }
    }

    /// `[..mid]` and `[mid..]`, both writable (panics when `mid > len`).
    pub fn split_at_mut(&mut self, mid: usize) -> (DeviceViewMut<'_, T>, DeviceViewMut<'_, T>) {
        let len = self.len();
        assert!(mid <= len, "split at {mid} of a {len}-element buffer");
        let addr = self.addr();
        let view = |addr, len| DeviceViewMut {
            addr,
            len,
            _borrow: PhantomData,
        };
        (
            view(addr, mid),
            view(addr + (mid * std::mem::size_of::<T>()) as u64, len - mid),
        )
    }
}

fn sub_range<T>(addr: u64, len: usize, range: impl RangeBounds<usize>) -> (u64, usize) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    assert!(
        start <= end && end <= len,
        "range {start}..{end} of a {len}-element buffer"
    );
    (
        addr + (start * std::mem::size_of::<T>()) as u64,
        end - start,
    )
}

impl<T: DeviceRepr> DeviceMem<T> for DeviceBuffer<T> {
    fn len(&self) -> usize {
        DeviceBuffer::len(self)
    }
    fn addr(&self) -> u64 {
        match &self.inner {
            // The context runs without cudarc's event tracking (one stream
            // carries all work), so the guard records nothing when dropped.
            Inner::Cuda(s) => s.device_ptr(s.stream()).0,
            #[cfg(feature = "emu")]
            Inner::Host(h) => h.ptr.as_ptr() as u64,
        }
    }
}

impl<T: DeviceRepr> DeviceMemMut<T> for DeviceBuffer<T> {}

/// A borrowed range of a [`DeviceBuffer`].
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'a, T> {
    addr: u64,
    len: usize,
    _borrow: PhantomData<&'a T>,
}

/// A borrowed, writable range of a [`DeviceBuffer`].
#[derive(Debug)]
pub struct DeviceViewMut<'a, T> {
    addr: u64,
    len: usize,
    _borrow: PhantomData<&'a mut T>,
}

impl<T> DeviceMem<T> for DeviceView<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
    fn addr(&self) -> u64 {
        self.addr
    }
}

impl<T> DeviceMem<T> for DeviceViewMut<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
    fn addr(&self) -> u64 {
        self.addr
    }
}

impl<T> DeviceMemMut<T> for DeviceViewMut<'_, T> {}

#[cfg(feature = "emu")]
pub(crate) use host::HostAlloc;

#[cfg(feature = "emu")]
mod host {
    use super::*;

    /// A zeroed host allocation standing in for device memory (the emulated
    /// device), counted in the device's `used` meter until dropped.
    pub(crate) struct HostAlloc<T> {
        pub(super) ptr: NonNull<u8>,
        layout: Layout,
        pub(super) len: usize,
        meter: Arc<AtomicUsize>,
        _elem: PhantomData<T>,
    }

    // SAFETY: plain memory owned by this value; reads and writes go through
    // `&`/`&mut` of the owning buffer (or kernels the caller orders), as for a
    // device allocation.
    unsafe impl<T: Send> Send for HostAlloc<T> {}
    // SAFETY: as above; shared references only read.
    unsafe impl<T: Sync> Sync for HostAlloc<T> {}

    impl<T> HostAlloc<T> {
        /// `len` zeroed elements, or None when the allocation fails.
        pub(crate) fn zeroed(len: usize, meter: &Arc<AtomicUsize>) -> Option<Self> {
            let bytes = len.checked_mul(std::mem::size_of::<T>())?.max(1);
            let layout =
                Layout::from_size_align(bytes, HOST_ALIGN.max(std::mem::align_of::<T>())).ok()?;
            // SAFETY: a non-zero size.
            let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
            meter.fetch_add(bytes, Ordering::Relaxed);
            Some(Self {
                ptr,
                layout,
                len,
                meter: meter.clone(),
                _elem: PhantomData,
            })
        }
    }

    impl<T> Drop for HostAlloc<T> {
        fn drop(&mut self) {
            self.meter.fetch_sub(self.layout.size(), Ordering::Relaxed);
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }
}

#[cfg(all(test, feature = "emu"))]
mod tests {
    use super::*;

    #[test]
    fn views_address_their_range() {
        let meter = Arc::new(AtomicUsize::new(0));
        let mut b = DeviceBuffer::<u32>::from_host(HostAlloc::zeroed(10, &meter).unwrap());
        assert_eq!(meter.load(Ordering::Relaxed), 40);
        let base = b.addr();
        assert_eq!(base % HOST_ALIGN as u64, 0);
        let v = b.slice(2..5);
        assert_eq!((v.addr(), v.len()), (base + 8, 3));
        let v = b.slice(..=9);
        assert_eq!(v.len(), 10);
        let (lo, hi) = b.split_at_mut(4);
        assert_eq!(
            (lo.addr(), lo.len(), hi.addr(), hi.len()),
            (base, 4, base + 16, 6)
        );
        drop(b);
        assert_eq!(meter.load(Ordering::Relaxed), 0);
    }

    #[test]
    #[should_panic(expected = "range 3..11")]
    fn out_of_range_views_panic_like_slices() {
        let meter = Arc::new(AtomicUsize::new(0));
        let b = DeviceBuffer::<u8>::from_host(HostAlloc::zeroed(10, &meter).unwrap());
        let _ = b.slice(3..11);
    }
}
