//! `chrono` on eremite: a small use of it that prints `ok chrono`.
#[cfg(target_os = "hermit")]
use eremite as _;
fn main() {
    let now = chrono::Utc::now();
    assert!(now.timestamp() > 1_700_000_000, "the clock is wrong: {now}");
    let local = chrono::Local::now();
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
    println!(
        "ok chrono {} {} {}",
        now.format("%Y"),
        local.offset(),
        date.format("%A")
    );
}
