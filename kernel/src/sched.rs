//! Threads, for now just the one: futex semantics for a single thread.
//!
//! With one thread, `futex_wait` can only return on a value mismatch or a
//! timeout; a wait with no timeout would never end, so it is reported as a
//! deadlock instead of hanging the VM. Multi-threading replaces this.

use core::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::ExitKind;

use crate::{console, hypervisor, time};

/// Wait while `*word == expected`, up to `timeout_ns` (relative).
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout_ns: Option<u64>,
) -> Result<(), Errno> {
    if word.load(Ordering::SeqCst) != expected {
        return Err(errno::EAGAIN);
    }
    match timeout_ns {
        Some(ns) => {
            time::sleep_ns(ns);
            Err(errno::ETIMEDOUT)
        }
        None => {
            use core::fmt::Write as _;
            console::flush();
            let _ = writeln!(
                console::DirectWriter::new(eremite_interface::hypercall::Stream::Stderr),
                "eremite: deadlock: the only thread waits on a futex at {:#x} that nothing can wake",
                word as *const AtomicU32 as u64
            );
            hypervisor::exit(ExitKind::Deadlock, 0)
        }
    }
}

/// Wake up to `count` waiters; with one thread there are none.
pub(crate) fn futex_wake(_word: &AtomicU32, _count: i32) -> i32 {
    0
}
