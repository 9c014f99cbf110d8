//! Virtio devices on the virtio-MMIO transport.
//!
//! [`MmioTransport`] is the device's 4 KiB register window (virtio 1.2
//! §4.2, version 2): the vCPU loop hands it every MMIO access inside that
//! window. It runs the status handshake (§3.1), feature negotiation (§2.2)
//! and queue setup, and at `DRIVER_OK` hands the validated queues to a
//! [`VirtioDevice`]. The only device so far is [`Net`] (§5.1), backed by a
//! tap device ([`Tap`]) or, in tests, by anything that implements
//! [`NetBackend`].
//!
//! Exits are expensive here (tens of microseconds), so the fast paths take
//! none that the transport can avoid: each queue has an [`EventFd`] that the
//! VMM registers with `KVM_IOEVENTFD` on the `QueueNotify` register (KVM
//! signals it without leaving the kernel), and the device raises its
//! interrupt through an [`EventFd`] registered with `KVM_IRQFD`. A
//! `QueueNotify` write that does reach the VMM signals the same queue
//! event, so both paths end in the device's worker thread. Split rings with
//! `VIRTIO_F_EVENT_IDX` (§2.7.7, §2.7.10) suppress notifications both ways.
//!
//! The guest is hostile. Registers are parsed, then acted on; a queue is
//! checked (size, alignment, every ring inside guest RAM) before it is
//! used; every descriptor chain is parsed into a [`queue::Chain`] (bounded
//! length, no loops, every buffer inside RAM, readable before writable)
//! before a byte is copied; a bad access is counted and ignored, or sets
//! `DEVICE_NEEDS_RESET`. Nothing the guest does makes the VMM panic.
//!
//! Ring handling (available and used rings, event index arithmetic) is
//! rust-vmm's `virtio-queue`; payload bytes move only through
//! [`GuestRam`]'s bounds-checked copies.
//!
//! [`MmioBus`] holds a VM's devices, one window and one interrupt vector
//! each, and routes the vCPUs' MMIO exits to them.
//!
//! Neighbours: `memory` (guest RAM), `kvm` (which routes MMIO exits to the
//! bus and registers the event descriptors with KVM), the crate root
//! (which builds the bus from `--net` and announces its devices on the
//! guest's command line). `unsafe` lives only in `net/tap.rs` (one ioctl).

#![deny(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod bus;
mod mmio;
mod net;
mod queue;

#[cfg(test)]
pub(crate) mod testing;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestRam;

pub use bus::{BusFull, NetReport};
pub(crate) use bus::{MmioBus, SavedCard};
pub use mmio::TransportError;
pub(crate) use mmio::{MMIO_WINDOW_BYTES, MmioTransport, QUEUE_NOTIFY_OFFSET, TransportState};
pub use net::{
    HostAddr, HostEntry, Link, MacAddr, NetCounters, NetSpec, NetSpecError, PasstError,
    PortProtocol, Publish, PublishError, SwitchError, TapError, ensure_switch, parse_host_entry,
    parse_net_spec, parse_publish, serve_switch, switch_socket_path,
};
pub(crate) use net::{HostLink, Net, NetBackend, Passt, PasstConfig, SwitchPort, Tap};

/// A virtio device behind a transport.
pub(crate) trait VirtioDevice: Send {
    /// Device ID (virtio 1.2 §5): 1 for a network card.
    fn device_id(&self) -> u32;
    /// Feature bits the device offers (§2.2, §6).
    fn features(&self) -> u64;
    /// The maximum size of each queue; the number of queues is its length.
    /// Each must be a power of two no larger than 32768.
    fn queue_max_sizes(&self) -> &[u16];
    /// Read `data.len()` bytes of the device configuration space at
    /// `offset`. Bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Start serving the queues: the driver set `DRIVER_OK`.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stop serving the queues and forget them (device reset, or the VM
    /// ends). Returns once the device no longer touches guest memory.
    fn reset(&mut self);
    /// Stop serving the queues but keep them, for a snapshot: where each
    /// queue stands, or `None` if the device was not serving. Returns once
    /// the device no longer touches guest memory.
    fn suspend(&mut self) -> Option<Vec<QueuePosition>>;
    /// Serve the queues [`VirtioDevice::suspend`] kept again.
    fn resume(&mut self) -> Result<(), ActivateError>;
}

