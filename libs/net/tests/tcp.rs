//! TCP between two stacks on one wire: connection set-up and tear-down,
//! bulk data, errors, backlog, leaks.

mod common;

use common::*;
use eremite_interface::errno::{
    EAGAIN, EALREADY, EBADF, ECONNREFUSED, ECONNRESET, EINPROGRESS, EINVAL, EISCONN, ENETUNREACH,
    ENOTCONN, EPIPE, ETIMEDOUT,
};
use eremite_net::{Duration, Limits, Protocol, Readiness, Shutdown, SocketId, SocketOption};
use std::net::SocketAddrV4;

const PORT: u16 = 7000;

/// A listener on B, a client on A connected to it, and B's side accepted.
struct Connection {
    client: SocketId,
    server: SocketId,
}

fn listen(net: &mut Net, backlog: u32) -> SocketId {
    let listener = net.b().socket(Protocol::Tcp).unwrap();
    net.b().bind(listener, addr(B_IP, PORT)).unwrap();
    net.b().listen(listener, backlog).unwrap();
    listener
}

fn connect(net: &mut Net) -> SocketId {
    let client = net.a().socket(Protocol::Tcp).unwrap();
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(EINPROGRESS));
    client
}

/// Lets A and B learn each other's MAC address, so that what A sends next
/// reaches B at once.
fn prime_arp(net: &mut Net) {
    let a = net.a().socket(Protocol::Udp).unwrap();
    let b = net.b().socket(Protocol::Udp).unwrap();
    net.b().bind(b, addr(B_IP, 9)).unwrap();
    net.a().send_to(a, b"hi", addr(B_IP, 9)).unwrap();
    net.run_until(MS, SECOND, |net| net.b().recv(b, &mut [0; 4]).is_ok());
    net.a().close(a).unwrap();
    net.b().close(b).unwrap();
}

fn wait_writable(net: &mut Net, id: SocketId) {
    net.run_until(MS, SECOND * 10, |net| {
        net.a().readiness(id).unwrap().is_writable
    });
}

fn accept(net: &mut Net, listener: SocketId) -> SocketId {
    let mut accepted = None;
    net.run_until(MS, SECOND * 10, |net| {
        accepted = net.b().accept(listener).ok();
        accepted.is_some()
    });
    let (server, peer) = accepted.unwrap();
    assert_eq!(*peer.ip(), A_IP);
    server
}

fn establish(net: &mut Net) -> Connection {
    let listener = listen(net, 4);
    let client = connect(net);
    wait_writable(net, client);
    let server = accept(net, listener);
    Connection { client, server }
}

/// Sends all of `data` from A's `from` to B's `to` (or back), reading on
/// the other side as it goes; returns what arrived.
fn transfer(net: &mut Net, from_a: bool, from: SocketId, to: SocketId, data: &[u8]) -> Vec<u8> {
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buf = vec![0; 32 << 10];
    let end = net.now + Duration::from_secs(120);
    while received.len() < data.len() {
        assert!(
            net.now < end,
            "transfer stalled at {} bytes",
            received.len()
        );
        let (sender, receiver) = if from_a {
            (&mut net.a.stack, &mut net.b.as_mut().unwrap().stack)
        } else {
            (&mut net.b.as_mut().unwrap().stack, &mut net.a.stack)
        };
        if sent < data.len() {
            match sender.send(from, &data[sent..]) {
                Ok(n) => sent += n,
                Err(EAGAIN) => {}
                Err(error) => panic!("send: {error:?}"),
            }
        }
        match receiver.recv(to, &mut buf) {
            Ok(0) => panic!("early EOF"),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(EAGAIN) => net.tick(MS),
            Err(error) => panic!("recv: {error:?}"),
        }
    }
    received
}

#[test]
fn connect_accept_and_exchange_megabytes_both_ways() {
    let mut net = Net::pair();
    let listener = listen(&mut net, 4);
    let client = connect(&mut net);
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(EALREADY));
    assert_eq!(net.a().peer_addr(client), Err(ENOTCONN));
    wait_writable(&mut net, client);
    assert_eq!(net.a().take_error(client), Ok(None));
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(EISCONN));
    assert_eq!(net.a().peer_addr(client), Ok(addr(B_IP, PORT)));
    let local = net.a().local_addr(client).unwrap();
    assert_eq!(*local.ip(), A_IP);
    let server = accept(&mut net, listener);
    assert_eq!(net.b().peer_addr(server), Ok(local));
    assert_eq!(net.b().local_addr(server), Ok(addr(B_IP, PORT)));

    let up = pattern(3 << 20, 1);
    let down = pattern(2 << 20, 2);
    assert_eq!(
        checksum(&transfer(&mut net, true, client, server, &up)),
        checksum(&up)
    );
    assert_eq!(
        checksum(&transfer(&mut net, false, server, client, &down)),
        checksum(&down)
    );
}

