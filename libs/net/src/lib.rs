//! eremite's network stack: BSD-socket semantics (Linux's, errno for
//! errno) over smoltcp, as pure logic that never blocks and never sleeps.
//!
//! Key types:
//! - [`Stack`]: one smoltcp interface on the device (a MAC, one IPv4
//!   address and prefix, an optional default gateway), one loopback
//!   interface for `127.0.0.0/8` and the stack's own address, and the
//!   socket table.
//! - [`SocketId`]: a socket's name, an index and a generation, so an id
//!   kept after `close` reaches nothing (`EBADF`) rather than a newer
//!   socket in the same slot.
//! - [`Readiness`]: what `poll(2)` would report for a socket.
//! - [`StackConfig`] and [`Limits`]: addresses, sizes, counts, timeouts.
//!
//! Neighbours: errors are `eremite_interface::errno::Errno` (Linux
//! numbers); the kernel's `net` module and virtio-net driver are the only
//! users.
//!
//! # How the kernel uses it
//! The kernel's `net` module owns one [`Stack`] behind a lock and one
//! virtio-net device (any [`smoltcp::phy::Device`]); its hermit-abi layer
//! converts pointers and calls the socket operations ([`Stack::socket`],
//! [`Stack::bind`], [`Stack::connect`], [`Stack::send`], ...), which map
//! one to one to `sys_socket`, `sys_bind`, `sys_connect`, `sys_send`, and
//! so on. File descriptors, `O_NONBLOCK`/`FIONBIO` and blocking live in the
//! kernel; every call here returns at once:
//!
//! - Where a blocking socket would wait, the call fails with `EAGAIN` (or
//!   `EINPROGRESS` from `connect`). A non-blocking caller gets that error;
//!   for a blocking one the kernel parks the thread until
//!   [`Stack::readiness`] shows the socket readable (`recv`, `accept`) or
//!   writable (`send`, `connect`), then calls again. A blocking `connect`
//!   waits for writable and then reads the outcome with
//!   [`Stack::take_error`] (`SO_ERROR`), as mio does.
//! - Operations only queue work; [`Stack::poll`] moves packets (the
//!   device's and the loopback interface's) and brings every socket up to
//!   date. The kernel calls it after each socket call that may have
//!   queued something (or whenever `poll_at` says "now"), when the device
//!   interrupts, and when the timer it arms for [`Stack::poll_at`] fires.
//!   `poll` returns whether sockets may have changed: then the kernel
//!   wakes the threads parked on sockets (and `sys_poll` callers) to look
//!   at their readiness again.
//! - Time is explicit: each `poll` takes the current time, and
//!   [`Stack::poll_at`] says when to poll again at the latest (a
//!   retransmission, a delayed ACK, a connect timeout), or never if
//!   nothing is pending. The kernel arms its one-shot timer for that
//!   instant.
//!
//! # Loopback
//! smoltcp sends a packet out of the interface it is polled with, and its
//! Ethernet interface has no notion of "this host". So the stack runs a
//! second smoltcp interface over an in-memory device (IP medium: no ARP,
//! no checksums, a 64 KiB MTU, as Linux's `lo`) with its own socket set.
//! A connection or datagram to `127.0.0.0/8`, `0.0.0.0` or the stack's
//! own address goes there; sockets bound to the wildcard or to the own
//! address are present on both interfaces (see the `tcp` and `udp`
//! modules for how that is made cheap).
//!
//! # Limits
//! Sockets, listen backlogs and lingering closed connections are counted,
//! and all socket buffers come out of one budget ([`Limits`]); a socket
//! closed by the application frees everything once its connection has
//! finished with the peer, or after a timeout. Nothing the network sends
//! and nothing the caller passes makes it panic: bad ids give `EBADF`,
//! calls in the wrong state the errno Linux gives.
//!
//! # Differences from Linux
//! - Missing: IPv6, IP fragmentation (a datagram larger than the path's
//!   MTU gives `EMSGSIZE`), multicast, ICMP errors to sockets, urgent
//!   data, a blocking `SO_LINGER` (a positive linger closes in the
//!   background, as without it).
//! - A closed connection does not stay in TIME-WAIT: its memory is freed
//!   as soon as both FINs are acknowledged.
//! - `SO_KEEPALIVE` probes after `keepalive_interval` of silence (Linux
//!   waits two hours before the first probe).
//! - Whether a connection that ended without FIN was reset or timed out
//!   is judged by the peer's silence: a reset that follows a long stall
//!   with unacknowledged data reads as `ETIMEDOUT`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod checksum;
mod config;
mod gate;
mod loopback;
mod nets;
mod ports;
pub mod resolve;
mod route;
mod syncookie;
mod table;
mod tcp;
mod udp;

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use eremite_interface::errno::{EADDRINUSE, EINVAL, ENOPROTOOPT, Errno};
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Device, Medium};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint,
};

