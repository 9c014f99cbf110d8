//! Threads on every CPU, scheduled at CPL3.
//!
//! Each CPU (core) has its own run queue, timers and idle loop. A thread
//! is bound to a core when it is spawned (round robin, or the core the
//! caller names) and never moves. A thread runs until it blocks (futex
//! wait, join, sleep), yields or exits; then its core switches to its next
//! ready thread in FIFO order (`arch::switch`, which never enters CPL0).
//!
//! Idle: a core with no ready thread spins for a moment on its `wake`
//! word (see `cpu`), then arms its APIC timer for its earliest sleeper and
//! halts in the CPL0 gate. Waking a thread of another core sets that
//! core's `wake` word and, unless the core is spinning, sends it an IPI.
//! When no thread on any core is ready or running and no timer is set,
//! nothing can ever run again: that is reported as a deadlock and the VM
//! stops.
//!
//! Preemption: while other threads are ready on a core, its APIC timer is
//! armed for one time slice ([`SLICE_NS`]); when it fires (or an IPI
//! arrives), the CPL0 stub hands the interrupt to [`interrupt`] at CPL3,
//! which moves the running thread to the back of its queue, unless it
//! holds a kernel lock (`sync`), in which case it tries again shortly.
//! With one thread ready no timer runs (tickless).
//!
//! Stacks have guard pages below them (`mm::Stack`): an overflow faults
//! and is reported, naming the thread.
//!
//! Locking: one lock for the whole scheduler, held only for short
//! bookkeeping; it is released before a switch, and the switching core
//! keeps preemption off until the switch is complete.
//!
//! `unsafe` here: the two calls into `arch` that switch stacks and build
//! a new thread's first frame, whose preconditions are the scheduler's own
//! invariants (see `docs/safety.md`).
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::{ExitKind, Stream};
use eremite_interface::layout::{DEVICE_VECTOR, HOST_SIGNAL_VECTOR, TIMER_VECTOR, WAKE_VECTOR};

use crate::cpu::{self, Mode};
use crate::sync::{Lock, LockGuard};
use crate::{arch, bootinfo, console, functrace, hypervisor, mm, sync, threadlist, time};

/// A thread id (hermit-abi's `Tid`).
pub(crate) type Tid = u32;

/// The thread that runs `main`.
pub(crate) const MAIN_TID: Tid = 1;

/// How long a thread runs before another ready thread gets the core.
const SLICE_NS: u32 = 10_000_000;
/// How soon to retry a preemption that found a kernel lock held.
const RETRY_NS: u32 = 200_000;

/// How long an idle core spins, watching for work from another core,
/// before it halts (a halt and the IPI that ends it cost far more).
const IDLE_SPIN_NS: u64 = 50_000;
/// How long the card's CPU spins, watching the card too: a frame caught
/// so costs no interrupt.
const WATCH_SPIN_NS: u64 = 200_000;

/// Start a time slice on this core unless one is running.
fn arm_timer(ns: u32) {
    if !cpu::this().is_timer_armed.swap(true, Ordering::Relaxed) {
        arch::timer_arm(ns);
    }
}

/// Make this core's timer fire within `ns`, even if it is armed for later:
/// whoever handles that interrupt re-arms it for the slice or the earliest
/// sleeper (`arm_for_others`), so nothing is lost.
fn arm_timer_within(ns: u32) {
    cpu::this().is_timer_armed.store(true, Ordering::Relaxed);
    arch::timer_arm(ns);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Ready,
    Running,
    Blocked,
    Finished,
}

struct Thread {
    /// The core it runs on.
    core: usize,
    saved_rsp: u64,
    fs_base: u64,
    state: State,
    /// What it waits on and until when, so a wake-up or a timeout can
    /// take it off the other list.
    futex: Option<u64>,
    deadline_ns: Option<u64>,
    /// The last wait ended by its timeout rather than a wake-up.
    is_timed_out: bool,
    /// Blocked on a word that a device interrupt may change (the network
    /// waits for packets): never counted as a deadlock.
    is_waiting_for_device: bool,
    /// Asked `block_current_task`: the next yield blocks until
    /// `wakeup_task`.
    is_parked: bool,
    /// A kernel thread that serves every other (the network's): woken, it
    /// goes to the front of its core's ready queue, not behind every
    /// program thread there.
    is_urgent: bool,
    /// Waiting in `join` for this thread.
    joiner: Option<Tid>,
    /// Its stack and TLS block when the kernel made them (freed when it
    /// exits); `None` for the main thread, whose live for ever, and for
    /// threads that brought their own.
    stack: Option<mm::Stack>,
    tls: Option<mm::TlsBlock>,
    /// The address of a word cleared and futex-woken when it exits
    /// (Linux's `clear_child_tid`).
    clear_on_exit: Option<u64>,
    /// A Linux thread's system-call stack (its top; 0 for others), and
    /// where its extended state is kept while it is switched away: its
    /// program expects a system call to keep its XMM registers, so they
    /// are saved at every switch, not only at preemption.
    syscall_stack: u64,
    fp_area: Option<Box<arch::FpArea>>,
    /// Memory to unmap when it exits: a range it unmapped while its stack
    /// pointer was in it (musl's detached threads unmap their own stack,
    /// then exit; the exit's rewritten `syscall` is a `call`, which needs
    /// the stack for a moment more).
    unmap_at_exit: Option<(u64, usize)>,
    /// Its `errno` while it does not run.
    errno: i32,
    /// Its name, NUL-padded (Linux's `comm`): the program's for the main
    /// thread, the spawner's for a new one, until it sets its own.
    name: ThreadName,
}

