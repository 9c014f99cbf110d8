//! Threads, scheduled cooperatively on one core at CPL3.
//!
//! A thread runs until it blocks (futex wait, join, sleep), yields or
//! exits; then the scheduler switches to the next ready thread in FIFO
//! order (`arch::switch`, which never enters CPL0). When no thread is
//! ready, the core idles until the earliest timer: short waits spin on the
//! TSC, longer ones block the vCPU on the host (`time::sleep_ns`). When no
//! thread is ready and none has a timer, nothing can ever run again: that
//! is reported as a deadlock and the VM stops.
//!
//! Preemption: while other threads are ready, the local APIC timer is
//! armed for one time slice ([`SLICE_NS`]); when it fires, the CPL0 stub
//! hands the interrupt to [`preempt`] at CPL3, which moves the running
//! thread to the back of the queue, unless it holds a kernel lock
//! (`sync`), in which case it tries again shortly. With one thread ready
//! no timer runs (tickless).
//!
//! Not yet: more than one core, guard pages below thread stacks.
//!
//! Locking: one lock for the whole scheduler. It is released before the
//! switch; with one core and no preemption nothing runs in between.
//!
//! `unsafe` here: the two calls into `arch` that switch stacks and build
//! a new thread's first frame, whose preconditions are the scheduler's own
//! invariants (see `docs/safety.md`).
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::{ExitKind, Stream};

use crate::sync::{Lock, LockGuard};
use crate::{arch, boot, console, hypervisor, mm, sync, time};

/// A thread id (hermit-abi's `Tid`).
pub(crate) type Tid = u32;

/// The thread that runs `main`.
const MAIN_TID: Tid = 1;

/// How long a thread runs before another ready thread gets the core.
const SLICE_NS: u32 = 10_000_000;
/// How soon to retry a preemption that found a kernel lock held.
const RETRY_NS: u32 = 200_000;

/// Whether the APIC timer is counting down (it is one-shot).
static IS_TIMER_ARMED: AtomicBool = AtomicBool::new(false);
/// Whether the APIC and the timer gates are set up.
static IS_TIMER_READY: AtomicBool = AtomicBool::new(false);

/// Start a time slice unless one is running.
fn arm_timer(ns: u32) {
    if IS_TIMER_ARMED.swap(true, Ordering::Relaxed) {
        return;
    }
    if !IS_TIMER_READY.swap(true, Ordering::Relaxed) {
        arch::preempt_init();
        arch::install_timer_gates();
        arch::timer_init();
    }
    arch::timer_arm(ns);
}

/// Smallest stack a spawned thread gets.
const MIN_STACK_BYTES: usize = 64 << 10;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Ready,
    Running,
    Blocked,
    Finished,
}

struct Thread {
    saved_rsp: u64,
    fs_base: u64,
    state: State,
    /// What it waits on and until when, so a wake-up or a timeout can
    /// take it off the other list.
    futex: Option<u64>,
    deadline_ns: Option<u64>,
    /// The last wait ended by its timeout rather than a wake-up.
    is_timed_out: bool,
    /// Asked `block_current_task`: the next yield blocks until
    /// `wakeup_task`.
    is_parked: bool,
    /// Waiting in `join` for this thread.
    joiner: Option<Tid>,
    /// `None` for the main thread, whose stack and TLS live for ever.
    memory: Option<(mm::Stack, mm::TlsBlock)>,
}

impl Thread {
    fn new(state: State) -> Box<Self> {
        Box::new(Self {
            saved_rsp: 0,
            fs_base: 0,
            state,
            futex: None,
            deadline_ns: None,
            is_timed_out: false,
            is_parked: false,
            joiner: None,
            memory: None,
        })
    }
}

struct Scheduler {
    /// Boxed so that a thread's `saved_rsp` keeps its address while the
    /// map changes.
    threads: BTreeMap<Tid, Box<Thread>>,
    ready: VecDeque<Tid>,
    current: Tid,
    next_tid: Tid,
    /// (deadline, thread) of every wait with a timeout.
    timers: BTreeSet<(u64, Tid)>,
    /// Futex address → its waiters in arrival order.
    futexes: BTreeMap<u64, VecDeque<Tid>>,
    /// Stack and TLS of a thread that just exited, freed by the next one
    /// to run (the exiting thread is still on that stack when it leaves).
    exited: Option<(mm::Stack, mm::TlsBlock)>,
}

