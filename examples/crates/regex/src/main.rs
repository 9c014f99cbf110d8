//! `regex` on eremite: a small use of it that prints `ok regex`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    let re = regex::Regex::new(r"(\d{4})-(\d{2})-(\d{2})").unwrap();
    let caps = re.captures("released on 2026-12-07").unwrap();
    assert_eq!(&caps[1], "2026");
    println!("ok regex {}", &caps[0]);
}
