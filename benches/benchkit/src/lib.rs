//! What every benchmark program shares: serialised TSC reads, the TSC
//! frequency, summaries, and the one output format the harness parses.
//!
//! Output: one line per result,
//! `BENCH name=<row> unit=<unit> median=<f64> p99=<f64> min=<f64> max=<f64> n=<count>`,
//! and one line `TSC khz=<kHz>`. A program that cannot measure a row
//! exits non-zero instead of printing a number.

use std::arch::x86_64::{_mm_lfence, _rdtsc};
use std::time::{Duration, Instant};

/// Read the TSC after all earlier instructions have completed (`lfence`
/// then `rdtsc`; Intel SDM vol. 2B, RDTSC).
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: `lfence` and `rdtsc` are available on every x86_64 CPU this
    // runs on (CR4.TSD is clear on Linux and eremite) and only read state.
    unsafe {
        _mm_lfence();
        let t = _rdtsc();
        _mm_lfence();
        t
    }
}

/// TSC ticks per millisecond, measured against the OS clock over `span`.
pub fn tsc_khz(span: Duration) -> u64 {
    let (t0, i0) = (rdtsc(), Instant::now());
    while i0.elapsed() < span {}
    let (t1, elapsed) = (rdtsc(), i0.elapsed());
    ((t1 - t0) as f64 / elapsed.as_secs_f64() / 1000.0) as u64
}

/// `--quick` on the command line: a correctness run with few repetitions.
pub fn is_quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// Measure the TSC frequency, print the TSC line and return the
/// frequency in kHz (for programs that turn cycles into rates).
pub fn report_tsc() -> u64 {
    let khz = tsc_khz(Duration::from_millis(50));
    println!("TSC khz={khz}");
    khz
}

/// Median, 99th percentile, min and max of `samples`.
pub fn report(name: &str, unit: &str, samples: &mut [f64]) {
    if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
        eprintln!("benchmark {name}: no valid samples");
        std::process::exit(1);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "BENCH name={name} unit={unit} median={:.2} p99={:.2} min={:.2} max={:.2} n={}",
        at(0.5),
        at(0.99),
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
}

/// Cycles per operation: `rounds` samples, each timing `batch` calls of
/// `op` and dividing by `batch` (the TSC read costs more than a cheap call).
pub fn per_op(rounds: usize, batch: usize, mut op: impl FnMut()) -> Vec<f64> {
    for _ in 0..batch {
        op(); // warm up
    }
    (0..rounds)
        .map(|_| {
            let start = rdtsc();
            for _ in 0..batch {
                op();
            }
            (rdtsc() - start) as f64 / batch as f64
        })
        .collect()
}
