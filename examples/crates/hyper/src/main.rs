//! `hyper` on eremite: a small use of it that prints `ok hyper`.
#[cfg(target_os = "hermit")]
use eremite as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("pong"))))
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await
            .unwrap();
    });
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tx.send_request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"pong");
    println!("ok hyper");
}