/// Where a queue of a suspended device stands: the next available entry it
/// will take and the next used entry it will fill (virtio 1.2 §2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct QueuePosition {
    pub(crate) next_avail: u16,
    pub(crate) next_used: u16,
}

/// What a device gets when the driver sets `DRIVER_OK`.
pub(crate) struct Activation {
    /// Guest RAM.
    pub(crate) ram: GuestRam,
    /// The features the driver accepted (a subset of the device's).
    pub(crate) features: u64,
    /// One per queue, in order. A queue the driver did not enable is not
    /// `ready()`; the others are checked to lie in RAM, suitably aligned.
    pub(crate) queues: Vec<ActiveQueue>,
    /// The device's interrupt.
    pub(crate) interrupt: Arc<Interrupt>,
}

/// A queue and the event the driver's notifications for it arrive on.
pub(crate) struct ActiveQueue {
    pub(crate) queue: Queue,
    pub(crate) notify: Arc<EventFd>,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActivateError {
    /// The driver did not enable a queue the device needs.
    #[error("guest did not enable queue {0}")]
    QueueNotReady(usize),
    /// The backend was lost earlier (a worker thread that could not start
    /// or that panicked).
    #[error("the device has no backend any more")]
    NoBackend,
    /// The host could not create the worker's resources.
    #[error("cannot start the device's worker: {0}")]
    Host(#[source] io::Error),
}

/// The device's side of its interrupt: the `InterruptStatus` bits (virtio
/// 1.2 §4.2.2), the `DEVICE_NEEDS_RESET` flag (§2.1.2) and the event that
/// raises the interrupt (registered with `KVM_IRQFD`).
pub(crate) struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    event: EventFd,
    /// Interrupts raised since the transport was made, for `--stats`.
    raised: AtomicU64,
}

impl Interrupt {
    fn new() -> io::Result<Self> {
        Ok(Self {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            event: new_event()?,
            raised: AtomicU64::new(0),
        })
    }

    /// The device put buffers in a used ring.
    pub(crate) fn signal_used_buffer(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// The device cannot go on (the guest broke a ring): set
    /// `DEVICE_NEEDS_RESET` and send a configuration change notification,
    /// as §2.1.2 requires once `DRIVER_OK` is set.
    pub(crate) fn signal_needs_reset(&self) {
        self.set_needs_reset();
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// Put back the status bits and the reset flag a snapshot saved.
    fn restore(&self, status: u32, needs_reset: bool) {
        self.status.store(status, Ordering::Release);
        self.needs_reset.store(needs_reset, Ordering::Release);
    }

    /// Set `DEVICE_NEEDS_RESET` without a notification (before `DRIVER_OK`).
    fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::Release);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::AcqRel);
        // Fails only if the counter would overflow (it is non-blocking);
        // the interrupt is pending anyway then.
        let _ = self.event.write(1);
        self.raised.fetch_add(1, Ordering::Relaxed);
    }

    /// Interrupts raised so far.
    fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::Release);
        self.needs_reset.store(false, Ordering::Release);
    }

    /// The event to register with `KVM_IRQFD`.
    pub(crate) fn event(&self) -> &EventFd {
        &self.event
    }
}

/// A non-blocking, close-on-exec event.
fn new_event() -> io::Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
}

/// Copy `data.len()` bytes of `config` from `offset` into `data`; what lies
/// past the end of `config` reads as zero.
fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(available) = config.get(start..) {
        let n = available.len().min(data.len());
        data[..n].copy_from_slice(&available[..n]);
    }
}
