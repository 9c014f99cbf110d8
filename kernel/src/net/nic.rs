//! The network card under the stack, and the network settings from the
//! kernel command line.
//!
//! [`Nic::probe`] finds the virtio-net device the VMM announced
//! (`virtio_mmio.device=...`); without one the stack runs on
//! [`Nic::Absent`], which drops what it is given and never receives, so
//! that loopback sockets work in every VM.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use eremite_interface::cmdline::{self, Param};
use eremite_interface::layout::DEVICE_VECTOR;
use eremite_net::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};

use crate::bootinfo;
use crate::console::klog;
use crate::drivers::virtio::{self, VirtioNet};

/// Network settings from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Settings {
    /// `net.ip=ADDR/PREFIX`.
    pub(super) address: Option<(Ipv4Addr, u8)>,
    /// `net.gateway=ADDR`.
    pub(super) gateway: Option<Ipv4Addr>,
}

/// Our parameters on the command line; malformed ones are logged and
/// skipped.
fn params() -> impl Iterator<Item = Param> {
    let tokens = bootinfo::info()
        .into_iter()
        .flat_map(|info| bootinfo::strings(&info.cmdline));
    tokens.filter_map(
        |token| match cmdline::parse_param(core::str::from_utf8(token).ok()?)? {
            Ok(param) => Some(param),
            Err(e) => {
                klog!("net: ignoring a bad command-line parameter: {e}");
                None
            }
        },
    )
}

/// The settings the VMM passed.
pub(super) fn settings() -> Settings {
    let mut settings = Settings::default();
    for param in params() {
        match param {
            Param::NetAddress(a) => {
                settings.address = Some((Ipv4Addr::from(a.address), a.prefix_len));
            }
            Param::NetGateway(g) => settings.gateway = Some(Ipv4Addr::from(g.0)),
            Param::VirtioMmio(_) => {}
        }
    }
    settings
}

/// Largest Ethernet frame without its FCS.
const FRAME_BYTES: usize = 1514;

/// The card.
// There is one, for the life of the VM: the unused space of the small
// variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Nic {
    /// The virtio-net card the VMM announced.
    Virtio(VirtioNet),
    /// No card: frames sent are dropped.
    Absent(Discard),
}

impl Nic {
    /// The card the command line names, or [`Nic::Absent`]. Only the
    /// first device's interrupt vector has a gate, so a card on another
    /// one is left alone.
    pub(super) fn probe() -> Self {
        let card = params().find_map(|param| match param {
            Param::VirtioMmio(device) if device.vector == DEVICE_VECTOR => Some(device),
            Param::VirtioMmio(device) => {
                klog!("net: no interrupt gate for vector {}", device.vector);
                None
            }
            _ => None,
        });
        match card.map(|device| virtio::probe(device.addr)) {
            Some(Ok(card)) => Nic::Virtio(card),
            Some(Err(e)) => {
                klog!("net: no network card: {e}");
                Nic::Absent(Discard::default())
            }
            None => Nic::Absent(Discard::default()),
        }
    }

    /// Whether a real card is present (its interrupts may wake threads).
    pub(super) fn is_card(&self) -> bool {
        matches!(self, Nic::Virtio(_))
    }

    /// The card's MAC address (a fixed local one without a card).
    pub(super) fn mac(&self) -> [u8; 6] {
        match self {
            Nic::Virtio(card) => card.mac(),
            Nic::Absent(_) => [0x02, 0, 0, 0, 0, 1],
        }
    }

    /// Tell the card about what the last poll sent and gave back.
    pub(super) fn flush(&mut self) {
        if let Nic::Virtio(card) = self {
            card.flush();
        }
    }

    /// Whether received frames wait.
    pub(super) fn has_frames(&self) -> bool {
        match self {
            Nic::Virtio(card) => card.has_frames(),
            Nic::Absent(_) => false,
        }
    }

    /// Stop receive interrupts while an idle CPU watches [`Self::has_frames`].
    pub(super) fn disable_receive_interrupts(&mut self) {
        if let Nic::Virtio(card) = self {
            card.disable_receive_interrupts();
        }
    }

    /// Ask for an interrupt when frames arrive; `true` if some already
    /// did (poll again rather than sleep).
    pub(super) fn enable_interrupts(&mut self) -> bool {
        match self {
            Nic::Virtio(card) => card.enable_interrupts(),
            Nic::Absent(_) => false,
        }
    }
}

/// A device that drops every frame.
#[derive(Default)]
pub(super) struct Discard {
    scratch: Vec<u8>,
}

/// A transmit token of [`Discard`].
pub(super) struct DiscardTx<'a>(&'a mut Vec<u8>);

impl phy::TxToken for DiscardTx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if self.0.len() < len {
            *self.0 = vec![0; len];
        }
        f(&mut self.0[..len])
    }
}

/// Tokens of whichever card is present (only a real card receives).
pub(super) type RxToken<'a> = virtio::RxToken<'a>;

pub(super) enum TxToken<'a> {
    Virtio(virtio::TxToken<'a>),
    Absent(DiscardTx<'a>),
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        match self {
            TxToken::Virtio(token) => token.consume(len, f),
            TxToken::Absent(token) => token.consume(len, f),
        }
    }
}

impl Device for Nic {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        now: eremite_net::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        match self {
            Nic::Virtio(card) => card.receive(now).map(|(rx, tx)| (rx, TxToken::Virtio(tx))),
            Nic::Absent(_) => None,
        }
    }

    fn transmit(&mut self, now: eremite_net::Instant) -> Option<Self::TxToken<'_>> {
        match self {
            Nic::Virtio(card) => card.transmit(now).map(TxToken::Virtio),
            Nic::Absent(discard) => Some(TxToken::Absent(DiscardTx(&mut discard.scratch))),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        match self {
            Nic::Virtio(card) => card.capabilities(),
            Nic::Absent(_) => {
                let mut caps = DeviceCapabilities::default();
                caps.medium = Medium::Ethernet;
                caps.max_transmission_unit = FRAME_BYTES;
                caps.max_burst_size = Some(1);
                caps
            }
        }
    }
}