pub use config::{Limits, MIN_BUFFER_BYTES, StackConfig};
/// The smoltcp this crate is built on, for its `Device` trait and clock.
pub use smoltcp;
pub use smoltcp::time::{Duration, Instant};
pub use table::SocketId;

pub use checksum::is_transport_checksum_right;
use loopback::LoopbackDevice;
use nets::{Net, Nets};
use ports::Ports;
use route::Addressing;
use table::Table;
use tcp::{Orphan, Tcp};
use udp::{Draining, Udp};

/// Smallest device MTU accepted: an Ethernet header and IPv4's 576 bytes.
const MIN_DEVICE_MTU_BYTES: usize = 14 + 576;

/// A socket's protocol (`SOCK_STREAM` or `SOCK_DGRAM` over IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Which directions `shutdown(2)` closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUT_RD`.
    Read,
    /// `SHUT_WR`.
    Write,
    /// `SHUT_RDWR`.
    Both,
}

/// What `poll(2)` reports for a socket. A flag set means the matching call
/// returns at once (possibly with an error), not that it succeeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// `POLLIN`: `recv` has data or end of file, `accept` a connection.
    pub is_readable: bool,
    /// `POLLOUT`: `send` has room, or a connection attempt has finished.
    pub is_writable: bool,
    /// `POLLHUP`: both directions are closed (or the socket never
    /// connected).
    pub has_hangup: bool,
    /// `POLLERR`: an error is pending ([`Stack::take_error`]).
    pub has_error: bool,
}

/// A socket option to set (`setsockopt(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOption {
    /// `SO_REUSEADDR`: bind a port that closed or other `SO_REUSEADDR`
    /// sockets hold, unless one of them listens.
    ReuseAddr(bool),
    /// `SO_KEEPALIVE`: probe idle connections, fail dead ones with
    /// `ETIMEDOUT`.
    KeepAlive(bool),
    /// `TCP_NODELAY`: send small segments at once (no Nagle). TCP only
    /// (`ENOPROTOOPT` on UDP).
    NoDelay(bool),
    /// `SO_BROADCAST`: allow datagrams to broadcast addresses.
    Broadcast(bool),
    /// `SO_LINGER`: `Some(0)` makes `close` reset the connection; other
    /// values are kept and reported, and `close` finishes in the
    /// background.
    Linger(Option<u32>),
    /// `IP_TTL`: 1 to 255 (`EINVAL` for 0).
    Ttl(u8),
    /// `SO_RCVBUF`, clamped to the stack's limits; applies to connections
    /// made after the call.
    RecvBufferBytes(usize),
    /// `SO_SNDBUF`, as `RecvBufferBytes`.
    SendBufferBytes(usize),
}

/// A socket's options (`getsockopt(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_REUSEADDR`.
    pub reuse_addr: bool,
    /// `SO_KEEPALIVE`.
    pub keep_alive: bool,
    /// `TCP_NODELAY`.
    pub no_delay: bool,
    /// `SO_BROADCAST`.
    pub broadcast: bool,
    /// `SO_LINGER`, in seconds.
    pub linger_secs: Option<u32>,
    /// `IP_TTL`.
    pub ttl: u8,
    /// `SO_RCVBUF`.
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF`.
    pub send_buffer_bytes: usize,
}

/// What the stack holds, for statistics and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open sockets.
    pub sockets: usize,
    /// smoltcp sockets, on both interfaces (listening sockets' backlog,
    /// accept queues and orphans included).
    pub smoltcp_sockets: usize,
    /// Closed sockets still finishing with their peers: TCP connections
    /// sending their last data, FIN or RST; UDP datagrams queued before
    /// `close`.
    pub orphans: usize,
    /// Ports held, over both protocols.
    pub ports: usize,
    /// Memory in socket buffers.
    pub buffer_bytes: usize,
}

/// Whether a receive takes the data or leaves it queued (`MSG_PEEK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvMode {
    Consume,
    Peek,
}

/// One socket in the table.
struct Socket {
    common: Common,
    kind: Kind,
}

