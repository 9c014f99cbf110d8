//! UDP sockets: datagrams to and from any address, or to and from one
//! peer after `connect`.
//!
//! A socket may receive on both interfaces, so it has up to two smoltcp
//! sockets ("halves"), bound to the same port. The device's half is made
//! when the socket is bound to an address the device serves; the loopback
//! half when the socket first sends there or a local sender addresses it,
//! so a socket that never talks to the guest itself costs nothing there.

use core::net::{Ipv4Addr, SocketAddrV4};

use eremite_interface::errno::{
    EACCES, EAGAIN, EDESTADDRREQ, EINVAL, EMSGSIZE, ENOTCONN, EPIPE, Errno,
};
use smoltcp::socket::udp::{self, UdpMetadata};
use smoltcp::time::{Duration, Instant};

use crate::nets::Handle;
use crate::route::{Addressing, Path};
use crate::{
    Protocol, Readiness, RecvMode, Shutdown, SocketId, Stack, endpoint, later, listen_endpoint,
    to_v4,
};

/// IPv4 and UDP headers: a datagram's payload is this much smaller than
/// the packet.
const HEADERS_BYTES: usize = 20 + 8;

/// How long a closed socket's queued datagrams may wait to be sent.
/// Its half still holds the port meanwhile, unknown to `bind`: a socket
/// bound to the same port in these seconds may see its first datagrams
/// go to the closed one.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A closed socket's half that still has datagrams to send.
pub(crate) struct Draining {
    handle: Handle,
    deadline: Instant,
}

/// A UDP socket's state beyond what every socket has.
#[derive(Default)]
pub(crate) struct Udp {
    halves: [Option<Handle>; 2],
    peer: Option<SocketAddrV4>,
    is_read_shut: bool,
    is_write_shut: bool,
    /// The half `recv` looks at first; alternates so neither starves.
    next_half: usize,
}

impl Stack {
    /// Makes the device's half of a socket that was just bound.
    pub(crate) fn udp_bound(&mut self, id: SocketId) -> Result<(), Errno> {
        let bound = self.table.udp(id)?.0.bound.ok_or(EINVAL)?;
        if self.addressing.serves(*bound.ip(), Path::External) {
            self.udp_half(id, Path::External)?;
        }
        Ok(())
    }

    pub(crate) fn udp_connect(&mut self, id: SocketId, dst: SocketAddrV4) -> Result<(), Errno> {
        let (dst, _) = self.udp_route(id, dst)?;
        self.table.udp(id)?.1.peer = Some(dst);
        Ok(())
    }

