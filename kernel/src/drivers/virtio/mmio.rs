//! A virtio-MMIO device's register window (virtio 1.2 §4.2.2).
//!
//! The VMM maps the windows at `layout::VIRTIO_MMIO_ADDR` (one every
//! `VIRTIO_MMIO_STRIDE` bytes, `MAX_VIRTIO_DEVICES` of them)
//! CPL3-accessible and uncached, with no RAM behind them: each access is a
//! VM exit that the VMM (or, for `QueueNotify`, KVM's ioeventfd) serves.
//! On QEMU microvm the PVH entry maps QEMU's windows the same way
//! (`pvh::VIRTIO_MMIO_ADDR`, 512 bytes apart); `hypervisor::virtio_windows`
//! says which apply.
//! Accesses are single `mov`s of the register's width (volatile), the
//! only form an instruction-decoding hypervisor has to emulate.
#![allow(unsafe_code)]

use eremite_virtq::DeviceRegisters;

use crate::hypervisor::VirtioWindows;

/// One device's register window.
pub(super) struct MmioWindow {
    base: u64,
    len: u64,
}

impl MmioWindow {
    /// The window at `addr`, if `addr` is one of `windows` (which the page
    /// tables map).
    pub(super) fn new(addr: u64, windows: &VirtioWindows) -> Option<Self> {
        let offset = addr.checked_sub(windows.addr)?;
        let is_window =
            offset.is_multiple_of(windows.stride) && offset / windows.stride < windows.count;
        is_window.then_some(Self {
            base: addr,
            len: windows.stride,
        })
    }

    /// The address of the `width`-byte register at `offset`.
    ///
    /// # Panics
    /// If the register is not inside the window or not aligned to its
    /// width: offsets come from `eremite-virtq`'s constants, so this is a
    /// bug there, never the device's doing.
    fn register(&self, offset: u32, width: u32) -> u64 {
        assert!(
            offset.is_multiple_of(width) && u64::from(offset) + u64::from(width) <= self.len,
            "virtio-MMIO access of {width} bytes at offset {offset:#x}"
        );
        self.base + u64::from(offset)
    }
}

impl DeviceRegisters for MmioWindow {
    fn read32(&self, offset: u32) -> u32 {
        let addr = self.register(offset, 4);
        // SAFETY: (1) `addr` is a 4-byte aligned address inside one of the
        // hypervisor's register windows (the layout's at VIRTIO_MMIO_ADDR,
        // or QEMU microvm's on PVH), which the VMM or the PVH entry maps at
        // CPL3 with no RAM behind it (checked by `new` and `register`); (2) no Rust reference covers that range, so a
        // volatile read races with nothing the compiler knows of.
        u32::from_le(unsafe { core::ptr::read_volatile(addr as *const u32) })
    }

    fn write32(&self, offset: u32, value: u32) {
        let addr = self.register(offset, 4);
        // SAFETY: as in `read32`; the write goes to the device, never to
        // RAM.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value.to_le()) }
    }

    fn read8(&self, offset: u32) -> u8 {
        let addr = self.register(offset, 1);
        // SAFETY: as in `read32`, for one byte of the configuration space.
        unsafe { core::ptr::read_volatile(addr as *const u8) }
    }
}
