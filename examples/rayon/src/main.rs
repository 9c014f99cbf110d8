//! A real crate on eremite: rayon's parallel iterators and `join`, on as
//! many cores as the VM has. Prints `rayon threads: N`, one `ok NAME` line
//! per check (each compares against the same computation done serially),
//! then `rayon passed`. `rayon speedup` instead times a CPU-bound parallel
//! map on 1 thread and on all of them and prints the ratio (the benchmark
//! of 1 → 2 vCPU scaling).

#[cfg(target_os = "hermit")]
use eremite as _;
use rayon::prelude::*;
use std::time::Instant;

/// A deliberately CPU-bound function (no memory traffic to speak of).
fn work(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn check(name: &str, ok: bool) {
    assert!(ok, "{name} gave a wrong answer");
    println!("ok {name}");
}

fn fib(n: u32) -> u64 {
    if n < 20 {
        return (1..=n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0;
    }
    let (a, b) = rayon::join(|| fib(n - 1), || fib(n - 2));
    a + b
}

fn speedup() {
    let items: Vec<u64> = (0..20_000).collect();
    let time = |pool: &rayon::ThreadPool| {
        let started = Instant::now();
        let sum: u64 = pool.install(|| items.par_iter().map(|&i| work(i)).sum());
        (started.elapsed(), sum)
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let all = rayon::ThreadPoolBuilder::new().build().unwrap();
    // Warm up both pools, then take the best of five.
    let (mut t1, mut tn) = (time(&one).0, time(&all).0);
    let mut sums = (0, 0);
    for _ in 0..5 {
        let (d, s) = time(&one);
        t1 = t1.min(d);
        sums.0 = s;
        let (d, s) = time(&all);
        tn = tn.min(d);
        sums.1 = s;
    }
    assert_eq!(sums.0, sums.1);
    println!(
        "threads {} one {:.3} ms all {:.3} ms speedup {:.2}",
        all.current_num_threads(),
        t1.as_secs_f64() * 1e3,
        tn.as_secs_f64() * 1e3,
        t1.as_secs_f64() / tn.as_secs_f64()
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("speedup") {
        speedup();
        return;
    }
    println!("rayon threads: {}", rayon::current_num_threads());
    let items: Vec<u64> = (0..100_000).collect();
    let serial: u64 = items.iter().map(|&i| work(i % 1000)).sum();
    let parallel: u64 = items.par_iter().map(|&i| work(i % 1000)).sum();
    check("par_iter map and sum", serial == parallel);

    let mut data: Vec<u64> = (0..200_000u64).map(|i| work(i) % 1_000_003).collect();
    let mut expected = data.clone();
    expected.sort_unstable();
    data.par_sort_unstable();
    check("par_sort_unstable", data == expected);

    let evens: Vec<u64> = items.par_iter().copied().filter(|i| i % 2 == 0).collect();
    check(
        "filter and collect keeps order",
        evens.len() == 50_000 && evens.windows(2).all(|w| w[0] + 2 == w[1]),
    );

    check("recursive join", fib(32) == 2_178_309);

    let words = ["alpha", "beta", "gamma", "delta"].repeat(10_000);
    let letters: usize = words.par_iter().map(|w| w.len()).sum();
    check("strings", letters == 10_000 * (5 + 4 + 5 + 5));
    println!("rayon passed");
}
