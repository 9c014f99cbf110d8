//! `rand` on eremite: a small use of it that prints `ok rand`.
#[cfg(target_os = "hermit")]
use eremite as _;
use rand::Rng;
fn main() {
    let mut rng = rand::rng();
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    assert_ne!(a, b);
    let roll = rng.random_range(1..=6);
    println!("ok rand {roll}");
}