#[test]
fn data_flows_both_ways_at_once() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    let up = pattern(1 << 20, 3);
    let down = pattern(1 << 20, 4);
    let (mut up_sent, mut down_sent) = (0, 0);
    let (mut at_b, mut at_a) = (Vec::new(), Vec::new());
    let mut buf = vec![0; 8192];
    let end = net.now + Duration::from_secs(120);
    while at_b.len() < up.len() || at_a.len() < down.len() {
        assert!(net.now < end);
        if let Ok(n) = net.a().send(c.client, &up[up_sent..]) {
            up_sent += n;
        }
        if let Ok(n) = net.b().send(c.server, &down[down_sent..]) {
            down_sent += n;
        }
        if let Ok(n) = net.b().recv(c.server, &mut buf) {
            at_b.extend_from_slice(&buf[..n]);
        }
        if let Ok(n) = net.a().recv(c.client, &mut buf) {
            at_a.extend_from_slice(&buf[..n]);
        }
        net.tick(MS);
    }
    assert_eq!(checksum(&at_b), checksum(&up));
    assert_eq!(checksum(&at_a), checksum(&down));
}

#[test]
fn shutdown_write_gives_the_peer_end_of_file() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    assert_eq!(net.a().send(c.client, b"hello"), Ok(5));
    net.a().shutdown(c.client, Shutdown::Write).unwrap();
    assert_eq!(net.a().send(c.client, b"more"), Err(EPIPE));

    let mut got = Vec::new();
    assert_eq!(pump_recv(&mut net, true, c.server, &mut got, 100), Ok(0));
    assert_eq!(got, b"hello");
    assert_eq!(net.b().recv(c.server, &mut [0; 8]), Ok(0));
    assert!(net.b().readiness(c.server).unwrap().is_readable);

    // The other direction still works.
    assert_eq!(net.b().send(c.server, b"reply"), Ok(5));
    let mut reply = Vec::new();
    pump_recv(&mut net, false, c.client, &mut reply, 5).unwrap();
    assert_eq!(reply, b"reply");
    net.b().close(c.server).unwrap();
    let mut rest = Vec::new();
    assert_eq!(pump_recv(&mut net, false, c.client, &mut rest, 1), Ok(0));
    let readiness = net.a().readiness(c.client).unwrap();
    assert!(readiness.has_hangup && !readiness.has_error);
    assert_eq!(net.a().take_error(c.client), Ok(None));
}

#[test]
fn close_with_data_in_flight_delivers_it_all() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    let baseline_a = net.a().stats().smoltcp_sockets;
    let data = pattern(48 << 10, 5);
    assert_eq!(net.a().send(c.client, &data), Ok(data.len()));
    net.a().close(c.client).unwrap();
    assert_eq!(net.a().send(c.client, b"x"), Err(EBADF));

    let mut got = Vec::new();
    assert_eq!(
        pump_recv(&mut net, true, c.server, &mut got, usize::MAX),
        Ok(0)
    );
    assert_eq!(checksum(&got), checksum(&data));
    net.b().close(c.server).unwrap();
    net.run_for(MS * 10, SECOND);
    assert_eq!(net.a().stats().orphans, 0);
    assert_eq!(net.a().stats().smoltcp_sockets, baseline_a - 1);
    assert_eq!(net.a().stats().ports, 0);
}

#[test]
fn refused_connection_reports_econnrefused_once() {
    let mut net = Net::pair();
    let client = connect(&mut net);
    net.run_until(MS, SECOND, |net| {
        net.a().readiness(client).unwrap().has_error
    });
    let readiness = net.a().readiness(client).unwrap();
    assert_eq!(
        readiness,
        Readiness {
            is_readable: true,
            is_writable: true,
            has_hangup: true,
            has_error: true
        }
    );
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(ECONNREFUSED));
    assert_eq!(net.a().take_error(client), Ok(None));
    // The socket may try again: now something listens.
    let listener = listen(&mut net, 1);
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(EINPROGRESS));
    wait_writable(&mut net, client);
    accept(&mut net, listener);
    assert_eq!(net.a().take_error(client), Ok(None));
}

