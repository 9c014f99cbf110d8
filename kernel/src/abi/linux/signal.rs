//! Signals, as far as one program with no other process needs them:
//! handlers and masks are stored and reported back (`rt_sigaction`,
//! `rt_sigprocmask`, `sigaltstack`), and a signal a thread sends the
//! program (`kill`, `tgkill`) takes its default action: ignored or the
//! end of the program with the status a shell would show (128 + the
//! signal; `SIGABRT` is an abort, exit code 134). Delivering signals to
//! handlers (a fault to a `SIGSEGV` handler) is not done yet.

use eremite_interface::errno;

use super::{SysResult, ptr, user};
use crate::process;
use crate::sync::Lock;

/// Signals 1 to 64.
const SIGNALS: usize = 64;
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGPIPE: i32 = 13;
/// `sa_handler`'s default action.
const SIG_DFL: u64 = 0;
const SIGSTOP: i32 = 19;

/// `struct k_sigaction` as the kernel takes it (x86_64).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct SigAction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

static ACTIONS: Lock<[SigAction; SIGNALS]> = Lock::new(
    [SigAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; SIGNALS],
);

fn index(signal: i32) -> Result<usize, errno::Errno> {
    usize::try_from(signal)
        .ok()
        .filter(|s| (1..=SIGNALS).contains(s))
        .map(|s| s - 1)
        .ok_or(errno::EINVAL)
}

pub(super) fn rt_sigaction(signal: i32, new: u64, old: u64, mask_size: usize) -> SysResult {
    if mask_size != 8 {
        return Err(errno::EINVAL);
    }
    let slot = index(signal)?;
    let new = if new == 0 {
        None
    } else {
        if signal == SIGKILL || signal == SIGSTOP {
            return Err(errno::EINVAL);
        }
        Some(user::read(ptr::<SigAction>(new))?)
    };
    let previous = {
        let mut actions = ACTIONS.lock();
        let previous = actions[slot];
        if let Some(action) = new {
            actions[slot] = action;
        }
        previous
    };
    if old != 0 {
        user::write(ptr::<SigAction>(old), previous)?;
    }
    Ok(0)
}

/// The program's signal mask (one for all threads).
static MASK: Lock<u64> = Lock::new(0);

pub(super) fn rt_sigprocmask(how: i32, set: u64, old: u64, mask_size: usize) -> SysResult {
    const SIG_BLOCK: i32 = 0;
    const SIG_UNBLOCK: i32 = 1;
    const SIG_SETMASK: i32 = 2;
    if mask_size != 8 {
        return Err(errno::EINVAL);
    }
    let change = if set == 0 {
        None
    } else {
        Some(user::read(ptr::<u64>(set))?)
    };
    let previous = {
        let mut mask = MASK.lock();
        let previous = *mask;
        match (how, change) {
            (_, None) => {}
            (SIG_BLOCK, Some(bits)) => *mask |= bits,
            (SIG_UNBLOCK, Some(bits)) => *mask &= !bits,
            (SIG_SETMASK, Some(bits)) => *mask = bits,
            _ => return Err(errno::EINVAL),
        }
        previous
    };
    if old != 0 {
        user::write(ptr::<u64>(old), previous)?;
    }
    Ok(0)
}

/// `stack_t`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct SignalStack {
    sp: u64,
    flags: i32,
    pad: i32,
    size: u64,
}

static ALT_STACK: Lock<SignalStack> = Lock::new(SignalStack {
    sp: 0,
    flags: 2, // SS_DISABLE
    pad: 0,
    size: 0,
});

pub(super) fn sigaltstack(new: u64, old: u64) -> SysResult {
    let new = if new == 0 {
        None
    } else {
        Some(user::read(ptr::<SignalStack>(new))?)
    };
    let previous = {
        let mut stack = ALT_STACK.lock();
        let previous = *stack;
        if let Some(new) = new {
            *stack = new;
        }
        previous
    };
    if old != 0 {
        user::write(ptr::<SignalStack>(old), previous)?;
    }
    Ok(0)
}

/// A signal sent to the program: its default action.
fn deliver(signal: i32) -> SysResult {
    // Signals whose default action is to be ignored, and "is it there".
    const IGNORED: [i32; 5] = [0, 17, 18, 23, 28];
    if IGNORED.contains(&signal) {
        return Ok(0);
    }
    index(signal)?;
    if signal == SIGABRT {
        process::abort();
    }
    super::process::exit_group(128 + signal)
}

/// A write's result: `EPIPE` (the reader is gone) raises `SIGPIPE`,
/// whose default action ends the program (exit code 141). Ignored, or
/// with a handler (which is not run yet), the call fails with `EPIPE`.
pub(super) fn on_broken_pipe(result: SysResult) -> SysResult {
    if result == Err(errno::EPIPE) {
        let handler = ACTIONS.lock()[SIGPIPE as usize - 1].handler;
        if handler == SIG_DFL {
            super::process::exit_group(128 + SIGPIPE);
        }
    }
    result
}

/// `kill(2)`: only the program itself (pid 1, or 0 for its group).
pub(super) fn kill(pid: i32, signal: i32) -> SysResult {
    match pid {
        -1..=1 => deliver(signal),
        _ => Err(errno::ESRCH),
    }
}

/// `tgkill(2)`/`tkill(2)`: a thread of the program.
pub(super) fn tgkill(group: i32, _tid: i32, signal: i32) -> SysResult {
    match group {
        0 | 1 => deliver(signal),
        _ => Err(errno::ESRCH),
    }
}
