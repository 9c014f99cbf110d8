//! Signals, as far as one program with no other process needs them.
//!
//! - **Actions** (`rt_sigaction`) are the program's; **masks** and
//!   **alternate stacks** (`rt_sigprocmask`, `sigaltstack`) each thread's,
//!   and a `clone`d thread starts with its parent's mask and no
//!   alternate stack, as on Linux.
//! - **Faults**: a CPU exception in the program (not in the kernel) whose
//!   signal (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`) has a
//!   handler and is not blocked runs the handler, on the alternate stack
//!   if asked (`SA_ONSTACK`): Rust's stack-overflow message, a C program's
//!   recovery. Otherwise the usual fault report, exit code 139.
//! - **Signals a thread sends itself** (`kill` and `tgkill`/`tkill` to the
//!   program): the handler runs on the way out of the call; a blocked one
//!   stays pending until `rt_sigprocmask` unblocks it (musl's `raise`
//!   blocks signals around its `tkill`). With no handler the default
//!   action: ignored, or the end of the program with the status a shell
//!   would show (128 + the signal; `SIGABRT` is an abort, 134).
//! - **The frame** a handler gets is Linux's x86_64 `rt_sigframe`: the
//!   return address (`sa_restorer`, which calls `rt_sigreturn`), a
//!   `ucontext` with every register and the extended state (XSAVE
//!   format), and a `siginfo`. `rt_sigreturn` restores all of it.
//!
//! - **Signals from outside**: `SIGINT` and `SIGTERM` sent to the VMM
//!   reach the program ([`from_host`]); a handler runs when a thread that
//!   does not block the signal next leaves a system call, and a call it
//!   is blocked in waiting for a descriptor ends with `EINTR`.
//! - **Signals to another thread** (`tgkill`, `pthread_kill`): the same,
//!   in that thread.
//!
//! - **On an interrupt's return** to the program, too ([`deliver_interrupted`]):
//!   a thread that makes no system call (Go's preemption signals) takes
//!   the signal at its next interrupt; a thread running on another core
//!   is sent one.
//!
//! Not done: a futex wait or a sleep is not ended with `EINTR`; `SIGPIPE` handlers (the write fails with `EPIPE`; see
//! [`on_broken_pipe`]).

use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::layout::PAGE_SIZE;

use super::{SysResult, ptr, user};
use crate::arch::{self, ExceptionFrame, SyscallFrame, UserRegs};
use crate::console::klog;
use crate::sync::Lock;
use crate::{bootinfo, mm, process, sched};

/// Signals 1 to 64.
const SIGNALS: usize = 64;
const SIGILL: i32 = 4;
const SIGTRAP: i32 = 5;
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGPIPE: i32 = 13;
const SIGSTOP: i32 = 19;
/// Signals whose default action is to do nothing: `SIGCHLD`, `SIGCONT`,
/// `SIGURG`, `SIGWINCH`.
const IGNORED_BY_DEFAULT: [i32; 4] = [17, 18, 23, 28];

/// `sa_handler` values.
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
/// `sa_flags`.
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
/// The smallest alternate stack (`MINSIGSTKSZ`).
const MINSIGSTKSZ: u64 = 2048;
/// `ss_flags`.
const SS_ONSTACK: i32 = 1;
const SS_DISABLE: i32 = 2;
/// `si_code`s.
const SI_USER: i32 = 0;
const SI_TKILL: i32 = -6;
const SI_KERNEL: i32 = 0x80;
const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const BUS_ADRALN: i32 = 1;
const FPE_INTDIV: i32 = 1;
const FPE_FLTINV: i32 = 7;
const ILL_ILLOPN: i32 = 2;
const TRAP_BRKPT: i32 = 1;
/// The user code and stack selectors, as `sigcontext` shows them.
const USER_CS_SS: u64 = 0x33 | (0x2b << 48);

fn bit(signal: i32) -> u64 {
    1 << (signal - 1)
}

