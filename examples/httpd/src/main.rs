//! An HTTP echo server on std::net and threads (see the `httpd` library
//! for what it answers): `httpd [ADDR:PORT]`, default `0.0.0.0:8080`.
//! Prints `listening on ADDR` once it accepts connections; a request for
//! `/quit` makes it print how many connections it served and exit.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

#[cfg(target_os = "hermit")]
use eremite as _;
use httpd::{Next, READ_BYTES, Session};

/// Each connection's thread: small, so hundreds fit in a small VM.
const STACK_BYTES: usize = 256 << 10;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("httpd: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("httpd: accept: {e}");
                continue;
            }
        };
        let served = served.clone();
        let spawned = thread::Builder::new()
            .stack_size(STACK_BYTES)
            .spawn(move || {
                served.fetch_add(1, Ordering::Relaxed);
                if serve(conn) == Next::Quit {
                    println!("served {} connections", served.load(Ordering::Relaxed));
                    std::process::exit(0);
                }
            });
        if let Err(e) = spawned {
            eprintln!("httpd: cannot start a thread: {e}");
        }
    }
}

/// Answer requests on `conn` until the client closes it, asks to close,
/// or sends garbage; errors (a client that vanished) end only this
/// connection.
fn serve(mut conn: TcpStream) -> Next {
    let Ok(remote) = conn.peer_addr() else {
        return Next::Close;
    };
    let mut session = Session::new(remote);
    let mut buf = vec![0; READ_BYTES];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return Next::Close,
            Ok(n) => n,
        };
        let (answers, next) = session.receive(&buf[..n]);
        if conn.write_all(&answers).is_err() {
            return Next::Close;
        }
        if next != Next::KeepOpen {
            return next;
        }
    }
}
