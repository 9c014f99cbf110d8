//! A program whose calls are known, for the function tracer's tests
//! (`eremite run --trace`; `./x` builds it with `-Zinstrument-mcount`
//! too): `traced [CALLS [DEPTH [panic]]]` calls `leaf` CALLS times
//! (default 1000) on each of two threads, then `recurse` DEPTH levels
//! deep (default 10) on the main thread, prints how long the leaf calls
//! took, and with `panic` panics at the bottom of the recursion.

use std::hint::black_box;
use std::time::Instant;

#[cfg(target_os = "hermit")]
use eremite as _;

/// Called CALLS times per thread.
#[inline(never)]
fn leaf(i: u64) -> u64 {
    black_box(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Calls itself until `depth` is 1; panics there if asked.
#[inline(never)]
fn recurse(depth: u32, should_panic: bool) -> u32 {
    if depth <= 1 {
        if should_panic {
            panic!("traced: the bottom of the recursion");
        }
        return 1;
    }
    1 + black_box(recurse(depth - 1, should_panic))
}

/// `calls` calls of `leaf`.
#[inline(never)]
fn calls(count: u64) -> u64 {
    (0..count).fold(0, |sum, i| sum ^ leaf(i))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u64| {
        args.next()
            .map_or(Ok(default), |arg| arg.parse())
            .unwrap_or_else(|_| {
                eprintln!("usage: traced [CALLS [DEPTH [panic]]]");
                std::process::exit(2);
            })
    };
    let count = number(1000);
    let depth = u32::try_from(number(10)).unwrap_or(10);
    let should_panic = std::env::args().nth(3).as_deref() == Some("panic");
    let started = Instant::now();
    let other = std::thread::spawn(move || calls(count));
    let mine = calls(count);
    let theirs = other.join().expect("the other thread ends");
    let elapsed = started.elapsed();
    println!(
        "traced: {} leaf calls in {} us ({:x})",
        2 * count,
        elapsed.as_micros(),
        mine ^ theirs
    );
    println!("traced: depth {}", recurse(depth, should_panic));
}
