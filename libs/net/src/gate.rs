//! Connection attempts a full listener cannot take are dropped, not
//! refused.
//!
//! smoltcp answers a SYN with a reset when no socket in LISTEN matches it,
//! so a burst of clients larger than a listener's backlog would see
//! "connection refused". Linux instead drops the SYN when the accept queue
//! is full, and the client sends it again a moment later (RFC 6298's
//! retransmission), by which time the application may have accepted. The
//! [`SynGate`] does the same on the card's interface: before each poll it
//! learns how many listening sockets each listener has free, and the
//! [`Gated`] device drops each SYN beyond that (smoltcp is handed an empty
//! frame, which it discards as truncated). Frames are not copied.

use alloc::vec::Vec;
use core::net::SocketAddrV4;

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

/// Listeners and how many more connection attempts each can take.
#[derive(Debug, Default)]
pub(crate) struct SynGate {
    /// (bound address, free listening sockets); an unspecified address
    /// listens on every address.
    open: Vec<(SocketAddrV4, usize)>,
    /// SYNs dropped so far.
    dropped: u64,
}

impl SynGate {
    /// Forget the listeners (before they are counted again; the memory
    /// stays).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
    }

    /// A listener on `bound` with `free` sockets in LISTEN.
    pub(crate) fn add(&mut self, bound: SocketAddrV4, free: usize) {
        self.open.push((bound, free));
    }

    /// SYNs dropped since the stack was made.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether `frame` may go on to smoltcp: anything but a SYN (without
    /// ACK) to a listener with no free listening socket. A SYN that is let
    /// through takes one.
    pub(crate) fn admits(&mut self, frame: &[u8]) -> bool {
        let Some(to) = syn_destination(frame) else {
            return true;
        };
        let listener = self.open.iter_mut().find(|(bound, _)| {
            bound.port() == to.port() && (bound.ip().is_unspecified() || bound.ip() == to.ip())
        });
        match listener {
            // No listener: smoltcp's reset is the right answer.
            None => true,
            Some((_, 0)) => {
                self.dropped += 1;
                false
            }
            Some((_, free)) => {
                *free -= 1;
                true
            }
        }
    }
}

/// Where a TCP SYN (without ACK) in an Ethernet frame goes, if `frame`
/// is one; `None` for everything else, malformed frames included (smoltcp
/// judges those).
fn syn_destination(frame: &[u8]) -> Option<SocketAddrV4> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
    // Only a first (or only) fragment holds the TCP header.
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()))
}

/// A device whose received frames pass a [`SynGate`] first.
pub(crate) struct Gated<'a, D: ?Sized> {
    pub(crate) device: &'a mut D,
    pub(crate) gate: &'a mut SynGate,
}

/// A received frame that the gate looks at when smoltcp takes it.
pub(crate) struct GatedRx<'a, T> {
    token: T,
    gate: &'a mut SynGate,
}

impl<T: phy::RxToken> phy::RxToken for GatedRx<'_, T> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let gate = self.gate;
        self.token
            .consume(|frame| if gate.admits(frame) { f(frame) } else { f(&[]) })
    }

    fn meta(&self) -> phy::PacketMeta {
        self.token.meta()
    }
}

impl<D: Device + ?Sized> Device for Gated<'_, D> {
    type RxToken<'a>
        = GatedRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.device.receive(timestamp)?;
        Some((
            GatedRx {
                token: rx,
                gate: self.gate,
            },
            tx,
        ))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.device.transmit(timestamp)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };

    /// An Ethernet frame with a TCP segment from 10.0.0.1:40000 to
    /// `to`, with `control` (SYN or none) and `ack`.
    fn segment(to: SocketAddrV4, control: TcpControl, ack: bool) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: to.port(),
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: ack.then_some(TcpSeqNumber(7)),
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: Ipv4Address::new(10, 0, 0, 1),
            dst_addr: *to.ip(),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let ethernet = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut bytes = alloc::vec![0; ethernet.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        ethernet.emit(&mut frame);
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut packet, &caps);
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &ip.src_addr.into(),
            &ip.dst_addr.into(),
            &caps,
        );
        bytes
    }

    const HERE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);

    #[test]
    fn syns_beyond_the_free_sockets_are_dropped() {
        let mut gate = SynGate::default();
        gate.add(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 2);
        let syn = segment(HERE, TcpControl::Syn, false);
        assert!(gate.admits(&syn));
        assert!(gate.admits(&syn));
        assert!(!gate.admits(&syn), "the third finds no free socket");
        assert_eq!(gate.dropped(), 1);
        // Everything else passes: segments of connections, SYN-ACKs,
        // other ports (smoltcp resets those), other protocols, garbage.
        assert!(gate.admits(&segment(HERE, TcpControl::None, true)));
        assert!(gate.admits(&segment(HERE, TcpControl::Syn, true)));
        let elsewhere = SocketAddrV4::new(*HERE.ip(), 81);
        assert!(gate.admits(&segment(elsewhere, TcpControl::Syn, false)));
        assert!(gate.admits(&[0; 10]));
        assert!(gate.admits(&[]));
        let mut arp = syn.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(gate.admits(&arp));
        assert_eq!(gate.dropped(), 1);
    }

    #[test]
    fn a_listener_on_one_address_gates_only_that_address() {
        let mut gate = SynGate::default();
        gate.add(HERE, 0);
        assert!(!gate.admits(&segment(HERE, TcpControl::Syn, false)));
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 80);
        assert!(gate.admits(&segment(other, TcpControl::Syn, false)));
        gate.clear();
        assert!(gate.admits(&segment(HERE, TcpControl::Syn, false)));
    }
}
