//! Threads: spawn, join, yield. hermit-abi's threads get a stack and a
//! TLS block made from the image's `PT_TLS` template here, then start in
//! the scheduler's core spawn.

use eremite_interface::errno::{self, Errno};

use super::{exported, ret, user};
use crate::sched::{self, ThreadStart, Tid};
use crate::{bootinfo, mm};

/// Smallest stack a spawned thread gets.
const MIN_STACK_BYTES: usize = 64 << 10;

/// Start `func(arg)` on a new thread with a stack of at least
/// `stack_bytes` and a fresh TLS block, on `core` when it names one.
fn spawn(
    func: extern "C" fn(usize),
    arg: usize,
    stack_bytes: usize,
    core: isize,
) -> Result<Tid, Errno> {
    let template = bootinfo::info().map(|info| info.tls).unwrap_or_default();
    let tls = mm::create_tls(&template).ok_or(errno::ENOMEM)?;
    let stack =
        mm::Stack::new(stack_bytes.max(MIN_STACK_BYTES), mm::NO_THREAD).ok_or(errno::ENOMEM)?;
    sched::spawn(ThreadStart {
        entry: func,
        arg,
        stack_top: stack.top(),
        fs_base: tls.thread_pointer,
        stack: Some(stack),
        tls: Some(tls),
        clear_on_exit: None,
        core: usize::try_from(core).ok(),
        syscall_stack: None,
    })
}

exported! {
    /// hermit-abi's `spawn2`: start `func(arg)` on a new thread with a stack
    /// of at least `stack_size` bytes, on core `core` (any core when it is
    /// negative or too large); its id, or 0 when it cannot start. The
    /// priority is accepted and ignored (one priority).
    fn sys_spawn2(
        func: extern "C" fn(usize),
        arg: usize,
        _prio: u8,
        stack_size: usize,
        core: isize,
    ) -> u32 {
        spawn(func, arg, stack_size, core).unwrap_or(0)
    }
}

exported! {
    /// hermit-abi's older `spawn`: as `sys_spawn2` with the default stack;
    /// the id is written to `id` when it is not null.
    fn sys_spawn(
        id: *mut u32,
        func: extern "C" fn(usize),
        arg: usize,
        _prio: u8,
        core: isize,
    ) -> i32 {
        ret((|| -> Result<i32, Errno> {
            let tid = spawn(func, arg, 0, core)?;
            if !id.is_null() {
                user::write(id, tid)?;
            }
            Ok(0)
        })())
    }
}

exported! {
    /// Wait for a thread to finish.
    fn sys_join(tid: u32) -> i32 {
        ret(sched::join(tid).map(|()| 0))
    }
}

exported! {
    /// Let other ready threads run.
    fn sys_yield() {
        sched::yield_now();
    }
}
