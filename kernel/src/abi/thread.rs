//! Threads: spawn, join, yield (see `sched`).

use eremite_interface::errno::Errno;

use super::{ret, user};
use crate::sched;

/// hermit-abi's `spawn2`: start `func(arg)` on a new thread with a stack
/// of at least `stack_size` bytes, on core `core` (any core when it is
/// negative or too large); its id, or 0 when it cannot start. The priority
/// is accepted and ignored (one priority).
#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn2(
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    stack_size: usize,
    core: isize,
) -> u32 {
    sched::spawn(func, arg, stack_size, usize::try_from(core).ok()).unwrap_or(0)
}

/// hermit-abi's older `spawn`: as `sys_spawn2` with the default stack;
/// the id is written to `id` when it is not null.
#[unsafe(no_mangle)]
pub extern "C" fn sys_spawn(
    id: *mut u32,
    func: extern "C" fn(usize),
    arg: usize,
    _prio: u8,
    core: isize,
) -> i32 {
    ret((|| -> Result<i32, Errno> {
        let tid = sched::spawn(func, arg, 0, usize::try_from(core).ok())?;
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
