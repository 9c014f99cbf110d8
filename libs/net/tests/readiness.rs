//! poll(2) readiness through a connection's life.

mod common;

use common::*;
use eremite_interface::errno::EAGAIN;
use eremite_net::{Duration, Protocol, Readiness, Shutdown, SocketId, SocketOption};

const NOTHING: Readiness = Readiness {
    is_readable: false,
    is_writable: false,
    has_hangup: false,
    has_error: false,
};
const WRITABLE: Readiness = Readiness {
    is_writable: true,
    ..NOTHING
};
const READABLE_WRITABLE: Readiness = Readiness {
    is_readable: true,
    is_writable: true,
    ..NOTHING
};

fn listener(net: &mut Net) -> SocketId {
    let id = net.b().socket(Protocol::Tcp).unwrap();
    net.b().bind(id, addr(B_IP, 80)).unwrap();
    net.b().listen(id, 2).unwrap();
    id
}

#[test]
fn a_connection_from_handshake_to_hangup() {
    let mut net = Net::pair();
    let listener = listener(&mut net);
    assert_eq!(net.b().readiness(listener), Ok(NOTHING));

    let client = net.a().socket(Protocol::Tcp).unwrap();
    assert!(
        net.a().readiness(client).unwrap().has_hangup,
        "never connected"
    );
    let _ = net.a().connect(client, addr(B_IP, 80));
    assert_eq!(net.a().readiness(client), Ok(NOTHING), "connecting");
    net.run_until(MS, SECOND, |net| net.a().readiness(client) == Ok(WRITABLE));
    assert!(net.b().readiness(listener).unwrap().is_readable);

    let (server, _) = net.b().accept(listener).unwrap();
    assert_eq!(net.b().readiness(listener), Ok(NOTHING));
    assert_eq!(net.b().readiness(server), Ok(WRITABLE));

    net.a().send(client, b"data").unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().readiness(server) == Ok(READABLE_WRITABLE)
    });
    assert_eq!(net.b().peek(server, &mut [0; 8]), Ok(4));
    assert_eq!(
        net.b().readiness(server),
        Ok(READABLE_WRITABLE),
        "peek leaves data"
    );
    assert_eq!(net.b().recv(server, &mut [0; 8]), Ok(4));
    assert_eq!(net.b().readiness(server), Ok(WRITABLE));

    // The peer's FIN: readable (end of file), not yet hung up.
    net.a().shutdown(client, Shutdown::Write).unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().readiness(server) == Ok(READABLE_WRITABLE)
    });
    assert_eq!(net.b().recv(server, &mut [0; 8]), Ok(0));
    // Both directions closed: hung up.
    net.b().shutdown(server, Shutdown::Write).unwrap();
    let hangup = Readiness {
        has_hangup: true,
        ..READABLE_WRITABLE
    };
    assert_eq!(net.b().readiness(server), Ok(hangup));
    net.run_until(MS, SECOND, |net| net.a().readiness(client) == Ok(hangup));
}

#[test]
fn writable_follows_the_send_buffer() {
    let mut net = Net::pair();
    let listener = listener(&mut net);
    let client = net.a().socket(Protocol::Tcp).unwrap();
    net.a()
        .set_option(client, SocketOption::SendBufferBytes(8192))
        .unwrap();
    let _ = net.a().connect(client, addr(B_IP, 80));
    net.run_until(MS, SECOND, |net| net.a().readiness(client) == Ok(WRITABLE));
    let (server, _) = net.b().accept(listener).unwrap();
    // Fill the peer's window and our buffer while the peer does not read.
    let chunk = [7; 4096];
    net.run_until(MS, SECOND * 10, |net| {
        net.a().send(client, &chunk) == Err(EAGAIN)
    });
    assert!(!net.a().readiness(client).unwrap().is_writable);
    let mut buf = vec![0; 1 << 20];
    net.run_until(MS, SECOND, |net| {
        let _ = net.b().recv(server, &mut buf);
        net.a().readiness(client).unwrap().is_writable
    });
}

#[test]
fn a_reset_is_an_error_and_a_hangup() {
    let mut net = Net::pair();
    let listener = listener(&mut net);
    let client = net.a().socket(Protocol::Tcp).unwrap();
    let _ = net.a().connect(client, addr(B_IP, 80));
    net.run_until(MS, SECOND, |net| net.a().readiness(client) == Ok(WRITABLE));
    let (server, _) = net.b().accept(listener).unwrap();
    net.b()
        .set_option(server, SocketOption::Linger(Some(0)))
        .unwrap();
    net.b().close(server).unwrap();
    let reset = Readiness {
        is_readable: true,
        is_writable: true,
        has_hangup: true,
        has_error: true,
    };
    net.run_until(MS, SECOND, |net| net.a().readiness(client) == Ok(reset));
    net.a().take_error(client).unwrap();
    assert!(!net.a().readiness(client).unwrap().has_error);
}

#[test]
fn shutdown_read_makes_a_socket_readable() {
    let mut net = Net::pair();
    let listener = listener(&mut net);
    let client = net.a().socket(Protocol::Tcp).unwrap();
    let _ = net.a().connect(client, addr(B_IP, 80));
    net.run_until(MS, SECOND, |net| net.a().readiness(client) == Ok(WRITABLE));
    net.b().accept(listener).unwrap();
    net.a().shutdown(client, Shutdown::Read).unwrap();
    assert_eq!(net.a().readiness(client), Ok(READABLE_WRITABLE));
    assert_eq!(net.a().recv(client, &mut [0; 4]), Ok(0));
}

