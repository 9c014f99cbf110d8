//! socket2's API (compat/socket2, over hermit-abi) inside one eremite VM,
//! on its loopback interface: sockets made, connected and configured
//! through socket2, and socket2 used on std's sockets. Each check prints
//! `ok NAME`; the last line is `socket2 passed`.

use std::io::{ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use eremite as _;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, TcpKeepalive, Type};

fn check(name: &str, f: impl FnOnce()) {
    f();
    println!("ok {name}");
}

/// hermit's errno numbers the checks expect.
const EINPROGRESS: i32 = 115;
const ENOPROTOOPT: i32 = 92;
const EAFNOSUPPORT: i32 = 97;

fn loopback() -> SockAddr {
    SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().unwrap())
}

/// A listening TCP socket on 127.0.0.1 and its address.
fn listener() -> (Socket, SockAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&loopback()).unwrap();
    socket.listen(128).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// `recv` into uninitialised memory; the bytes received.
fn recv(socket: &Socket, len: usize) -> Vec<u8> {
    let mut buf = vec![MaybeUninit::uninit(); len];
    let n = socket.recv(&mut buf).unwrap();
    buf[..n]
        .iter()
        // SAFETY: `recv` initialised the first `n` bytes.
        .map(|b| unsafe { b.assume_init() })
        .collect()
}

fn main() {
    check("listen on an ephemeral port", || {
        let (socket, addr) = listener();
        let addr = addr.as_socket_ipv4().unwrap();
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0);
        assert!(socket.reuse_address().unwrap());
        assert!(format!("{socket:?}").contains(&addr.to_string()));
    });
    check("connect with a timeout, accept, send and receive", || {
        let (listener, addr) = listener();
        let client = Socket::new(addr.domain(), Type::STREAM, None).unwrap();
        client
            .connect_timeout(&addr, Duration::from_secs(5))
            .unwrap();
        assert!(!client.nonblocking().unwrap(), "stays blocking");
        let (server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(client.peer_addr().unwrap(), addr);
        assert_eq!(client.send(b"hello").unwrap(), 5);
        let mut peeked = [MaybeUninit::uninit(); 2];
        assert_eq!(server.peek(&mut peeked).unwrap(), 2);
        assert_eq!(recv(&server, 64), b"hello", "a peek takes nothing");
        (&server).write_all(b"world").unwrap();
        let mut got = [0; 5];
        (&client).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(recv(&server, 8), b"", "end of stream");
    });
    check("a closed port refuses connect_timeout", || {
        let addr = listener().1;
        let err = Socket::new(Domain::IPV4, Type::STREAM, None)
            .unwrap()
            .connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    });
    check("a non-blocking connect is in progress", || {
        let (listener, addr) = listener();
        let client = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), None).unwrap();
        assert!(client.nonblocking().unwrap());
        match client.connect(&addr) {
            Ok(()) => {}
            Err(e) => assert_eq!(e.raw_os_error(), Some(EINPROGRESS), "{e}"),
        }
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match listener.accept() {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        assert!(client.take_error().unwrap().is_none());
        client.set_nonblocking(false).unwrap();
        assert!(!client.nonblocking().unwrap());
    });
    check("socket options", || {
        let (listener, addr) = listener();
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.connect(&addr).unwrap();
        let _server = listener.accept().unwrap();
        socket.set_tcp_nodelay(true).unwrap();
        assert!(socket.tcp_nodelay().unwrap());
        socket.set_tcp_keepalive(&TcpKeepalive::new()).unwrap();
        assert!(socket.keepalive().unwrap());
        let timed = TcpKeepalive::new().with_time(Duration::from_secs(30));
        let err = socket.set_tcp_keepalive(&timed).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        socket.set_linger(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(socket.linger().unwrap(), Some(Duration::from_secs(5)));
        socket.set_linger(None).unwrap();
        assert_eq!(socket.linger().unwrap(), None);
        socket.set_recv_buffer_size(32 << 10).unwrap();
        assert_eq!(socket.recv_buffer_size().unwrap(), 32 << 10);
        assert!(socket.send_buffer_size().unwrap() > 0);
        socket.set_ttl_v4(33).unwrap();
        assert_eq!(socket.ttl_v4().unwrap(), 33);
        socket
            .set_write_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        assert_eq!(
            socket.write_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(socket.set_read_timeout(Some(Duration::ZERO)).is_err());
        // What the kernel lacks comes back as its error.
        let err = socket.tos_v4().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ENOPROTOOPT), "{err}");
        let err = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EAFNOSUPPORT), "{err}");
    });
    check("a read timeout expires", || {
        let (listener, addr) = listener();
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        client.connect(&addr).unwrap();
        let _server = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        let err = client.recv(&mut [MaybeUninit::uninit(); 8]).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
    });
    check("SockRef borrows std's sockets", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        {
            let borrowed = SockRef::from(&stream);
            borrowed.set_tcp_nodelay(true).unwrap();
            borrowed.set_linger(Some(Duration::ZERO)).unwrap();
            assert_eq!(
                borrowed.peer_addr().unwrap().as_socket(),
                Some(listener.local_addr().unwrap())
            );
        }
        // Still open: the borrow, gone, closed nothing.
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert!(SockRef::from(&listener).reuse_address().is_ok());
    });
    check("conversions keep the descriptor", || {
        let (listener, addr) = listener();
        let listener = TcpListener::from(listener);
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        client.connect(&addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut client = TcpStream::from(client.try_clone().unwrap());
        client.write_all(b"via std").unwrap();
        // SAFETY: the descriptor comes from `into_raw_fd` and has no other
        // owner.
        let server = unsafe { Socket::from_raw_fd(server.into_raw_fd()) };
        assert_eq!(recv(&server, 16), b"via std");
        let server = Socket::from(OwnedFd::from(server));
        assert!(server.peer_addr().is_ok());
    });
    check("UDP datagrams, peeked and received", || {
        let a = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let b = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        a.bind(&loopback()).unwrap();
        b.bind(&loopback()).unwrap();
        b.set_broadcast(true).unwrap();
        assert!(b.broadcast().unwrap());
        let b_addr = b.local_addr().unwrap();
        assert_eq!(a.send_to(b"ping", &b_addr).unwrap(), 4);
        assert_eq!(b.peek_sender().unwrap(), a.local_addr().unwrap());
        let mut buf = [MaybeUninit::uninit(); 16];
        let (n, from) = b.peek_from(&mut buf).unwrap();
        assert_eq!((n, &from), (4, &a.local_addr().unwrap()));
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!(n, 4);
        b.send_to(b"pong", &from).unwrap();
        assert_eq!(recv(&a, 16), b"pong");
    });
    println!("socket2 passed");
}