static SCHED: Lock<Option<Scheduler>> = Lock::new(None);

fn lock() -> LockGuard<'static, Option<Scheduler>> {
    let mut guard = SCHED.lock();
    if guard.is_none() {
        let mut threads = BTreeMap::new();
        threads.insert(MAIN_TID, Thread::new(State::Running));
        *guard = Some(Scheduler {
            threads,
            ready: VecDeque::new(),
            current: MAIN_TID,
            next_tid: MAIN_TID + 1,
            timers: BTreeSet::new(),
            futexes: BTreeMap::new(),
            exited: None,
        });
    }
    guard
}

/// The scheduler behind a guard from [`lock`].
fn sched<'a>(guard: &'a mut LockGuard<'static, Option<Scheduler>>) -> &'a mut Scheduler {
    match guard.as_mut() {
        Some(s) => s,
        None => unreachable!("lock() initialises the scheduler"),
    }
}

impl Scheduler {
    fn thread(&mut self, tid: Tid) -> &mut Thread {
        match self.threads.get_mut(&tid) {
            Some(t) => t,
            None => unreachable!("thread {tid} is referenced but gone"),
        }
    }

    /// Make a blocked thread ready, taking it off its futex and timer.
    fn wake(&mut self, tid: Tid, is_timeout: bool) {
        let thread = self.thread(tid);
        let (futex, deadline) = (thread.futex.take(), thread.deadline_ns.take());
        thread.is_timed_out = is_timeout;
        let was_blocked = thread.state == State::Blocked;
        if was_blocked {
            thread.state = State::Ready;
        }
        if let Some(deadline) = deadline {
            self.timers.remove(&(deadline, tid));
        }
        if let Some(addr) = futex
            && let Some(queue) = self.futexes.get_mut(&addr)
        {
            queue.retain(|&t| t != tid);
            if queue.is_empty() {
                self.futexes.remove(&addr);
            }
        }
        if was_blocked {
            self.ready.push_back(tid);
            arm_timer(SLICE_NS);
        }
    }

    /// Wake every thread whose timer has expired.
    fn fire_timers(&mut self, now_ns: u64) {
        while let Some(&(deadline, tid)) = self.timers.first() {
            if deadline > now_ns {
                break;
            }
            self.wake(tid, true);
        }
    }

    /// While `next` runs: a time slice if other threads are ready, or a
    /// timer for the earliest sleeper (at most one slice away), so a thread
    /// that never blocks cannot keep the others from running.
    fn arm_for_others(&self) {
        if !self.ready.is_empty() {
            arm_timer(SLICE_NS);
        } else if let Some(&(deadline, _)) = self.timers.first() {
            let left = deadline.saturating_sub(time::monotonic_ns());
            arm_timer(u32::try_from(left).unwrap_or(SLICE_NS).clamp(1, SLICE_NS));
        }
    }

    /// Block the current thread (already on its wait list, if any) with an
    /// optional deadline.
    fn block_current(&mut self, deadline_ns: Option<u64>) {
        let tid = self.current;
        let thread = self.thread(tid);
        thread.state = State::Blocked;
        thread.is_timed_out = false;
        thread.deadline_ns = deadline_ns;
        if let Some(deadline) = deadline_ns {
            self.timers.insert((deadline, tid));
        }
    }
}