impl Thread {
    /// Where its stack pointer is kept while it is switched away (the
    /// record is boxed, so this stays put while it lives).
    fn saved_rsp_at(&self) -> u64 {
        &raw const self.saved_rsp as u64
    }

    /// Where its FS base is kept while it is switched away (as above).
    fn fs_base_at(&self) -> u64 {
        &raw const self.fs_base as u64
    }

    /// Where its name is kept (as above).
    fn name_at(&self) -> u64 {
        self.name.as_ptr() as u64
    }

    /// Tell the debugger's thread list about it.
    fn list(&self, tid: Tid) {
        threadlist::added(tid, self.saved_rsp_at(), self.fs_base_at(), self.name_at());
    }

    fn new(core: usize, state: State, name: ThreadName) -> Box<Self> {
        Box::new(Self {
            core,
            saved_rsp: 0,
            fs_base: 0,
            state,
            futex: None,
            deadline_ns: None,
            is_timed_out: false,
            is_waiting_for_device: false,
            is_parked: false,
            is_urgent: false,
            joiner: None,
            stack: None,
            tls: None,
            clear_on_exit: None,
            syscall_stack: 0,
            fp_area: None,
            unmap_at_exit: None,
            errno: 0,
            name,
        })
    }
}

/// One core's share of the scheduler.
struct Core {
    ready: VecDeque<Tid>,
    current: Tid,
    /// (deadline, thread) of every wait with a timeout on this core.
    timers: BTreeSet<(u64, Tid)>,
    /// Stack and TLS of a thread that just exited, freed by the next one
    /// to run (the exiting thread is still on that stack when it leaves).
    exited: (Option<mm::Stack>, Option<mm::TlsBlock>),
    /// Where a finished thread's last stack pointer goes when its core
    /// leaves it (its record may be gone by then).
    scratch_rsp: u64,
}

impl Core {
    fn new(current: Tid) -> Self {
        Self {
            ready: VecDeque::new(),
            current,
            timers: BTreeSet::new(),
            exited: (None, None),
            scratch_rsp: 0,
        }
    }

    fn earliest_deadline(&self) -> Option<u64> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }
}

struct Scheduler {
    /// Boxed so that a thread's `saved_rsp` keeps its address while the
    /// map changes.
    threads: BTreeMap<Tid, Box<Thread>>,
    /// Indexed by CPU index.
    cores: Vec<Core>,
    next_tid: Tid,
    /// Where the next thread goes when its spawner does not say.
    next_core: usize,
    /// Futex address → its waiters in arrival order.
    futexes: BTreeMap<u64, VecDeque<Tid>>,
}

static SCHED: Lock<Option<Scheduler>> = Lock::new(None);

fn lock() -> LockGuard<'static, Option<Scheduler>> {
    let mut guard = SCHED.lock();
    if guard.is_none() {
        let cores = bootinfo::cpu_count();
        let mut threads = BTreeMap::new();
        let main = Thread::new(0, State::Running, thread_name(b"main"));
        main.list(MAIN_TID);
        threadlist::switched(0, MAIN_TID);
        threads.insert(MAIN_TID, main);
        *guard = Some(Scheduler {
            threads,
            // Until an application processor starts, its current thread
            // is a placeholder that is never switched to.
            cores: (0..cores).map(|_| Core::new(MAIN_TID)).collect(),
            next_tid: MAIN_TID + 1,
            next_core: 1 % cores,
            futexes: BTreeMap::new(),
        });
    }
    guard
}

/// The spawned thread whose stack (guard pages included) holds `addr`,
/// for fault reports: `None` if there is none, or if the scheduler is
/// locked (the fault hit it mid-change).
pub(crate) fn stack_owner(addr: u64) -> Option<Tid> {
    let guard = SCHED.try_lock()?;
    let s = guard.as_ref()?;
    s.threads
        .iter()
        .find_map(|(&tid, thread)| thread.stack.as_ref()?.contains(addr).then_some(tid))
}

/// The scheduler behind a guard from [`lock`].
fn sched<'a>(guard: &'a mut LockGuard<'static, Option<Scheduler>>) -> &'a mut Scheduler {
    match guard.as_mut() {
        Some(s) => s,
        None => unreachable!("lock() initialises the scheduler"),
    }
}

/// The calling CPU's core index.
fn here() -> usize {
    cpu::this().index as usize
}

impl Scheduler {
    fn thread(&mut self, tid: Tid) -> &mut Thread {
        match self.threads.get_mut(&tid) {
            Some(t) => t,
            None => unreachable!("thread {tid} is referenced but gone"),
        }
    }

    fn core(&mut self, core: usize) -> &mut Core {
        match self.cores.get_mut(core) {
            Some(c) => c,
            None => unreachable!("core {core} does not exist"),
        }
    }

    /// The system-call stack of the thread running on this core.
    fn thread_syscall_stack(&mut self) -> u64 {
        let tid = self.current();
        self.thread(tid).syscall_stack
    }

    /// The thread running on this core.
    fn current(&self) -> Tid {
        self.cores.get(here()).map_or(MAIN_TID, |c| c.current)
    }

