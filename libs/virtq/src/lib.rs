//! The driver side of virtio 1.2 for eremite's kernel: the virtio-MMIO
//! transport (§4.2), split virtqueues (§2.7) and the network device
//! (§5.1), as pure logic over two abstractions the kernel implements:
//!
//! - [`DeviceRegisters`]: a device's register window (every access is a
//!   VM exit, so the code here touches registers only to set the device
//!   up and to notify a queue);
//! - [`DmaMemory`]: memory shared with the device, addressed by guest
//!   physical address, with the barriers the ring protocol needs.
//!
//! Key types:
//! - [`Transport`]: the initialisation handshake of §3.1.1 over the MMIO
//!   registers, queue setup, notifications and reset;
//! - [`SplitQueue`]: one split virtqueue as its driver sees it: free
//!   descriptors, chains made available, used chains taken back, and
//!   `VIRTIO_F_EVENT_IDX` suppression both ways;
//! - [`NetDriver`]: a virtio-net card with its receive queue kept full of
//!   buffers and its transmit buffers recycled. The kernel wraps it in a
//!   `smoltcp::phy::Device`.
//!
//! The device is not trusted to be correct: every index, id and length it
//! writes into shared memory is checked before use, and a device that
//! breaks the protocol costs frames, never the kernel's memory safety (the
//! kernel's [`DmaMemory`] checks every address against its allocation, and
//! the addresses come from here, never from the device).
//!
//! Neighbours: `kernel/src/drivers/virtio/` implements the two traits with
//! volatile accesses and fences; the VMM's device is `vmm/src/devices/`
//! (see `docs/devices/virtio-net.md`). The host tests drive everything
//! against a fake device over a `Vec` (`fake.rs`).
#![no_std]
#![forbid(unsafe_code)]
// Integers from the device become indices and lengths here (STYLE.md).
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod mmio;
mod net;
mod queue;

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod fake;
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests;

pub use mmio::{InitError, Transport, feature, reg, status};
pub use net::{
    Frame, MAX_FRAME_BYTES, MIN_JUMBO_RX_BUFFERS, NET_DEVICE_ID, NET_HDR_BYTES, NetConfig,
    NetCounters, NetDriver, NetInitError, RX_BUFFER_BYTES, RX_QUEUE, Sizing, TX_QUEUE, TxSlot,
    net_feature,
};
pub use queue::{MAX_QUEUE_SIZE, QueueError, QueueLayout, SplitQueue, Used};

/// A virtio-MMIO device's register window (§4.2.2), addressed by offset
/// from its base. Values are as the device presents them (the registers
/// are little-endian, §4.2.2).
///
/// The driver uses 32-bit accesses for the registers and 8-bit accesses
/// for the byte fields of the configuration space (§4.2.2.2). An
/// implementation may panic on an offset outside its window or not
/// aligned to the access width: the offsets come from this crate, never
/// from the device.
pub trait DeviceRegisters {
    /// Read the 32-bit register at `offset`.
    fn read32(&self, offset: u32) -> u32;
    /// Write the 32-bit register at `offset`.
    fn write32(&self, offset: u32, value: u32);
    /// Read one byte of the configuration space at `offset` (from the
    /// window's base, so at least [`reg::CONFIG`]).
    fn read8(&self, offset: u32) -> u8;
}

/// Memory shared with a device ("DMA" memory), addressed by guest
/// physical address. Multi-byte values are little-endian in memory
/// (virtio 1.x, §2.4).
///
/// The device reads and writes this memory concurrently, so an
/// implementation must not let the compiler cache or merge accesses
/// (the kernel uses volatile accesses), and the three fences must order
/// accesses as seen by the device. Every address this crate passes lies
/// in a region the caller gave it ([`NetDriver::new`]) and is aligned to
/// the access width; an implementation may panic otherwise (a bug here,
/// never the device's doing).
pub trait DmaMemory {
    /// Read a `u16` at `addr`.
    fn read_u16(&self, addr: u64) -> u16;
    /// Read a `u32` at `addr`.
    fn read_u32(&self, addr: u64) -> u32;
    /// Read a `u64` at `addr`.
    fn read_u64(&self, addr: u64) -> u64;
    /// Write a `u16` at `addr` (one store: the device may read it at any
    /// time, so it must never see half of it).
    fn write_u16(&self, addr: u64, value: u16);
    /// Write a `u32` at `addr` (one store).
    fn write_u32(&self, addr: u64, value: u32);
    /// Write a `u64` at `addr` (one store).
    fn write_u64(&self, addr: u64, value: u64);
    /// Copy `out.len()` bytes from `addr` into `out`.
    fn read_bytes(&self, addr: u64, out: &mut [u8]);
    /// Copy `bytes` to `addr`.
    fn write_bytes(&self, addr: u64, bytes: &[u8]);
    /// Write barrier: every write before it is visible to the device
    /// before any write after it (Linux's `virt_wmb`). Used before the
    /// available index is published, so the device never sees an index
    /// before the ring entry and descriptors it covers.
    fn publish_fence(&self);
    /// Read barrier: every read before it completes before any read after
    /// it (`virt_rmb`). Used after the used index is read, so the entries
    /// and buffer bytes it covers are read after it.
    fn consume_fence(&self);
    /// Full barrier: every write before it is visible before any read
    /// after it (`virt_mb`). Used between publishing an index and reading
    /// the other side's event index or used index, the one place where
    /// store-to-load order matters (§2.7.10, §2.7.7.2).
    fn full_fence(&self);
}

/// Write `len` zero bytes at `addr`.
fn write_zeros(mem: &impl DmaMemory, addr: u64, len: u64) {
    const CHUNK: [u8; 64] = [0; 64];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK.len() as u64);
        #[allow(clippy::cast_possible_truncation)] // n <= 64
        mem.write_bytes(addr + done, &CHUNK[..n as usize]);
        done += n;
    }
}

/// Round `value` up to a multiple of `align` (a power of two).
const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}