#[test]
fn take_error_reports_a_refused_connection() {
    let mut net = Net::pair();
    let client = connect(&mut net);
    wait_writable(&mut net, client);
    assert_eq!(net.a().take_error(client), Ok(Some(ECONNREFUSED)));
    assert_eq!(net.a().take_error(client), Ok(None));
}

#[test]
fn unanswered_connection_times_out() {
    let mut net = Net::pair();
    let client = net.a().socket(Protocol::Tcp).unwrap();
    assert_eq!(
        net.a().connect(client, addr(NOBODY_IP, PORT)),
        Err(EINPROGRESS)
    );
    net.run_for(SECOND, Duration::from_secs(120));
    assert_eq!(net.a().take_error(client), Ok(None));
    net.run_until(SECOND, Duration::from_secs(10), |net| {
        net.a().readiness(client).unwrap().has_error
    });
    assert_eq!(
        net.a().connect(client, addr(NOBODY_IP, PORT)),
        Err(ETIMEDOUT)
    );
}

#[test]
fn poll_at_wakes_the_caller_for_the_connect_timeout() {
    let mut net = Net::pair();
    let client = net.a().socket(Protocol::Tcp).unwrap();
    let _ = net.a().connect(client, addr(NOBODY_IP, PORT));
    let start = net.now;
    let mut polls = 0;
    // Poll only when asked to: the stack must ask in time.
    for _ in 0..1000 {
        net.poll();
        if net.a().readiness(client).unwrap().has_error {
            break;
        }
        let now = net.now;
        let at = net.a().poll_at(now).expect("a timer is pending");
        net.now = at.max(net.now + MS);
        polls += 1;
    }
    assert_eq!(net.a().take_error(client), Ok(Some(ETIMEDOUT)));
    assert!(net.now - start <= Duration::from_secs(128));
    // smoltcp asks again for the peer's MAC address every second.
    assert!(polls < 200, "{polls} polls for one connection attempt");
}

#[test]
fn unreachable_address_fails_at_once() {
    let mut net = Net::pair();
    let client = net.a().socket(Protocol::Tcp).unwrap();
    let outside = addr(std::net::Ipv4Addr::new(192, 168, 1, 1), 80);
    assert_eq!(net.a().connect(client, outside), Err(ENETUNREACH));
}

#[test]
fn backlog_of_eight_takes_eight_clients_before_any_accept() {
    let mut net = Net::pair();
    prime_arp(&mut net);
    let listener = listen(&mut net, 8);
    // All eight SYNs reach B in one poll.
    let clients: Vec<SocketId> = (0..8).map(|_| connect(&mut net)).collect();
    net.run_until(MS, SECOND * 5, |net| {
        clients
            .iter()
            .all(|&id| net.a().readiness(id).unwrap().is_writable)
    });
    for &client in &clients {
        assert_eq!(net.a().take_error(client), Ok(None));
    }
    assert!(net.b().readiness(listener).unwrap().is_readable);
    let mut peers = Vec::new();
    for _ in 0..8 {
        let (server, peer) = net.b().accept(listener).unwrap();
        peers.push((server, peer));
    }
    assert_eq!(net.b().accept(listener), Err(EAGAIN));
    assert!(!net.b().readiness(listener).unwrap().is_readable);
    let mut ports: Vec<u16> = peers.iter().map(|(_, peer)| peer.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 8);
    // Each accepted socket talks to its own client.
    for (i, &client) in clients.iter().enumerate() {
        net.a().send(client, &[i as u8]).unwrap();
    }
    for (server, peer) in peers {
        let i = clients
            .iter()
            .position(|&c| net.a().local_addr(c).unwrap() == peer)
            .unwrap();
        let mut got = Vec::new();
        pump_recv(&mut net, true, server, &mut got, 1).unwrap();
        assert_eq!(got, [i as u8]);
    }
}