/// Leave the current thread, which is already marked blocked, ready
/// (queued) or finished, and run the next ready one. Returns when this
/// thread runs again.
fn switch_away(mut guard: LockGuard<'static, Option<Scheduler>>) {
    // No preemption from here until the switch is complete: the thread
    // that runs next re-enables it (here, or in `thread_start`).
    sync::preempt_disable();
    let next = loop {
        let s = sched(&mut guard);
        s.fire_timers(time::monotonic_ns());
        if let Some(next) = s.ready.pop_front() {
            break next;
        }
        let Some(&(deadline, _)) = s.timers.first() else {
            drop(guard);
            deadlock();
        };
        drop(guard);
        time::sleep_ns(deadline.saturating_sub(time::monotonic_ns()));
        guard = lock();
    };
    let s = sched(&mut guard);
    let current = s.current;
    s.thread(next).state = State::Running;
    s.arm_for_others();
    if next == current {
        drop(guard);
        sync::preempt_enable();
        return;
    }
    let fs_base = arch::fs_base();
    let save: *mut u64 = {
        let thread = s.thread(current);
        thread.fs_base = fs_base;
        &mut thread.saved_rsp
    };
    let (next_rsp, next_fs) = {
        let thread = s.thread(next);
        (thread.saved_rsp, thread.fs_base)
    };
    s.current = next;
    drop(guard);
    // No TLS is touched by the kernel, so the FS base may change here.
    arch::set_fs_base(next_fs);
    // SAFETY: `save` points into the current thread's boxed record, which
    // stays allocated until the thread is joined, after it finished (a
    // finished thread is never switched back to, and the join happens
    // after this switch completed). `next_rsp` was saved by `switch` or
    // made by `new_thread_stack` for a thread that is not running, whose
    // stack is allocated while it is not finished.
    unsafe { arch::switch(save, next_rsp) };
    sync::preempt_enable();
    free_exited();
}

/// Free the stack of a thread that exited just before we ran.
fn free_exited() {
    let exited = sched(&mut lock()).exited.take();
    drop(exited);
}

fn deadlock() -> ! {
    use core::fmt::Write as _;
    console::flush();
    let _ = writeln!(
        console::DirectWriter::new(Stream::Stderr),
        "eremite: deadlock: every thread is blocked and no timer can wake one"
    );
    hypervisor::exit(ExitKind::Deadlock, 0)
}

/// Wait while `*word == expected`, up to `timeout_ns` (relative):
/// `EAGAIN` if the value differs, `ETIMEDOUT` after the timeout.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout_ns: Option<u64>,
) -> Result<(), Errno> {
    let mut guard = lock();
    if word.load(Ordering::SeqCst) != expected {
        return Err(errno::EAGAIN);
    }
    let addr = word as *const AtomicU32 as u64;
    let s = sched(&mut guard);
    let tid = s.current;
    s.futexes.entry(addr).or_default().push_back(tid);
    let deadline = timeout_ns.map(|ns| time::monotonic_ns().saturating_add(ns));
    s.block_current(deadline);
    s.thread(tid).futex = Some(addr);
    switch_away(guard);
    if sched(&mut lock()).thread(tid).is_timed_out {
        Err(errno::ETIMEDOUT)
    } else {
        Ok(())
    }
}

/// Wake up to `count` waiters of the futex `word` (all for a negative
/// count); the number woken.
pub(crate) fn futex_wake(word: &AtomicU32, count: i32) -> i32 {
    let addr = word as *const AtomicU32 as u64;
    let mut guard = lock();
    let s = sched(&mut guard);
    let limit = usize::try_from(count).unwrap_or(usize::MAX);
    let mut woken = 0;
    while woken < limit {
        let Some(tid) = s.futexes.get(&addr).and_then(|q| q.front().copied()) else {
            break;
        };
        s.wake(tid, false);
        woken += 1;
    }
    i32::try_from(woken).unwrap_or(i32::MAX)
}

/// Sleep for at least `duration_ns`, letting other threads run.
pub(crate) fn sleep_ns(duration_ns: u64) {
    let mut guard = lock();
    let s = sched(&mut guard);
    s.block_current(Some(time::monotonic_ns().saturating_add(duration_ns)));
    switch_away(guard);
}

/// Let the other ready threads run first.
pub(crate) fn yield_now() {
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current;
    let thread = s.thread(tid);
    if thread.is_parked {
        thread.is_parked = false;
        s.block_current(None);
        switch_away(guard);
        return;
    }
    // Sleepers whose time has come go first, ahead of this thread.
    if !s.timers.is_empty() {
        s.fire_timers(time::monotonic_ns());
    }
    if s.ready.is_empty() {
        s.arm_for_others();
        return;
    }
    s.thread(tid).state = State::Ready;
    s.ready.push_back(tid);
    switch_away(guard);
}

