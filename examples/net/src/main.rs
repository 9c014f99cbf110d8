//! std::net inside one eremite VM, over its loopback interface: TCP and
//! UDP on 127.0.0.1, blocking and non-blocking calls, timeouts, errors.
//! Each check prints `ok NAME`; the last line is `net passed`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(target_os = "hermit")]
use eremite as _;

fn check(name: &str, f: impl FnOnce()) {
    f();
    println!("ok {name}");
}

/// `net client ADDR BYTES`: connect to an echo server, send BYTES of a
/// pattern while reading the echo back, and check it; prints the
/// checksums and `client passed`.
fn client(addr: &str, bytes: usize) {
    let data = pattern(bytes);
    let addr: SocketAddr = addr.parse().expect("an address");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut reader = stream.try_clone().unwrap();
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        got
    });
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let got = receiver.join().unwrap();
    println!("sent {} bytes, fnv1a {:016x}", data.len(), fnv1a(&data));
    println!("received {} bytes, fnv1a {:016x}", got.len(), fnv1a(&got));
    assert!(got == data, "the echo differs");
    println!("client passed");
}

/// `net echo-server ADDR`: echo every connection's bytes back until it
/// half-closes; each connection on a thread of its own, for ever.
fn echo_server(addr: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening on {}", listener.local_addr().unwrap());
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        // A thread per client, with a small stack: hundreds fit.
        let spawned = thread::Builder::new().stack_size(64 << 10).spawn(move || {
            let mut buf = vec![0; 64 << 10];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = conn.shutdown(Shutdown::Write);
        });
        if let Err(e) = spawned {
            eprintln!("cannot start a thread: {e}");
        }
    }
}

/// `net udp-echo ADDR COUNT`: send back each datagram to its sender until
/// COUNT different ones have come, then exit. A datagram the same as the
/// one before is echoed but not counted: its sender sent it again because
/// the first echo was lost (the guest drops a reply while it asks for its
/// peer's Ethernet address), and it would otherwise never see COUNT echoes.
fn udp_echo(addr: &str, count: usize) {
    let socket = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening on {}", socket.local_addr().unwrap());
    let mut buf = vec![0; 65536];
    let mut last: Vec<u8> = Vec::new();
    let mut counted = 0;
    while counted < count {
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        socket.send_to(&buf[..n], from).unwrap();
        if buf[..n] != last[..] {
            counted += 1;
            last = buf[..n].to_vec();
        }
    }
    println!("echoed {count} datagrams");
}

/// `net udp-client ADDR COUNT`: send COUNT datagrams of sizes from 1 to
/// 1400 bytes to a UDP echo server and check each echo, sending a
/// datagram again (up to 50 times) when its echo does not come within
/// 100 ms, since a datagram may be lost; prints `udp client passed`.
fn udp_client(addr: &str, count: usize) {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect(addr)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0; 2048];
    let mut resent = 0;
    for i in 0..count {
        let mut datagram = (i as u32).to_be_bytes().to_vec();
        datagram.extend(pattern(i * 97 % 1397));
        let echoed = (0..50).any(|attempt| {
            resent += usize::from(attempt > 0);
            socket.send(&datagram).unwrap();
            // Skip the late echoes of datagrams sent before.
            while let Ok(n) = socket.recv(&mut buf) {
                if buf[..n] == datagram[..] {
                    return true;
                }
            }
            false
        });
        assert!(echoed, "datagram {i} was never echoed");
    }
    println!("{count} datagrams echoed, {resent} sent again");
    println!("udp client passed");
}

/// A byte pattern that differs at every offset for a long way.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `net fetch HOST:PORT PATH`: look HOST up (a name goes through
/// `/etc/hosts` and DNS), GET PATH over HTTP/1.0 and print the status line,
/// the body's length and checksum, then `fetch passed`.
fn fetch(addr: &str, path: &str) {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("cannot resolve {addr}: {e}"))
        .collect();
    println!("{addr} is {}", resolved[0]);
    let mut stream = TcpStream::connect_timeout(&resolved[0], Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    println!("{}", head.lines().next().unwrap_or_default());
    println!("body {} bytes, fnv1a {:016x}", body.len(), fnv1a(body));
    println!("fetch passed");
}