/// What every socket has.
struct Common {
    options: SocketOptions,
    /// The address from `bind` (or an implicit bind); holds its port.
    bound: Option<SocketAddrV4>,
    /// The pending error (`SO_ERROR`), reported once.
    error: Option<Errno>,
    /// What left the receive side: bytes (TCP), datagram bytes taken or
    /// dropped (UDP), connections accepted (a listener). With what is
    /// queued, it counts what ever arrived ([`Stack::progress`]).
    taken: u64,
    /// Bytes the program gave to send.
    given: u64,
}

enum Kind {
    Tcp(Tcp),
    Udp(Udp),
}

/// A TCP/IP stack with BSD-socket semantics; see the crate documentation.
pub struct Stack {
    nets: Nets,
    table: Table<Socket>,
    ports: Ports,
    orphans: Vec<Orphan>,
    /// Closed UDP sockets' halves still sending what was queued.
    draining: Vec<Draining>,
    addressing: Addressing,
    limits: Limits,
    /// The largest IP packet the device carries.
    external_ip_mtu: usize,
    /// The time of the last poll, which operations take as "now".
    now: Instant,
    /// The earliest deadline of the stack's own timers.
    timer_at: Option<Instant>,
    /// Drops SYNs that full listeners cannot take (see `gate`).
    gate: gate::SynGate,
    /// Answers SYNs the gate cannot hold, and the connections that brings
    /// (see `syncookie`). Shared by the gate's receive and transmit
    /// tokens during a poll.
    cookies: core::cell::RefCell<syncookie::Cookies>,
    /// The card's MAC address.
    mac: EthernetAddress,
}

impl Stack {
    /// A stack on `device`, which must be an Ethernet device with an MTU
    /// of at least 590 bytes. `EINVAL` for a configuration that makes no
    /// sense (a multicast MAC, an address that is not a host's, a gateway
    /// outside the network, zero limits).
    pub fn new<D: Device + ?Sized>(
        config: StackConfig,
        device: &mut D,
        now: Instant,
    ) -> Result<Self, Errno> {
        let addressing = config.addressing()?;
        config.limits.validate()?;
        let caps = device.capabilities();
        if caps.medium != Medium::Ethernet || caps.max_transmission_unit < MIN_DEVICE_MTU_BYTES {
            return Err(EINVAL);
        }
        let external = external_interface(&config, addressing, device, now)?;
        let mut loopback_device = LoopbackDevice::default();
        let loopback = loopback_interface(&config, addressing, &mut loopback_device, now)?;
        let limits = config.limits;
        Ok(Self {
            nets: Nets::new(
                Net::new(external),
                Net::new(loopback),
                loopback_device,
                limits.buffer_budget_bytes,
            ),
            table: Table::new(limits.max_sockets),
            ports: Ports::new(config.random_seed),
            orphans: Vec::new(),
            draining: Vec::new(),
            addressing,
            limits,
            external_ip_mtu: caps.ip_mtu(),
            now,
            timer_at: None,
            gate: gate::SynGate::default(),
            cookies: core::cell::RefCell::new(syncookie::Cookies::new(
                config.random_seed,
                EthernetAddress(config.mac),
                caps.ip_mtu(),
            )),
            mac: EthernetAddress(config.mac),
        })
    }

    /// Moves packets in and out of `device` and round the loopback
    /// interface, then brings the sockets up to date. Returns whether any
    /// socket may have changed (wake its waiters).
    pub fn poll<D: Device + ?Sized>(&mut self, now: Instant, device: &mut D) -> bool {
        self.now = now;
        self.count_free_listeners();
        self.gate.start_poll(now);
        self.gate.admit_cookies(&self.cookies);
        let mut gated = gate::Gated {
            device,
            gate: &mut self.gate,
            cookies: &self.cookies,
        };
        let mut has_moved = self.nets.poll(now, &mut gated);
        // The last cookie SYN-ACKs of the poll.
        has_moved |= gate::flush_cookies(device, &self.cookies, now);
        let (is_changed, tcp_at) = self.tcp_maintain();
        let udp_at = self.udp_maintain();
        self.timer_at = earliest(tcp_at, udp_at);
        has_moved || is_changed
    }