#[test]
fn a_backlog_beyond_the_listening_sockets_queues_a_burst_before_any_accept() {
    let mut net = Net::pair();
    prime_arp(&mut net);
    // 16 sockets wait in LISTEN; 48 SYNs come at once and nobody accepts:
    // the gate holds the rest while refills take them, 16 a poll, and all
    // 48 complete their handshakes well before a client would resend.
    let listener = listen(&mut net, 64);
    let clients: Vec<SocketId> = (0..48).map(|_| connect(&mut net)).collect();
    net.run_until(MS, MS * 100, |net| {
        clients
            .iter()
            .all(|&id| net.a().readiness(id).unwrap().is_writable)
    });
    assert_eq!(net.b().dropped_syns(), 0);
    let mut accepted = 0;
    while net.b().accept(listener).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 48);
}

#[test]
fn a_burst_beyond_the_free_listening_sockets_is_served_at_once() {
    let mut net = Net::pair();
    prime_arp(&mut net);
    let listener = listen(&mut net, 2);
    // Six SYNs reach B in one poll: two take the listening sockets, four
    // wait in the gate and are taken as the server accepts, long before
    // the clients would send them again (1 s).
    let clients: Vec<SocketId> = (0..6).map(|_| connect(&mut net)).collect();
    let mut accepted = Vec::new();
    net.run_until(MS, MS * 50, |net| {
        while let Ok((server, _)) = net.b().accept(listener) {
            accepted.push(server);
        }
        accepted.len() == clients.len()
    });
    assert_eq!(net.b().dropped_syns(), 0);
    for &client in &clients {
        assert_eq!(net.a().take_error(client), Ok(None));
        assert!(net.a().readiness(client).unwrap().is_writable);
    }
}

#[test]
fn clients_beyond_a_full_backlog_wait_and_are_not_refused() {
    let mut net = Net::pair();
    prime_arp(&mut net);
    let listener = listen(&mut net, 2);
    // Nobody accepts for two seconds: two connections fill the backlog,
    // four SYNs wait in the gate for half a second and are then dropped (as
    // Linux drops them), and their clients send them again.
    let clients: Vec<SocketId> = (0..6).map(|_| connect(&mut net)).collect();
    net.run_for(MS * 10, SECOND * 2);
    assert!(net.b().dropped_syns() >= 4, "{}", net.b().dropped_syns());
    let mut accepted = Vec::new();
    net.run_until(MS, SECOND * 30, |net| {
        while let Ok((server, _)) = net.b().accept(listener) {
            accepted.push(server);
        }
        accepted.len() == clients.len()
    });
    for &client in &clients {
        assert_eq!(
            net.a().take_error(client),
            Ok(None),
            "no client was refused"
        );
        assert!(net.a().readiness(client).unwrap().is_writable);
    }
}

#[test]
fn two_thousand_sequential_connections_leave_nothing_behind() {
    let mut net = Net::pair();
    let listener = listen(&mut net, 4);
    net.poll();
    let baseline_a = net.a().stats();
    let baseline_b = net.b().stats();
    for i in 0..2000u32 {
        let client = connect(&mut net);
        let server = accept(&mut net, listener);
        net.a().send(client, &i.to_le_bytes()).unwrap();
        let mut got = Vec::new();
        pump_recv(&mut net, true, server, &mut got, 4).unwrap();
        assert_eq!(got, i.to_le_bytes());
        // Alternate which side closes first.
        if i % 2 == 0 {
            net.a().close(client).unwrap();
            net.b().close(server).unwrap();
        } else {
            net.b().close(server).unwrap();
            net.a().close(client).unwrap();
        }
        net.tick(MS);
    }
    net.run_for(MS * 10, SECOND * 2);
    assert_eq!(net.a().stats(), baseline_a);
    assert_eq!(net.b().stats(), baseline_b);
}

#[test]
fn unread_data_at_close_resets_the_connection() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    net.a().send(c.client, b"unread").unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().readiness(c.server).unwrap().is_readable
    });
    net.b().close(c.server).unwrap();
    net.run_until(MS, SECOND, |net| {
        net.a().readiness(c.client).unwrap().has_error
    });
    assert_eq!(net.a().recv(c.client, &mut [0; 8]), Err(ECONNRESET));
    assert_eq!(net.a().recv(c.client, &mut [0; 8]), Ok(0));
    assert_eq!(net.a().send(c.client, b"x"), Err(EPIPE));
    assert_eq!(net.a().peer_addr(c.client), Err(ENOTCONN));
}

