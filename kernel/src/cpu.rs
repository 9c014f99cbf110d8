//! Per-CPU records: what each CPU's kernel code needs to find quickly and
//! what other CPUs look at to wake it.
//!
//! Each CPU's GS base holds its index (set once when it starts; GS is not
//! used otherwise), so [`this`] costs one `rdgsbase` and no lock. The
//! records live in one static array, so another CPU can reach any of them
//! with [`get`].

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU32, Ordering};

use eremite_interface::layout::MAX_CPUS;

use crate::arch;

/// What an idle CPU is doing, for a CPU that wants to wake it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Running a thread or the scheduler: send an IPI to interrupt it.
    Busy = 0,
    /// Spinning on its [`Cpu::wake`] word: setting it is enough.
    Spinning = 1,
    /// Halted in the CPL0 gate: set the word, then send an IPI.
    Halted = 2,
}

/// One CPU's record: two cache lines of its own (the hardware fetches
/// lines in pairs), so that one CPU's writes (its preemption count, at
/// every kernel lock) do not slow another's reads and writes of its own.
#[repr(align(128))]
pub(crate) struct Cpu {
    /// Its index, which is also its local APIC ID.
    pub(crate) index: u32,
    /// Kernel locks it holds (and other reasons not to switch threads);
    /// only this CPU changes it (see `sync`).
    pub(crate) preempt_off: AtomicU32,
    /// Non-zero when another CPU gave it work since it last looked.
    pub(crate) wake: AtomicU32,
    mode: AtomicU8,
    /// Whether its APIC timer is counting down (it is one-shot).
    pub(crate) is_timer_armed: AtomicBool,
    /// The running thread's `errno` (saved and restored on every switch).
    pub(crate) errno: AtomicI32,
}

impl Cpu {
    const fn new(index: u32) -> Self {
        Self {
            index,
            preempt_off: AtomicU32::new(0),
            wake: AtomicU32::new(0),
            mode: AtomicU8::new(Mode::Busy as u8),
            is_timer_armed: AtomicBool::new(false),
            errno: AtomicI32::new(0),
        }
    }

    /// What it is doing.
    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Spinning,
            2 => Mode::Halted,
            _ => Mode::Busy,
        }
    }

    /// Say what it is doing (only this CPU calls this).
    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

static CPUS: [Cpu; MAX_CPUS as usize] = {
    let mut cpus = [const { Cpu::new(0) }; MAX_CPUS as usize];
    let mut i = 0;
    while i < cpus.len() {
        cpus[i].index = i as u32;
        i += 1;
    }
    cpus
};

/// Bit `i`: CPU `i` runs its scheduler and takes interrupts (CPU 0 from
/// the start).
static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Say that the calling CPU now takes interrupts in its scheduler.
pub(crate) fn set_online() {
    ONLINE.fetch_or(1 << this().index, Ordering::SeqCst);
}

/// Which CPUs are online (bit `i` for CPU `i`).
pub(crate) fn online_mask() -> u32 {
    ONLINE.load(Ordering::SeqCst)
}

/// Make the calling CPU CPU `index` (once, first thing when it starts,
/// before anything takes a kernel lock).
pub(crate) fn enter(index: u32) {
    arch::set_cpu_record(u64::from(index));
}

/// The calling CPU's record.
#[inline]
pub(crate) fn this() -> &'static Cpu {
    get(arch::cpu_record() as usize)
}

/// CPU `index`'s record (CPU 0's for an index out of range, which only a
/// kernel bug could produce).
pub(crate) fn get(index: usize) -> &'static Cpu {
    CPUS.get(index).unwrap_or(&CPUS[0])
}