    /// Announces the card's address on its link (RFC 5227 section 2.3:
    /// an ARP request whose sender and target are both this address, to
    /// the broadcast address), so that a neighbour that tried to reach the
    /// address before the stack was up, and waits for an ARP answer it
    /// will only ask again for a second later, learns the MAC address at
    /// once. Call it once the stack is made; `false` if the device had no
    /// room to send.
    pub fn announce<D: Device + ?Sized>(&mut self, now: Instant, device: &mut D) -> bool {
        use smoltcp::phy::TxToken;
        let ip = self.addressing.own();
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ip,
        };
        let ethernet = EthernetRepr {
            src_addr: self.mac,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let Some(token) = device.transmit(now) else {
            return false;
        };
        token.consume(ethernet.buffer_len() + arp.buffer_len(), |buffer| {
            let mut frame = EthernetFrame::new_unchecked(buffer);
            ethernet.emit(&mut frame);
            arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        });
        true
    }

    /// The latest time [`Stack::poll`] must run again, `now` if it should
    /// run at once, `None` if nothing is pending (until a packet arrives or
    /// a socket call is made).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let syn_at = self.held_syns_at(now);
        earliest(earliest(self.nets.poll_at(now), self.timer_at), syn_at)
    }

    /// When the SYNs the gate holds need a poll: now if a listener has
    /// room for one (after an `accept` or a finished handshake), else
    /// when the oldest is to be dropped.
    fn held_syns_at(&mut self, now: Instant) -> Option<Instant> {
        let cookies = self.cookies.get_mut();
        if cookies.has_work() {
            return Some(now);
        }
        let cookies_at = cookies.next_expiry();
        if self.gate.held() == 0 && cookies_at.is_none() {
            return None;
        }
        self.count_free_listeners();
        if self.gate.has_admissible() || self.cookies.get_mut().has_admissible(self.gate.open()) {
            Some(now)
        } else {
            earliest(self.gate.oldest_expiry(), cookies_at)
        }
    }

    /// [`Stack::poll_at`] as a delay from `now`.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.poll_at(now)
            .map(|at| if at > now { at - now } else { Duration::ZERO })
    }

    /// A new, unbound socket (`socket(2)`). `ENFILE` when the table is
    /// full.
    pub fn socket(&mut self, protocol: Protocol) -> Result<SocketId, Errno> {
        let options = SocketOptions::new(protocol, &self.limits);
        let kind = match protocol {
            Protocol::Tcp => Kind::Tcp(Tcp::Idle),
            Protocol::Udp => Kind::Udp(Udp::default()),
        };
        self.table.insert(Socket::new(options, kind))
    }

    /// `bind(2)`: `EADDRNOTAVAIL` for an address not the host's,
    /// `EADDRINUSE` if another socket holds the port (see
    /// [`SocketOption::ReuseAddr`]), `EINVAL` if bound or connected
    /// already. Port 0 picks a free ephemeral port.
    pub fn bind(&mut self, id: SocketId, addr: SocketAddrV4) -> Result<(), Errno> {
        self.addressing.check_bind(*addr.ip())?;
        let socket = self.table.get(id)?;
        let protocol = socket.protocol();
        let is_idle = matches!(&socket.kind, Kind::Tcp(Tcp::Idle) | Kind::Udp(_));
        if socket.common.bound.is_some() || !is_idle {
            return Err(EINVAL);
        }
        let port = if addr.port() == 0 {
            self.ports.hold_ephemeral(protocol)?
        } else {
            let is_reuse = socket.common.options.reuse_addr;
            self.check_port(id, protocol, addr, is_reuse)?;
            self.ports.hold(protocol, addr.port());
            addr.port()
        };
        self.table.get_mut(id)?.common.bound = Some(SocketAddrV4::new(*addr.ip(), port));
        if protocol == Protocol::Udp
            && let Err(error) = self.udp_bound(id)
        {
            self.ports.release(protocol, port);
            self.table.get_mut(id)?.common.bound = None;
            return Err(error);
        }
        Ok(())
    }

    /// `listen(2)`: accept up to `backlog` connections (clamped to
    /// `1..=max_backlog`) before `accept` takes them; binds an ephemeral
    /// port if unbound. Calling it again changes the backlog. `EINVAL` on a
    /// connected socket, `EOPNOTSUPP` on UDP, `EADDRINUSE` if another
    /// socket listens on the port, `ENOBUFS` without buffer space.
    pub fn listen(&mut self, id: SocketId, backlog: u32) -> Result<(), Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_listen(id, backlog),
            Protocol::Udp => Err(eremite_interface::errno::EOPNOTSUPP),
        }
    }

    /// `accept(2)`: the next connection and its peer. `EAGAIN` if none
    /// has arrived, `EINVAL` if the socket does not listen, `ENFILE` when
    /// the table is full (the connection stays queued).
    pub fn accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddrV4), Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_accept(id),
            Protocol::Udp => Err(eremite_interface::errno::EOPNOTSUPP),
        }
    }

    /// `connect(2)`. TCP: starts the handshake and fails with
    /// `EINPROGRESS`; while it runs, `EALREADY`; once connected, `EISCONN`.
    /// A failed attempt (`ECONNREFUSED`, `ETIMEDOUT`) is reported once, by
    /// the next `connect`, `take_error`, `send` or `recv`; then the socket
    /// may connect again. `ENETUNREACH` for an address no route reaches.
    /// UDP: sets the peer for `send` and filters what `recv` returns.
    pub fn connect(&mut self, id: SocketId, addr: SocketAddrV4) -> Result<(), Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_connect(id, addr),
            Protocol::Udp => self.udp_connect(id, addr),
        }
    }

    /// `send(2)`: the bytes queued (TCP: possibly fewer than given; UDP:
    /// one datagram to the connected peer). `EAGAIN` when the buffer is
    /// full or the connection still being made, `EPIPE` after
    /// `shutdown(Write)` or the connection's end, a pending error
    /// (`ECONNRESET`, ...) once; UDP: `EDESTADDRREQ` if not connected,
    /// `EMSGSIZE` for a datagram the path cannot carry.
    pub fn send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_send(id, data),
            Protocol::Udp => self.udp_send_to(id, data, None),
        }
    }

    /// `sendto(2)`: UDP sends one datagram to `addr` (binding an ephemeral
    /// port first if unbound; broadcasts need [`SocketOption::Broadcast`],
    /// else `EACCES`). TCP ignores `addr`, as Linux does.
    pub fn send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        addr: SocketAddrV4,
    ) -> Result<usize, Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_send(id, data),
            Protocol::Udp => self.udp_send_to(id, data, Some(addr)),
        }
    }

    /// `recv(2)`: bytes received; 0 at end of file (or after
    /// `shutdown(Read)`). `EAGAIN` when nothing has arrived yet,
    /// `ENOTCONN` on an unconnected TCP socket, a pending error
    /// (`ECONNRESET`, `ETIMEDOUT`) once, after the data that arrived
    /// before it. UDP returns one datagram, truncated to `buf`.
    pub fn recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, Errno> {
        self.receive(id, buf, RecvMode::Consume).map(|(len, _)| len)
    }

    /// `recv(2)` with `MSG_PEEK`: as [`Stack::recv`], leaving the data
    /// queued.
    pub fn peek(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, Errno> {
        self.receive(id, buf, RecvMode::Peek).map(|(len, _)| len)
    }

    /// `recvfrom(2)`: as [`Stack::recv`], with the sender.
    pub fn recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddrV4), Errno> {
        self.receive(id, buf, RecvMode::Consume)
    }

    /// `recvfrom(2)` with `MSG_PEEK`.
    pub fn peek_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddrV4), Errno> {
        self.receive(id, buf, RecvMode::Peek)
    }

    /// `shutdown(2)`. TCP: `Write` sends a FIN after the queued data,
    /// `Read` makes `recv` return 0; on a listening socket `Read` stops
    /// listening (`accept` then fails with `EINVAL`); on a connection
    /// attempt it abandons it. `ENOTCONN` on a socket that is not
    /// connected (UDP: that has no peer).
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<(), Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_shutdown(id, how),
            Protocol::Udp => self.udp_shutdown(id, how),
        }
    }

    /// `close(2)`: the id goes stale at once. A TCP connection finishes in
    /// the background (queued data, then FIN), or is reset if
    /// `SO_LINGER` is 0 or received data was left unread; connections
    /// waiting in a listener's queue are reset.
    pub fn close(&mut self, id: SocketId) -> Result<(), Errno> {
        let Socket { common, kind } = self.table.remove(id)?;
        if let Some(bound) = common.bound {
            self.ports.release(kind.protocol(), bound.port());
        }
        match kind {
            Kind::Tcp(tcp) => self.tcp_close(tcp, &common.options),
            Kind::Udp(udp) => self.udp_close(udp),
        }
        Ok(())
    }

    /// `getsockname(2)`: `0.0.0.0:0` before `bind`; a connection's own
    /// address once connected.
    pub fn local_addr(&self, id: SocketId) -> Result<SocketAddrV4, Errno> {
        let socket = self.table.get(id)?;
        let local = match &socket.kind {
            Kind::Tcp(tcp) => tcp.local().or(socket.common.bound),
            Kind::Udp(_) => self.udp_local(id)?,
        };
        Ok(local.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// `getpeername(2)`: `ENOTCONN` unless connected (a TCP connection
    /// still being made, or one that has ended, is not).
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddrV4, Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_peer(id),
            Protocol::Udp => self.udp_peer(id),
        }
    }

    /// The socket's protocol (`SO_TYPE`).
    pub fn protocol(&self, id: SocketId) -> Result<Protocol, Errno> {
        Ok(self.table.get(id)?.protocol())
    }

    /// `setsockopt(2)`.
    pub fn set_option(&mut self, id: SocketId, option: SocketOption) -> Result<(), Errno> {
        let socket = self.table.get_mut(id)?;
        let protocol = socket.protocol();
        let options = &mut socket.common.options;
        match option {
            SocketOption::ReuseAddr(is_on) => options.reuse_addr = is_on,
            SocketOption::KeepAlive(is_on) => options.keep_alive = is_on,
            SocketOption::NoDelay(_) if protocol != Protocol::Tcp => return Err(ENOPROTOOPT),
            SocketOption::NoDelay(is_on) => options.no_delay = is_on,
            SocketOption::Broadcast(is_on) => options.broadcast = is_on,
            SocketOption::Linger(secs) => options.linger_secs = secs,
            SocketOption::Ttl(0) => return Err(EINVAL),
            SocketOption::Ttl(ttl) => options.ttl = ttl,
            SocketOption::RecvBufferBytes(bytes) => {
                options.recv_buffer_bytes = self.limits.buffer_bytes(bytes);
            }
            SocketOption::SendBufferBytes(bytes) => {
                options.send_buffer_bytes = self.limits.buffer_bytes(bytes);
            }
        }
        match protocol {
            Protocol::Tcp => self.tcp_apply_options(id),
            Protocol::Udp => self.udp_apply_options(id),
        }
    }

    /// `getsockopt(2)`.
    pub fn options(&self, id: SocketId) -> Result<SocketOptions, Errno> {
        Ok(self.table.get(id)?.common.options)
    }

    /// `getsockopt(SO_ERROR)`: the pending error, cleared.
    pub fn take_error(&mut self, id: SocketId) -> Result<Option<Errno>, Errno> {
        Ok(self.table.get_mut(id)?.common.error.take())
    }

    /// `FIONREAD`: the bytes a `recv` could take now (a stream's queued
    /// bytes, the next datagram's length; 0 for a listener).
    pub fn available(&mut self, id: SocketId) -> Result<usize, Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_available(id),
            Protocol::Udp => self.udp_available(id),
        }
    }

    /// A count that grows whenever something arrives (data, a datagram, a
    /// connection to accept, the peer's FIN) or send room frees, and only
    /// then: edge-triggered `epoll` reports a ready socket again when it
    /// moves, even if the socket was ready all along.
    pub fn progress(&mut self, id: SocketId) -> Result<u64, Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_progress(id),
            Protocol::Udp => self.udp_progress(id),
        }
    }

    /// What `poll(2)` would report for the socket now.
    pub fn readiness(&mut self, id: SocketId) -> Result<Readiness, Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_readiness(id),
            Protocol::Udp => self.udp_readiness(id),
        }
    }

    /// What the stack holds.
    pub fn stats(&self) -> Stats {
        Stats {
            sockets: self.table.len(),
            smoltcp_sockets: self.nets.socket_count(),
            orphans: self.tcp_orphan_count() + self.draining.len(),
            ports: self.ports.len(),
            buffer_bytes: self.nets.buffer_bytes(),
        }
    }

    /// Connection attempts dropped so far because their listener's
    /// backlog was full (the client sends its SYN again). A count of
    /// events, not of something held, so not in [`Stats`].
    pub fn dropped_syns(&self) -> u64 {
        self.gate.dropped()
    }

    /// SYN cookies sent, and connections they let in, so far (a flood is
    /// answered with cookies once the gate's hold is full).
    pub fn syn_cookies(&self) -> (u64, u64) {
        let cookies = self.cookies.borrow();
        (cookies.sent, cookies.accepted)
    }

    fn receive(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        mode: RecvMode,
    ) -> Result<(usize, SocketAddrV4), Errno> {
        match self.protocol(id)? {
            Protocol::Tcp => self.tcp_recv(id, buf, mode),
            Protocol::Udp => self.udp_recv(id, buf, mode),
        }
    }

    /// The socket's bound address, binding the wildcard and an ephemeral
    /// port first if it has none (as `connect`, `listen` and `sendto` do).
    fn bind_ephemeral(&mut self, id: SocketId) -> Result<SocketAddrV4, Errno> {
        if let Some(bound) = self.table.get(id)?.common.bound {
            return Ok(bound);
        }
        self.bind(id, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        self.table.get(id)?.common.bound.ok_or(EINVAL)
    }

    /// The address traffic from a socket bound to `bound` to `dst` comes
    /// from.
    fn local_for(&self, bound: SocketAddrV4, dst: Ipv4Addr) -> SocketAddrV4 {
        let ip = if bound.ip().is_unspecified() {
            self.addressing.source_for(dst)
        } else {
            *bound.ip()
        };
        SocketAddrV4::new(ip, bound.port())
    }

    /// `EADDRINUSE` if binding `addr` would clash with another socket's
    /// address: the same port and the same or a wildcard address, unless
    /// both sockets allow reuse and the other does not listen; closed
    /// connections still lingering give way to `SO_REUSEADDR`.
    fn check_port(
        &self,
        me: SocketId,
        protocol: Protocol,
        addr: SocketAddrV4,
        is_reuse: bool,
    ) -> Result<(), Errno> {
        if !self.ports.is_taken(protocol, addr.port()) {
            return Ok(());
        }
        let clashes_socket = self.table.iter().any(|(id, socket)| {
            id != me
                && socket.protocol() == protocol
                && socket
                    .common
                    .bound
                    .is_some_and(|bound| overlaps(bound, addr))
                && !(is_reuse && socket.common.options.reuse_addr && !socket.is_listening())
        });
        let clashes_orphan = protocol == Protocol::Tcp
            && !is_reuse
            && self.orphan_addresses().any(|bound| overlaps(bound, addr));
        if clashes_socket || clashes_orphan {
            Err(EADDRINUSE)
        } else {
            Ok(())
        }
    }

    /// `EADDRINUSE` if another socket listens where `bound` would.
    fn check_listen(&self, me: SocketId, bound: SocketAddrV4) -> Result<(), Errno> {
        let is_taken = self.table.iter().any(|(id, socket)| {
            id != me
                && socket.is_listening()
                && socket
                    .common
                    .bound
                    .is_some_and(|other| overlaps(other, bound))
        });
        if is_taken { Err(EADDRINUSE) } else { Ok(()) }
    }

    /// The socket that receives what is sent to `dst` on this host: a
    /// listening socket for TCP, a bound one for UDP; a socket bound to
    /// `dst`'s address wins over one bound to the wildcard.
    fn find_receiver(&self, protocol: Protocol, dst: SocketAddrV4) -> Option<SocketId> {
        self.table
            .iter()
            .filter(|(_, socket)| {
                socket.protocol() == protocol
                    && (protocol == Protocol::Udp || socket.is_listening())
                    && socket.common.bound.is_some_and(|bound| {
                        bound.port() == dst.port() && Addressing::receives(*bound.ip(), *dst.ip())
                    })
            })
            .max_by_key(|(_, socket)| {
                socket
                    .common
                    .bound
                    .is_some_and(|bound| !bound.ip().is_unspecified())
            })
            .map(|(id, _)| id)
    }

    fn arm_timer(&mut self, at: Instant) {
        self.timer_at = earliest(self.timer_at, Some(at));
    }
}

