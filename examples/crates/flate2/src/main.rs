//! `flate2` on eremite: a small use of it that prints `ok flate2`.
#[cfg(target_os = "hermit")]
use eremite as _;
use std::io::{Read, Write};
fn main() {
    let data = b"hello hello hello hello hello hello".repeat(100);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&data).unwrap();
    let packed = enc.finish().unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, data);
    println!("ok flate2 {} -> {} bytes", data.len(), packed.len());
}