#[test]
fn udp_readable_when_a_datagram_waits() {
    let mut net = Net::pair();
    let server = net.b().socket(Protocol::Udp).unwrap();
    net.b().bind(server, addr(B_IP, 9)).unwrap();
    assert_eq!(net.b().readiness(server), Ok(WRITABLE));
    let client = net.a().socket(Protocol::Udp).unwrap();
    net.a().send_to(client, b"x", addr(B_IP, 9)).unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().readiness(server) == Ok(READABLE_WRITABLE)
    });
    net.b().recv(server, &mut [0; 4]).unwrap();
    assert_eq!(net.b().readiness(server), Ok(WRITABLE));
}

/// Edge-triggered `epoll` rests on `progress`: it must move whenever
/// something arrives or send room frees, even on a socket that stays
/// readable, and stand still otherwise.
#[test]
fn progress_moves_with_every_arrival_and_only_then() {
    let mut net = Net::pair();
    let listener = listener(&mut net);
    let accepts = net.b().progress(listener).unwrap();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let client = net.a().socket(Protocol::Tcp).unwrap();
        let _ = net.a().connect(client, addr(B_IP, 80));
        clients.push(client);
    }
    net.run_until(MS, SECOND, |net| {
        net.b().progress(listener) == Ok(accepts + 2)
    });
    let (server, _) = net.b().accept(listener).unwrap();
    assert_eq!(
        net.b().progress(listener),
        Ok(accepts + 2),
        "accepting moves nothing"
    );

    let client = clients[0];
    let before = net.b().progress(server).unwrap();
    net.a().send(client, b"one").unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().readiness(server).unwrap().is_readable
    });
    let first = net.b().progress(server).unwrap();
    assert!(first > before, "the first data moves it");
    net.run_for(MS, Duration::from_millis(50));
    assert_eq!(
        net.b().progress(server),
        Ok(first),
        "quiet: it stands still"
    );
    // Still readable (nothing read), and more arrives: it moves again.
    net.a().send(client, b"two").unwrap();
    net.run_until(MS, SECOND, |net| net.b().progress(server) != Ok(first));
    // Reading everything, then the same amount arriving again, is still
    // a move (readiness alone would look the same before and after).
    let mut buf = [0; 16];
    assert_eq!(net.b().recv(server, &mut buf), Ok(6));
    let drained = net.b().progress(server).unwrap();
    net.a().send(client, b"six!!!").unwrap();
    net.run_until(MS, SECOND, |net| net.b().progress(server) != Ok(drained));
    // Send room freeing (the peer's ACK) moves the sender's count.
    let sender = net.b().progress(server).unwrap();
    net.b().send(server, b"answer").unwrap();
    net.run_until(MS, SECOND, |net| {
        net.b().progress(server).unwrap() > sender && net.a().readiness(client).unwrap().is_readable
    });
    // The peer's FIN while data is still queued.
    let unread = net.b().progress(server).unwrap();
    net.a().shutdown(client, Shutdown::Write).unwrap();
    net.run_until(MS, SECOND, |net| net.b().progress(server) != Ok(unread));

    // UDP: each datagram moves it, however many wait.
    let receiver = net.b().socket(Protocol::Udp).unwrap();
    net.b().bind(receiver, addr(B_IP, 53)).unwrap();
    let sender = net.a().socket(Protocol::Udp).unwrap();
    let mut last = net.b().progress(receiver).unwrap();
    for _ in 0..3 {
        net.a()
            .send_to(sender, b"datagram", addr(B_IP, 53))
            .unwrap();
        net.run_until(MS, SECOND, |net| net.b().progress(receiver) != Ok(last));
        last = net.b().progress(receiver).unwrap();
    }
}

/// `FIONREAD`: a stream's queued bytes, the next datagram's length.
#[test]
fn available_counts_queued_bytes_and_the_next_datagram() {
    let mut net = Net::pair();
    let listener = listener(&mut net);
    assert_eq!(net.b().available(listener), Ok(0));
    let client = net.a().socket(Protocol::Tcp).unwrap();
    let _ = net.a().connect(client, addr(B_IP, 80));
    let mut server = None;
    net.run_until(MS, SECOND, |net| {
        server = net.b().accept(listener).ok().map(|(s, _)| s);
        server.is_some()
    });
    let server = server.unwrap();
    assert_eq!(net.b().available(server), Ok(0));
    net.a().send(client, b"12345").unwrap();
    net.a().send(client, b"678").unwrap();
    net.run_until(MS, SECOND, |net| net.b().available(server) == Ok(8));
    assert_eq!(net.b().recv(server, &mut [0; 3]), Ok(3));
    assert_eq!(net.b().available(server), Ok(5));

    let receiver = net.b().socket(Protocol::Udp).unwrap();
    net.b().bind(receiver, addr(B_IP, 53)).unwrap();
    let sender = net.a().socket(Protocol::Udp).unwrap();
    assert_eq!(net.b().available(receiver), Ok(0));
    net.a().send_to(sender, b"four", addr(B_IP, 53)).unwrap();
    net.a()
        .send_to(sender, b"ten bytes!", addr(B_IP, 53))
        .unwrap();
    net.run_until(MS, SECOND, |net| net.b().available(receiver) == Ok(4));
    assert_eq!(net.b().recv(receiver, &mut [0; 16]), Ok(4));
    net.run_until(MS, SECOND, |net| net.b().available(receiver) == Ok(10));
}
