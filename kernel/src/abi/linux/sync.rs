//! `futex` (under musl's and Rust's locks, condition variables and thread
//! joins), `sched_yield`, `sched_getaffinity`.

use eremite_interface::errno;

use super::{SysResult, ptr, user, value};
use crate::sched;

const FUTEX_WAIT: u32 = 0;
const FUTEX_WAKE: u32 = 1;
const FUTEX_REQUEUE: u32 = 3;
const FUTEX_CMP_REQUEUE: u32 = 4;
const FUTEX_WAIT_BITSET: u32 = 9;
const FUTEX_WAKE_BITSET: u32 = 10;
/// Flags in the operation: private (one process anyway), and absolute
/// timeouts on CLOCK_REALTIME.
const FUTEX_PRIVATE_FLAG: u32 = 128;
const FUTEX_CLOCK_REALTIME: u32 = 256;

/// `futex(2)`: wait, wake and requeue; a bitset is taken as "any" (what
/// C libraries pass). `val2` is the requeue count (in the timeout's
/// register).
pub(super) fn futex(
    addr: u64,
    op: i32,
    val: u32,
    timeout: u64,
    addr2: u64,
    val3: u32,
) -> SysResult {
    let op = op.cast_unsigned();
    let word = user::atomic_u32(ptr(addr)).map_err(|_| errno::EFAULT)?;
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    match op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME) {
        FUTEX_WAIT => {
            let timeout = super::time::timeout_ns(timeout, None)?;
            sched::futex_wait(word, val, timeout).map(|()| 0)
        }
        FUTEX_WAIT_BITSET => {
            let clock = if op & FUTEX_CLOCK_REALTIME != 0 { 0 } else { 1 };
            let timeout = super::time::timeout_ns(timeout, Some(clock))?;
            sched::futex_wait(word, val, timeout).map(|()| 0)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(u64::from(
            sched::futex_wake(word, count(val)).cast_unsigned(),
        )),
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            let target = user::atomic_u32(ptr(addr2)).map_err(|_| errno::EFAULT)?;
            let expected = (op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME) == FUTEX_CMP_REQUEUE)
                .then_some(val3);
            let requeue = count(super::uint(timeout));
            sched::futex_requeue(word, expected, count(val), target, requeue)
                .map(|n| u64::from(n.cast_unsigned()))
        }
        _ => Err(errno::ENOSYS),
    }
}

pub(super) fn sched_yield() -> SysResult {
    sched::yield_now();
    Ok(0)
}

/// `sched_setaffinity(2)`: accepted when the mask names a vCPU; a thread
/// stays on the core it was started on (eremite binds threads at spawn).
pub(super) fn sched_setaffinity(pid: i32, len: usize, mask: u64) -> SysResult {
    if pid != 0 && pid != 1 && !sched::is_thread(pid) {
        return Err(errno::ESRCH);
    }
    let bytes = user::slice(ptr(mask), len)?;
    let cpus = super::process::cpu_count();
    let names_a_cpu = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| (0..8).any(|bit| b & (1 << bit) != 0 && i * 8 + bit < cpus));
    if names_a_cpu {
        Ok(0)
    } else {
        Err(errno::EINVAL)
    }
}

/// `sched_getaffinity(2)`: every vCPU (the mask's size in bytes).
pub(super) fn sched_getaffinity(pid: i32, len: usize, mask: u64) -> SysResult {
    if pid != 0 && pid != 1 && !sched::is_thread(pid) {
        return Err(errno::ESRCH);
    }
    let cpus = super::process::cpu_count();
    let bytes = cpus.div_ceil(64) * 8;
    if len < bytes {
        return Err(errno::EINVAL);
    }
    let out = user::slice_mut(ptr(mask), bytes)?;
    out.fill(0);
    for cpu in 0..cpus {
        out[cpu / 8] |= 1 << (cpu % 8);
    }
    Ok(value(bytes))
}
