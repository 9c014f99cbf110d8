//! virtio devices on the virtio-MMIO transport (virtio 1.2 §4.2).
//!
//! `eremite-virtq` holds the protocol: the handshake, the split
//! virtqueues, `EVENT_IDX` suppression, the network card's buffers and
//! every check of what the device writes back. This module gives it the
//! two things safe code cannot provide:
//! - `mmio`: [`eremite_virtq::DeviceRegisters`] over a device's register
//!   window, volatile 32-bit and 8-bit accesses (each a VM exit);
//! - `dma`: [`eremite_virtq::DmaMemory`] over one heap allocation shared
//!   with the device (guest RAM is identity-mapped, so its address is the
//!   address the device uses), with volatile accesses and the fences of
//!   the ring protocol.
//!
//! On top, `net` makes the network card a `smoltcp::phy::Device`
//! ([`VirtioNet`], found with [`probe`]). The kernel's `net` module owns
//! it; on our VMM the device's interrupt is an edge-triggered MSI on its
//! vector (`layout::DEVICE_VECTOR + n`) that needs no acknowledgement
//! besides the local APIC's EOI, and `VirtioNet` never reads
//! `InterruptStatus`. On QEMU microvm it is an I/O APIC line that the PVH
//! boot path routes to the same vector, and `VirtioNet` acknowledges
//! `InterruptStatus` before it asks for the next interrupt.
//!
//! The `unsafe` here is listed in `docs/safety.md`; it is confined to
//! `mmio.rs` and `dma.rs`.

mod dma;
mod mmio;
mod net;

pub(crate) use net::{RxToken, TxToken, VirtioNet, probe};
