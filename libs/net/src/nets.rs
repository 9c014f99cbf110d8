//! The two smoltcp interfaces (the device's and the loopback one), each
//! with its own socket set, and the budget that bounds the memory of all
//! socket buffers together. Every smoltcp socket is created and freed here,
//! so the budget cannot drift.

use alloc::vec;
use alloc::vec::Vec;

use eremite_interface::errno::{ENOBUFS, ENOMEM, Errno};
use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{AnySocket, Socket, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::IpEndpoint;

use crate::loopback::LoopbackDevice;
use crate::route::Path;

/// Rounds of the loopback interface per [`Nets::poll`]: a TCP handshake
/// takes three, and each round moves a window of data.
const LOOPBACK_ROUNDS: usize = 64;

/// A smoltcp socket: which interface's set, and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    pub(crate) path: Path,
    raw: SocketHandle,
}

pub(crate) struct Net {
    pub(crate) iface: Interface,
    sockets: SocketSet<'static>,
}

impl Net {
    pub(crate) fn new(iface: Interface) -> Self {
        Self {
            iface,
            sockets: SocketSet::new(vec![]),
        }
    }
}

pub(crate) struct Nets {
    nets: [Net; 2],
    loopback_device: LoopbackDevice,
    buffer_bytes: usize,
    buffer_budget_bytes: usize,
}

impl Nets {
    pub(crate) fn new(
        external: Net,
        loopback: Net,
        loopback_device: LoopbackDevice,
        buffer_budget_bytes: usize,
    ) -> Self {
        Self {
            nets: [external, loopback],
            loopback_device,
            buffer_bytes: 0,
            buffer_budget_bytes,
        }
    }

    fn net(&mut self, path: Path) -> &mut Net {
        &mut self.nets[path.index()]
    }

    /// A TCP socket with buffers of the given sizes; `ENOBUFS` past the
    /// budget, `ENOMEM` when the heap has no room for them (load the
    /// program caused: its call fails, the kernel goes on).
    pub(crate) fn add_tcp(
        &mut self,
        path: Path,
        rx_bytes: usize,
        tx_bytes: usize,
    ) -> Result<Handle, Errno> {
        let (rx, tx) = self.reserving(rx_bytes + tx_bytes, || {
            Ok((zeroed(rx_bytes)?, zeroed(tx_bytes)?))
        })?;
        let socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
        Ok(self.add(path, socket))
    }

    /// A UDP socket whose buffers hold `rx_bytes`/`tx_bytes` of payload in
    /// at most `packets` datagrams each way.
    pub(crate) fn add_udp(
        &mut self,
        path: Path,
        rx_bytes: usize,
        tx_bytes: usize,
        packets: usize,
    ) -> Result<Handle, Errno> {
        let metadata_bytes = 2 * packets * size_of::<udp::PacketMetadata>();
        let buffer = |bytes| -> Result<_, Errno> {
            let mut metadata = Vec::new();
            metadata.try_reserve_exact(packets).map_err(|_| ENOMEM)?;
            metadata.resize(packets, udp::PacketMetadata::EMPTY);
            Ok(udp::PacketBuffer::new(metadata, zeroed(bytes)?))
        };
        let (rx, tx) = self.reserving(rx_bytes + tx_bytes + metadata_bytes, || {
            Ok((buffer(rx_bytes)?, buffer(tx_bytes)?))
        })?;
        let socket = udp::Socket::new(rx, tx);
        Ok(self.add(path, socket))
    }

    /// Take `bytes` of the budget, then make the buffers with `make`; the
    /// budget is checked first, so a socket past it costs no allocation
    /// (a listener refilled at every poll once the budget ran out used to
    /// allocate and zero its buffers each time, only to free them again).
    fn reserving<T>(
        &mut self,
        bytes: usize,
        make: impl FnOnce() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let total = self.buffer_bytes.saturating_add(bytes);
        if total > self.buffer_budget_bytes {
            return Err(ENOBUFS);
        }
        let made = make()?;
        self.buffer_bytes = total;
        Ok(made)
    }

    fn add<T: AnySocket<'static>>(&mut self, path: Path, socket: T) -> Handle {
        let raw = self.net(path).sockets.add(socket);
        Handle { path, raw }
    }

    /// Frees a socket and its buffers at once (a TCP connection still open
    /// is dropped without a word to the peer).
    pub(crate) fn remove(&mut self, handle: Handle) {
        let socket = self.net(handle.path).sockets.remove(handle.raw);
        self.buffer_bytes = self.buffer_bytes.saturating_sub(buffer_bytes(&socket));
    }

    pub(crate) fn tcp(&mut self, handle: Handle) -> &mut tcp::Socket<'static> {
        self.net(handle.path).sockets.get_mut(handle.raw)
    }

    pub(crate) fn udp(&mut self, handle: Handle) -> &mut udp::Socket<'static> {
        self.net(handle.path).sockets.get_mut(handle.raw)
    }

    pub(crate) fn tcp_connect(
        &mut self,
        handle: Handle,
        remote: IpEndpoint,
        local: IpEndpoint,
    ) -> Result<(), tcp::ConnectError> {
        let net = self.net(handle.path);
        let socket: &mut tcp::Socket = net.sockets.get_mut(handle.raw);
        socket.connect(net.iface.context(), remote, local)
    }

    /// Moves packets: the device's first, then the loopback interface's
    /// until it is quiet. Returns whether any socket may have changed.
    pub(crate) fn poll<D: Device + ?Sized>(&mut self, now: Instant, device: &mut D) -> bool {
        let [external, loopback] = &mut self.nets;
        let mut is_changed =
            external.iface.poll(now, device, &mut external.sockets) != PollResult::None;
        for _ in 0..LOOPBACK_ROUNDS {
            let result = loopback
                .iface
                .poll(now, &mut self.loopback_device, &mut loopback.sockets);
            if result == PollResult::None {
                break;
            }
            is_changed = true;
        }
        is_changed
    }

    /// When smoltcp wants to be polled next (`now` if loopback packets
    /// wait).
    pub(crate) fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        if !self.loopback_device.is_empty() {
            return Some(now);
        }
        let [external, loopback] = &mut self.nets;
        let external_at = external.iface.poll_at(now, &external.sockets);
        let loopback_at = loopback.iface.poll_at(now, &loopback.sockets);
        crate::earliest(external_at, loopback_at)
    }

    /// smoltcp sockets alive, on both interfaces.
    pub(crate) fn socket_count(&self) -> usize {
        self.nets.iter().map(|net| net.sockets.iter().count()).sum()
    }

    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }
}

/// What [`Nets::add_tcp`] or [`Nets::add_udp`] reserved for this socket.
fn buffer_bytes(socket: &Socket) -> usize {
    if let Some(tcp) = tcp::Socket::downcast(socket) {
        tcp.recv_capacity() + tcp.send_capacity()
    } else if let Some(udp) = udp::Socket::downcast(socket) {
        let packets = udp.packet_recv_capacity() + udp.packet_send_capacity();
        udp.payload_recv_capacity()
            + udp.payload_send_capacity()
            + packets * size_of::<udp::PacketMetadata>()
    } else {
        0
    }
}

/// `len` zero bytes, or `ENOMEM` if the heap cannot give them.
fn zeroed(len: usize) -> Result<Vec<u8>, Errno> {
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| ENOMEM)?;
    bytes.resize(len, 0);
    Ok(bytes)
}