/// The lowest-numbered signal in a non-empty set.
fn lowest(set: u64) -> i32 {
    // At most 64: fits.
    i32::try_from(set.trailing_zeros() + 1).unwrap_or(i32::MAX)
}

/// What can never be blocked.
const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

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

fn index(signal: i32) -> Result<usize, Errno> {
    usize::try_from(signal)
        .ok()
        .filter(|s| (1..=SIGNALS).contains(s))
        .map(|s| s - 1)
        .ok_or(errno::EINVAL)
}

fn action(signal: i32) -> SigAction {
    index(signal).map_or_else(|_| SigAction::default(), |i| ACTIONS.lock()[i])
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

const NO_STACK: SignalStack = SignalStack {
    sp: 0,
    flags: SS_DISABLE,
    pad: 0,
    size: 0,
};

impl SignalStack {
    fn is_enabled(&self) -> bool {
        self.flags & SS_DISABLE == 0
    }

    fn holds(&self, sp: u64) -> bool {
        self.is_enabled() && sp > self.sp && sp - self.sp <= self.size
    }
}

/// One thread's signal state.
#[derive(Clone, Copy)]
struct ThreadSignals {
    mask: u64,
    /// Signals sent to itself while blocked.
    pending: u64,
    alt: SignalStack,
}

const NEW_THREAD: ThreadSignals = ThreadSignals {
    mask: 0,
    pending: 0,
    alt: NO_STACK,
};

/// Each thread's state, by thread id (a thread not in it has
/// [`NEW_THREAD`]'s).
static THREADS: Lock<BTreeMap<u32, ThreadSignals>> = Lock::new(BTreeMap::new());

fn with_thread<T>(f: impl FnOnce(&mut ThreadSignals) -> T) -> T {
    let mut threads = THREADS.lock();
    f(threads.entry(sched::current_tid()).or_insert(NEW_THREAD))
}

/// The calling thread's mask, for a thread it `clone`s.
pub(super) fn current_mask() -> u64 {
    with_thread(|t| t.mask)
}

/// A `clone`d thread starts: its parent's mask, no alternate stack.
pub(super) fn thread_started(mask: u64) {
    with_thread(|t| *t = ThreadSignals { mask, ..NEW_THREAD });
}

/// The calling thread ends.
pub(super) fn thread_exited() {
    THREADS.lock().remove(&sched::current_tid());
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

/// `rt_sigprocmask(2)` (a full frame): a pending signal it unblocks is
/// delivered on the way out.
pub(super) fn rt_sigprocmask(
    frame: &mut SyscallFrame,
    how: i32,
    set: u64,
    old: u64,
    mask_size: usize,
) -> SysResult {
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
    if change.is_some() && !matches!(how, SIG_BLOCK | SIG_UNBLOCK | SIG_SETMASK) {
        return Err(errno::EINVAL);
    }
    if old != 0 {
        user::write(ptr::<u64>(old), current_mask())?;
    }
    let ready = with_thread(|t| {
        match (how, change) {
            (_, None) => {}
            (SIG_BLOCK, Some(bits)) => t.mask |= bits,
            (SIG_UNBLOCK, Some(bits)) => t.mask &= !bits,
            (_, Some(bits)) => t.mask = bits,
        }
        t.mask &= !UNBLOCKABLE;
        t.pending & !t.mask
    });
    if ready == 0 {
        return Ok(0);
    }
    let signal = lowest(ready);
    with_thread(|t| t.pending &= !bit(signal));
    let info = SigInfo::sent(signal, SI_TKILL);
    Ok(deliver_on_return(frame, signal, info, 0))
}

/// `sigaltstack(2)`; `sp` is the caller's stack pointer (`EPERM` to
/// change the stack it is running on).
pub(super) fn sigaltstack(new: u64, old: u64, sp: u64) -> SysResult {
    let new = if new == 0 {
        None
    } else {
        Some(user::read(ptr::<SignalStack>(new))?)
    };
    let current = with_thread(|t| t.alt);
    let is_on = current.holds(sp);
    if old != 0 {
        let mut shown = current;
        shown.flags = if is_on {
            SS_ONSTACK
        } else if current.is_enabled() {
            0
        } else {
            SS_DISABLE
        };
        user::write(ptr::<SignalStack>(old), shown)?;
    }
    if let Some(mut new) = new {
        if is_on {
            return Err(errno::EPERM);
        }
        if new.flags & !SS_DISABLE != 0 && new.flags != SS_ONSTACK {
            return Err(errno::EINVAL);
        }
        if new.flags & SS_DISABLE != 0 {
            new = NO_STACK;
        } else if new.size < MINSIGSTKSZ {
            return Err(errno::ENOMEM);
        }
        new.flags &= SS_DISABLE;
        with_thread(|t| t.alt = new);
    }
    Ok(0)
}

/// `struct siginfo`: 128 bytes; the fields after the first three depend
/// on the signal (an address for faults, a sender for `kill`).
#[derive(Clone, Copy)]
#[repr(C)]
struct SigInfo {
    signo: i32,
    errno: i32,
    code: i32,
    pad: i32,
    fields: [u64; 14],
}

impl SigInfo {
    /// `signal` with `code`, and `first` in the first field of the union
    /// (the address of a fault; the sender's pid for `kill`).
    fn new(signal: i32, code: i32, first: u64) -> Self {
        let mut fields = [0; 14];
        fields[0] = first;
        Self {
            signo: signal,
            errno: 0,
            code,
            pad: 0,
            fields,
        }
    }

    /// A signal a thread sent (`si_pid` 1, `si_uid` 0).
    fn sent(signal: i32, code: i32) -> Self {
        Self::new(signal, code, super::process::PID)
    }
}

/// `struct sigcontext` (x86_64).
#[derive(Clone, Copy)]
#[repr(C)]
struct SigContext {
    regs: UserRegs,
    cs_gs_fs_ss: u64,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    fpstate: u64,
    reserved: [u64; 8],
}

/// `struct ucontext` as the kernel lays it out.
#[derive(Clone, Copy)]
#[repr(C)]
struct UContext {
    flags: u64,
    link: u64,
    stack: SignalStack,
    mcontext: SigContext,
    sigmask: u64,
}

/// `struct rt_sigframe` (x86_64): where a handler's RSP points.
#[derive(Clone, Copy)]
#[repr(C)]
struct RtSigFrame {
    /// The handler's return address: `sa_restorer`.
    pretcode: u64,
    uc: UContext,
    info: SigInfo,
}

const _: () = {
    assert!(size_of::<SigInfo>() == 128);
    assert!(size_of::<SigContext>() == 256);
    assert!(size_of::<UContext>() == 304);
    assert!(size_of::<RtSigFrame>() == 440);
};

/// Why a CPU exception happened, for the signal frame.
#[derive(Clone, Copy, Default)]
struct Trap {
    number: u64,
    error_code: u64,
    cr2: u64,
}

/// Write the frame for `signal` (whose action is `action`, interrupting
/// `regs`) on the right stack, block what the action says, and give the
/// registers the handler starts with.
fn setup(
    signal: i32,
    action: SigAction,
    info: SigInfo,
    regs: &UserRegs,
    trap: Trap,
) -> Result<UserRegs, Errno> {
    let thread = with_thread(|t| *t);
    let is_on_alt = thread.alt.holds(regs.rsp);
    let top = if action.flags & SA_ONSTACK != 0 && thread.alt.is_enabled() && !is_on_alt {
        thread.alt.sp.wrapping_add(thread.alt.size)
    } else {
        // Below the interrupted code's red zone.
        regs.rsp.wrapping_sub(128)
    };
    let fp_bytes = arch::fp_frame_bytes() as u64;
    let fp_at = top.wrapping_sub(fp_bytes) & !63;
    if !arch::fp_save_to(user::slice_mut(ptr(fp_at), super::size(fp_bytes))?) {
        return Err(errno::EFAULT);
    }
    let frame_at = (fp_at.wrapping_sub(size_of::<RtSigFrame>() as u64) & !15).wrapping_sub(8);
    let mut shown_stack = thread.alt;
    shown_stack.flags = if is_on_alt {
        SS_ONSTACK
    } else if thread.alt.is_enabled() {
        0
    } else {
        SS_DISABLE
    };
    let frame = RtSigFrame {
        pretcode: action.restorer,
        uc: UContext {
            flags: 0,
            link: 0,
            stack: shown_stack,
            mcontext: SigContext {
                regs: *regs,
                cs_gs_fs_ss: USER_CS_SS,
                err: trap.error_code,
                trapno: trap.number,
                oldmask: thread.mask,
                cr2: trap.cr2,
                fpstate: fp_at,
                reserved: [0; 8],
            },
            sigmask: thread.mask,
        },
        info,
    };
    user::write(ptr::<RtSigFrame>(frame_at), frame)?;
    // Where `resume` puts the handler's RIP.
    user::slice_mut(ptr(frame_at.wrapping_sub(arch::RESUME_RIP_BELOW)), 8)?;
    let blocked = action.mask
        | if action.flags & SA_NODEFER != 0 {
            0
        } else {
            bit(signal)
        };
    with_thread(|t| t.mask = (t.mask | blocked) & !UNBLOCKABLE);
    if action.flags & SA_RESETHAND != 0
        && let Ok(slot) = index(signal)
    {
        ACTIONS.lock()[slot].handler = SIG_DFL;
    }
    let uc = frame_at + core::mem::offset_of!(RtSigFrame, uc) as u64;
    let info_at = frame_at + core::mem::offset_of!(RtSigFrame, info) as u64;
    Ok(UserRegs {
        rdi: u64::try_from(signal).unwrap_or(0),
        rsi: info_at,
        rdx: uc,
        rax: 0,
        rsp: frame_at,
        rip: action.handler,
        // The handler starts with DF clear, as the ABI wants.
        rflags: regs.rflags & !0x400,
        ..*regs
    })
}

/// Run `signal`'s handler as the system call with the full `frame`
/// returns (with `result`); its frame resumes the call's return. The
/// value to return in RAX.
fn deliver_on_return(frame: &mut SyscallFrame, signal: i32, info: SigInfo, result: u64) -> u64 {
    let action = action(signal);
    match action.handler {
        SIG_IGN => return result,
        SIG_DFL => default_action(signal),
        _ => {}
    }
    let interrupted = UserRegs::of_syscall(frame, result);
    match setup(signal, action, info, &interrupted, Trap::default()) {
        Ok(handler) => handler.into_syscall(frame),
        // No room for the frame: as Linux, a SIGSEGV the program cannot
        // catch.
        Err(_) => {
            klog!("linux: no room on the stack for signal {signal}'s frame");
            super::process::exit_group(128 + SIGSEGV)
        }
    }
}

/// A signal's default action (not `SIG_IGN`, not a handler).
fn default_action(signal: i32) {
    if IGNORED_BY_DEFAULT.contains(&signal) {
        return;
    }
    if signal == SIGABRT {
        process::abort();
    }
    super::process::exit_group(128 + signal)
}

/// A signal the calling thread sends the program (`kill`, `tgkill` to
/// itself; a full frame).
fn send_to_self(frame: &mut SyscallFrame, signal: i32, code: i32) -> SysResult {
    if signal == 0 {
        return Ok(0);
    }
    index(signal)?;
    if with_thread(|t| t.mask) & bit(signal) != 0 {
        with_thread(|t| t.pending |= bit(signal));
        return Ok(0);
    }
    Ok(deliver_on_return(
        frame,
        signal,
        SigInfo::sent(signal, code),
        0,
    ))
}

/// Nonzero while a signal may be waiting for a thread on its way out of a
/// system call: one from outside ([`PROCESS_PENDING`]) or one sent to a
/// particular thread (its `pending`). Every exit from a system call
/// checks it (`arch`); [`deliver_pending`] does the rest.
pub(crate) static SIGNALS_PENDING: AtomicU64 = AtomicU64::new(0);

/// Signals sent to the program from outside (the host, through the VMM)
/// that wait for a thread that does not block them: bit `n - 1` for
/// signal `n`.
static PROCESS_PENDING: AtomicU64 = AtomicU64::new(0);

/// Set [`SIGNALS_PENDING`] from what is pending now. Whoever makes a
/// signal pending sets it under the same lock, so no update is lost.
fn refresh_pending() {
    let threads = THREADS.lock();
    let any =
        PROCESS_PENDING.load(Ordering::SeqCst) != 0 || threads.values().any(|t| t.pending != 0);
    SIGNALS_PENDING.store(u64::from(any), Ordering::SeqCst);
}

/// Signals the host sent the program (`SIGINT`, `SIGTERM` at the VMM):
/// ignored ones go, a default action happens now (the end of the
/// program), and one with a handler waits in [`SIGNALS_PENDING`] for the
/// next system call of a thread that takes it.
pub(super) fn from_host(signals: u64) {
    for signal in (1..=64).filter(|&s| signals & bit(s) != 0) {
        klog!("linux: signal {signal} from the host");
        match action(signal).handler {
            SIG_IGN => {}
            SIG_DFL => default_action(signal),
            _ => {
                let threads = THREADS.lock();
                PROCESS_PENDING.fetch_or(bit(signal), Ordering::SeqCst);
                SIGNALS_PENDING.store(1, Ordering::SeqCst);
                drop(threads);
                // A thread blocked in a call that would take it returns
                // with EINTR, and the handler runs on its way out.
                crate::events::interrupt();
            }
        }
    }
}

/// Whether a signal from outside waits for the calling thread (asked by
/// blocking calls, which then end with `EINTR`).
pub(super) fn is_interrupted() -> bool {
    if SIGNALS_PENDING.load(Ordering::SeqCst) == 0 {
        return false;
    }
    let process = PROCESS_PENDING.load(Ordering::SeqCst);
    with_thread(|t| (t.pending | process) & !t.mask != 0)
}

/// On the way out of a system call with `result` (a full `frame`), while
/// [`SIGNALS_PENDING`] is not empty: run the handler of the lowest pending
/// signal this thread does not block. The value for RAX.
pub(crate) extern "C" fn deliver_pending(frame: &mut SyscallFrame, result: u64) -> u64 {
    match take_ready() {
        Some((signal, code)) => {
            deliver_on_return(frame, signal, SigInfo::sent(signal, code), result)
        }
        None => result,
    }
}

/// The signal this thread should take now, and its `si_code`: one sent
/// to it first, then one sent to the program; taken out of the pending
/// sets.
fn take_ready() -> Option<(i32, i32)> {
    let own = with_thread(|t| {
        let ready = t.pending & !t.mask;
        (ready != 0).then(|| {
            let signal = lowest(ready);
            t.pending &= !bit(signal);
            signal
        })
    });
    let mask = current_mask();
    let delivery = own.map(|signal| (signal, SI_TKILL)).or_else(|| {
        let taken = PROCESS_PENDING.try_update(Ordering::SeqCst, Ordering::SeqCst, |pending| {
            let ready = pending & !mask;
            (ready != 0).then(|| pending & !bit(lowest(ready)))
        });
        taken.ok().map(|before| (lowest(before & !mask), SI_USER))
    });
    refresh_pending();
    delivery
}

/// From the interrupt upcall, which interrupted the program (not the
/// kernel) with `regs`, while a signal is pending: run the handler of one
/// this thread takes now, as Linux does on its way back to user mode
/// (Go's preemption signals need it: the thread they target makes no
/// system call). Returns if there is none (the upcall then resumes).
pub(crate) extern "C" fn deliver_interrupted(regs: &UserRegs) {
    let Some((signal, code)) = take_ready() else {
        return;
    };
    let action = action(signal);
    match action.handler {
        SIG_IGN => return,
        SIG_DFL => {
            default_action(signal);
            return;
        }
        _ => {}
    }
    match setup(
        signal,
        action,
        SigInfo::sent(signal, code),
        regs,
        Trap::default(),
    ) {
        Ok(handler) => sched::resume_program(&handler),
        Err(_) => {
            klog!("linux: no room on the stack for signal {signal}'s frame");
            super::process::exit_group(128 + SIGSEGV)
        }
    }
}

/// `kill(2)`: only the program itself (pid 1, or 0 and -1 for every
/// process it may signal).
pub(super) fn kill(frame: &mut SyscallFrame, pid: i32, signal: i32) -> SysResult {
    match pid {
        -1..=1 => send_to_self(frame, signal, SI_USER),
        _ => Err(errno::ESRCH),
    }
}

/// `tgkill(2)`/`tkill(2)` (`group` 0): a thread of the program. Only the
/// calling thread takes a handler; another thread with one is `ENOSYS`.
pub(super) fn tgkill(frame: &mut SyscallFrame, group: i32, tid: i32, signal: i32) -> SysResult {
    if !matches!(group, 0 | 1) || tid <= 0 {
        return Err(if tid <= 0 {
            errno::EINVAL
        } else {
            errno::ESRCH
        });
    }
    if tid.cast_unsigned() != sched::current_tid() {
        if !sched::is_thread(tid) {
            return Err(errno::ESRCH);
        }
        return send_to_thread(tid.cast_unsigned(), signal);
    }
    send_to_self(frame, signal, SI_TKILL)
}

/// A signal for another thread of the program: its handler runs when
/// that thread next leaves a system call, and a call it is blocked in
/// (waiting for a descriptor) ends with `EINTR`. An ignored signal is
/// nothing; a default action that ends the program ends it now.
fn send_to_thread(tid: u32, signal: i32) -> SysResult {
    if signal == 0 {
        return Ok(0);
    }
    index(signal)?;
    match action(signal).handler {
        SIG_IGN => return Ok(0),
        SIG_DFL => {
            default_action(signal);
            return Ok(0);
        }
        _ => {}
    }
    let mut threads = THREADS.lock();
    threads.entry(tid).or_insert(NEW_THREAD).pending |= bit(signal);
    SIGNALS_PENDING.store(1, Ordering::SeqCst);
    drop(threads);
    crate::events::interrupt();
    // Running on another core: interrupt it, so that it takes the signal
    // even if it makes no system call.
    sched::interrupt_thread(tid);
    Ok(0)
}

/// `rt_sigreturn(2)`: back to the context the handler's frame holds (its
/// `ucontext` is at the caller's stack pointer). A frame that cannot be
/// read ends the program as the `SIGSEGV` Linux would send.
pub(super) fn rt_sigreturn(frame: &SyscallFrame) -> SysResult {
    let uc_at = frame.rsp;
    let Ok(uc) = user::read(ptr::<UContext>(uc_at)) else {
        bad_frame(uc_at)
    };
    let mut regs = uc.mcontext.regs;
    regs.rflags = UserRegs::sanitised_rflags(regs.rflags);
    // Where `resume` writes the return address must be writable.
    if user::slice_mut(ptr(regs.rsp.wrapping_sub(arch::RESUME_RIP_BELOW)), 8).is_err() {
        bad_frame(uc_at)
    }
    if uc.mcontext.fpstate != 0 {
        let area = user::slice(ptr(uc.mcontext.fpstate), arch::fp_frame_bytes());
        if !area.is_ok_and(arch::fp_restore_from) {
            bad_frame(uc_at)
        }
    }
    let ready = with_thread(|t| {
        t.mask = uc.sigmask & !UNBLOCKABLE;
        // The alternate stack the frame shows (as `sigaltstack` would set
        // it), unless the thread returns onto the current one.
        if !t.alt.holds(regs.rsp) {
            if uc.stack.flags & SS_DISABLE != 0 {
                t.alt = NO_STACK;
            } else if uc.stack.size >= MINSIGSTKSZ {
                t.alt = SignalStack {
                    flags: 0,
                    ..uc.stack
                };
            }
        }
        t.pending & !t.mask
    });
    if ready != 0 {
        // A signal the restored mask unblocks: deliver it now, as if
        // it interrupted the restored context.
        let signal = lowest(ready);
        with_thread(|t| t.pending &= !bit(signal));
        let action = action(signal);
        if action.handler == SIG_DFL {
            default_action(signal);
        } else if action.handler != SIG_IGN
            && let Ok(handler) = setup(
                signal,
                action,
                SigInfo::sent(signal, SI_TKILL),
                &regs,
                Trap::default(),
            )
        {
            regs = handler;
        }
    }
    // RIP's slot was checked writable above (a handler's frame, if one
    // was set up, is right under its RSP).
    sched::resume_program(&regs)
}

fn bad_frame(at: u64) -> ! {
    klog!("linux: rt_sigreturn with a bad signal frame at {at:#x}");
    super::process::exit_group(128 + SIGSEGV)
}

/// Whether `addr` is in the kernel's image (from the image's start to
/// the program's).
fn is_in_kernel(addr: u64) -> bool {
    bootinfo::info().is_some_and(|i| (i.image_start..i.linux.start).contains(&addr))
}

/// The signal and `si_code` a CPU exception raises (Linux's x86 traps).
fn signal_of(frame: &ExceptionFrame) -> Option<(i32, i32, u64)> {
    Some(match frame.vector {
        0 => (SIGFPE, FPE_INTDIV, frame.rip),
        1 | 3 => (SIGTRAP, TRAP_BRKPT, frame.rip),
        4 | 5 => (SIGSEGV, SI_KERNEL, 0),
        6 => (SIGILL, ILL_ILLOPN, frame.rip),
        12 => (SIGBUS, SI_KERNEL, 0),
        13 => (SIGSEGV, SI_KERNEL, 0),
        14 => {
            // Error code bit 0: a protection violation, not a missing page
            // (a mapped page without rights is not present either, and is
            // a denied access too). Page 0 (the trampoline) and the kernel
            // are mapped, but not for the program: there, as on Linux,
            // nothing is.
            let is_kernels = frame.cr2 < PAGE_SIZE || is_in_kernel(frame.cr2);
            let is_mapped = frame.error_code & 1 != 0 || mm::is_mapped(frame.cr2);
            let code = if is_mapped && !is_kernels {
                SEGV_ACCERR
            } else {
                SEGV_MAPERR
            };
            (SIGSEGV, code, frame.cr2)
        }
        16 | 19 => (SIGFPE, FPE_FLTINV, frame.rip),
        17 => (SIGBUS, BUS_ADRALN, frame.cr2),
        _ => return None,
    })
}

/// The exception hook (`fault::set_exception_hook`): a fault in the
/// program whose signal has a handler and is not blocked runs the
/// handler; otherwise this returns and the fault is reported.
pub(super) fn on_exception(frame: &ExceptionFrame) {
    let Some((signal, code, addr)) = signal_of(frame) else {
        return;
    };
    // A fault in the kernel is the kernel's.
    if is_in_kernel(frame.rip) {
        return;
    }
    let action = action(signal);
    if action.handler <= SIG_IGN || with_thread(|t| t.mask) & bit(signal) != 0 {
        return;
    }
    let regs = UserRegs::of_exception(frame);
    let trap = Trap {
        number: frame.vector,
        error_code: frame.error_code,
        cr2: frame.cr2,
    };
    let Ok(handler) = setup(
        signal,
        action,
        SigInfo::new(signal, code, addr),
        &regs,
        trap,
    ) else {
        return;
    };
    sched::resume_program_from_exception(&handler)
}

/// A write's result: `EPIPE` (the reader is gone) raises `SIGPIPE`,
/// whose default action ends the program (exit code 141). Ignored, or
/// with a handler (which is not run: the call is not a full frame), the
/// call fails with `EPIPE`.
pub(super) fn on_broken_pipe(result: SysResult) -> SysResult {
    if result == Err(errno::EPIPE) && action(SIGPIPE).handler == SIG_DFL {
        super::process::exit_group(128 + SIGPIPE);
    }
    result
}