/// hermit-abi's `block_current_task`: the next [`yield_now`] blocks until
/// [`wakeup`]; with a timeout, it also ends after `timeout_ns`.
pub(crate) fn park_current(timeout_ns: Option<u64>) {
    let mut guard = lock();
    let s = sched(&mut guard);
    match timeout_ns {
        None => {
            let tid = s.current;
            s.thread(tid).is_parked = true;
        }
        Some(ns) => {
            s.block_current(Some(time::monotonic_ns().saturating_add(ns)));
            switch_away(guard);
        }
    }
}

/// hermit-abi's `wakeup_task`.
pub(crate) fn wakeup(tid: Tid) {
    let mut guard = lock();
    let s = sched(&mut guard);
    if let Some(thread) = s.threads.get_mut(&tid) {
        thread.is_parked = false;
        if thread.state == State::Blocked && thread.futex.is_none() {
            s.wake(tid, false);
        }
    }
}

/// Start a thread running `entry(arg)` with a stack of at least
/// `stack_bytes`; its id, or `ENOMEM`.
pub(crate) fn spawn(
    entry: extern "C" fn(usize),
    arg: usize,
    stack_bytes: usize,
) -> Result<Tid, Errno> {
    let template = boot::info().map(|info| info.tls).unwrap_or_default();
    let tls = mm::create_tls(&template).ok_or(errno::ENOMEM)?;
    let stack = mm::Stack::new(stack_bytes.max(MIN_STACK_BYTES)).ok_or(errno::ENOMEM)?;
    // SAFETY: the top of a fresh, 16-byte aligned stack of at least 64 KiB
    // that only this thread will use.
    let rsp = unsafe { arch::new_thread_stack(stack.top(), entry as usize as u64, arg as u64) };
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.next_tid;
    s.next_tid = tid.checked_add(1).ok_or(errno::EAGAIN)?;
    let mut thread = Thread::new(State::Ready);
    thread.saved_rsp = rsp;
    thread.fs_base = tls.thread_pointer;
    thread.memory = Some((stack, tls));
    s.threads.insert(tid, thread);
    s.ready.push_back(tid);
    arm_timer(SLICE_NS);
    Ok(tid)
}

/// Where every spawned thread starts (called by the entry stub in
/// `arch`), and how it ends.
pub(crate) extern "C" fn thread_start(entry: extern "C" fn(usize), arg: usize) -> ! {
    // The switch that started this thread left preemption off.
    sync::preempt_enable();
    free_exited();
    entry(arg);
    exit_current()
}

/// End the current (spawned) thread: wake its joiner and never return.
fn exit_current() -> ! {
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current;
    let thread = s.thread(tid);
    thread.state = State::Finished;
    let memory = thread.memory.take();
    let joiner = thread.joiner.take();
    s.exited = memory;
    if let Some(joiner) = joiner {
        s.wake(joiner, false);
    }
    switch_away(guard);
    unreachable!("a finished thread was switched back to")
}

/// The scheduler's half of a timer interrupt (called by the CPL3 upcall
/// in `arch`, with the interrupted state saved): end the running thread's
/// time slice.
pub(crate) extern "C" fn preempt() {
    IS_TIMER_ARMED.store(false, Ordering::Relaxed);
    arch::eoi();
    if !sync::is_preemptible() {
        arm_timer(RETRY_NS);
        return;
    }
    yield_now();
}

/// Wait for thread `tid` to finish, then forget it.
pub(crate) fn join(tid: Tid) -> Result<(), Errno> {
    let mut guard = lock();
    let s = sched(&mut guard);
    if tid == s.current {
        return Err(errno::EDEADLK);
    }
    let current = s.current;
    let target = s.threads.get_mut(&tid).ok_or(errno::EINVAL)?;
    if target.state != State::Finished {
        if target.joiner.is_some() {
            return Err(errno::EINVAL);
        }
        target.joiner = Some(current);
        s.block_current(None);
        switch_away(guard);
        guard = lock();
    }
    sched(&mut guard).threads.remove(&tid);
    Ok(())
}
