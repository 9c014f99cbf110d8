//! `reqwest` on eremite: a small use of it that prints `ok reqwest`.
#[cfg(target_os = "hermit")]
use eremite as _;
use std::io::{Read, Write};
fn main() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0; 1024];
        let _ = s.read(&mut b).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong")
            .unwrap();
    });
    let text = reqwest::blocking::get(format!("http://{addr}/"))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(text, "pong");
    println!("ok reqwest (HTTP, blocking)");
}
