//! `tempfile` on eremite: a small use of it that prints `ok tempfile`.
#[cfg(target_os = "hermit")]
use eremite as _;
use std::io::{Read, Seek, Write};
fn main() {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"scratch").unwrap();
    file.rewind().unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    println!("ok tempfile {text}");
}