    /// Make a blocked thread ready, taking it off its futex and timer.
    fn wake(&mut self, tid: Tid, is_timeout: bool) {
        let thread = self.thread(tid);
        let (futex, deadline) = (thread.futex.take(), thread.deadline_ns.take());
        thread.is_timed_out = is_timeout;
        thread.is_waiting_for_device = false;
        let core = thread.core;
        let was_blocked = thread.state == State::Blocked;
        if was_blocked {
            thread.state = State::Ready;
        }
        if let Some(deadline) = deadline {
            self.core(core).timers.remove(&(deadline, tid));
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
            if self.thread(tid).is_urgent {
                self.core(core).ready.push_front(tid);
            } else {
                self.core(core).ready.push_back(tid);
            }
            if core == here() {
                arm_timer(SLICE_NS);
            } else {
                kick(core);
            }
        }
    }

    /// Wake up to `count` waiters of the futex `word` (all for a negative
    /// count); the number woken.
    fn wake_futex(&mut self, word: &AtomicU32, count: i32) -> i32 {
        let addr = word as *const AtomicU32 as u64;
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        let mut woken = 0;
        while woken < limit {
            let Some(tid) = self.futexes.get(&addr).and_then(|q| q.front().copied()) else {
                break;
            };
            self.wake(tid, false);
            woken += 1;
        }
        i32::try_from(woken).unwrap_or(i32::MAX)
    }

    /// Wake every thread of this core whose timer has expired.
    fn fire_timers(&mut self, now_ns: u64) {
        let core = here();
        while let Some(&(deadline, tid)) = self.core(core).timers.first() {
            if deadline > now_ns {
                break;
            }
            self.wake(tid, true);
        }
    }

    /// While a thread runs on this core: a time slice if other threads
    /// are ready, or a timer for the earliest sleeper (at most one slice
    /// away), so a thread that never blocks cannot keep the others from
    /// running.
    fn arm_for_others(&mut self) {
        let core = self.core(here());
        if !core.ready.is_empty() {
            arm_timer(SLICE_NS);
        } else if let Some(deadline) = core.earliest_deadline() {
            let left = deadline.saturating_sub(time::monotonic_ns());
            arm_timer(u32::try_from(left).unwrap_or(SLICE_NS).clamp(1, SLICE_NS));
        }
    }

    /// Block the current thread (already on its wait list, if any) with an
    /// optional deadline.
    fn block_current(&mut self, deadline_ns: Option<u64>) {
        let tid = self.current();
        let thread = self.thread(tid);
        thread.state = State::Blocked;
        thread.is_timed_out = false;
        thread.deadline_ns = deadline_ns;
        if let Some(deadline) = deadline_ns {
            self.core(here()).timers.insert((deadline, tid));
        }
    }

    /// Whether nothing can ever run again: no thread ready or running on
    /// any core, no timer that could make one ready, and none waiting for
    /// a device.
    fn is_deadlocked(&self) -> bool {
        self.cores
            .iter()
            .all(|c| c.ready.is_empty() && c.timers.is_empty())
            && self.threads.values().all(|t| match t.state {
                State::Ready | State::Running => false,
                State::Blocked => !t.is_waiting_for_device,
                State::Finished => true,
            })
    }
}

/// A device whose interrupts an idle CPU can save by watching it (the
/// network card, see `net`), registered by the module that drives it: the
/// scheduler knows nothing of devices.
pub(crate) trait DeviceWatch: Sync {
    /// The CPU that takes the device's interrupts and watches it.
    fn cpu(&self) -> usize;
    /// Start watching, with the device's interrupts off: whether there is
    /// anything to watch (if so, [`DeviceWatch::end`] follows).
    fn begin(&self) -> bool;
    /// Whether the device has work waiting for its thread.
    fn has_work(&self) -> bool;
    /// Stop watching, interrupts back on: whether work came meanwhile
    /// (then no interrupt may come for it).
    fn end(&self) -> bool;
    /// The device interrupted, or [`DeviceWatch::end`] found work; called
    /// with no scheduler lock held.
    fn interrupt(&self);
}

static DEVICE: spin::Once<&'static dyn DeviceWatch> = spin::Once::new();

/// Let the idle loop watch `device` and hand it its interrupts (the first
/// registration wins; there is one device).
pub(crate) fn register_device(device: &'static dyn DeviceWatch) {
    DEVICE.call_once(|| device);
}

/// Tell core `core` that it has a new ready thread: set its `wake` word,
/// and interrupt it unless it is spinning on that word.
fn kick(core: usize) {
    let target = cpu::get(core);
    target.wake.store(1, Ordering::SeqCst);
    if target.mode() != Mode::Spinning {
        arch::send_ipi(target.index, WAKE_VECTOR);
    }
}

/// Interrupt thread `tid` if it is running on another core, so that it
/// enters its interrupt upcall soon (a signal waits for it there: a
/// thread that runs without system calls, on a core of its own, might
/// otherwise take no interrupt for a long time).
pub(crate) fn interrupt_thread(tid: Tid) {
    let mut guard = lock();
    let s = sched(&mut guard);
    let here = here();
    let target = match s.threads.get(&tid) {
        Some(thread) if thread.state == State::Running && thread.core != here => thread.core,
        _ => return,
    };
    drop(guard);
    kick(target);
}

