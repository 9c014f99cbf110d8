//! Memory shared with a virtio device: one zeroed, page-aligned kernel
//! heap allocation per device, holding its rings and buffers. Guest RAM
//! is identity-mapped, so the allocation's address is also the guest
//! physical address the device uses.
//!
//! The region is reached only through raw pointers made here, never
//! through a Rust reference, because the device writes it concurrently:
//! ring fields are read and written with single volatile accesses, frame
//! bytes are copied in and out. Every access is checked against the
//! allocation, so a wrong address is a panic rather than a stray write
//! (addresses come from `eremite-virtq`, never from the device).
//!
//! Fences (x86 is TSO; Intel SDM vol. 3A, "Memory Ordering in P6 and More
//! Recent Processor Families": loads are not reordered with other loads,
//! stores are not reordered with other stores or with older loads, but a
//! load may pass an older store to another address):
//! - publish (store→store, Linux's `virt_wmb`) and consume (load→load,
//!   `virt_rmb`) need no instruction, only a compiler fence, so that the
//!   frame copies, which are not volatile, stay on their side of the index
//!   access;
//! - full (store→load, `virt_mb`) needs a real barrier: `fence(SeqCst)`,
//!   which is also a compiler fence and which LLVM emits for this target
//!   as `lock or dword ptr [rsp], 0` (a locked instruction drains the
//!   store buffer; Linux's `virt_mb` is the same, cheaper than `mfence`).
#![allow(unsafe_code)]

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::cell::Cell;
use core::marker::PhantomData;
use core::sync::atomic::{Ordering, compiler_fence, fence};

use eremite_virtq::DmaMemory;

/// Alignment of a region (a page; the rings need 16 bytes, the driver's
/// layout 64).
const REGION_ALIGN: usize = 4096;

/// The integers a ring field can be: any bit pattern is a valid value,
/// and an aligned access is one `mov`.
trait Word: Copy {}
impl Word for u16 {}
impl Word for u32 {}
impl Word for u64 {}

/// A heap allocation shared with one device.
pub(super) struct DmaRegion {
    /// Address of the allocation, whose provenance `new` exposed.
    base: u64,
    layout: Layout,
    /// Not `Sync`: the accesses take `&self`, and two CPUs must not use
    /// the region at once. `Send` is fine: the region is owned.
    _not_sync: PhantomData<Cell<()>>,
}

impl DmaRegion {
    /// A zeroed region of `len_bytes`, or `None` if the heap has no room.
    pub(super) fn new(len_bytes: u64) -> Option<Self> {
        let size = usize::try_from(len_bytes).ok()?.max(1);
        let layout = Layout::from_size_align(size, REGION_ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return None;
        }
        Some(Self {
            base: ptr.expose_provenance() as u64,
            layout,
            _not_sync: PhantomData,
        })
    }

    /// The region's address, virtual and guest-physical alike.
    pub(super) fn base(&self) -> u64 {
        self.base
    }

    /// A pointer to `[addr, addr + len)`.
    ///
    /// # Panics
    /// If the range is not inside the region or `addr` is not a multiple
    /// of `align`: a bug in the caller, never the device's doing.
    fn ptr(&self, addr: u64, len: usize, align: usize) -> *mut u8 {
        let end = addr
            .checked_sub(self.base)
            .and_then(|offset| offset.checked_add(len as u64));
        assert!(
            end.is_some_and(|end| end <= self.layout.size() as u64)
                && addr.is_multiple_of(align as u64),
            "DMA access of {len} bytes at {addr:#x} outside the region or misaligned"
        );
        core::ptr::with_exposed_provenance_mut(addr as usize)
    }

    fn read<T: Word>(&self, addr: u64) -> T {
        let ptr = self.ptr(addr, size_of::<T>(), align_of::<T>()).cast::<T>();
        // SAFETY: (1) `ptr` is inside this live allocation with room for a
        // `T` and aligned for it (checked by `ptr`), and carries the
        // allocation's exposed provenance; (2) any bits are a valid `T`
        // (`Word`); (3) no Rust reference to the region exists, and the
        // device writes it concurrently, hence one volatile load the
        // compiler can neither elide nor split.
        unsafe { ptr.read_volatile() }
    }

    fn write<T: Word>(&self, addr: u64, value: T) {
        let ptr = self.ptr(addr, size_of::<T>(), align_of::<T>()).cast::<T>();
        // SAFETY: (1) and (3) as in `read`: in bounds, aligned, no
        // reference; one volatile store, so the device never sees half of
        // it (an aligned store of up to 8 bytes is atomic on x86).
        unsafe { ptr.write_volatile(value) }
    }
}

impl DmaMemory for DmaRegion {
    fn read_u16(&self, addr: u64) -> u16 {
        u16::from_le(self.read(addr))
    }
    fn read_u32(&self, addr: u64) -> u32 {
        u32::from_le(self.read(addr))
    }
    fn read_u64(&self, addr: u64) -> u64 {
        u64::from_le(self.read(addr))
    }
    fn write_u16(&self, addr: u64, value: u16) {
        self.write(addr, value.to_le());
    }
    fn write_u32(&self, addr: u64, value: u32) {
        self.write(addr, value.to_le());
    }
    fn write_u64(&self, addr: u64, value: u64) {
        self.write(addr, value.to_le());
    }

    fn read_bytes(&self, addr: u64, out: &mut [u8]) {
        let src = self.ptr(addr, out.len(), 1);
        // SAFETY: (1) the source range is inside this live allocation
        // (checked); (2) `out` is the caller's memory and no reference into
        // the region exists, so the two do not overlap; (3) the driver
        // copies a buffer out only after the device returned it in the used
        // ring, when the device no longer writes it. A device that writes
        // anyway changes which bytes land in `out`, nothing else: they are
        // plain bytes, parsed only once copied.
        unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) }
    }

    fn write_bytes(&self, addr: u64, bytes: &[u8]) {
        let dst = self.ptr(addr, bytes.len(), 1);
        // SAFETY: (1) and (2) as in `read_bytes`; (3) the driver fills a
        // buffer only while the device does not own it (before it is
        // published, or ring areas only the driver writes), and a device
        // reading it early sees plain bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) }
    }

    fn publish_fence(&self) {
        // Store→store: x86 keeps stores in order, so only the compiler
        // must not sink the (non-volatile) frame copy below the index
        // store. No instruction.
        compiler_fence(Ordering::SeqCst);
    }

    fn consume_fence(&self) {
        // Load→load: x86 keeps loads in order, so only the compiler must
        // not hoist the entry and frame reads above the index load. No
        // instruction.
        compiler_fence(Ordering::SeqCst);
    }

    fn full_fence(&self) {
        // Store→load: the one order x86 does not keep (the store buffer),
        // so a locked instruction (`lock or [rsp], 0` on this target).
        fence(Ordering::SeqCst);
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: `base` is the pointer `alloc_zeroed(self.layout)` returned
        // in `new` (provenance exposed there), freed once, here. The device
        // no longer writes the region: its owner, `eremite_virtq::NetDriver`,
        // resets the device before dropping it (and leaks it if the reset
        // does not finish), or drops it after a failed setup, before the
        // device ever went live (`DRIVER_OK`).
        unsafe {
            dealloc(
                core::ptr::with_exposed_provenance_mut(self.base as usize),
                self.layout,
            )
        }
    }
}
