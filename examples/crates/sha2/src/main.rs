//! `sha2` on eremite: a small use of it that prints `ok sha2`.
#[cfg(target_os = "hermit")]
use eremite as _;
use sha2::Digest;
fn main() {
    let digest = sha2::Sha256::digest(b"abc");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    println!("ok sha2 {hex}");
}
