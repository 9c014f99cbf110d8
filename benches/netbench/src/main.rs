//! The `net` group: TCP between a server and a client on the host.
//!
//! `netbench serve ADDR` is the server (in eremite: the guest behind its
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

#[cfg(target_os = "hermit")]
use eremite as _;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use benchkit::report;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr] => serve(addr),
        ["client", addr, ..] => client(addr, benchkit::is_quick()),
        _ => {
            eprintln!("usage: netbench serve ADDR | netbench client ADDR [--quick]");
            std::process::exit(2);
        }
    }
}

fn serve(addr: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening on {}", listener.local_addr().unwrap());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = handle(conn);
        });
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
