//! `tokio` on eremite: a small use of it that prints `ok tokio`.
#[cfg(target_os = "hermit")]
use eremite as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut b = [0; 5];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut b = [0; 5];
    c.read_exact(&mut b).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(&b, b"hello");
    println!("ok tokio");
}
