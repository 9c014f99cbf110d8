//! socket2 0.6's API for `target_os = "hermit"`, so that tokio's `net`
//! feature and other users of socket2 build for eremite guests.
//!
//! socket2's releases know Unix and Windows; the hermit target is neither
//! (no `target_family`), so they stop with "Socket2 doesn't support the
//! compile target". On hermit a socket is a file descriptor
//! (`std::os::fd`) and the socket calls are hermit-abi's `sys_*`
//! functions, which eremite's kernel implements. This crate gives socket2's
//! names and signatures for the part of its API that those calls can
//! serve, and replaces socket2 through `[patch.crates-io]`:
//!
//! ```toml
//! [patch.crates-io]
//! socket2 = { path = "<checkout>/compat/socket2" }
//! ```
//!
//! It has: [`Domain`] (IPv4, IPv6), [`Type`] (stream, datagram,
//! non-blocking, close-on-exec), [`Protocol`] (TCP, UDP), [`SockAddr`],
//! [`Socket`] (create, bind, listen, accept, connect with or without a
//! timeout, send and receive with or without an address, peek, shutdown,
//! non-blocking mode, the `SO_*`, `IP_*` and `TCP_NODELAY` options the
//! hermit ABI names, conversions from and to std's sockets and
//! `OwnedFd`) and [`SockRef`]. It lacks what the hermit ABI has no call
//! for: Unix-domain sockets, socket pairs, `sendmsg`/`recvmsg`, vectored
//! I/O, out-of-band data, raw sockets, and the Linux- or BSD-only options.
//! An option the ABI names but eremite's kernel does not implement (such as
//! `IP_TOS`, or anything IPv6: the kernel speaks IPv4 only) fails with the
//! kernel's error, `ENOPROTOOPT` or `EAFNOSUPPORT`; keep-alive timing
//! ([`TcpKeepalive`] with a time, interval or retry count) fails with
//! [`std::io::ErrorKind::Unsupported`].
//!
//! On other targets only the address conversions are compiled, for their
//! host tests; a program for Linux should use socket2 itself.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

#[cfg(not(any(target_os = "hermit", test)))]
compile_error!(
    "this socket2 is for target_os = \"hermit\" (eremite); elsewhere use socket2 from crates.io"
);

mod sockaddr;
#[cfg(target_os = "hermit")]
mod socket;
#[cfg(target_os = "hermit")]
mod sockref;
#[cfg(target_os = "hermit")]
mod sys;

use std::ffi::c_int;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use sockaddr::{SockAddr, SockAddrStorage, sa_family_t, socklen_t};
#[cfg(target_os = "hermit")]
pub use socket::Socket;
#[cfg(target_os = "hermit")]
pub use sockref::SockRef;

/// `From` both ways between each newtype and its `c_int`, as socket2 has.
macro_rules! int_conversions {
    ($($newtype:ident),*) => {$(
        impl From<c_int> for $newtype {
            fn from(value: c_int) -> $newtype {
                $newtype(value)
            }
        }

        impl From<$newtype> for c_int {
            fn from(value: $newtype) -> c_int {
                value.0
            }
        }
    )*};
}

int_conversions!(Domain, Type, Protocol);

/// `Debug` that shows a newtype's constants by their C names, and other
/// values as numbers.
macro_rules! names {
    ($newtype:ident { $($constant:ident: $name:literal),* }) => {
        impl fmt::Debug for $newtype {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match *self {
                    $($newtype::$constant => f.write_str($name),)*
                    $newtype(other) => write!(f, "{other}"),
                }
            }
        }
    };
}

/// A communication domain (address family): `AF_INET` or `AF_INET6`, in
/// hermit's numbering.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(c_int);

impl Domain {
    /// IPv4.
    pub const IPV4: Domain = Domain(hermit_abi::AF_INET);
    /// IPv6 (eremite's kernel refuses it with `EAFNOSUPPORT`).
    pub const IPV6: Domain = Domain(hermit_abi::AF_INET6);

    /// The domain of `address`.
    pub const fn for_address(address: SocketAddr) -> Domain {
        match address {
            SocketAddr::V4(_) => Domain::IPV4,
            SocketAddr::V6(_) => Domain::IPV6,
        }
    }

    const fn from_family(family: sa_family_t) -> Domain {
        Domain(family as c_int)
    }
}

names!(Domain {
    IPV4: "AF_INET",
    IPV6: "AF_INET6"
});

/// A socket type, with the flags hermit's `socket` takes beside it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type(c_int);