fn external_interface<D: Device + ?Sized>(
    config: &StackConfig,
    addressing: Addressing,
    device: &mut D,
    now: Instant,
) -> Result<Interface, Errno> {
    let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
    iface_config.random_seed = config.random_seed;
    let mut iface = Interface::new(iface_config, device, now);
    add_addresses(&mut iface, &[IpCidr::Ipv4(addressing.cidr)])?;
    if let Some(gateway) = addressing.gateway {
        iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .map_err(|_| EINVAL)?;
    }
    Ok(iface)
}

/// The loopback interface: `127.0.0.1/8` and the own address. It takes
/// packets for any address ("any IP"), since all of `127.0.0.0/8` is this
/// host and only this host sends to it.
fn loopback_interface(
    config: &StackConfig,
    addressing: Addressing,
    device: &mut LoopbackDevice,
    now: Instant,
) -> Result<Interface, Errno> {
    let mut iface_config = Config::new(HardwareAddress::Ip);
    iface_config.random_seed = config.random_seed.rotate_left(32);
    let mut iface = Interface::new(iface_config, device, now);
    let own = smoltcp::wire::Ipv4Cidr::new(addressing.own(), 32);
    let localhost = smoltcp::wire::Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 8);
    add_addresses(&mut iface, &[IpCidr::Ipv4(localhost), IpCidr::Ipv4(own)])?;
    iface.set_any_ip(true);
    Ok(iface)
}

