//! Traffic inside one stack: 127.0.0.0/8 and the stack's own address,
//! with no device traffic at all.

mod common;

use std::net::Ipv4Addr;

use common::*;
use eremite_interface::errno::{EAGAIN, ECONNREFUSED, EINPROGRESS};
use eremite_net::{Protocol, Shutdown, SocketId, Stack};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn listener(stack: &mut Stack, ip: Ipv4Addr, port: u16) -> SocketId {
    let id = stack.socket(Protocol::Tcp).unwrap();
    stack.bind(id, addr(ip, port)).unwrap();
    stack.listen(id, 4).unwrap();
    id
}

/// Connects to `to` and accepts on `listener`; returns (client, server).
fn connect(net: &mut Net, listener: SocketId, to: std::net::SocketAddrV4) -> (SocketId, SocketId) {
    let client = net.a().socket(Protocol::Tcp).unwrap();
    assert_eq!(net.a().connect(client, to), Err(EINPROGRESS));
    net.poll();
    assert!(net.a().readiness(client).unwrap().is_writable);
    assert_eq!(net.a().take_error(client), Ok(None));
    let (server, peer) = net.a().accept(listener).unwrap();
    assert_eq!(peer, net.a().local_addr(client).unwrap());
    (client, server)
}

#[test]
fn tcp_over_localhost_carries_a_megabyte_and_end_of_file() {
    let mut net = Net::solo();
    let listener = listener(net.a(), Ipv4Addr::UNSPECIFIED, 8080);
    let (client, server) = connect(&mut net, listener, addr(LOCALHOST, 8080));
    assert_eq!(*net.a().local_addr(client).unwrap().ip(), LOCALHOST);
    assert_eq!(net.a().local_addr(server), Ok(addr(LOCALHOST, 8080)));

    let data = pattern(1 << 20, 9);
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0; 64 << 10];
    while got.len() < data.len() {
        if sent < data.len() {
            sent += net.a().send(client, &data[sent..]).unwrap_or(0);
            if sent == data.len() {
                net.a().shutdown(client, Shutdown::Write).unwrap();
            }
        }
        match net.a().recv(server, &mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(EAGAIN) => net.tick(MS),
            Err(error) => panic!("{error:?}"),
        }
    }
    assert_eq!(checksum(&got), checksum(&data));
    net.poll();
    assert_eq!(net.a().recv(server, &mut buf), Ok(0));
}

#[test]
fn the_own_address_loops_back_too() {
    let mut net = Net::solo();
    let listener = listener(net.a(), A_IP, 9000);
    let (client, server) = connect(&mut net, listener, addr(A_IP, 9000));
    assert_eq!(*net.a().local_addr(client).unwrap().ip(), A_IP);
    net.a().send(server, b"hi").unwrap();
    net.poll();
    let mut buf = [0; 8];
    assert_eq!(net.a().recv(client, &mut buf), Ok(2));
}

#[test]
fn a_listener_on_the_own_address_refuses_localhost() {
    let mut net = Net::solo();
    listener(net.a(), A_IP, 9000);
    let client = net.a().socket(Protocol::Tcp).unwrap();
    assert_eq!(
        net.a().connect(client, addr(LOCALHOST, 9000)),
        Err(EINPROGRESS)
    );
    net.poll();
    assert_eq!(net.a().take_error(client), Ok(Some(ECONNREFUSED)));
}

#[test]
fn connecting_to_no_one_is_refused_at_once() {
    let mut net = Net::solo();
    let client = net.a().socket(Protocol::Tcp).unwrap();
    let _ = net.a().connect(client, addr(LOCALHOST, 1));
    net.poll();
    assert_eq!(
        net.a().connect(client, addr(LOCALHOST, 1)),
        Err(ECONNREFUSED)
    );
}

#[test]
fn several_local_clients_before_accept() {
    let mut net = Net::solo();
    let listener = listener(net.a(), Ipv4Addr::UNSPECIFIED, 80);
    let clients: Vec<SocketId> = (0..4)
        .map(|_| {
            let client = net.a().socket(Protocol::Tcp).unwrap();
            let _ = net.a().connect(client, addr(LOCALHOST, 80));
            client
        })
        .collect();
    net.poll();
    for &client in &clients {
        assert!(net.a().readiness(client).unwrap().is_writable);
        assert_eq!(net.a().take_error(client), Ok(None));
    }
    for _ in 0..4 {
        net.a().accept(listener).unwrap();
    }
    assert_eq!(net.a().accept(listener), Err(EAGAIN));
}

