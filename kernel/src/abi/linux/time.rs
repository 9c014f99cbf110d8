//! Clocks and sleeping: `clock_gettime` and its relatives read the TSC
//! (no exit), sleeps block the thread in the scheduler.

use eremite_interface::errno::{self, Errno};

use super::{SysResult, ptr, user};
use crate::{sched, time};

/// `struct timespec` / `struct timeval` (two 64-bit fields).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Pair {
    seconds: i64,
    fraction: i64,
}

const NS_PER_SEC: u64 = 1_000_000_000;

fn timespec(ns: u64) -> Pair {
    Pair {
        seconds: i64::try_from(ns / NS_PER_SEC).unwrap_or(i64::MAX),
        fraction: i64::try_from(ns % NS_PER_SEC).unwrap_or(0),
    }
}

fn read_ns(at: u64) -> Result<u64, Errno> {
    let t = user::read(ptr::<Pair>(at))?;
    let (Ok(seconds), Ok(nanos)) = (u64::try_from(t.seconds), u64::try_from(t.fraction)) else {
        return Err(errno::EINVAL);
    };
    if nanos >= NS_PER_SEC {
        return Err(errno::EINVAL);
    }
    Ok(seconds.saturating_mul(NS_PER_SEC).saturating_add(nanos))
}

const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;
const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
const CLOCK_MONOTONIC_RAW: i32 = 4;
const CLOCK_REALTIME_COARSE: i32 = 5;
const CLOCK_MONOTONIC_COARSE: i32 = 6;
const CLOCK_BOOTTIME: i32 = 7;

/// Now on `clock`, in ns. CPU-time clocks count time since boot (the
/// program has had the machine to itself).
pub(super) fn now_ns(clock: i32) -> Result<u64, Errno> {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => Ok(time::realtime_ns()),
        CLOCK_MONOTONIC
        | CLOCK_MONOTONIC_RAW
        | CLOCK_MONOTONIC_COARSE
        | CLOCK_BOOTTIME
        | CLOCK_PROCESS_CPUTIME_ID
        | CLOCK_THREAD_CPUTIME_ID => Ok(time::monotonic_ns()),
        _ => Err(errno::EINVAL),
    }
}

pub(super) fn clock_gettime(clock: i32, out: u64) -> SysResult {
    user::write(ptr::<Pair>(out), timespec(now_ns(clock)?)).map(|()| 0)
}

pub(super) fn clock_getres(clock: i32, out: u64) -> SysResult {
    now_ns(clock)?;
    if out != 0 {
        user::write(ptr::<Pair>(out), timespec(1))?;
    }
    Ok(0)
}

pub(super) fn gettimeofday(out: u64) -> SysResult {
    if out != 0 {
        let ns = time::realtime_ns();
        let tv = Pair {
            seconds: i64::try_from(ns / NS_PER_SEC).unwrap_or(i64::MAX),
            fraction: i64::try_from((ns % NS_PER_SEC) / 1000).unwrap_or(0),
        };
        user::write(ptr::<Pair>(out), tv)?;
    }
    Ok(0)
}

pub(super) fn time(out: u64) -> SysResult {
    let seconds = time::realtime_ns() / NS_PER_SEC;
    if out != 0 {
        user::write(ptr::<u64>(out), seconds)?;
    }
    Ok(seconds)
}

pub(super) fn nanosleep(request: u64, _remaining: u64) -> SysResult {
    sched::sleep_ns(read_ns(request)?);
    Ok(0)
}

pub(super) fn clock_nanosleep(clock: i32, flags: i32, request: u64, _remaining: u64) -> SysResult {
    const TIMER_ABSTIME: i32 = 1;
    let ns = read_ns(request)?;
    let now = now_ns(clock)?;
    let duration = if flags & TIMER_ABSTIME != 0 {
        ns.saturating_sub(now)
    } else {
        ns
    };
    sched::sleep_ns(duration);
    Ok(0)
}

/// A futex timeout at `at` (`NULL`: none): relative, or absolute on
/// `clock`.
pub(super) fn timeout_ns(at: u64, absolute_on: Option<i32>) -> Result<Option<u64>, Errno> {
    if at == 0 {
        return Ok(None);
    }
    let ns = read_ns(at)?;
    Ok(Some(match absolute_on {
        Some(clock) => ns.saturating_sub(now_ns(clock)?),
        None => ns,
    }))
}
