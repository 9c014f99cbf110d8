//! Name lookup for programs with no resolver of their own (hermit-abi's
//! `getaddrinfo` and `getaddrbyname`, which std's `ToSocketAddrs` calls):
//! a dotted quad, `localhost`, then `/etc/hosts`, then DNS to the servers
//! `/etc/resolv.conf` names, as a C library's stub resolver does. A Linux
//! program's own C library reads the same two files, which the VMM writes
//! under user-mode networking and `--add-host`.
//!
//! Sits above `fs` (the files) and `net` (one UDP socket per lookup); the
//! parsing is `eremite_net::resolve`, host-tested. ABI-neutral.

use core::net::{Ipv4Addr, SocketAddrV4};

use eremite_net::resolve::{self, DNS_PORT, LookupError};

use crate::net::{self, Direction, Mode, Protocol, Receive};
use crate::{fs, random};

/// Most bytes of `/etc/hosts` or `/etc/resolv.conf` read.
const FILE_LIMIT_BYTES: usize = 64 << 10;
/// How long one server is waited for, per try (glibc's default `timeout:5`
/// is for the open Internet; here the server is passt's forwarder or one
/// on the host's network).
const TRY_TIMEOUT_NS: u64 = 2_000_000_000;
/// Tries of each server (glibc's `attempts:2`).
const ATTEMPTS: usize = 2;
/// Datagrams that are not our answer taken per try before giving up on it.
const STRAY_REPLIES: usize = 8;
/// Largest reply read (plain DNS over UDP, RFC 1035 §4.2.1).
const REPLY_BYTES: usize = 512;

/// Why a name has no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unresolved {
    /// It does not exist (or has no IPv4 address), or there is no way to
    /// ask: no name server.
    NotFound,
    /// No server answered, or every one failed: try again later.
    Again,
}

/// The IPv4 address of `name`.
pub(crate) fn lookup(name: &[u8]) -> Result<Ipv4Addr, Unresolved> {
    if let Some(addr) = core::str::from_utf8(name).ok().and_then(|s| s.parse().ok()) {
        return Ok(addr);
    }
    let hosts = fs::read_head(b"/etc/hosts", FILE_LIMIT_BYTES).unwrap_or_default();
    if let Some(addr) = resolve::find_in_hosts(&hosts, name) {
        return Ok(addr);
    }
    if name.eq_ignore_ascii_case(b"localhost") {
        return Ok(Ipv4Addr::LOCALHOST);
    }
    let conf = fs::read_head(b"/etc/resolv.conf", FILE_LIMIT_BYTES).unwrap_or_default();
    let servers = resolve::nameservers(&conf);
    if servers.is_empty() {
        return Err(Unresolved::NotFound);
    }
    ask(name, &servers)
}

/// Ask each of `servers` in turn, [`ATTEMPTS`] rounds.
fn ask(name: &[u8], servers: &[Ipv4Addr]) -> Result<Ipv4Addr, Unresolved> {
    // Low 16 bits of a random number.
    let id = random::next_u64() as u16;
    let query = resolve::query(id, name).map_err(|_| Unresolved::NotFound)?;
    let socket = net::socket(Protocol::Udp).map_err(|_| Unresolved::Again)?;
    socket.set_timeout_ns(Direction::Receive, Some(TRY_TIMEOUT_NS));
    let mut reply = [0u8; REPLY_BYTES];
    for _ in 0..ATTEMPTS {
        for &server in servers {
            let to = SocketAddrV4::new(server, DNS_PORT);
            if net::send(&socket, &query, Some(to), Mode::Blocking).is_err() {
                continue;
            }
            for _ in 0..STRAY_REPLIES {
                let (len, from) =
                    match net::recv_from(&socket, &mut reply, Receive::Take, Mode::Blocking) {
                        Ok(got) => got,
                        // Timed out (or the socket failed): next server.
                        Err(_) => break,
                    };
                if from != to {
                    continue;
                }
                match resolve::answer(id, name, &reply[..len]) {
                    Ok(addr) => return Ok(addr),
                    Err(LookupError::NotFound | LookupError::BadName) => {
                        return Err(Unresolved::NotFound);
                    }
                    Err(LookupError::ServerFailure) => break,
                    Err(LookupError::NotOurs) => {}
                }
            }
        }
    }
    Err(Unresolved::Again)
}