#[test]
fn udp_over_localhost() {
    let mut net = Net::solo();
    let server = net.a().socket(Protocol::Udp).unwrap();
    net.a()
        .bind(server, addr(Ipv4Addr::UNSPECIFIED, 5353))
        .unwrap();
    let client = net.a().socket(Protocol::Udp).unwrap();
    assert_eq!(
        net.a().send_to(client, b"ping", addr(LOCALHOST, 5353)),
        Ok(4)
    );
    net.poll();
    let mut buf = [0; 16];
    let (n, from) = net.a().recv_from(server, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    // An unconnected socket bound to the wildcard shows it; its datagrams
    // to localhost come from 127.0.0.1.
    let local = net.a().local_addr(client).unwrap();
    assert_eq!(*local.ip(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(from, addr(LOCALHOST, local.port()));
    net.a()
        .send_to(server, b"pong", addr(LOCALHOST, from.port()))
        .unwrap();
    net.poll();
    let (n, from) = net.a().recv_from(client, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    assert_eq!(from, addr(LOCALHOST, 5353));
}

#[test]
fn udp_datagrams_up_to_64k_fit_through_loopback() {
    let mut net = Net::solo();
    let server = net.a().socket(Protocol::Udp).unwrap();
    net.a().bind(server, addr(LOCALHOST, 7)).unwrap();
    let client = net.a().socket(Protocol::Udp).unwrap();
    let big = pattern(65507, 3);
    assert_eq!(
        net.a().send_to(client, &big, addr(LOCALHOST, 7)),
        Ok(big.len())
    );
    net.poll();
    let mut buf = vec![0; 70000];
    assert_eq!(net.a().recv(server, &mut buf), Ok(big.len()));
    assert_eq!(&buf[..big.len()], &big[..]);
}

#[test]
fn many_local_connections_leave_nothing_behind() {
    let mut net = Net::solo();
    let listener = listener(net.a(), Ipv4Addr::UNSPECIFIED, 80);
    net.poll();
    let baseline = net.a().stats();
    for i in 0..500u32 {
        let (client, server) = connect(&mut net, listener, addr(LOCALHOST, 80));
        net.a().send(client, &i.to_le_bytes()).unwrap();
        net.poll();
        let mut buf = [0; 4];
        assert_eq!(net.a().recv(server, &mut buf), Ok(4));
        assert_eq!(buf, i.to_le_bytes());
        net.a().close(client).unwrap();
        net.a().close(server).unwrap();
        net.tick(MS);
    }
    net.run_for(MS * 10, SECOND);
    assert_eq!(net.a().stats(), baseline);
}

#[test]
fn udp_peek_then_recv_return_the_same_datagram_across_interfaces() {
    let mut net = Net::pair();
    let server = net.b().socket(Protocol::Udp).unwrap();
    net.b()
        .bind(server, addr(Ipv4Addr::UNSPECIFIED, 53))
        .unwrap();
    // One datagram from the wire, one from the stack itself.
    let remote = net.a().socket(Protocol::Udp).unwrap();
    net.a().send_to(remote, b"remote", addr(B_IP, 53)).unwrap();
    let local = net.b().socket(Protocol::Udp).unwrap();
    net.b()
        .send_to(local, b"local", addr(LOCALHOST, 53))
        .unwrap();
    net.run_for(MS, MS * 100);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (mut peeked, mut received) = ([0; 16], [0; 16]);
        let (n, from) = net.b().peek_from(server, &mut peeked).unwrap();
        assert_eq!(net.b().recv_from(server, &mut received), Ok((n, from)));
        assert_eq!(peeked[..n], received[..n], "peek and recv disagree");
        seen.push(received[..n].to_vec());
    }
    seen.sort();
    assert_eq!(seen, [b"local".to_vec(), b"remote".to_vec()]);
}
