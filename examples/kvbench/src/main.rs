//! `kvbench`: a key-value benchmark in the manner of YCSB, over an
//! in-memory concurrent B-link tree (`btree.rs`). It loads RECORDS keys,
//! then THREADS threads run the workload for SECONDS and it prints
//! `ops/s: N` and a latency line (from every 16th operation).
//!
//! ```text
//! kvbench [--workload a|b|c] [--seconds S] [--records N] [--threads T] [--seed X]
//! ```
//! Workloads as YCSB's core ones: A 50% reads, 50% updates; B 95% reads;
//! C reads only; keys chosen with YCSB's scrambled Zipfian distribution
//! (constant 0.99). The seed fixes every thread's choices.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[cfg(target_os = "hermit")]
use eremite as _;

use kvbench::btree::BTree;
use kvbench::ycsb::{Rng, Zipf, key};

/// Options.
struct Options {
    read_percent: u64,
    workload: char,
    seconds: f64,
    records: u64,
    threads: usize,
    seed: u64,
}

fn usage(why: &str) -> ! {
    eprintln!("kvbench: {why}");
    eprintln!(
        "usage: kvbench [--workload a|b|c] [--seconds S] [--records N] [--threads T] [--seed X]"
    );
    std::process::exit(2);
}

fn options() -> Options {
    let mut options = Options {
        read_percent: 50,
        workload: 'a',
        seconds: 5.0,
        records: 100_000,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seed: 42,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<u64>()
                .unwrap_or_else(|_| usage(&format!("{flag} {value}: not a number")))
        };
        match flag.as_str() {
            "--workload" => {
                (options.workload, options.read_percent) = match value.to_ascii_lowercase().as_str()
                {
                    "a" | "ycsb-a" => ('a', 50),
                    "b" | "ycsb-b" => ('b', 95),
                    "c" | "ycsb-c" => ('c', 100),
                    _ => usage(&format!("no workload {value}: a, b or c")),
                }
            }
            "--seconds" => {
                options.seconds = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .unwrap_or_else(|| usage(&format!("--seconds {value}: not a positive number")))
            }
            "--records" => options.records = number().max(1),
            "--threads" => options.threads = (number() as usize).max(1),
            "--seed" => options.seed = number(),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    options
}

/// One thread's share: operations done, and sampled latencies in ns.
struct Share {
    ops: u64,
    latencies_ns: Vec<u64>,
    checksum: u64,
}

fn work(tree: &BTree, zipf: &Zipf, options: &Options, thread: u64, stop: &AtomicBool) -> Share {
    let mut rng = Rng(options.seed ^ thread.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut share = Share {
        ops: 0,
        latencies_ns: Vec::new(),
        checksum: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..256 {
            let record = zipf.choose(&mut rng);
            let is_read = rng.next_u64() % 100 < options.read_percent;
            let sampled = share.ops.is_multiple_of(16);
            let started = sampled.then(Instant::now);
            if is_read {
                let value = tree.get(key(record)).expect("every record was loaded");
                share.checksum = share.checksum.wrapping_add(value);
            } else {
                tree.insert(key(record), rng.next_u64());
            }
            if let Some(started) = started {
                share.latencies_ns.push(started.elapsed().as_nanos() as u64);
            }
            share.ops += 1;
        }
    }
    share
}

fn main() {
    let options = Arc::new(options());
    let tree = Arc::new(BTree::default());
    let loaded = Instant::now();
    for i in 0..options.records {
        tree.insert(key(i), i);
    }
    let load_s = loaded.elapsed().as_secs_f64();
    let zipf = Arc::new(Zipf::new(options.records, 0.99));
    let stop = Arc::new(AtomicBool::new(false));
    println!(
        "kvbench: workload {} ({}% reads), {} records loaded in {load_s:.2} s, {} threads, {} s",
        options.workload.to_ascii_uppercase(),
        options.read_percent,
        options.records,
        options.threads,
        options.seconds
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..options.threads as u64)
        .map(|thread| {
            let (tree, zipf, options, stop) =
                (tree.clone(), zipf.clone(), options.clone(), stop.clone());
            std::thread::spawn(move || work(&tree, &zipf, &options, thread, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    stop.store(true, Ordering::Relaxed);
    let shares: Vec<Share> = workers
        .into_iter()
        .map(|w| w.join().expect("a worker"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let ops: u64 = shares.iter().map(|s| s.ops).sum();
    let mut latencies: Vec<u64> = shares
        .iter()
        .flat_map(|s| s.latencies_ns.iter().copied())
        .collect();
    latencies.sort_unstable();
    let at = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    let checksum = shares
        .iter()
        .fold(0u64, |sum, s| sum.wrapping_add(s.checksum));
    println!("ops/s: {:.0}", ops as f64 / elapsed);
    println!(
        "latency: p50 {} ns, p99 {} ns, max {} ns ({} samples)",
        at(0.5).copied().unwrap_or(0),
        at(0.99).copied().unwrap_or(0),
        latencies.last().copied().unwrap_or(0),
        latencies.len()
    );
    println!("checksum: {checksum:x}");
}