#[test]
fn data_sent_after_the_peer_closed_resets_the_connection() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    net.b().close(c.server).unwrap();
    // A sees the FIN and may still send: the first send is taken.
    net.run_until(MS, SECOND, |net| {
        net.a().readiness(c.client).unwrap().is_readable
    });
    assert_eq!(net.a().recv(c.client, &mut [0; 8]), Ok(0));
    assert_eq!(net.a().send(c.client, b"late"), Ok(4));
    // Nobody will read it: B answers with a reset, and A's next send
    // fails instead of vanishing (as Linux, where it raises SIGPIPE).
    net.run_until(MS, SECOND, |net| {
        net.a().readiness(c.client).unwrap().has_error
    });
    assert_eq!(net.a().send(c.client, b"x"), Err(ECONNRESET));
    assert_eq!(net.a().send(c.client, b"x"), Err(EPIPE));
}

#[test]
fn linger_zero_resets_instead_of_closing() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    net.b()
        .set_option(c.server, SocketOption::Linger(Some(0)))
        .unwrap();
    net.b().close(c.server).unwrap();
    net.run_until(MS, SECOND, |net| {
        net.a().readiness(c.client).unwrap().has_error
    });
    assert_eq!(net.a().send(c.client, b"x"), Err(ECONNRESET));
    assert_eq!(net.a().send(c.client, b"x"), Err(EPIPE));
}

#[test]
fn vanished_peer_fails_pending_data_with_etimedout() {
    let limits = Limits {
        user_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let mut net = Net::pair_with(limits);
    let c = establish(&mut net);
    net.drop_b();
    net.a().send(c.client, b"into the void").unwrap();
    net.run_for(SECOND, Duration::from_secs(30));
    assert_eq!(net.a().take_error(c.client), Ok(None));
    net.run_until(SECOND, Duration::from_secs(60), |net| {
        net.a().readiness(c.client).unwrap().has_error
    });
    assert_eq!(net.a().recv(c.client, &mut [0; 8]), Err(ETIMEDOUT));
    assert_eq!(net.a().send(c.client, b"x"), Err(EPIPE));
}

#[test]
fn vanished_peer_of_an_idle_connection_is_found_by_keepalive() {
    let limits = Limits {
        keepalive_interval: Duration::from_secs(10),
        keepalive_probes: 3,
        ..Limits::default()
    };
    let mut net = Net::pair_with(limits);
    let c = establish(&mut net);
    net.a()
        .set_option(c.client, SocketOption::KeepAlive(true))
        .unwrap();
    // While the peer answers, keep-alive keeps the connection.
    net.run_for(SECOND, Duration::from_secs(100));
    assert_eq!(net.a().take_error(c.client), Ok(None));
    net.drop_b();
    net.run_until(SECOND, Duration::from_secs(60), |net| {
        net.a().readiness(c.client).unwrap().has_error
    });
    assert_eq!(net.a().take_error(c.client), Ok(Some(ETIMEDOUT)));
}

#[test]
fn idle_connection_without_keepalive_lives_on() {
    let mut net = Net::pair();
    let c = establish(&mut net);
    net.run_for(Duration::from_secs(10), Duration::from_secs(3600));
    assert_eq!(net.a().take_error(c.client), Ok(None));
    net.a().send(c.client, b"still here").unwrap();
    let mut got = Vec::new();
    pump_recv(&mut net, true, c.server, &mut got, 10).unwrap();
    assert_eq!(got, b"still here");
}

#[test]
fn shutdown_read_on_a_listener_stops_it() {
    let mut net = Net::pair();
    let listener = listen(&mut net, 2);
    net.b().shutdown(listener, Shutdown::Read).unwrap();
    assert_eq!(net.b().accept(listener), Err(EINVAL));
    let client = connect(&mut net);
    wait_writable(&mut net, client);
    assert_eq!(net.a().take_error(client), Ok(Some(ECONNREFUSED)));
    // It may listen again.
    net.b().listen(listener, 2).unwrap();
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(EINPROGRESS));
    wait_writable(&mut net, client);
    accept(&mut net, listener);
}

#[test]
fn closing_a_listener_resets_queued_connections() {
    let mut net = Net::pair();
    let listener = listen(&mut net, 2);
    let client = connect(&mut net);
    wait_writable(&mut net, client);
    net.b().close(listener).unwrap();
    net.run_until(MS, SECOND, |net| {
        net.a().readiness(client).unwrap().has_error
    });
    assert_eq!(net.a().recv(client, &mut [0; 4]), Err(ECONNRESET));
    net.run_for(MS * 10, SECOND);
    assert_eq!(net.b().stats().smoltcp_sockets, 0);
    assert_eq!(net.b().stats().ports, 0);
}

