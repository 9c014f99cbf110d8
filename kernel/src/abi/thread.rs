//! Threads: spawn, join, yield (one core, cooperative; see `sched`).

use eremite_interface::errno::Errno;

use super::{ret, user};
use crate::sched;

/// hermit-abi's `spawn2`: start `func(arg)` on a new thread with a stack
/// of at least `stack_size` bytes; its id, or 0 when it cannot start.
/// Priority and core are accepted and ignored (one core, one priority).
#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn2(
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    stack_size: usize,
    _core: isize,
) -> u32 {
    sched::spawn(func, arg, stack_size).unwrap_or(0)
}

/// hermit-abi's older `spawn`: as `sys_spawn2` with the default stack;
/// the id is written to `id` when it is not null.
#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn(
    id: *mut u32,
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    _core: isize,
) -> i32 {
    ret((|| -> Result<i32, Errno> {
        let tid = sched::spawn(func, arg, 0)?;
        if !id.is_null() {
            user::write(id, tid)?;
        }
        Ok(0)
    })())
}

/// Wait for a thread to finish.
#[unsafe(no_mangle)]
pub extern "C" fn sys_join(tid: u32) -> i32 {
    ret(sched::join(tid).map(|()| 0))
}

/// Let other ready threads run.
#[unsafe(no_mangle)]
pub extern "C" fn sys_yield() {
    sched::yield_now();
}
