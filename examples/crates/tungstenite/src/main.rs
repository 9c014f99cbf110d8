//! `tungstenite` on eremite: a small use of it that prints `ok tungstenite`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut ws = tungstenite::accept(s).unwrap();
        let m = ws.read().unwrap();
        ws.send(m).unwrap();
        let _ = ws.read();
    });
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).unwrap();
    ws.send(tungstenite::Message::text("echo me")).unwrap();
    let back = ws.read().unwrap();
    assert_eq!(back.to_text().unwrap(), "echo me");
    ws.close(None).unwrap();
    let _ = server.join();
    println!("ok tungstenite");
}
