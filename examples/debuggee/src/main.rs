//! A program to debug, for the GDB tests (`eremite run --gdb`), built with
//! full debug information (examples/Cargo.toml).
//!
//! - `debuggee steps`: `advance` runs five times on a `Point`, then
//!   `square(7)`; prints both results.
//! - `debuggee spin`: a second thread and the main thread spin until the
//!   debugger stops them, and a third sleeps (for Ctrl-C, and `info
//!   threads` on 2 vCPUs with a thread that is not running).
//! - `debuggee trap`: executes an `int3` of its own (a breakpoint compiled
//!   in): fatal without a debugger, a stop under one; prints "after the
//!   trap" if it goes on.
//! - `debuggee watch`: after `pause_here`, adds 1, 2 and 3 to `COUNTER`
//!   (for a watchpoint) and prints it.
//! - `debuggee clock`: prints how long a call of `pause_here` took, by
//!   the guest's clock (a debugger holding a breakpoint there should not
//!   count).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use eremite as _;

#[derive(Clone, Copy, Debug)]
struct Point {
    x: i64,
    y: i64,
}

/// One move of `point` by `by`.
#[inline(never)]
fn advance(point: Point, by: i64) -> Point {
    Point {
        x: point.x + by,
        y: point.y * 2 + 1,
    }
}

#[inline(never)]
fn square(n: u64) -> u64 {
    black_box(n) * n
}

/// A place to stop at.
#[inline(never)]
fn pause_here() {
    black_box(());
}

static SPINS: AtomicU64 = AtomicU64::new(0);

/// What `debuggee watch` changes, for a watchpoint.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Sleep forever, a second at a time.
#[inline(never)]
fn nap() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Count forever.
#[inline(never)]
fn spin() -> ! {
    loop {
        SPINS.fetch_add(1, Ordering::Relaxed);
        std::hint::spin_loop();
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("steps") => {
            let mut point = Point { x: 1, y: 1 };
            for by in 1..=5 {
                point = advance(black_box(point), by);
            }
            println!("point: {point:?}");
            println!("square: {}", square(7));
        }
        Some("trap") => {
            // SAFETY: `int3` touches no memory or register; it raises #BP.
            unsafe { std::arch::asm!("int3") };
            println!("after the trap");
        }
        Some("watch") => {
            pause_here();
            for step in 1..=3 {
                COUNTER.fetch_add(black_box(step), Ordering::Relaxed);
            }
            println!("counter: {}", COUNTER.load(Ordering::Relaxed));
        }
        Some("clock") => {
            let started = Instant::now();
            pause_here();
            println!("pause_here took {} ms", started.elapsed().as_millis());
        }
        Some("spin") => {
            std::thread::spawn(nap);
            std::thread::spawn(|| spin());
            spin();
        }
        _ => {
            eprintln!("usage: debuggee steps|spin|trap|watch|clock");
            std::process::exit(2);
        }
    }
}
