//! The virtio network card as a `smoltcp::phy::Device` ([`VirtioNet`]).
//!
//! All logic is `eremite_virtq::NetDriver`'s; this is the glue: the
//! register window and the shared region it runs on, a MAC address when
//! the device offers none, and smoltcp's tokens.
//!
//! How the kernel's `net` module drives it: poll the stack (which calls
//! `receive` and `transmit` here) until it has nothing left to do, then
//! call [`VirtioNet::enable_interrupts`]; if that returns `true`, poll
//! again instead of sleeping. Otherwise the next received frame (or, when
//! every transmit buffer is in flight, the next one returned) raises one
//! interrupt on the vector the VMM announced with it; only the local APIC's EOI is
//! needed (on QEMU, whose interrupt is a line, `enable_interrupts` also
//! acknowledges the device's `InterruptStatus`). While polling, the device interrupts no more, and it is
//! notified (one exit, an ioeventfd on our VMM) only when it said it
//! waits for buffers (`VIRTIO_F_EVENT_IDX`).

use core::fmt;

use eremite_net::smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use eremite_net::smoltcp::time::Instant;
use eremite_virtq::{NetConfig, NetDriver, NetInitError, TxSlot};

use super::dma::DmaRegion;
use super::mmio::MmioWindow;
use crate::hypervisor::{self, DeviceInterrupt};

/// Largest queue asked for (the VMM offers 256). Each entry holds a
/// 1.5 KiB buffer, so the card takes about 784 KiB of heap at 256.
const MAX_QUEUE_SIZE: u16 = 256;
/// With a jumbo MTU (the tap's, through `VIRTIO_NET_F_MTU`), buffers of
/// up to 64 KiB may take a sixteenth of guest RAM, at most 16 MiB: a
/// 256 MiB guest gets 64 receive buffers, a 64 MiB one 32 (the fewest
/// worth it; less memory keeps the 1500-byte MTU).
fn jumbo_budget_bytes() -> u64 {
    (crate::mm::ram_bytes() / 16).min(16 << 20)
}

/// Why there is no network card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeError {
    /// The address is not one of the virtio-MMIO windows of the layout.
    NotAWindow(u64),
    /// The device refused, or there was no memory for its queues.
    Device(NetInitError),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAWindow(addr) => write!(f, "no virtio-MMIO window at {addr:#x}"),
            Self::Device(e) => write!(f, "virtio-net: {e}"),
        }
    }
}

/// A live virtio network card. `Send` (it may live in a lock), not
/// `Sync`.
pub(crate) struct VirtioNet {
    driver: NetDriver<MmioWindow, DmaRegion>,
    interrupt: DeviceInterrupt,
}

const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<VirtioNet>();
};

/// Set up the network card whose register window is at `addr`, and make
/// it live with its receive queue full. About 50 exits.
pub(crate) fn probe(addr: u64) -> Result<VirtioNet, ProbeError> {
    let windows = hypervisor::virtio_windows();
    let window = MmioWindow::new(addr, &windows).ok_or(ProbeError::NotAWindow(addr))?;
    let config = NetConfig {
        max_queue_size: MAX_QUEUE_SIZE,
        fallback_mac: random_mac(),
        jumbo_budget_bytes: jumbo_budget_bytes(),
    };
    let driver = NetDriver::new(window, config, |bytes| {
        let region = DmaRegion::new(bytes)?;
        let base = region.base();
        Some((region, base))
    })
    .map_err(ProbeError::Device)?;
    Ok(VirtioNet {
        driver,
        interrupt: windows.interrupt,
    })
}

/// A random, locally administered unicast address (§5.1.5: what the
/// driver should use when the device offers none, as Firecracker does
/// unless told a MAC).
fn random_mac() -> [u8; 6] {
    let bytes = crate::random::next_u64().to_le_bytes();
    [
        bytes[0] & !1 | 2,
        bytes[1],
        bytes[2],
        bytes[3],
        bytes[4],
        bytes[5],
    ]
}

impl VirtioNet {
    /// The card's MAC address.
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.driver.mac()
    }

    /// Tell the device about the frames sent and buffers given back since
    /// the last call (at most one exit per queue): call it after every
    /// poll of the stack.
    pub(crate) fn flush(&mut self) {
        self.driver.flush();
    }

    /// Whether received frames wait (one look at the ring).
    pub(crate) fn has_frames(&self) -> bool {
        self.driver.has_frames()
    }

    /// Stop receive interrupts while the caller watches [`Self::has_frames`].
    pub(crate) fn disable_receive_interrupts(&mut self) {
        self.driver.disable_receive_interrupts();
    }

    /// Ask for an interrupt on the next received frame (and on the next
    /// transmit completion if every transmit buffer is in flight). Returns
    /// `true` when such work is already pending: poll again, do not sleep.
    /// Call it after the last poll before sleeping: a later `receive`
    /// (any poll of the stack) turns receive interrupts off again.
    /// On an interrupt line (QEMU) the device's `InterruptStatus` is
    /// acknowledged first, which lowers the line: the next interrupt is a
    /// new edge.
    pub(crate) fn enable_interrupts(&mut self) -> bool {
        if self.interrupt == DeviceInterrupt::Line {
            self.driver.acknowledge_interrupt();
        }
        self.driver.enable_interrupts()
    }
}

impl Device for VirtioNet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let has_offload = self.driver.has_checksum_offload();
        let (frame, slot) = self.driver.receive()?;
        let rx = RxToken {
            bytes: frame.bytes,
            needs_check: has_offload && !frame.is_checksum_valid,
        };
        Some((rx, TxToken(slot)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        self.driver.transmit().map(TxToken)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.driver.max_frame_bytes();
        // The receive queue holds this many frames while nobody polls.
        caps.max_burst_size = Some(usize::from(self.driver.queue_sizes().0));
        // smoltcp computes every checksum; it checks TCP and UDP ones only
        // if the device does not (`GUEST_CSUM`: the device checks them on
        // its own thread, and `RxToken` checks those it did not vouch
        // for).
        if self.driver.has_checksum_offload() {
            caps.checksum.tcp = Checksum::Tx;
            caps.checksum.udp = Checksum::Tx;
        }
        caps
    }
}

/// A received frame, already copied out of the shared region.
pub(crate) struct RxToken<'a> {
    bytes: &'a [u8],
    /// Its TCP or UDP checksum is ours to check: smoltcp does not (see
    /// `capabilities`) and the device did not vouch for it.
    needs_check: bool,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        if self.needs_check && !eremite_net::is_transport_checksum_right(self.bytes) {
            // Dropped: smoltcp discards an empty frame as truncated.
            return f(&[]);
        }
        f(self.bytes)
    }
}

/// The right to send one frame.
pub(crate) struct TxToken<'a>(TxSlot<'a, MmioWindow, DmaRegion>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.0.send(len, f)
    }
}