/// `net vectored-server ADDR`: for each 4-byte request on a connection,
/// a 40-byte response written as a header and a body in one
/// `write_vectored`, as hyper writes them; one connection at a time.
fn vectored_server(addr: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening on {}", listener.local_addr().unwrap());
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut request = [0u8; 4];
        while conn.read_exact(&mut request).is_ok() {
            let header = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
            let bufs = [std::io::IoSlice::new(header), std::io::IoSlice::new(b"ok")];
            if conn.write_vectored(&bufs).ok() != Some(header.len() + 2) {
                break;
            }
        }
    }
}

/// `net resolve NAME`: print NAME's addresses, or why it has none.
fn resolve(name: &str) {
    match (name, 0).to_socket_addrs() {
        Ok(addrs) => {
            for addr in addrs {
                println!("{name} has address {}", addr.ip());
            }
        }
        Err(e) => println!("{name}: cannot resolve: {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["client", addr, bytes] => return client(addr, bytes.parse().expect("a byte count")),
        ["echo-server", addr] => return echo_server(addr),
        ["udp-echo", addr, count] => return udp_echo(addr, count.parse().expect("a count")),
        ["udp-client", addr, count] => return udp_client(addr, count.parse().expect("a count")),
        ["fetch", addr, path] => return fetch(addr, path),
        ["resolve", name] => return resolve(name),
        ["vectored-server", addr] => return vectored_server(addr),
        _ => {}
    }
    check("bind an ephemeral port", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        assert_ne!(addr.port(), 0);
    });
    check("echo 4 MiB through a thread", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip().to_string(), "127.0.0.1");
            let mut buf = vec![0; 64 << 10];
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).unwrap();
            }
        });
        let data = pattern(4 << 20);
        let mut client = TcpStream::connect(addr).unwrap();
        assert_eq!(client.peer_addr().unwrap(), addr);
        let mut reader = client.try_clone().unwrap();
        let expected = fnv1a(&data);
        let receiver = thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            (got.len(), fnv1a(&got))
        });
        client.write_all(&data).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let (len, sum) = receiver.join().unwrap();
        assert_eq!(len, data.len());
        assert_eq!(sum, expected);
        server.join().unwrap();
    });
    check("connect to a closed port is refused", || {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    });
    check("a non-blocking accept would block", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The connection is queued once the handshake is done.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match listener.accept() {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::yield_now()
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    check("a read timeout expires", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert_eq!(
            conn.read_timeout().unwrap(),
            Some(Duration::from_millis(50))
        );
        let start = Instant::now();
        let err = conn.read(&mut [0; 8]).unwrap_err();
        let waited = start.elapsed();
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        drop(client);
    });
    check("end of file after the peer closes", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        client.write_all(b"last words").unwrap();
        drop(client);
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "last words");
    });
    check("socket options", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nodelay(true).unwrap();
        assert!(client.nodelay().unwrap());
        client.set_ttl(17).unwrap();
        assert_eq!(client.ttl().unwrap(), 17);
        assert!(client.take_error().unwrap().is_none());
    });
    check("localhost resolves to 127.0.0.1", || {
        let addrs: Vec<SocketAddr> = ("localhost", 80).to_socket_addrs().unwrap().collect();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse().unwrap()]);
        assert!("no-such-host.invalid:80".to_socket_addrs().is_err());
    });
    check("UDP datagrams both ways", || {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(b"ping", b.local_addr().unwrap()).unwrap();
        let mut buf = [0; 16];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], a.local_addr().unwrap()));
        b.connect(from).unwrap();
        b.send(b"pong").unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], b.local_addr().unwrap()));
    });
    check("500 connections one after another", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            for _ in 0..500 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut byte = [0];
                conn.read_exact(&mut byte).unwrap();
                conn.write_all(&[byte[0] + 1]).unwrap();
            }
        });
        for i in 0..500u32 {
            let mut client = TcpStream::connect(addr).unwrap();
            client.write_all(&[i as u8 / 2]).unwrap();
            let mut byte = [0];
            client.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8 / 2 + 1);
        }
        server.join().unwrap();
    });
    println!("net passed");
}