impl Type {
    /// `SOCK_STREAM`: TCP.
    pub const STREAM: Type = Type(hermit_abi::SOCK_STREAM);
    /// `SOCK_DGRAM`: UDP.
    pub const DGRAM: Type = Type(hermit_abi::SOCK_DGRAM);

    /// The same type, created in non-blocking mode (`SOCK_NONBLOCK`).
    pub const fn nonblocking(self) -> Type {
        Type(self.0 | hermit_abi::SOCK_NONBLOCK)
    }

    /// The same type with `SOCK_CLOEXEC` (accepted; a unikernel never
    /// executes another program).
    pub const fn cloexec(self) -> Type {
        Type(self.0 | hermit_abi::SOCK_CLOEXEC)
    }
}

impl fmt::Debug for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = hermit_abi::SOCK_NONBLOCK | hermit_abi::SOCK_CLOEXEC;
        match Type(self.0 & !flags) {
            Type::STREAM => f.write_str("SOCK_STREAM")?,
            Type::DGRAM => f.write_str("SOCK_DGRAM")?,
            Type(other) => write!(f, "{other}")?,
        }
        if self.0 & hermit_abi::SOCK_NONBLOCK != 0 {
            f.write_str(" | SOCK_NONBLOCK")?;
        }
        if self.0 & hermit_abi::SOCK_CLOEXEC != 0 {
            f.write_str(" | SOCK_CLOEXEC")?;
        }
        Ok(())
    }
}

/// A protocol within a domain and type.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(c_int);

impl Protocol {
    /// `IPPROTO_TCP`.
    pub const TCP: Protocol = Protocol(hermit_abi::IPPROTO_TCP);
    /// `IPPROTO_UDP`.
    pub const UDP: Protocol = Protocol(hermit_abi::IPPROTO_UDP);
}

names!(Protocol {
    TCP: "IPPROTO_TCP",
    UDP: "IPPROTO_UDP"
});

/// TCP keep-alive settings for [`Socket::set_tcp_keepalive`]. The hermit
/// ABI can only turn keep-alive on (`SO_KEEPALIVE`, with the kernel's own
/// timing); a time, interval or retry count makes the call fail.
#[derive(Clone, Debug, Default)]
pub struct TcpKeepalive {
    time: Option<Duration>,
    interval: Option<Duration>,
    retries: Option<u32>,
}

impl TcpKeepalive {
    /// Keep-alive with the system's timing.
    pub const fn new() -> TcpKeepalive {
        TcpKeepalive {
            time: None,
            interval: None,
            retries: None,
        }
    }

    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub const fn with_time(self, time: Duration) -> Self {
        Self {
            time: Some(time),
            ..self
        }
    }

    /// Time between probes (`TCP_KEEPINTVL`).
    pub const fn with_interval(self, interval: Duration) -> Self {
        Self {
            interval: Some(interval),
            ..self
        }
    }

    /// Probes before the connection is dropped (`TCP_KEEPCNT`).
    pub const fn with_retries(self, retries: u32) -> Self {
        Self {
            retries: Some(retries),
            ..self
        }
    }

    /// Whether it asks for more than the system's timing.
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))]
    fn has_timing(&self) -> bool {
        self.time.is_some() || self.interval.is_some() || self.retries.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_show_their_names_and_flags() {
        assert_eq!(format!("{:?}", Type::STREAM), "SOCK_STREAM");
        assert_eq!(
            format!("{:?}", Type::DGRAM.nonblocking().cloexec()),
            "SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC"
        );
        assert_eq!(c_int::from(Type::STREAM.nonblocking()), 1 | 0o4000);
        assert_eq!(format!("{:?}", Domain::from(3)), "AF_INET");
        assert_eq!(format!("{:?}", Domain::from(42)), "42");
        assert_eq!(format!("{:?}", Protocol::UDP), "IPPROTO_UDP");
    }

    #[test]
    fn domains_follow_addresses() {
        assert_eq!(
            Domain::for_address("10.0.0.2:80".parse().unwrap()),
            Domain::IPV4
        );
        assert_eq!(
            Domain::for_address("[::1]:80".parse().unwrap()),
            Domain::IPV6
        );
    }

    #[test]
    fn keepalive_timing_is_noticed() {
        assert!(!TcpKeepalive::new().has_timing());
        assert!(TcpKeepalive::new().with_retries(3).has_timing());
        assert!(
            TcpKeepalive::new()
                .with_time(Duration::from_secs(1))
                .has_timing()
        );
    }
}