/// Wait on this core for work from another core, an interrupt, or
/// `deadline_ns`: spin briefly, then halt (with the APIC timer armed for
/// the deadline). Called without the scheduler lock, after clearing this
/// core's `wake` word under it.
fn idle(deadline_ns: Option<u64>) {
    let this = cpu::this();
    let deadline = deadline_ns.unwrap_or(u64::MAX);
    // The device's CPU watches it while it spins, with the device's
    // interrupts off, and spins longer (as Linux's haltpoll does).
    let device = DEVICE.get().copied().filter(|d| d.cpu() == here());
    let is_watching = device.is_some_and(|d| d.begin());
    // No spin when the VMM's device threads share this CPU's host CPU:
    // the frame or wake-up waited for could only come once the host
    // takes the CPU from the spin (measured: a Go echo server's round
    // trip took 215 µs so, 85 µs with a host CPU for the card's thread).
    let spin_ns = if bootinfo::halts_when_idle() {
        0
    } else if is_watching {
        WATCH_SPIN_NS
    } else {
        IDLE_SPIN_NS
    };
    let spin_until = time::monotonic_ns().saturating_add(spin_ns).min(deadline);
    this.set_mode(Mode::Spinning);
    let mut is_woken = false;
    while !is_woken && time::monotonic_ns() < spin_until {
        is_woken = this.wake.load(Ordering::SeqCst) != 0
            || (is_watching && device.is_some_and(|d| d.has_work()));
        arch::pause();
    }
    // The device's interrupts go back on; work that came while they were
    // off may never raise one, so it is delivered now.
    if is_watching && device.is_some_and(|d| d.end()) {
        IS_DEVICE_PENDING.store(true, Ordering::SeqCst);
        is_woken = true;
    }
    if is_woken {
        this.set_mode(Mode::Busy);
        return;
    }
    // From here a waker sends an IPI; the gate halts only if `wake` is
    // still clear, checked with interrupts off.
    this.set_mode(Mode::Halted);
    let now = time::monotonic_ns();
    if this.wake.load(Ordering::SeqCst) == 0 && now < deadline {
        if deadline_ns.is_some() {
            this.is_timer_armed.store(true, Ordering::Relaxed);
            arch::timer_arm(u32::try_from(deadline - now).unwrap_or(u32::MAX));
        }
        if let Some(vector) = arch::idle(&this.wake) {
            acknowledge(vector);
        }
        mm::tlb_catch_up();
    }
    this.set_mode(Mode::Busy);
}

/// A device interrupt arrived and its driver has not been told yet.
static IS_DEVICE_PENDING: AtomicBool = AtomicBool::new(false);

/// Acknowledge interrupt `vector` (taken by this core's upcall or its
/// halt).
fn acknowledge(vector: u8) {
    match vector {
        TIMER_VECTOR => cpu::this().is_timer_armed.store(false, Ordering::Relaxed),
        // Also a wake-up for this core: an idle core that took it while
        // spinning (with preemption off) must not halt until it is
        // delivered.
        DEVICE_VECTOR => {
            IS_DEVICE_PENDING.store(true, Ordering::SeqCst);
            cpu::this().wake.store(1, Ordering::SeqCst);
        }
        HOST_SIGNAL_VECTOR => {
            IS_HOST_SIGNAL_PENDING.store(true, Ordering::SeqCst);
            cpu::this().wake.store(1, Ordering::SeqCst);
        }
        _ => {}
    }
    arch::eoi();
}

/// The VMM forwarded a signal and nobody has taken it yet.
static IS_HOST_SIGNAL_PENDING: AtomicBool = AtomicBool::new(false);

/// What takes the signals the host sent (`process`).
static HOST_SIGNAL_HOOK: spin::Once<fn(u64)> = spin::Once::new();

/// Register what takes the signals the host forwards (bit `n - 1` for
/// signal `n`); the first registration wins.
pub(crate) fn set_host_signal_hook(hook: fn(u64)) {
    HOST_SIGNAL_HOOK.call_once(|| hook);
}

/// Hand a pending device interrupt to the device's driver (which wakes
/// its thread), and the host's signals to their hook. Called with no
/// scheduler lock held.
fn deliver_device_interrupt() {
    if IS_DEVICE_PENDING.swap(false, Ordering::SeqCst)
        && let Some(device) = DEVICE.get()
    {
        device.interrupt();
    }
    if IS_HOST_SIGNAL_PENDING.swap(false, Ordering::SeqCst) {
        let signals = arch::take_report_word(
            eremite_interface::layout::BOOT_INFO_ADDR
                + (eremite_interface::BootInfo::REPORT_OFFSET
                    + core::mem::offset_of!(eremite_interface::KernelReport, host_signals))
                    as u64,
        );
        if signals != 0
            && let Some(hook) = HOST_SIGNAL_HOOK.get()
        {
            hook(signals);
        }
    }
}

