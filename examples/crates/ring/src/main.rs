//! `ring` on eremite: a small use of it that prints `ok ring`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    let digest = ring::digest::digest(&ring::digest::SHA256, b"abc");
    println!("ok ring {:?}", digest.as_ref().len());
}