#[test]
fn wrong_states_give_linux_errors() {
    let mut net = Net::pair();
    let s = net.a().socket(Protocol::Tcp).unwrap();
    let mut buf = [0; 4];
    assert_eq!(net.a().recv(s, &mut buf), Err(ENOTCONN));
    assert_eq!(net.a().send(s, b"x"), Err(EPIPE));
    assert_eq!(net.a().accept(s), Err(EINVAL));
    assert_eq!(net.a().shutdown(s, Shutdown::Both), Err(ENOTCONN));
    assert_eq!(net.a().peer_addr(s), Err(ENOTCONN));
    assert_eq!(
        net.a().local_addr(s),
        Ok(addr(std::net::Ipv4Addr::UNSPECIFIED, 0))
    );
    net.a().listen(s, 1).unwrap();
    assert_eq!(net.a().connect(s, addr(B_IP, PORT)), Err(EINVAL));
    assert_eq!(net.a().bind(s, addr(A_IP, 1)), Err(EINVAL));
    net.a().close(s).unwrap();
    assert_eq!(net.a().recv(s, &mut buf), Err(EBADF));
    assert_eq!(net.a().close(s), Err(EBADF));
    // A new socket in the same slot is out of the stale id's reach.
    let t = net.a().socket(Protocol::Tcp).unwrap();
    assert_ne!(s, t);
    assert_eq!(net.a().local_addr(s), Err(EBADF));
    assert_eq!(eremite_net::SocketId::from_raw(t.to_raw()), t);
}

#[test]
fn the_buffer_budget_bounds_memory() {
    // Room for three 128 KiB connections.
    let limits = Limits {
        buffer_budget_bytes: 3 * (128 << 10),
        ..Limits::default()
    };
    let mut net = Net::pair_with(limits);
    let mut clients = Vec::new();
    loop {
        let client = net.a().socket(Protocol::Tcp).unwrap();
        match net.a().connect(client, addr(B_IP, PORT)) {
            Err(EINPROGRESS) => clients.push(client),
            Err(error) => {
                assert_eq!(error, eremite_interface::errno::ENOBUFS);
                break;
            }
            Ok(()) => unreachable!(),
        }
    }
    assert_eq!(clients.len(), 3);
    assert_eq!(net.a().stats().buffer_bytes, 3 * (128 << 10));
    // Smaller buffers fit in what is left... none here; closing frees.
    net.a().close(clients[0]).unwrap();
    let client = net.a().socket(Protocol::Tcp).unwrap();
    assert_eq!(net.a().connect(client, addr(B_IP, PORT)), Err(EINPROGRESS));
    // A listener that cannot get a single socket fails.
    let listener = net.a().socket(Protocol::Tcp).unwrap();
    assert_eq!(
        net.a().listen(listener, 4),
        Err(eremite_interface::errno::ENOBUFS)
    );
}

#[test]
fn a_full_table_refuses_sockets_and_keeps_connections_queued() {
    let limits = Limits {
        max_sockets: 2,
        ..Limits::default()
    };
    let mut net = Net::pair_with(limits);
    let listener = listen(&mut net, 4);
    let client = connect(&mut net);
    wait_writable(&mut net, client);
    let first = net.b().socket(Protocol::Udp).unwrap();
    assert_eq!(
        net.b().socket(Protocol::Udp),
        Err(eremite_interface::errno::ENFILE)
    );
    assert_eq!(
        net.b().accept(listener),
        Err(eremite_interface::errno::ENFILE)
    );
    net.b().close(first).unwrap();
    assert!(net.b().accept(listener).is_ok());
}

#[test]
fn socket_options_reach_new_connections() {
    let mut net = Net::pair();
    let listener = listen(&mut net, 1);
    net.b()
        .set_option(listener, SocketOption::NoDelay(true))
        .unwrap();
    net.b()
        .set_option(listener, SocketOption::RecvBufferBytes(usize::MAX))
        .unwrap();
    assert_eq!(
        net.b().set_option(listener, SocketOption::Ttl(0)),
        Err(EINVAL)
    );
    let options = net.b().options(listener).unwrap();
    assert!(options.no_delay);
    assert_eq!(
        options.recv_buffer_bytes,
        Limits::default().max_buffer_bytes
    );
    let client = connect(&mut net);
    wait_writable(&mut net, client);
    let server = accept(&mut net, listener);
    assert_eq!(
        net.b().options(server),
        Ok(options),
        "accepted sockets inherit"
    );
    // The connection has the bigger receive buffer: the client may send
    // far more than 64 KiB before the server reads.
    let data = pattern(1 << 20, 8);
    let mut sent = 0;
    for _ in 0..2000 {
        if let Ok(n) = net.a().send(client, &data[sent..]) {
            sent += n;
        }
        net.tick(MS);
    }
    assert!(sent > 512 << 10, "only {sent} bytes sent");
    let mut got = Vec::new();
    pump_recv(&mut net, true, server, &mut got, sent).unwrap();
    assert_eq!(got, data[..sent]);
}