/// Leave the current thread, which is already marked blocked, ready
/// (queued) or finished, and run this core's next ready one. Returns when
/// this thread runs again.
fn switch_away(mut guard: LockGuard<'static, Option<Scheduler>>) {
    // No preemption from here until the switch is complete: the thread
    // that runs next re-enables it (here, or in `thread_start`).
    sync::preempt_disable();
    let here = here();
    let next = loop {
        let s = sched(&mut guard);
        s.fire_timers(time::monotonic_ns());
        if let Some(next) = s.core(here).ready.pop_front() {
            break next;
        }
        let deadline = s.core(here).earliest_deadline();
        if deadline.is_none() && s.is_deadlocked() {
            drop(guard);
            deadlock();
        }
        cpu::this().wake.store(0, Ordering::SeqCst);
        drop(guard);
        idle(deadline);
        deliver_device_interrupt();
        guard = lock();
    };
    let s = sched(&mut guard);
    let current = s.core(here).current;
    s.thread(next).state = State::Running;
    s.arm_for_others();
    if next == current {
        drop(guard);
        sync::preempt_enable();
        return;
    }
    let fs_base = arch::fs_base();
    let errno = &cpu::this().errno;
    arch::set_syscall_stack(here, s.thread(next).syscall_stack);
    functrace::switched(here, next);
    s.thread(current).errno = errno.load(Ordering::Relaxed);
    errno.store(s.thread(next).errno, Ordering::Relaxed);
    // A Linux thread's extended state, saved before it leaves and loaded
    // when it comes back (its record outlives the switch: it is not
    // finished).
    let fp_area: Option<*mut arch::FpArea> = match s.thread(current) {
        t if t.state == State::Finished => None,
        t => t.fp_area.as_deref_mut().map(|a| a as *mut arch::FpArea),
    };
    let save: *mut u64 = if s.thread(current).state == State::Finished {
        // Its core has left its stack: forget it, joined or not (std does
        // not join detached threads; `join` of a forgotten thread returns
        // at once).
        s.threads.remove(&current);
        functrace::exited(here, current);
        threadlist::removed(current);
        &mut s.core(here).scratch_rsp
    } else {
        let thread = s.thread(current);
        thread.fs_base = fs_base;
        &mut thread.saved_rsp
    };
    let (next_rsp, next_fs) = {
        let thread = s.thread(next);
        (thread.saved_rsp, thread.fs_base)
    };
    s.core(here).current = next;
    threadlist::switched(here, next);
    drop(guard);
    // No TLS is touched by the kernel, so the FS base may change here.
    arch::set_fs_base(next_fs);
    if let Some(area) = fp_area {
        // SAFETY: the area is boxed in this thread's record, which lives
        // while the thread is not finished, and only this thread uses it.
        arch::fp_save(unsafe { &mut *area });
    }
    // SAFETY: `save` points into the current thread's boxed record, which
    // stays allocated while the thread has not finished, or (for a
    // finished thread, which is never switched back to) into this core's
    // record, which lives as long as the scheduler (`cores` never grows
    // after it is made). `next_rsp` was saved by `switch` or
    // made by `new_thread_stack` for a thread of this core that is not
    // running, whose stack is allocated while it is not finished.
    unsafe { arch::switch(save, next_rsp) };
    if let Some(area) = fp_area {
        // SAFETY: as above: back on this thread, its record still lives.
        arch::fp_restore(unsafe { &*area });
    }
    sync::preempt_enable();
    free_exited();
}

/// Free the stack of a thread that exited just before we ran.
fn free_exited() {
    let exited = core::mem::take(&mut sched(&mut lock()).core(here()).exited);
    drop(exited);
}

/// A core has reported the deadlock: another that finds it at the same
/// moment stops the VM without saying it again.
static IS_DEADLOCK_REPORTED: AtomicBool = AtomicBool::new(false);

fn deadlock() -> ! {
    use core::fmt::Write as _;
    if !IS_DEADLOCK_REPORTED.swap(true, Ordering::SeqCst) {
        console::flush();
        let _ = writeln!(
            console::DirectWriter::new(Stream::Stderr),
            "eremite: deadlock: every thread is blocked and no timer can wake one"
        );
    }
    hypervisor::exit(ExitKind::Deadlock, 0)
}

/// Wait while `*word == expected`, up to `timeout_ns` (relative):
/// `EAGAIN` if the value differs, `ETIMEDOUT` after the timeout.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout_ns: Option<u64>,
) -> Result<(), Errno> {
    wait(word, expected, timeout_ns, Waker::Thread)
}

/// [`futex_wait`] on a word that a device interrupt may change: a thread
/// waiting so is never reported as deadlocked.
pub(crate) fn device_wait(
    word: &AtomicU32,
    expected: u32,
    timeout_ns: Option<u64>,
) -> Result<(), Errno> {
    wait(word, expected, timeout_ns, Waker::Device)
}

/// Who may end a wait.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waker {
    /// Another thread (or the timeout).
    Thread,
    /// A device interrupt, through the thread it wakes.
    Device,
}

fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout_ns: Option<u64>,
    waker: Waker,
) -> Result<(), Errno> {
    let mut guard = lock();
    if word.load(Ordering::SeqCst) != expected {
        return Err(errno::EAGAIN);
    }
    let addr = word as *const AtomicU32 as u64;
    let s = sched(&mut guard);
    let tid = s.current();
    s.futexes.entry(addr).or_default().push_back(tid);
    let deadline = timeout_ns.map(|ns| time::monotonic_ns().saturating_add(ns));
    s.block_current(deadline);
    let thread = s.thread(tid);
    thread.futex = Some(addr);
    thread.is_waiting_for_device = waker == Waker::Device;
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
    sched(&mut lock()).wake_futex(word, count)
}