fn add_addresses(iface: &mut Interface, cidrs: &[IpCidr]) -> Result<(), Errno> {
    let mut result = Ok(());
    iface.update_ip_addrs(|addrs| {
        for &cidr in cidrs {
            if addrs.push(cidr).is_err() {
                result = Err(EINVAL);
            }
        }
    });
    result
}

impl SocketOptions {
    fn new(protocol: Protocol, limits: &Limits) -> Self {
        let buffer_bytes = match protocol {
            Protocol::Tcp => limits.tcp_buffer_bytes,
            Protocol::Udp => limits.udp_buffer_bytes,
        };
        Self {
            reuse_addr: false,
            keep_alive: false,
            no_delay: false,
            broadcast: false,
            linger_secs: None,
            // Linux's net.ipv4.ip_default_ttl.
            ttl: 64,
            recv_buffer_bytes: buffer_bytes,
            send_buffer_bytes: buffer_bytes,
        }
    }
}

impl Socket {
    fn new(options: SocketOptions, kind: Kind) -> Self {
        Self {
            common: Common {
                options,
                bound: None,
                error: None,
                taken: 0,
                given: 0,
            },
            kind,
        }
    }

    /// A socket bound to `local` (an accepted connection).
    fn bound(options: SocketOptions, local: SocketAddrV4, kind: Kind) -> Self {
        let mut socket = Self::new(options, kind);
        socket.common.bound = Some(local);
        socket
    }

