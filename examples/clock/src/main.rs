//! Clocks and sleeping: `Instant` is monotonic, `SystemTime` is the host's
//! wall clock, and a long sleep (the idle CPU halts until its APIC timer
//! fires) sleeps as long as asked. Exits 1 on a mismatch.

use eremite as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let wanted = Duration::from_millis(
        std::env::args()
            .nth(1)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(1200),
    );
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    println!("wall clock: {} s since the epoch", wall.as_secs());
    let start = Instant::now();
    std::thread::sleep(wanted);
    let slept = start.elapsed();
    println!(
        "asked for {} ms, slept {} ms",
        wanted.as_millis(),
        slept.as_millis()
    );
    let mut last = Instant::now();
    for _ in 0..100_000 {
        let now = Instant::now();
        if now < last {
            println!("Instant went backwards");
            std::process::exit(1);
        }
        last = now;
    }
    let wall_after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let wall_slept = wall_after.saturating_sub(wall);
    if slept < wanted || wall_slept < wanted {
        println!(
            "slept too little (wall clock: {} ms)",
            wall_slept.as_millis()
        );
        std::process::exit(1);
    }
    println!("clocks are consistent");
}
