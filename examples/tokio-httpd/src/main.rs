//! The HTTP echo server of `httpd` on tokio: the multi-threaded runtime
//! (a worker thread per CPU, tokio's default), `tokio::net::TcpListener`
//! and one task per connection. `tokio-httpd [ADDR:PORT]`, default
//! `0.0.0.0:8080`; prints how many worker threads the runtime has, then
//! `listening on ADDR` once it accepts connections; on a request for
//! `/quit`, how many connections it served, then it returns from `main`,
//! which shuts the runtime down.

use std::net::SocketAddr;
use std::sync::Arc;

#[cfg(target_os = "hermit")]
use eremite as _;
use httpd::{Next, READ_BYTES, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!("runtime: {workers} worker threads");
    let listener = TcpListener::bind(&addr).await.unwrap_or_else(|e| {
        eprintln!("tokio-httpd: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", listener.local_addr().unwrap());
    let quit = Arc::new(Notify::new());
    let mut served = 0u64;
    loop {
        let (conn, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("tokio-httpd: accept: {e}");
                    continue;
                }
            },
            () = quit.notified() => break,
        };
        served += 1;
        let quit = quit.clone();
        tokio::spawn(async move {
            if serve(conn, remote).await == Next::Quit {
                quit.notify_one();
            }
        });
    }
    println!("served {served} connections");
}

/// Answer requests on `conn` until the client closes it, asks to close,
/// or sends garbage; errors (a client that vanished) end only this
/// connection.
async fn serve(mut conn: TcpStream, remote: SocketAddr) -> Next {
    let mut session = Session::new(remote);
    let mut buf = vec![0; READ_BYTES];
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return Next::Close,
            Ok(n) => n,
        };
        let (answers, next) = session.receive(&buf[..n]);
        if conn.write_all(&answers).await.is_err() {
            return Next::Close;
        }
        if next != Next::KeepOpen {
            return next;
        }
    }
}
