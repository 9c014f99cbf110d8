//! The `noise` group: the "hourglass" benchmark. Read the TSC in a tight
//! loop for a while; every gap between two reads beyond the loop's own
//! cost is time the OS (or the hypervisor) took away. Reports the average
//! and maximum gap in cycles and prints a histogram of gaps (powers of
//! two). `--seconds S` sets the duration (default 10), `--quick` 0.2 s.

#[cfg(target_os = "hermit")]
use eremite as _;

use benchkit::{rdtsc, report_tsc, tsc_khz};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("--seconds wants a number");
                std::process::exit(2)
            }),
        None if benchkit::is_quick() => 0.2,
        None => 10.0,
    };
    report_tsc();
    let khz = tsc_khz(Duration::from_millis(20));
    let total = (seconds * khz as f64 * 1000.0) as u64;

    let mut histogram = [0u64; 64];
    let (mut max_gap, mut reads) = (0u64, 0u64);
    let start = rdtsc();
    let mut last = start;
    while last - start < total {
        let now = rdtsc();
        let gap = now - last;
        histogram[63 - gap.max(1).leading_zeros() as usize] += 1;
        max_gap = max_gap.max(gap);
        reads += 1;
        last = now;
    }
    if reads == 0 {
        eprintln!("hourglass: no TSC reads");
        std::process::exit(1);
    }
    let avg = (last - start) as f64 / reads as f64;
    println!(
        "BENCH name=hourglass_avg_gap unit=cycles median={avg:.2} p99={avg:.2} min={avg:.2} max={avg:.2} n={reads}"
    );
    let max = max_gap as f64;
    println!(
        "BENCH name=hourglass_max_gap unit=cycles median={max:.2} p99={max:.2} min={max:.2} max={max:.2} n=1"
    );
    for (bit, count) in histogram.iter().enumerate().filter(|(_, c)| **c > 0) {
        println!("HIST gap_ge={} count={count}", 1u64 << bit);
    }
}
