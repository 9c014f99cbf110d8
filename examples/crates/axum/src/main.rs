//! `axum` on eremite: a small use of it that prints `ok axum`.
#[cfg(target_os = "hermit")]
use eremite as _;
use tower::ServiceExt;
#[tokio::main]
async fn main() {
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app.clone()).into_future());
    let response = app
        .oneshot(
            axum::http::Request::get("/hello")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.ends_with("hi"), "{text}");
    println!("ok axum");
}