/// A SYN to B's listener from `source`, a host of the network that does
/// not exist (B's answers wait for an ARP reply that never comes), as a
/// spoofed flood sends.
fn spoofed_syn(source: SocketAddrV4, seq: u32) -> Vec<u8> {
    use eremite_net::smoltcp::phy::ChecksumCapabilities;
    use eremite_net::smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
        Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    let tcp = TcpRepr {
        src_port: source.port(),
        dst_port: PORT,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: None,
        window_len: 64240,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: *source.ip(),
        dst_addr: B_IP,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let ethernet = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 0x66]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut bytes = vec![0; ethernet.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
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

/// Sends `count` spoofed SYNs to B, from ever new ports.
fn flood(net: &mut Net, count: u32, next: &mut u32) {
    let b = &net.b.as_ref().expect("stack B").device;
    for _ in 0..count {
        *next += 1;
        let source = addr(
            std::net::Ipv4Addr::new(10, 0, 0, 100 + (*next % 100) as u8),
            1024 + (*next % 60_000) as u16,
        );
        b.inject(spoofed_syn(source, next.wrapping_mul(2_654_435_761)));
    }
}

#[test]
fn a_client_gets_in_during_and_right_after_a_syn_flood() {
    let mut net = Net::pair();
    prime_arp(&mut net);
    let listener = listen(&mut net, 16);
    let mut next = 0;
    // The flood takes every listening socket and fills the gate's hold.
    for _ in 0..10 {
        flood(&mut net, 100, &mut next);
        net.tick(MS);
    }
    let (sent, _) = net.b().syn_cookies();
    assert!(sent > 0, "the hold is full: cookies answer");
    // During it (100 SYNs a millisecond, 100,000 a second), a client
    // connects and exchanges data both ways.
    let during = |net: &mut Net, next: &mut u32| {
        let started = net.now;
        let client = connect(net);
        let mut server = None;
        let end = net.now + SECOND * 10;
        while server.is_none() {
            assert!(net.now < end, "not accepted within 10 s of a flood");
            flood(net, 100, next);
            net.tick(MS);
            server = net.b().accept(listener).ok().map(|(id, _)| id);
        }
        let server = server.unwrap();
        let request = pattern(100_000, 1);
        let got = transfer(net, true, client, server, &request);
        assert_eq!(checksum(&got), checksum(&request));
        let answer = pattern(300_000, 2);
        let got = transfer(net, false, server, client, &answer);
        assert_eq!(checksum(&got), checksum(&answer));
        net.a().close(client).unwrap();
        net.b().close(server).unwrap();
        net.now - started
    };
    let took = during(&mut net, &mut next);
    let (sent, accepted) = net.b().syn_cookies();
    println!("accepted {took} into the flood; {sent} cookies sent, {accepted} let in");
    assert!(accepted >= 1, "{sent} cookies sent, {accepted} let in");
    assert!(took < SECOND * 5, "{took}");
    // Right after it: the next client is in at once, and what it sends
    // as soon as it is connected (while B sets the connection up) arrives
    // after one retransmission at most.
    net.tick(MS);
    let started = net.now;
    let client = connect(&mut net);
    net.run_until(MS, MS * 100, |net| {
        net.a().readiness(client).unwrap().is_writable
    });
    assert_eq!(net.a().send(client, b"hello"), Ok(5));
    let mut server = None;
    net.run_until(MS, MS * 100, |net| {
        server = net.b().accept(listener).ok().map(|(id, _)| id);
        server.is_some()
    });
    let mut got = Vec::new();
    pump_recv(&mut net, true, server.unwrap(), &mut got, 5).unwrap();
    assert_eq!(got, b"hello");
    let took = net.now - started;
    println!("right after: data in after {took}");
    assert!(took < SECOND * 2, "{took}");
}
