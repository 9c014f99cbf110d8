//! UDP between two stacks, and the port rules both protocols share.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use common::*;
use eremite_interface::errno::{
    EACCES, EADDRINUSE, EADDRNOTAVAIL, EAGAIN, EDESTADDRREQ, EMSGSIZE, ENOPROTOOPT, ENOTCONN,
    EOPNOTSUPP, EPIPE,
};
use eremite_net::{Protocol, Shutdown, SocketId, SocketOption, Stack};

const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

fn udp(stack: &mut Stack, port: u16) -> SocketId {
    let id = stack.socket(Protocol::Udp).unwrap();
    stack.bind(id, addr(ANY, port)).unwrap();
    id
}

fn recv_from(net: &mut Net, on_b: bool, id: SocketId) -> (Vec<u8>, std::net::SocketAddrV4) {
    let mut buf = [0; 2048];
    let mut result = None;
    net.run_until(MS, SECOND, |net| {
        let stack = if on_b { net.b() } else { net.a() };
        result = stack.recv_from(id, &mut buf).ok();
        result.is_some()
    });
    let (n, from) = result.unwrap();
    (buf[..n].to_vec(), from)
}

#[test]
fn echo_across_the_wire() {
    let mut net = Net::pair();
    let server = udp(net.b(), 7);
    let client = net.a().socket(Protocol::Udp).unwrap();
    let mut buf = [0; 64];
    assert_eq!(net.b().recv_from(server, &mut buf), Err(EAGAIN));
    for round in 0..10u8 {
        let message = [round; 100];
        assert_eq!(net.a().send_to(client, &message, addr(B_IP, 7)), Ok(100));
        let (data, from) = recv_from(&mut net, true, server);
        assert_eq!(data, message);
        assert_eq!(*from.ip(), A_IP);
        net.b().send_to(server, &data, from).unwrap();
        let (echo, from) = recv_from(&mut net, false, client);
        assert_eq!(echo, message);
        assert_eq!(from, addr(B_IP, 7));
    }
}

#[test]
fn connected_socket_hears_only_its_peer() {
    let mut net = Net::pair();
    let server = udp(net.b(), 53);
    let stranger = udp(net.a(), 5000);
    let client = udp(net.a(), 5001);
    assert_eq!(net.b().send(server, b"x"), Err(EDESTADDRREQ));
    net.b().connect(server, addr(A_IP, 5001)).unwrap();
    assert_eq!(net.b().peer_addr(server), Ok(addr(A_IP, 5001)));
    assert_eq!(net.b().local_addr(server), Ok(addr(B_IP, 53)));
    net.a()
        .send_to(stranger, b"stranger", addr(B_IP, 53))
        .unwrap();
    net.a().send_to(client, b"friend", addr(B_IP, 53)).unwrap();
    let (data, from) = recv_from(&mut net, true, server);
    assert_eq!((data.as_slice(), from), (&b"friend"[..], addr(A_IP, 5001)));
    net.b().send(server, b"answer").unwrap();
    let (data, _) = recv_from(&mut net, false, client);
    assert_eq!(data, b"answer");
}

#[test]
fn long_datagrams_are_truncated_and_peek_leaves_them() {
    let mut net = Net::pair();
    let server = udp(net.b(), 9);
    let client = net.a().socket(Protocol::Udp).unwrap();
    net.a()
        .send_to(client, b"0123456789", addr(B_IP, 9))
        .unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().readiness(server).unwrap().is_readable
    });
    let mut small = [0; 4];
    assert_eq!(net.b().peek(server, &mut small), Ok(4));
    assert_eq!(net.b().recv(server, &mut small), Ok(4));
    assert_eq!(&small, b"0123");
    assert_eq!(net.b().recv(server, &mut small), Err(EAGAIN));
    assert!(!net.b().readiness(server).unwrap().is_readable);
}

#[test]
fn datagrams_larger_than_the_path_are_refused() {
    let mut net = Net::pair();
    let client = net.a().socket(Protocol::Udp).unwrap();
    // 1500-byte IP packets on the wire: 1472 bytes of payload.
    assert_eq!(net.a().send_to(client, &[0; 1472], addr(B_IP, 9)), Ok(1472));
    assert_eq!(
        net.a().send_to(client, &[0; 1473], addr(B_IP, 9)),
        Err(EMSGSIZE)
    );
}

