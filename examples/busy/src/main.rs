//! A CPU-bound program whose profile is known, for the sampling
//! profiler's tests (`eremite run --profile`): `busy [MS]` keeps two
//! threads busy for MS milliseconds (default 500), each spending about
//! nine tenths of it in `hot_loop` and the rest in `cold_loop`, then
//! prints how many rounds of work they did (`busy: N rounds`: what a
//! profiler's overhead takes away) and what they computed.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[cfg(target_os = "hermit")]
use eremite as _;

/// Mix numbers until `until`.
#[inline(never)]
fn hot_loop(until: Instant) -> Mixed {
    mix(until, 6_364_136_223_846_793_005)
}

/// Like work, a tenth as long (with another multiplier, so that the
/// linker does not fold the two functions into one).
#[inline(never)]
fn cold_loop(until: Instant) -> Mixed {
    mix(until, 2_862_933_555_777_941_757)
}

/// What was computed, and in how many rounds.
#[derive(Clone, Copy, Default)]
struct Mixed {
    value: u64,
    rounds: u64,
}

impl Mixed {
    fn and(self, other: Mixed) -> Mixed {
        Mixed {
            value: self.value ^ other.value,
            rounds: self.rounds + other.rounds,
        }
    }
}

#[inline(always)]
fn mix(until: Instant, multiplier: u64) -> Mixed {
    let mut mixed = Mixed::default();
    while Instant::now() < until {
        for i in 0..10_000u64 {
            mixed.value = mixed
                .value
                .wrapping_mul(multiplier)
                .wrapping_add(black_box(i));
        }
        mixed.rounds += 1;
    }
    mixed
}

/// Both loops, nine tenths of `span` in the hot one.
fn work(span: Duration) -> Mixed {
    let started = Instant::now();
    let hot = hot_loop(started + span * 9 / 10);
    hot.and(cold_loop(started + span))
}

fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(500), |arg| arg.parse())
        .unwrap_or_else(|_| {
            eprintln!("usage: busy [MILLISECONDS]");
            std::process::exit(2);
        });
    let span = Duration::from_millis(ms);
    // Named, so that a debugger shows the name (Linux: `prctl`).
    let other = std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || work(span))
        .expect("a second thread");
    let mixed = work(span).and(other.join().expect("the other thread ends"));
    println!("busy: {} rounds, {:x}", mixed.rounds, mixed.value);
}
