//! What the kernel tells the stack at start: its addresses and its limits.

use core::net::Ipv4Addr;

use eremite_interface::errno::{EINVAL, Errno};
use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, Ipv4Cidr};

use crate::route::Addressing;

/// Smallest socket buffer (Linux's `SOCK_MIN_RCVBUF` is about 2 KiB).
pub const MIN_BUFFER_BYTES: usize = 2048;

/// Longest timeout accepted in [`Limits`]: keeps every deadline far from
/// the end of smoltcp's clock.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The stack's configuration.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// The device's MAC address (unicast, not all zeros).
    pub mac: [u8; 6],
    /// The stack's IPv4 address on the device.
    pub address: Ipv4Addr,
    /// The length of the device network's prefix (`24` for a /24).
    pub prefix_len: u8,
    /// The router for every address outside that network, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Seeds TCP initial sequence numbers and the first ephemeral port;
    /// should differ between boots.
    pub random_seed: u64,
    /// Sizes, counts and timeouts.
    pub limits: Limits,
}

impl StackConfig {
    /// A configuration with no gateway, seed 0 and the default limits.
    pub fn new(mac: [u8; 6], address: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            mac,
            address,
            prefix_len,
            gateway: None,
            random_seed: 0,
            limits: Limits::default(),
        }
    }

    /// The addresses, if they make sense (`EINVAL` if not).
    pub(crate) fn addressing(&self) -> Result<Addressing, Errno> {
        let mac = EthernetAddress(self.mac);
        if !mac.is_unicast() || self.mac == [0; 6] || self.prefix_len > 32 {
            return Err(EINVAL);
        }
        let cidr = Ipv4Cidr::new(self.address, self.prefix_len);
        if !is_host_address(self.address) || cidr.broadcast() == Some(self.address) {
            return Err(EINVAL);
        }
        if let Some(gateway) = self.gateway
            && (!is_host_address(gateway)
                || gateway == self.address
                || !cidr.contains_addr(&gateway))
        {
            return Err(EINVAL);
        }
        Ok(Addressing {
            cidr,
            gateway: self.gateway,
        })
    }
}

/// An address a host on the network may have.
fn is_host_address(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

/// Bounds on what the stack holds, and its timeouts. The defaults follow
/// Linux where Linux has one.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sockets open at once (`ENFILE` past it).
    pub max_sockets: usize,
    /// Largest `listen` backlog: connections that may wait for `accept`
    /// on one socket, counting those still in their handshake (Linux's
    /// `somaxconn`).
    pub max_backlog: usize,
    /// Sockets in LISTEN a listener keeps ready for SYNs, at most (each
    /// holds its buffers from the start: smoltcp fixes a connection's
    /// window scale when it answers the SYN). A burst beyond them waits in
    /// the SYN gate and is taken as they are refilled, poll by poll, up to
    /// the backlog.
    pub listen_slots: usize,
    /// Closed connections still finishing their exchange with the peer;
    /// past it the oldest is dropped.
    pub max_orphans: usize,
    /// All socket buffers together (`ENOBUFS` past it).
    pub buffer_budget_bytes: usize,
    /// Default receive and send buffer of a TCP socket.
    pub tcp_buffer_bytes: usize,
    /// Default receive and send buffer of a UDP socket.
    pub udp_buffer_bytes: usize,
    /// Largest buffer `SO_RCVBUF`/`SO_SNDBUF` may ask for.
    pub max_buffer_bytes: usize,
    /// A connection attempt fails with `ETIMEDOUT` after this long
    /// (Linux: 127 s, from `tcp_syn_retries` = 6).
    pub connect_timeout: Duration,
    /// A connection whose sent data the peer has not acknowledged, and
    /// from which nothing arrived, for this long fails with `ETIMEDOUT`
    /// (Linux: about 15 minutes, from `tcp_retries2` = 15).
    pub user_timeout: Duration,
    /// `SO_KEEPALIVE`: probe an idle connection this often...
    pub keepalive_interval: Duration,
    /// ...and give up after this many probes without an answer.
    pub keepalive_probes: u32,
    /// How long a closed connection may take to finish with its peer
    /// before it is reset (Linux's `tcp_fin_timeout`: 60 s); any progress
    /// restarts it.
    pub orphan_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sockets: 1024,
            max_backlog: 4096,
            listen_slots: 16,
            max_orphans: 256,
            buffer_budget_bytes: 32 << 20,
            tcp_buffer_bytes: 64 << 10,
            udp_buffer_bytes: 64 << 10,
            max_buffer_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(127),
            user_timeout: Duration::from_secs(15 * 60),
            keepalive_interval: Duration::from_secs(75),
            keepalive_probes: 9,
            orphan_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), Errno> {
        let is_buffer_ok = |bytes| (MIN_BUFFER_BYTES..=self.max_buffer_bytes).contains(&bytes);
        let is_timeout_ok = |timeout: Duration| timeout > Duration::ZERO && timeout <= MAX_TIMEOUT;
        let is_valid = self.max_sockets > 0
            && self.max_backlog > 0
            && self.listen_slots > 0
            // smoltcp refuses TCP buffers above 1 GiB.
            && self.max_buffer_bytes <= 1 << 30
            && is_buffer_ok(self.tcp_buffer_bytes)
            && is_buffer_ok(self.udp_buffer_bytes)
            && is_timeout_ok(self.connect_timeout)
            && is_timeout_ok(self.user_timeout)
            && is_timeout_ok(self.keepalive_interval)
            && is_timeout_ok(self.orphan_timeout)
            && (1..=100).contains(&self.keepalive_probes);
        if is_valid { Ok(()) } else { Err(EINVAL) }
    }

    /// How long an idle `SO_KEEPALIVE` connection may stay silent.
    pub(crate) fn keepalive_timeout(&self) -> Duration {
        self.keepalive_interval * (self.keepalive_probes + 1)
    }

    /// A requested buffer size, clamped to what the stack allows.
    pub(crate) fn buffer_bytes(&self, requested: usize) -> usize {
        requested.clamp(MIN_BUFFER_BYTES, self.max_buffer_bytes)
    }
}