#[test]
fn a_full_send_buffer_gives_eagain() {
    let mut net = Net::pair();
    let client = net.a().socket(Protocol::Udp).unwrap();
    let mut sent = 0;
    while net.a().send_to(client, &[0; 1000], addr(B_IP, 9)).is_ok() {
        sent += 1;
        assert!(sent < 1000);
    }
    assert_eq!(
        net.a().send_to(client, &[0; 1000], addr(B_IP, 9)),
        Err(EAGAIN)
    );
    assert!(!net.a().readiness(client).unwrap().is_writable);
    net.poll();
    assert!(net.a().readiness(client).unwrap().is_writable);
}

#[test]
fn broadcast_needs_so_broadcast() {
    let mut net = Net::pair();
    let server = udp(net.b(), 67);
    let client = net.a().socket(Protocol::Udp).unwrap();
    let broadcast = addr(Ipv4Addr::new(10, 0, 0, 255), 67);
    assert_eq!(net.a().send_to(client, b"hello", broadcast), Err(EACCES));
    net.a()
        .set_option(client, SocketOption::Broadcast(true))
        .unwrap();
    assert_eq!(net.a().send_to(client, b"hello", broadcast), Ok(5));
    let (data, _) = recv_from(&mut net, true, server);
    assert_eq!(data, b"hello");
}

#[test]
fn shutdown_needs_a_peer_and_closes_directions() {
    let mut net = Net::pair();
    let s = udp(net.a(), 1000);
    assert_eq!(net.a().shutdown(s, Shutdown::Both), Err(ENOTCONN));
    net.a().connect(s, addr(B_IP, 1000)).unwrap();
    net.a().shutdown(s, Shutdown::Write).unwrap();
    assert_eq!(net.a().send(s, b"x"), Err(EPIPE));
    net.a().shutdown(s, Shutdown::Read).unwrap();
    assert_eq!(net.a().recv(s, &mut [0; 4]), Ok(0));
    assert!(net.a().readiness(s).unwrap().has_hangup);
}

#[test]
fn ephemeral_ports_are_distinct_and_in_linux_range() {
    let mut net = Net::pair();
    let mut seen = HashSet::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        seen.clear();
        for _ in 0..200 {
            let id = net.a().socket(protocol).unwrap();
            net.a().bind(id, addr(ANY, 0)).unwrap();
            let port = net.a().local_addr(id).unwrap().port();
            assert!((32768..=60999).contains(&port), "{port}");
            assert!(seen.insert(port), "port {port} twice");
        }
    }
    // Implicit binds (send_to, connect) take fresh ports too.
    let a = net.a().socket(Protocol::Udp).unwrap();
    net.a().send_to(a, b"x", addr(B_IP, 9)).unwrap();
    assert!(!seen.contains(&net.a().local_addr(a).unwrap().port()));
}

#[test]
fn a_held_port_gives_eaddrinuse() {
    let mut net = Net::pair();
    let s = net.a();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let first = s.socket(protocol).unwrap();
        s.bind(first, addr(ANY, 4000)).unwrap();
        let second = s.socket(protocol).unwrap();
        assert_eq!(s.bind(second, addr(ANY, 4000)), Err(EADDRINUSE));
        assert_eq!(s.bind(second, addr(A_IP, 4000)), Err(EADDRINUSE));
        assert_eq!(
            s.bind(second, addr(Ipv4Addr::LOCALHOST, 4000)),
            Err(EADDRINUSE)
        );
        s.close(first).unwrap();
        s.bind(second, addr(A_IP, 4000)).unwrap();
        // Distinct addresses may share a port.
        let third = s.socket(protocol).unwrap();
        s.bind(third, addr(Ipv4Addr::LOCALHOST, 4000)).unwrap();
        s.close(second).unwrap();
        s.close(third).unwrap();
    }
    assert_eq!(s.stats().ports, 0);
}

