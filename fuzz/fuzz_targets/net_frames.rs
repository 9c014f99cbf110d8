//! Frames from the network into the guest's stack (`libs/net`: smoltcp
//! behind eremite's socket layer and its SYN gate), with a listener, an
//! accepted connection, a client connection and a UDP socket open. Each
//! input is a series of frames: mostly TCP or UDP segments built from
//! fuzzed fields with valid checksums (so they reach the sockets), some
//! raw bytes. Between frames the clock moves and the sockets are used.
//! Nothing may panic, and closing everything must leave no socket behind.
#![no_main]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

use eremite_net::smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use eremite_net::smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};
use eremite_net::{Duration, Instant, Limits, Protocol, Stack, StackConfig};
use libfuzzer_sys::fuzz_target;

const HERE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// Frames in from the fuzzer; frames out are dropped.
#[derive(Default)]
struct Wire {
    inbound: VecDeque<Vec<u8>>,
    scratch: Vec<u8>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<u8>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.resize(len, 0);
        f(&mut self.0[..len])
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.inbound.pop_front()?;
        Some((Rx(frame), Tx(&mut self.scratch)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.scratch))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// Bytes of the input, zero once it runs out.
struct Input<'a>(std::slice::Iter<'a, u8>);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// A length byte, then that many bytes.
    fn bytes(&mut self) -> Vec<u8> {
        let len = self.u8();
        (0..len).map(|_| self.u8()).collect()
    }
    fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
}

/// An Ethernet frame around an IPv4 packet from the peer, `payload_len`
/// bytes of transport, filled by `emit`.
fn ipv4_frame(protocol: IpProtocol, payload_len: usize, emit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: PEER,
        dst_addr: HERE,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
    };
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress(PEER_MAC),
        dst_addr: EthernetAddress(MAC),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut bytes = vec![0; ethernet.buffer_len() + ip.buffer_len() + payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    ethernet.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    emit(packet.payload_mut());
    bytes
}

fn tcp_frame(input: &mut Input) -> Vec<u8> {
    let ports = [7000, 7001, 40000, input.u16()];
    let control = [
        TcpControl::None,
        TcpControl::Syn,
        TcpControl::Fin,
        TcpControl::Rst,
        TcpControl::Psh,
    ][usize::from(input.u8() % 5)];
    let flags = input.u8();
    let payload = input.bytes();
    let repr = TcpRepr {
        src_port: ports[usize::from(input.u8() % 4)],
        dst_port: ports[usize::from(input.u8() % 4)],
        control,
        seq_number: TcpSeqNumber(input.u32() as i32),
        ack_number: (flags & 1 != 0).then(|| TcpSeqNumber(input.u32() as i32)),
        window_len: input.u16(),
        window_scale: (flags & 2 != 0).then(|| input.u8() % 16),
        max_seg_size: (flags & 4 != 0).then(|| input.u16()),
        sack_permitted: flags & 8 != 0,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &payload,
    };
    ipv4_frame(IpProtocol::Tcp, repr.buffer_len(), |buf| {
        repr.emit(
            &mut TcpPacket::new_unchecked(buf),
            &PEER.into(),
            &HERE.into(),
            &ChecksumCapabilities::default(),
        );
    })
}

fn udp_frame(input: &mut Input) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: input.u16(),
        dst_port: [7002, input.u16()][usize::from(input.u8() % 2)],
    };
    let payload = input.bytes();
    ipv4_frame(IpProtocol::Udp, repr.header_len() + payload.len(), |buf| {
        repr.emit(
            &mut UdpPacket::new_unchecked(buf),
            &PEER.into(),
            &HERE.into(),
            payload.len(),
            |out| out.copy_from_slice(&payload),
            &ChecksumCapabilities::default(),
        );
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data.iter());
    let mut wire = Wire::default();
    let mut limits = Limits::default();
    limits.max_backlog = 2;
    let mut config = StackConfig::new(MAC, HERE, 24);
    config.limits = limits;
    let mut now = Instant::from_millis(0);
    let Ok(mut stack) = Stack::new(config, &mut wire, now) else {
        return;
    };
    let listener = stack.socket(Protocol::Tcp).unwrap();
    stack.bind(listener, SocketAddrV4::new(HERE, 7000)).unwrap();
    stack.listen(listener, 2).unwrap();
    let client = stack.socket(Protocol::Tcp).unwrap();
    stack.bind(client, SocketAddrV4::new(HERE, 7001)).unwrap();
    let _ = stack.connect(client, SocketAddrV4::new(PEER, 40000));
    let udp = stack.socket(Protocol::Udp).unwrap();
    stack.bind(udp, SocketAddrV4::new(HERE, 7002)).unwrap();
    let mut accepted = Vec::new();
    let mut buf = [0u8; 512];
    while !input.is_empty() {
        let frame = match input.u8() % 8 {
            0 => input.bytes(),
            1..=2 => udp_frame(&mut input),
            _ => tcp_frame(&mut input),
        };
        wire.inbound.push_back(frame);
        now += Duration::from_millis(u64::from(input.u8()) * 8);
        stack.poll(now, &mut wire);
        if let Ok((id, _)) = stack.accept(listener) {
            accepted.push(id);
        }
        for &id in accepted.iter().chain([&client]) {
            let _ = stack.recv(id, &mut buf);
            let _ = stack.send(id, &buf[..usize::from(input.u8())]);
        }
        let _ = stack.recv_from(udp, &mut buf);
    }
    for id in accepted.into_iter().chain([listener, client, udp]) {
        stack.close(id).unwrap();
    }
    // Closed connections finish (or time out) and are freed.
    for _ in 0..100 {
        now += Duration::from_secs(10);
        stack.poll(now, &mut wire);
    }
    assert_eq!(stack.stats().sockets, 0);
    assert_eq!(stack.stats().orphans, 0, "{:?}", stack.stats());
});
