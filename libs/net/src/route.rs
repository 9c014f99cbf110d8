//! Which way a packet goes: out of the device, or round the in-guest
//! loopback interface. Linux routes `127.0.0.0/8` and the host's own
//! addresses through `lo` (ip-route(8), the `local` table); so does this
//! stack.

use core::net::{Ipv4Addr, SocketAddrV4};

use eremite_interface::errno::{EADDRNOTAVAIL, ECONNREFUSED, EINVAL, ENETUNREACH, Errno};
use smoltcp::wire::Ipv4Cidr;

/// One of the stack's two interfaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// The device given to `Stack::poll`.
    External,
    /// The in-guest loopback interface.
    Loopback,
}

impl Path {
    pub(crate) fn index(self) -> usize {
        match self {
            Path::External => 0,
            Path::Loopback => 1,
        }
    }
}

/// The stack's addresses and the rules that follow from them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addressing {
    pub(crate) cidr: Ipv4Cidr,
    pub(crate) gateway: Option<Ipv4Addr>,
}

impl Addressing {
    pub(crate) fn own(&self) -> Ipv4Addr {
        self.cidr.address()
    }

    /// Whether `ip` is this host (so traffic to it loops back). Linux
    /// treats a connection to `0.0.0.0` as one to itself.
    pub(crate) fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip.is_loopback() || ip.is_unspecified() || ip == self.own()
    }

    pub(crate) fn path_to(&self, ip: Ipv4Addr) -> Path {
        if self.is_local(ip) {
            Path::Loopback
        } else {
            Path::External
        }
    }

    /// Whether a socket bound to `ip` sees traffic on `path`.
    pub(crate) fn serves(&self, ip: Ipv4Addr, path: Path) -> bool {
        ip.is_unspecified() || ip == self.own() || path == Path::Loopback && ip.is_loopback()
    }

    /// Whether a socket bound to `bound` receives what is sent to `dst`.
    pub(crate) fn receives(bound: Ipv4Addr, dst: Ipv4Addr) -> bool {
        bound.is_unspecified() || bound == dst
    }

    /// Whether a packet from `src` that came in on `path` must be ignored:
    /// `127.0.0.0/8` never leaves a host (RFC 1122 §3.2.1.3), and the
    /// host's own address only talks to it over loopback. Linux drops such
    /// "martians"; accepting them would let a host on the network pass
    /// for a local one.
    pub(crate) fn is_martian(&self, src: Ipv4Addr, path: Path) -> bool {
        path == Path::External && (src.is_loopback() || src == self.own())
    }

    /// `bind(2)` accepts the wildcard and the host's own addresses.
    pub(crate) fn check_bind(&self, ip: Ipv4Addr) -> Result<(), Errno> {
        if ip.is_unspecified() || ip.is_loopback() || ip == self.own() {
            Ok(())
        } else {
            Err(EADDRNOTAVAIL)
        }
    }

    /// The source address of traffic from a wildcard-bound socket to `dst`.
    pub(crate) fn source_for(&self, dst: Ipv4Addr) -> Ipv4Addr {
        if dst.is_loopback() || dst.is_unspecified() {
            Ipv4Addr::LOCALHOST
        } else {
            self.own()
        }
    }

    /// The address a TCP connection to `dst` really goes to, or why it
    /// cannot go there.
    pub(crate) fn stream_destination(&self, dst: SocketAddrV4) -> Result<SocketAddrV4, Errno> {
        if dst.port() == 0 {
            // Nothing listens on port 0; Linux answers with a reset.
            return Err(ECONNREFUSED);
        }
        if self.is_broadcast(*dst.ip()) || dst.ip().is_multicast() {
            return Err(ENETUNREACH);
        }
        self.destination(dst)
    }

    /// The address a datagram to `dst` really goes to, or why it cannot go
    /// there. Broadcasts go out of the device; the caller checks
    /// `SO_BROADCAST`.
    pub(crate) fn datagram_destination(&self, dst: SocketAddrV4) -> Result<SocketAddrV4, Errno> {
        if dst.port() == 0 {
            return Err(EINVAL);
        }
        if dst.ip().is_multicast() {
            return Err(ENETUNREACH);
        }
        if self.is_broadcast(*dst.ip()) {
            return Ok(dst);
        }
        self.destination(dst)
    }

    fn destination(&self, dst: SocketAddrV4) -> Result<SocketAddrV4, Errno> {
        let ip = *dst.ip();
        if ip.is_unspecified() {
            return Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst.port()));
        }
        if self.is_local(ip) || self.cidr.contains_addr(&ip) || self.gateway.is_some() {
            Ok(dst)
        } else {
            Err(ENETUNREACH)
        }
    }

    pub(crate) fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip.is_broadcast() || self.cidr.broadcast() == Some(ip)
    }
}