/// `FUTEX_REQUEUE`/`FUTEX_CMP_REQUEUE`: unless `*word` differs from
/// `expected` (`EAGAIN`), wake up to `wake` waiters of `word` and move up
/// to `requeue` of the others to wait on `target`; how many were woken
/// and moved.
pub(crate) fn futex_requeue(
    word: &AtomicU32,
    expected: Option<u32>,
    wake: i32,
    target: &AtomicU32,
    requeue: i32,
) -> Result<i32, Errno> {
    let mut guard = lock();
    if expected.is_some_and(|value| word.load(Ordering::SeqCst) != value) {
        return Err(errno::EAGAIN);
    }
    let s = sched(&mut guard);
    let woken = s.wake_futex(word, wake);
    let from = word as *const AtomicU32 as u64;
    let to = target as *const AtomicU32 as u64;
    let mut moved = 0;
    let limit = usize::try_from(requeue).unwrap_or(0);
    while moved < limit && from != to {
        let Some(tid) = s.futexes.get_mut(&from).and_then(VecDeque::pop_front) else {
            break;
        };
        s.thread(tid).futex = Some(to);
        s.futexes.entry(to).or_default().push_back(tid);
        moved += 1;
    }
    if s.futexes.get(&from).is_some_and(VecDeque::is_empty) {
        s.futexes.remove(&from);
    }
    Ok(woken.saturating_add(i32::try_from(moved).unwrap_or(i32::MAX)))
}

/// Unmap `len` bytes at `addr` when the calling thread exits, instead of
/// now (see `Thread::unmap_at_exit`).
pub(crate) fn unmap_at_exit(addr: u64, len: usize) {
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current();
    s.thread(tid).unmap_at_exit = Some((addr, len));
}

/// Set or clear the calling thread's clear-on-exit word (Linux's
/// `set_tid_address`).
pub(crate) fn set_clear_on_exit(addr: Option<u64>) {
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current();
    s.thread(tid).clear_on_exit = addr;
}

/// Whether `tid` is a thread that has not finished.
pub(crate) fn is_thread(tid: i32) -> bool {
    let Ok(tid) = Tid::try_from(tid) else {
        return false;
    };
    sched(&mut lock())
        .threads
        .get(&tid)
        .is_some_and(|t| t.state != State::Finished)
}

/// Sleep for at least `duration_ns`, letting other threads run.
pub(crate) fn sleep_ns(duration_ns: u64) {
    let mut guard = lock();
    let s = sched(&mut guard);
    s.block_current(Some(time::monotonic_ns().saturating_add(duration_ns)));
    switch_away(guard);
}

/// Record the calling thread's last error (hermit-abi's `errno`, which
/// code written for libc, such as mio, reads after a call fails).
pub(crate) fn set_errno(errno: i32) {
    cpu::this().errno.store(errno, Ordering::Relaxed);
}

/// The calling thread's last error.
pub(crate) fn errno() -> i32 {
    cpu::this().errno.load(Ordering::Relaxed)
}

/// Let the other ready threads run first.
pub(crate) fn yield_now() {
    let here = here();
    let mut guard = lock();
    let s = sched(&mut guard);
    let core = s.core(here);
    // The common case first: nothing else to run here, no sleeper, no
    // timer to arm (this is `sched_yield`'s whole cost then).
    let tid = core.current;
    if core.ready.is_empty() && core.timers.is_empty() && !s.thread(tid).is_parked {
        return;
    }
    let thread = s.thread(tid);
    if thread.is_parked {
        thread.is_parked = false;
        s.block_current(None);
        switch_away(guard);
        return;
    }
    // Sleepers whose time has come go first, ahead of this thread.
    if !s.core(here).timers.is_empty() {
        s.fire_timers(time::monotonic_ns());
    }
    if s.core(here).ready.is_empty() {
        s.arm_for_others();
        return;
    }
    s.thread(tid).state = State::Ready;
    s.core(here).ready.push_back(tid);
    switch_away(guard);
}