    pub(crate) fn udp_send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        dst: Option<SocketAddrV4>,
    ) -> Result<usize, Errno> {
        let (_, udp) = self.table.udp(id)?;
        if udp.is_write_shut {
            return Err(EPIPE);
        }
        let dst = dst.or(udp.peer).ok_or(EDESTADDRREQ)?;
        let (dst, local) = self.udp_route(id, dst)?;
        let path = self.addressing.path_to(*dst.ip());
        if data.len() > self.max_datagram_bytes(path) {
            return Err(EMSGSIZE);
        }
        let handle = self.udp_half(id, path)?;
        if path == Path::Loopback {
            self.prepare_local_receiver(dst);
        }
        let mut meta = UdpMetadata::from(endpoint(dst));
        meta.local_address = Some((*local.ip()).into());
        let socket = self.nets.udp(handle);
        if data.len() > socket.payload_send_capacity() {
            return Err(EMSGSIZE);
        }
        let queued = socket.send_queue();
        match socket.send_slice(data, meta) {
            Ok(()) => {
                // What the queue grew by, padding included, so that
                // progress counts exactly what left it.
                let grown = socket.send_queue().wrapping_sub(queued);
                self.table.udp(id)?.0.given += grown as u64;
                Ok(data.len())
            }
            Err(udp::SendError::BufferFull) => Err(EAGAIN),
            Err(udp::SendError::Unaddressable) => Err(EINVAL),
        }
    }

    /// The next datagram, from the peer if connected; longer ones are
    /// truncated to `buf` (the rest is lost, as Linux without `MSG_PEEK`).
    pub(crate) fn udp_recv(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        mode: RecvMode,
    ) -> Result<(usize, SocketAddrV4), Errno> {
        let (common, udp) = self.table.udp(id)?;
        if let Some(error) = common.error.take() {
            return Err(error);
        }
        if udp.is_read_shut {
            let from = udp
                .peer
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            return Ok((0, from));
        }
        for turn in 0..2 {
            let index = (udp.next_half + turn) % 2;
            let Some(handle) = udp.halves[index] else {
                continue;
            };
            let accepts = |from| udp.accepts(self.addressing, handle.path, from);
            let socket = self.nets.udp(handle);
            if let Some(received) = next_datagram(socket, accepts, buf, mode, &mut common.taken) {
                // A peek leaves the order alone: the next recv returns
                // the same datagram.
                if mode == RecvMode::Consume {
                    udp.next_half = (index + 1) % 2;
                }
                return Ok(received);
            }
        }
        Err(EAGAIN)
    }

    pub(crate) fn udp_shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<(), Errno> {
        let (_, udp) = self.table.udp(id)?;
        if udp.peer.is_none() {
            return Err(ENOTCONN);
        }
        udp.is_read_shut |= how != Shutdown::Write;
        udp.is_write_shut |= how != Shutdown::Read;
        Ok(())
    }

    /// Frees a closed socket's halves; one with datagrams still queued
    /// (waiting for the peer's MAC address, say) sends them first, as
    /// Linux does, for a few seconds at most.
    pub(crate) fn udp_close(&mut self, udp: Udp) {
        for handle in udp.halves.into_iter().flatten() {
            if self.nets.udp(handle).send_queue() == 0 {
                self.nets.remove(handle);
            } else {
                let deadline = later(self.now, DRAIN_TIMEOUT);
                self.draining.push(Draining { handle, deadline });
                self.arm_timer(deadline);
            }
        }
    }

    /// Frees the drained halves; returns when to look again at the latest.
    pub(crate) fn udp_maintain(&mut self) -> Option<Instant> {
        let (now, nets) = (self.now, &mut self.nets);
        self.draining.retain(|draining| {
            let is_done = nets.udp(draining.handle).send_queue() == 0 || now >= draining.deadline;
            if is_done {
                nets.remove(draining.handle);
            }
            !is_done
        });
        self.draining.iter().map(|draining| draining.deadline).min()
    }

    /// The length of the datagram the next `recv` returns (0 if none).
    pub(crate) fn udp_available(&mut self, id: SocketId) -> Result<usize, Errno> {
        let (common, udp) = self.table.udp(id)?;
        for turn in 0..2 {
            let Some(handle) = udp.halves[(udp.next_half + turn) % 2] else {
                continue;
            };
            let socket = self.nets.udp(handle);
            let accepts = |from| udp.accepts(self.addressing, handle.path, from);
            if next_sender(socket, accepts, &mut common.taken).is_some()
                && let Ok((data, _)) = socket.peek()
            {
                return Ok(data.len());
            }
        }
        Ok(0)
    }

    pub(crate) fn udp_progress(&mut self, id: SocketId) -> Result<u64, Errno> {
        let (common, udp) = self.table.udp(id)?;
        let mut progress = common.taken.wrapping_add(common.given);
        for handle in udp.halves.into_iter().flatten() {
            let socket = self.nets.udp(handle);
            progress = progress
                .wrapping_add(socket.recv_queue() as u64)
                .wrapping_sub(socket.send_queue() as u64);
        }
        Ok(progress)
    }

    pub(crate) fn udp_readiness(&mut self, id: SocketId) -> Result<Readiness, Errno> {
        let (common, udp) = self.table.udp(id)?;
        let mut has_datagram = false;
        let mut has_room = true;
        for handle in udp.halves.into_iter().flatten() {
            let socket = self.nets.udp(handle);
            let accepts = |from| udp.accepts(self.addressing, handle.path, from);
            has_datagram |= next_sender(socket, accepts, &mut common.taken).is_some();
            // Linux's sock_writeable: at most half the buffer in use.
            has_room &=
                socket.can_send() && socket.send_queue() * 2 <= socket.payload_send_capacity();
        }
        let has_error = common.error.is_some();
        Ok(Readiness {
            is_readable: has_datagram || udp.is_read_shut || has_error,
            is_writable: has_room || udp.is_write_shut || has_error,
            has_hangup: udp.is_read_shut && udp.is_write_shut,
            has_error,
        })
    }

    /// The local address: a connected socket bound to the wildcard shows
    /// the source address its datagrams carry (as Linux).
    pub(crate) fn udp_local(&self, id: SocketId) -> Result<Option<SocketAddrV4>, Errno> {
        let socket = self.table.get(id)?;
        let (Some(bound), Some(peer)) = (socket.common.bound, socket.udp().and_then(|u| u.peer))
        else {
            return Ok(socket.common.bound);
        };
        Ok(Some(self.local_for(bound, *peer.ip())))
    }

    pub(crate) fn udp_peer(&self, id: SocketId) -> Result<SocketAddrV4, Errno> {
        self.table
            .get(id)?
            .udp()
            .and_then(|udp| udp.peer)
            .ok_or(ENOTCONN)
    }

    pub(crate) fn udp_apply_options(&mut self, id: SocketId) -> Result<(), Errno> {
        let (common, udp) = self.table.udp(id)?;
        for handle in udp.halves.into_iter().flatten() {
            self.nets
                .udp(handle)
                .set_hop_limit(Some(common.options.ttl.max(1)));
        }
        Ok(())
    }

    /// Where a datagram to `dst` goes and the address it comes from,
    /// binding the socket to an ephemeral port if it is not bound.
    fn udp_route(
        &mut self,
        id: SocketId,
        dst: SocketAddrV4,
    ) -> Result<(SocketAddrV4, SocketAddrV4), Errno> {
        let dst = self.addressing.datagram_destination(dst)?;
        let is_broadcast_allowed = self.table.udp(id)?.0.options.broadcast;
        if self.addressing.is_broadcast(*dst.ip()) && !is_broadcast_allowed {
            return Err(EACCES);
        }
        let bound = self.bind_ephemeral(id)?;
        if !self
            .addressing
            .serves(*bound.ip(), self.addressing.path_to(*dst.ip()))
        {
            return Err(EINVAL);
        }
        Ok((dst, self.local_for(bound, *dst.ip())))
    }

    /// The socket's smoltcp socket on `path`, made if it has none.
    fn udp_half(&mut self, id: SocketId, path: Path) -> Result<Handle, Errno> {
        let (common, udp) = self.table.udp(id)?;
        if let Some(handle) = udp.halves[path.index()] {
            return Ok(handle);
        }
        let bound = common.bound.ok_or(EINVAL)?;
        let options = &common.options;
        let packets = packet_slots(options.recv_buffer_bytes.max(options.send_buffer_bytes));
        let handle = self.nets.add_udp(
            path,
            options.recv_buffer_bytes,
            options.send_buffer_bytes,
            packets,
        )?;
        let socket = self.nets.udp(handle);
        socket.set_hop_limit(Some(options.ttl.max(1)));
        if socket.bind(listen_endpoint(bound)).is_err() {
            self.nets.remove(handle);
            return Err(EINVAL);
        }
        udp.halves[path.index()] = Some(handle);
        Ok(handle)
    }

    /// Makes sure the local socket that `dst` names can receive on the
    /// loopback interface (if there is one; if not, the datagram is lost,
    /// as on Linux).
    fn prepare_local_receiver(&mut self, dst: SocketAddrV4) {
        if let Some(id) = self.find_receiver(Protocol::Udp, dst) {
            // Out of buffer space: the datagram is lost, as UDP may.
            let _ = self.udp_half(id, Path::Loopback);
        }
    }

    fn max_datagram_bytes(&self, path: Path) -> usize {
        let ip_mtu = match path {
            Path::External => self.external_ip_mtu,
            Path::Loopback => u16::MAX.into(),
        };
        ip_mtu.saturating_sub(HEADERS_BYTES)
    }
}

