//! The HTTP echo server of `httpd` as one mio event loop: non-blocking
//! sockets, readiness from `poll`, and a `Waker` (an eventfd) that another
//! thread uses. `mio-httpd [ADDR:PORT]`, default `0.0.0.0:8080`; prints
//! `listening on ADDR` once it accepts connections, `woken` when the waker
//! thread has got through, and on a request for `/quit` how many
//! connections it served, then exits.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(target_os = "hermit")]
use eremite as _;
use httpd::{Next, READ_BYTES, Session};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

struct Connection {
    stream: TcpStream,
    session: Session,
    /// Response bytes not yet written.
    pending: Vec<u8>,
    /// What to do once `pending` is written.
    next: Next,
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let addr: SocketAddr = addr.parse().unwrap_or_else(|e| {
        eprintln!("mio-httpd: bad address {addr}: {e}");
        std::process::exit(2);
    });
    let mut poll = Poll::new().expect("poll");
    let mut listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("mio-httpd: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register the listener");
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
    println!("listening on {}", listener.local_addr().unwrap());
    let wake_from = waker.clone();
    std::thread::spawn(move || wake_from.wake().expect("wake"));

    let mut connections: HashMap<Token, Connection> = HashMap::new();
    let mut next_token = 2;
    let mut served = 0u64;
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for event in &events {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, remote)) => {
                            let token = Token(next_token);
                            next_token += 1;
                            served += 1;
                            poll.registry()
                                .register(
                                    &mut stream,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .expect("register a connection");
                            connections.insert(
                                token,
                                Connection {
                                    stream,
                                    session: Session::new(remote),
                                    pending: Vec::new(),
                                    next: Next::KeepOpen,
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("mio-httpd: accept: {e}");
                            break;
                        }
                    }
                },
                WAKER => println!("woken"),
                token => {
                    let Some(conn) = connections.get_mut(&token) else {
                        continue;
                    };
                    let is_done = drive(conn);
                    if conn.next == Next::Quit && conn.pending.is_empty() {
                        println!("served {served} connections");
                        std::process::exit(0);
                    }
                    if is_done && let Some(mut conn) = connections.remove(&token) {
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
    }
}

/// Read what arrived, answer complete requests, write what fits; `true`
/// when the connection is finished (closed, failed, or answered with
/// `Connection: close`).
fn drive(conn: &mut Connection) -> bool {
    let mut buf = [0; READ_BYTES];
    while conn.next == Next::KeepOpen {
        match conn.stream.read(&mut buf) {
            Ok(0) => conn.next = Next::Close,
            Ok(n) => {
                let (answers, next) = conn.session.receive(&buf[..n]);
                conn.pending.extend(answers);
                conn.next = next;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    conn.next != Next::KeepOpen
}