#[test]
fn reuseaddr_shares_a_port_but_not_a_listening_one() {
    let mut net = Net::pair();
    let s = net.a();
    let reusable = |s: &mut Stack| {
        let id = s.socket(Protocol::Tcp).unwrap();
        s.set_option(id, SocketOption::ReuseAddr(true)).unwrap();
        id
    };
    let first = reusable(s);
    s.bind(first, addr(ANY, 4100)).unwrap();
    let second = reusable(s);
    s.bind(second, addr(ANY, 4100)).unwrap();
    s.listen(first, 1).unwrap();
    assert_eq!(s.listen(second, 1), Err(EADDRINUSE));
    let third = reusable(s);
    assert_eq!(s.bind(third, addr(ANY, 4100)), Err(EADDRINUSE));
    assert!(s.options(third).unwrap().reuse_addr);
}

#[test]
fn foreign_addresses_cannot_be_bound() {
    let mut net = Net::pair();
    let id = net.a().socket(Protocol::Udp).unwrap();
    assert_eq!(net.a().bind(id, addr(B_IP, 1)), Err(EADDRNOTAVAIL));
}

#[test]
fn tcp_only_calls_and_options() {
    let mut net = Net::pair();
    let id = net.a().socket(Protocol::Udp).unwrap();
    assert_eq!(net.a().listen(id, 1), Err(EOPNOTSUPP));
    assert_eq!(net.a().accept(id), Err(EOPNOTSUPP));
    assert_eq!(
        net.a().set_option(id, SocketOption::NoDelay(true)),
        Err(ENOPROTOOPT)
    );
    assert_eq!(net.a().protocol(id), Ok(Protocol::Udp));
}

#[test]
fn datagrams_sent_just_before_close_still_go_out() {
    let mut net = Net::pair();
    let server = udp(net.b(), 514);
    let client = net.a().socket(Protocol::Udp).unwrap();
    // B's MAC address is not known yet: the datagram waits for ARP.
    net.a()
        .send_to(client, b"last words", addr(B_IP, 514))
        .unwrap();
    net.a().close(client).unwrap();
    assert_eq!(net.a().stats().orphans, 1);
    let (data, _) = recv_from(&mut net, true, server);
    assert_eq!(data, b"last words");
    assert_eq!(net.a().stats(), eremite_net::Stats::default());
}

#[test]
fn only_a_wrong_transport_checksum_stops_a_frame_when_the_card_checks() {
    let good = udp_frame(addr(A_IP, 5000), addr(B_IP, 7000), b"hello");
    assert!(eremite_net::is_transport_checksum_right(&good));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(!eremite_net::is_transport_checksum_right(&bad));
    // Not IPv4, or not parseable: smoltcp's to judge.
    let mut arp = bad.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert!(eremite_net::is_transport_checksum_right(&arp));
    assert!(eremite_net::is_transport_checksum_right(&bad[..20]));
    assert!(eremite_net::is_transport_checksum_right(&[]));
}

/// An Ethernet frame from A's MAC to B's carrying a UDP datagram.
fn udp_frame(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    use eremite_net::smoltcp::phy::ChecksumCapabilities;
    use eremite_net::smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
        Ipv4Repr, UdpPacket, UdpRepr,
    };
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut bytes = vec![0; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let checksums = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(&mut bytes);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &checksums);
    udp.emit(
        &mut UdpPacket::new_unchecked(packet.payload_mut()),
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &checksums,
    );
    bytes
}

#[test]
fn the_network_cannot_pass_for_localhost() {
    let mut net = Net::pair();
    let server = udp(net.b(), 53);
    let dst = addr(B_IP, 53);
    let b = net.b.as_ref().unwrap();
    b.device
        .inject(udp_frame(addr(Ipv4Addr::LOCALHOST, 4000), dst, b"spoofed"));
    b.device
        .inject(udp_frame(addr(B_IP, 4000), dst, b"spoofed too"));
    b.device
        .inject(udp_frame(addr(A_IP, 4000), dst, b"genuine"));
    let (data, from) = recv_from(&mut net, true, server);
    assert_eq!((data.as_slice(), from), (&b"genuine"[..], addr(A_IP, 4000)));
    assert_eq!(net.b().recv(server, &mut [0; 16]), Err(EAGAIN));
}
