//! Futexes (under std's Mutex, Condvar, RwLock, Once, park) and the
//! task-blocking calls.

use eremite_interface::errno::{self, Errno};

use super::time::Timespec;
use super::{exported, ret, user};
use crate::{sched, semaphore, time};

/// `timeout` is relative rather than absolute (hermit-abi).
const FUTEX_RELATIVE_TIMEOUT: u32 = 1;

fn futex_wait(
    addr: *mut u32,
    expected: u32,
    timeout: *const Timespec,
    flags: u32,
) -> Result<i32, Errno> {
    if flags & !FUTEX_RELATIVE_TIMEOUT != 0 {
        return Err(errno::EINVAL);
    }
    let word = user::atomic_u32(addr).map_err(|_| errno::EINVAL)?;
    let timeout_ns = if timeout.is_null() {
        None
    } else {
        let ns = user::read(timeout)?.to_ns()?;
        Some(if flags & FUTEX_RELATIVE_TIMEOUT != 0 {
            ns
        } else {
            ns.saturating_sub(time::monotonic_ns())
        })
    };
    sched::futex_wait(word, expected, timeout_ns).map(|()| 0)
}

exported! {
    fn sys_futex_wait(
        addr: *mut u32,
        expected: u32,
        timeout: *const Timespec,
        flags: u32,
    ) -> i32 {
        ret(futex_wait(addr, expected, timeout, flags))
    }
}

exported! {
    fn sys_futex_wake(addr: *mut u32, count: i32) -> i32 {
        ret(user::atomic_u32(addr)
            .map_err(|_| errno::EINVAL)
            .map(|word| sched::futex_wake(word, count)))
    }
}

exported! {
    /// Mark the current thread blocked: its next `sys_yield` waits for
    /// `sys_wakeup_taskt`.
    fn sys_block_current_task() {
        sched::park_current(None);
    }
}

exported! {
    /// Block the current thread for `timeout_ms` milliseconds or until
    /// `sys_wakeup_taskt`.
    fn sys_block_current_task_with_timeout(timeout_ms: u64) {
        sched::park_current(Some(timeout_ms.saturating_mul(1_000_000)));
    }
}

exported! {
    /// Make a thread blocked with `sys_block_current_task` ready again
    /// (hermit-abi spells it `wakeup_taskt`).
    fn sys_wakeup_taskt(tid: u32) {
        sched::wakeup(tid);
    }
}

/// hermit-abi's `sem_t`: the handle of a kernel semaphore.
type SemT = usize;

fn sem_handle(sem: *mut SemT) -> Result<u64, Errno> {
    user::read(sem).map(|h| h as u64)
}

exported! {
    /// `sem_init`: a semaphore holding `value`, its handle stored in `*sem`.
    fn sys_sem_init(sem: *mut SemT, _pshared: i32, value: u32) -> i32 {
        // Check the pointer before making anything that could then leak.
        ret(user::read(sem).and_then(|_| {
            let handle = semaphore::create(value);
            let handle = SemT::try_from(handle).map_err(|_| errno::ENOMEM)?;
            user::write(sem, handle).map(|()| 0)
        }))
    }
}

exported! {
    fn sys_sem_destroy(sem: *mut SemT) -> i32 {
        ret(sem_handle(sem).and_then(semaphore::destroy).map(|()| 0))
    }
}

exported! {
    fn sys_sem_post(sem: *mut SemT) -> i32 {
        ret(sem_handle(sem).and_then(semaphore::post).map(|()| 0))
    }
}

exported! {
    fn sys_sem_trywait(sem: *mut SemT) -> i32 {
        ret(sem_handle(sem).and_then(semaphore::try_wait).map(|()| 0))
    }
}

exported! {
    /// `sem_timedwait`: wait until the semaphore can be taken or the
    /// real-time clock passes `*abs_timeout` (for ever if it is null).
    fn sys_sem_timedwait(sem: *mut SemT, abs_timeout: *const Timespec) -> i32 {
        ret((|| {
            let handle = sem_handle(sem)?;
            let deadline_ns = if abs_timeout.is_null() {
                None
            } else {
                let at = user::read(abs_timeout)?.to_ns()?;
                let left = at.saturating_sub(time::realtime_ns());
                Some(time::monotonic_ns().saturating_add(left))
            };
            semaphore::wait(handle, deadline_ns).map(|()| 0)
        })())
    }
}
