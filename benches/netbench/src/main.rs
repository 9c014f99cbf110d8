//! The `net` group: TCP between a server and a client on the host.
//!
//! `netbench serve ADDR [COUNT]` is the server (in eremite: the guest behind its
//! tap; natively: a process on the host's loopback). Each connection
//! starts with one command byte: `u` (upload: read to the end, answer the
//! byte count as 8 bytes), `d` + 8-byte count (download: send that many
//! bytes), `p` (ping-pong: echo each byte at once).
//!
//! `netbench client ADDR [--quick]` measures against a server and prints
//! the rows: `tcp_upload` and `tcp_download` (MB/s, client to server and
//! back), `tcp_rtt_1_byte` (µs per round trip of one byte). The client
//! always runs natively, so both sides of the comparison use the same
//! client; only the server differs.
//!
//! `netbench http ADDR [--quick]` is a small `wrk`: 8 keep-alive
//! connections, each on its own thread, send `GET /` to the HTTP echo
//! server (`examples/httpd`) as fast as answers come back; the row
//! `http_requests` is requests per second, one sample per second.

#[cfg(target_os = "hermit")]
use eremite as _;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use benchkit::report;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr] => serve(addr, None),
        ["serve", addr, count] => serve(addr, count.parse().ok()),
        ["client", addr, ..] => client(addr, benchkit::is_quick()),
        ["http", addr, ..] => http(addr, benchkit::is_quick()),
        _ => {
            eprintln!("usage: netbench serve ADDR [COUNT] | netbench client ADDR [--quick]");
            std::process::exit(2);
        }
    }
}

/// Serve `count` connections (for ever without one), then return, so
/// that `eremite run --stats` can report on a run.
fn serve(addr: &str, count: Option<usize>) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening on {}", listener.local_addr().unwrap());
    let mut handlers = Vec::new();
    for conn in listener.incoming().take(count.unwrap_or(usize::MAX)) {
        let Ok(conn) = conn else { continue };
        let handler = std::thread::spawn(move || handle(conn));
        // Served for ever: the handlers are detached.
        if count.is_some() {
            handlers.push(handler);
        }
    }
    for handler in handlers {
        let _ = handler.join();
    }
}

fn handle(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut command = [0];
    conn.read_exact(&mut command)?;
    let mut buf = vec![0; 256 << 10];
    match command[0] {
        b'u' => {
            let mut total = 0u64;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            conn.write_all(&total.to_le_bytes())?;
        }
        b'd' => {
            let mut count = [0; 8];
            conn.read_exact(&mut count)?;
            let mut left = u64::from_le_bytes(count);
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                conn.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
        b'p' => {
            let mut byte = [0];
            while conn.read(&mut byte)? == 1 {
                conn.write_all(&byte)?;
            }
        }
        _ => {}
    }
    conn.shutdown(Shutdown::Write)
}

fn connect(addr: &str, command: u8) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream.write_all(&[command]).unwrap();
    stream
}

fn client(addr: &str, is_quick: bool) {
    benchkit::report_tsc();
    let (bytes, rounds, runs) = if is_quick {
        (4u64 << 20, 100, 2)
    } else {
        (256u64 << 20, 5000, 7)
    };
    let buf = vec![7u8; 256 << 10];
    let mut upload = Vec::new();
    let mut download = Vec::new();
    for _ in 0..runs {
        let mut stream = connect(addr, b'u');
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            stream.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        stream.shutdown(Shutdown::Write).unwrap();
        let mut total = [0; 8];
        stream.read_exact(&mut total).unwrap();
        assert_eq!(u64::from_le_bytes(total), bytes, "the server lost bytes");
        upload.push(bytes as f64 / start.elapsed().as_secs_f64() / 1e6);

        let mut stream = connect(addr, b'd');
        let mut got = vec![0; 256 << 10];
        let start = Instant::now();
        stream.write_all(&bytes.to_le_bytes()).unwrap();
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut got).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert_eq!(total, bytes, "the server sent a wrong count");
        download.push(bytes as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    report("tcp_upload", "MB/s", &mut upload);
    report("tcp_download", "MB/s", &mut download);
    let mut stream = connect(addr, b'p');
    let mut byte = [0];
    let mut rtt: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            stream.write_all(&[1]).unwrap();
            stream.read_exact(&mut byte).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    report("tcp_rtt_1_byte", "us", &mut rtt);
}

/// Connections the HTTP load keeps open.
const HTTP_CONNECTIONS: usize = 8;

fn http(addr: &str, is_quick: bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    benchkit::report_tsc();
    let seconds = if is_quick { 2 } else { 10 };
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..HTTP_CONNECTIONS)
        .map(|_| {
            let (addr, done, stop) = (addr.to_string(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut stream =
                    TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                stream.set_nodelay(true).unwrap();
                let request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
                let mut buf = vec![0; 4096];
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(request).unwrap();
                    read_response(&mut stream, &mut buf);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut per_second = Vec::new();
    let mut last = 0;
    for _ in 0..seconds {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = done.load(Ordering::Relaxed);
        per_second.push((now - last) as f64);
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("an HTTP connection failed");
    }
    report("http_requests", "req/s", &mut per_second);
}

/// Read one response with a `Content-Length` body.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut filled = 0;
    loop {
        if let Some(head_end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..head_end]).expect("a text head");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length");
            let total = head_end + 4 + length;
            while filled < total {
                if buf.len() < total {
                    buf.resize(total, 0);
                }
                let n = stream.read(&mut buf[filled..]).unwrap();
                assert!(n > 0, "the server closed mid-response");
                filled += n;
            }
            assert_eq!(filled, total, "more bytes than one response");
            return;
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).unwrap();
        assert!(n > 0, "the server closed the connection");
        filled += n;
    }
}