    fn protocol(&self) -> Protocol {
        self.kind.protocol()
    }

    fn is_listening(&self) -> bool {
        self.tcp().is_some_and(Tcp::is_listening)
    }

    fn tcp(&self) -> Option<&Tcp> {
        match &self.kind {
            Kind::Tcp(tcp) => Some(tcp),
            Kind::Udp(_) => None,
        }
    }

    fn udp(&self) -> Option<&Udp> {
        match &self.kind {
            Kind::Udp(udp) => Some(udp),
            Kind::Tcp(_) => None,
        }
    }
}

impl Kind {
    fn protocol(&self) -> Protocol {
        match self {
            Kind::Tcp(_) => Protocol::Tcp,
            Kind::Udp(_) => Protocol::Udp,
        }
    }
}

impl Table<Socket> {
    /// A TCP socket's parts (`EBADF` for a stale id or a UDP socket).
    fn tcp(&mut self, id: SocketId) -> Result<(&mut Common, &mut Tcp), Errno> {
        match self.get_mut(id)? {
            Socket {
                common,
                kind: Kind::Tcp(tcp),
            } => Ok((common, tcp)),
            _ => Err(eremite_interface::errno::EBADF),
        }
    }

    /// A UDP socket's parts (`EBADF` for a stale id or a TCP socket).
    fn udp(&mut self, id: SocketId) -> Result<(&mut Common, &mut Udp), Errno> {
        match self.get_mut(id)? {
            Socket {
                common,
                kind: Kind::Udp(udp),
            } => Ok((common, udp)),
            _ => Err(eremite_interface::errno::EBADF),
        }
    }
}

/// Whether sockets bound to `a` and `b` would receive the same traffic.
fn overlaps(a: SocketAddrV4, b: SocketAddrV4) -> bool {
    a.port() == b.port() && (a.ip().is_unspecified() || b.ip().is_unspecified() || a.ip() == b.ip())
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `at + duration`, stopping at the end of time rather than overflowing.
fn later(at: Instant, duration: Duration) -> Instant {
    let micros = i64::try_from(duration.total_micros()).unwrap_or(i64::MAX);
    Instant::from_micros(at.total_micros().saturating_add(micros))
}

fn endpoint(addr: SocketAddrV4) -> IpEndpoint {
    IpEndpoint::new((*addr.ip()).into(), addr.port())
}

fn listen_endpoint(addr: SocketAddrV4) -> IpListenEndpoint {
    let ip = *addr.ip();
    IpListenEndpoint {
        addr: (!ip.is_unspecified()).then(|| ip.into()),
        port: addr.port(),
    }
}

fn to_v4(endpoint: IpEndpoint) -> Option<SocketAddrV4> {
    match SocketAddr::from(endpoint) {
        SocketAddr::V4(addr) => Some(addr),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests;
