//! Which local ports are taken, per protocol, and the choice of ephemeral
//! ports. A port stays taken while any socket holds it: a bound socket, an
//! accepted connection, or a closed connection that lingers in smoltcp.
//! Whether a second socket may bind a taken port is decided by the stack,
//! which knows the holders' addresses and options.

use alloc::collections::BTreeMap;
use core::ops::RangeInclusive;

use eremite_interface::errno::{EADDRNOTAVAIL, Errno};

use crate::Protocol;

/// Linux's default `net.ipv4.ip_local_port_range`.
pub(crate) const EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

pub(crate) struct Ports {
    holders: BTreeMap<(Protocol, u16), u32>,
    next_ephemeral: u16,
}

impl Ports {
    pub(crate) fn new(seed: u64) -> Self {
        let span = u64::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        let offset = u16::try_from(seed % span).unwrap_or(0);
        Self {
            holders: BTreeMap::new(),
            next_ephemeral: EPHEMERAL.start() + offset,
        }
    }

    pub(crate) fn is_taken(&self, protocol: Protocol, port: u16) -> bool {
        self.holders.contains_key(&(protocol, port))
    }

    pub(crate) fn hold(&mut self, protocol: Protocol, port: u16) {
        *self.holders.entry((protocol, port)).or_insert(0) += 1;
    }

    pub(crate) fn release(&mut self, protocol: Protocol, port: u16) {
        if let Some(count) = self.holders.get_mut(&(protocol, port)) {
            *count -= 1;
            if *count == 0 {
                self.holders.remove(&(protocol, port));
            }
        }
    }

    /// Takes the next free ephemeral port, going round the range once;
    /// `EADDRNOTAVAIL` when all are taken (as Linux's `connect`).
    pub(crate) fn hold_ephemeral(&mut self, protocol: Protocol) -> Result<u16, Errno> {
        for _ in EPHEMERAL {
            let port = self.next_ephemeral;
            self.next_ephemeral = if port >= *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
            if !self.is_taken(protocol, port) {
                self.hold(protocol, port);
                return Ok(port);
            }
        }
        Err(EADDRNOTAVAIL)
    }

    /// How many (protocol, port) pairs are taken.
    pub(crate) fn len(&self) -> usize {
        self.holders.len()
    }
}
