//! `serde_json` on eremite: a small use of it that prints `ok serde_json`.
#[cfg(target_os = "hermit")]
use eremite as _;
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
    name: String,
}
fn main() {
    let p = Point {
        x: 1,
        y: -2,
        name: "origin".into(),
    };
    let text = serde_json::to_string(&p).unwrap();
    let back: Point = serde_json::from_str(&text).unwrap();
    assert_eq!(p, back);
    println!("ok serde_json {text}");
}