/// hermit-abi's `block_current_task`: the next [`yield_now`] blocks until
/// [`wakeup`]; with a timeout, it also ends after `timeout_ns`.
pub(crate) fn park_current(timeout_ns: Option<u64>) {
    let mut guard = lock();
    let s = sched(&mut guard);
    match timeout_ns {
        None => {
            let tid = s.current();
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

/// What a new thread starts with.
pub(crate) struct ThreadStart {
    /// It runs `entry(arg)`, then exits.
    pub(crate) entry: extern "C" fn(usize),
    pub(crate) arg: usize,
    /// The top of its stack, 16-byte aligned, with room for the first
    /// frame: the kernel's own [`mm::Stack`] (in `stack`), or one the
    /// caller brought.
    pub(crate) stack_top: u64,
    /// Its FS base (thread pointer).
    pub(crate) fs_base: u64,
    /// Memory the thread owns, freed when it exits.
    pub(crate) stack: Option<mm::Stack>,
    pub(crate) tls: Option<mm::TlsBlock>,
    /// The address of an application word to set to 0 and futex-wake
    /// when it exits (Linux's `CLONE_CHILD_CLEARTID`); skipped if it is
    /// not a writable, aligned word then.
    pub(crate) clear_on_exit: Option<u64>,
    /// The core to run on (round robin when `None` or out of range).
    pub(crate) core: Option<usize>,
    /// For a Linux thread: the top of the stack its system calls run on
    /// (it must outlive the thread: give its `mm::Stack` as `stack`).
    pub(crate) syscall_stack: Option<u64>,
}

/// Start a thread as `start` says: its id, or `EAGAIN` when ids ran out.
pub(crate) fn spawn(start: ThreadStart) -> Result<Tid, Errno> {
    // SAFETY: `stack_top` is the 16-byte aligned top of a stack that only
    // this thread will use, with room for the first frame (the caller's
    // contract, documented on `ThreadStart`).
    let rsp = unsafe {
        arch::new_thread_stack(
            start.stack_top,
            start.entry as usize as u64,
            start.arg as u64,
        )
    };
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.next_tid;
    s.next_tid = tid.checked_add(1).ok_or(errno::EAGAIN)?;
    let cores = s.cores.len();
    let core = match start.core {
        Some(core) if core < cores => core,
        _ => {
            let core = s.next_core;
            s.next_core = (core + 1) % cores;
            core
        }
    };
    let name = s
        .threads
        .get(&s.current())
        .map_or([0; NAME_BYTES], |t| t.name);
    let mut thread = Thread::new(core, State::Blocked, name);
    thread.saved_rsp = rsp;
    thread.fs_base = start.fs_base;
    thread.stack = start.stack;
    thread.tls = start.tls;
    thread.clear_on_exit = start.clear_on_exit;
    if let Some(top) = start.syscall_stack {
        thread.syscall_stack = top;
        thread.fp_area = Some(Box::new(arch::FpArea::new()));
    }
    thread.list(tid);
    s.threads.insert(tid, thread);
    s.wake(tid, false);
    Ok(tid)
}

/// Start a kernel thread running `entry(0)` on `core`, on a stack of
/// `stack_bytes` of its own and with no TLS (the kernel uses none).
pub(crate) fn spawn_kernel_thread(
    name: &[u8],
    entry: extern "C" fn(usize),
    stack_bytes: usize,
    core: usize,
) -> Result<Tid, Errno> {
    let stack = mm::Stack::new(stack_bytes, mm::NO_THREAD).ok_or(errno::ENOMEM)?;
    let tid = spawn(ThreadStart {
        entry,
        arg: 0,
        stack_top: stack.top(),
        fs_base: 0,
        stack: Some(stack),
        tls: None,
        clear_on_exit: None,
        core: Some(core),
        syscall_stack: None,
    })?;
    let mut guard = lock();
    let thread = sched(&mut guard).thread(tid);
    thread.is_urgent = true;
    thread.name = thread_name(name);
    Ok(tid)
}

/// Make the calling thread a Linux thread whose system calls run on the
/// stack whose top is `top` (the main thread, before it enters its
/// program; spawned Linux threads say so in [`ThreadStart`]).
pub(crate) fn become_linux_thread(top: u64) {
    let area = Box::new(arch::FpArea::new());
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current();
    let thread = s.thread(tid);
    thread.syscall_stack = top;
    thread.fp_area = Some(area);
    arch::set_syscall_stack(here(), top);
}

/// Continue the calling Linux thread's program with exactly `regs` (a
/// signal handler's entry, or the context `rt_sigreturn` restores), from
/// its system-call stack. The 8 bytes `arch::RESUME_RIP_BELOW` under
/// `regs.rsp` must be writable program memory (the caller checks).
pub(crate) fn resume_program(regs: &arch::UserRegs) -> ! {
    let stack = sched(&mut lock()).thread_syscall_stack();
    assert!(
        stack != 0,
        "a thread that is not a Linux thread resumed a program"
    );
    // SAFETY: the caller is a Linux thread on its system-call stack, whose
    // frames are never needed again; the registers are the program's own
    // (a wrong RIP or RSP faults in the program, as on Linux), and RIP's
    // slot under RSP is writable program memory (the caller's check).
    unsafe { arch::resume(regs) }
}

/// [`resume_program`] from the exception upcall, into a signal handler
/// for the fault it reports.
pub(crate) fn resume_program_from_exception(regs: &arch::UserRegs) -> ! {
    let stack = sched(&mut lock()).thread_syscall_stack();
    assert!(
        stack != 0,
        "a thread that is not a Linux thread resumed a program"
    );
    // SAFETY: called from the exception upcall of this thread's fault,
    // which holds nothing and is never returned to; the handler's frame
    // was just written under `regs.rsp`, so RIP's slot is writable
    // program memory.
    unsafe { arch::resume_from_exception(regs) }
}

/// Continue the calling Linux thread's program as `frame` says, with
/// `result` in RAX: leave the kernel for the program (its start, a
/// `clone`'s child, or the end of a system call that changed where it
/// goes). Only a Linux thread, on its system-call stack, may call this.
pub(crate) fn enter_program(frame: &arch::SyscallFrame, result: u64) -> ! {
    let stack = sched(&mut lock()).thread_syscall_stack();
    assert!(
        stack != 0,
        "a thread that is not a Linux thread entered a program"
    );
    // SAFETY: the caller is a Linux thread on its system-call stack, whose
    // frames are never needed again (its next system call starts at the
    // top). The frame's RIP and RSP are the program's own choice, in its
    // own memory (a wrong one faults in the program, as on Linux; the
    // kernel's memory is reached by no reference from it).
    unsafe { arch::enter_program(frame, result) }
}

/// How long a thread's name may be, with its terminating NUL (Linux's
/// `TASK_COMM_LEN`; the debugger reads that many).
pub(crate) const NAME_BYTES: usize = eremite_interface::trap::THREAD_NAME_BYTES;

/// A thread's name, NUL-padded.
pub(crate) type ThreadName = [u8; NAME_BYTES];

/// `name` as a thread name: cut at its first NUL, or short of the last
/// byte, as Linux's `PR_SET_NAME` does.
pub(crate) fn thread_name(name: &[u8]) -> ThreadName {
    let len = name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(name.len())
        .min(NAME_BYTES - 1);
    let mut out = [0; NAME_BYTES];
    out[..len].copy_from_slice(&name[..len]);
    out
}

/// Name the calling thread.
pub(crate) fn set_current_name(name: ThreadName) {
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current();
    s.thread(tid).name = name;
}

/// The calling thread's name.
pub(crate) fn current_name() -> ThreadName {
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current();
    s.thread(tid).name
}

/// The calling thread's id.
pub(crate) fn current_tid() -> Tid {
    sched(&mut lock()).current()
}

/// Run an application processor's scheduler (called once by each, on
/// the stack the boot CPU gave it): its first context becomes a thread of
/// its own that never runs again, and the core waits for work.
pub(crate) fn run_core() -> ! {
    let mut guard = lock();
    let s = sched(&mut guard);
    let here = here();
    let tid = s.next_tid;
    s.next_tid += 1;
    let thread = Thread::new(here, State::Blocked, thread_name(b"idle"));
    thread.list(tid);
    s.threads.insert(tid, thread);
    s.core(here).current = tid;
    functrace::switched(here, tid);
    threadlist::switched(here, tid);
    // Only now may interrupts come: an upcall before this would have found
    // the core's `current` still unset and switched away from the wrong
    // thread. A wake-up sent earlier is not lost: the queue is looked at
    // before the core first idles.
    arch::timer_init();
    // From now on TLB invalidations wait for this core too; catch up
    // with the ones made while it started.
    cpu::set_online();
    mm::tlb_catch_up();
    loop {
        switch_away(guard);
        // Only a stray `wakeup_task` of this id gets here.
        guard = lock();
        sched(&mut guard).block_current(None);
    }
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

/// End the current (spawned) thread: clear its exit word, wake its joiner
/// and never return.
pub(crate) fn exit_current() -> ! {
    let unmap = {
        let mut guard = lock();
        let s = sched(&mut guard);
        let tid = s.current();
        s.thread(tid).unmap_at_exit.take()
    };
    if let Some((addr, len)) = unmap {
        // The thread runs in the kernel now, not on the range.
        let _ = mm::unmap(addr, len);
    }
    let mut guard = lock();
    let s = sched(&mut guard);
    let tid = s.current();
    let thread = s.thread(tid);
    thread.state = State::Finished;
    let memory = (thread.stack.take(), thread.tls.take());
    let joiner = thread.joiner.take();
    let clear = thread.clear_on_exit.take();
    s.core(here()).exited = memory;
    if let Some(joiner) = joiner {
        s.wake(joiner, false);
    }
    if let Some(word) = clear.and_then(|addr| mm::user_word(addr, mm::UserAccess::Write)) {
        word.store(0, Ordering::SeqCst);
        s.wake_futex(word, 1);
    }
    switch_away(guard);
    unreachable!("a finished thread was switched back to")
}

/// The scheduler's half of interrupts, first part (called by the CPL3
/// upcall in `arch`, with the interrupted state saved; bit
/// `v - TIMER_VECTOR` of `vectors` is set for each vector `v` taken):
/// the time slice ended, another core made a thread of this one ready,
/// or the network device has news. Acknowledge them. Interrupts that
/// arrive meanwhile do not nest: the upcall calls this again with their
/// vectors. Then it calls [`interrupt_finish`].
pub(crate) extern "C" fn interrupt_acknowledge(vectors: u32) {
    // First, whatever the interrupted code holds: another CPU may be
    // waiting for this one to drop stale TLB entries.
    mm::tlb_catch_up();
    for vector in [TIMER_VECTOR, WAKE_VECTOR, DEVICE_VECTOR, HOST_SIGNAL_VECTOR] {
        if vectors & (1 << (vector - TIMER_VECTOR)) != 0 {
            acknowledge(vector);
        }
    }
}

/// The second half of the interrupt upcall, once every vector is
/// acknowledged: preempt the interrupted thread, or, if it holds a kernel
/// lock, arm the timer to try again soon. Interrupts that arrive during
/// this are upcalls of their own (this may switch threads).
pub(crate) extern "C" fn interrupt_finish() {
    if !sync::is_preemptible() {
        // Soon, not when a timer armed for a far sleeper fires: a device
        // interrupt is waiting too.
        arm_timer_within(RETRY_NS);
        return;
    }
    deliver_device_interrupt();
    yield_now();
}

/// Wait for thread `tid` to finish. A thread is forgotten as soon as it
/// has finished and its core has left it, so a `tid` that was handed out
/// but is gone has finished already.
pub(crate) fn join(tid: Tid) -> Result<(), Errno> {
    let mut guard = lock();
    let s = sched(&mut guard);
    let current = s.current();
    if tid == current {
        return Err(errno::EDEADLK);
    }
    let Some(target) = s.threads.get_mut(&tid) else {
        return if (MAIN_TID..s.next_tid).contains(&tid) {
            Ok(())
        } else {
            Err(errno::EINVAL)
        };
    };
    if target.state != State::Finished {
        if target.joiner.is_some() {
            return Err(errno::EINVAL);
        }
        target.joiner = Some(current);
        s.block_current(None);
        switch_away(guard);
    }
    Ok(())
}