/// Datagram slots for a buffer of `bytes`: room for small datagrams
/// without letting the metadata outweigh the payload.
fn packet_slots(bytes: usize) -> usize {
    (bytes / 512).clamp(16, 256)
}

impl Udp {
    /// Whether the socket takes a datagram from `from` that came in on
    /// `path`: only from the peer once connected, never from a martian.
    fn accepts(&self, addressing: Addressing, path: Path, from: SocketAddrV4) -> bool {
        self.peer.is_none_or(|peer| peer == from) && !addressing.is_martian(*from.ip(), path)
    }
}

/// Takes (or, to peek, copies) the next datagram the socket `accepts`,
/// dropping those before it that it does not.
fn next_datagram(
    socket: &mut udp::Socket,
    accepts: impl Fn(SocketAddrV4) -> bool,
    buf: &mut [u8],
    mode: RecvMode,
    taken: &mut u64,
) -> Option<(usize, SocketAddrV4)> {
    let from = next_sender(socket, accepts, taken)?;
    let (data, _) = socket.peek().ok()?;
    let len = data.len().min(buf.len());
    buf[..len].copy_from_slice(&data[..len]);
    if mode == RecvMode::Consume {
        take(socket, taken);
    }
    Some((len, from))
}

/// The sender of the first queued datagram the socket `accepts`; the
/// datagrams before it are dropped (the socket never receives them).
fn next_sender(
    socket: &mut udp::Socket,
    accepts: impl Fn(SocketAddrV4) -> bool,
    taken: &mut u64,
) -> Option<SocketAddrV4> {
    loop {
        let from = to_v4(socket.peek().ok()?.1.endpoint);
        match from {
            Some(from) if accepts(from) => return Some(from),
            _ => take(socket, taken),
        }
    }
}

/// Drops the first queued datagram, adding to `taken` what the queue
/// shrank by (the ring's padding included).
fn take(socket: &mut udp::Socket, taken: &mut u64) {
    let queued = socket.recv_queue();
    let _ = socket.recv();
    *taken += queued.saturating_sub(socket.recv_queue()) as u64;
}
