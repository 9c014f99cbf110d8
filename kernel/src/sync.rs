//! Kernel locks: spin locks that hold off preemption while they are held.
//!
//! A timer interrupt preempts the running thread through an upcall into
//! the scheduler (`arch::x86_64::preempt`). A thread preempted while it
//! holds a kernel lock (the heap, the file system, the scheduler) would
//! make the next thread on its core that wants the lock spin for ever, so
//! every kernel lock counts itself in its CPU's `preempt_off` (see
//! `cpu`), and the upcall only switches threads while the count is zero
//! (otherwise it retries soon). Threads never move between CPUs, so the
//! count a thread raised is the one it lowers. The application's own locks
//! (std's futex-based `Mutex` and friends) block instead of spinning, so
//! preempting their holders is fine.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering, compiler_fence};

use crate::cpu;

// The count is only changed by the CPU it belongs to, so a plain load
// and store suffice (no locked read-modify-write: measured, that made
// every kernel lock ~20 cycles dearer). An interrupt upcall between the
// two sees the old value; if it switches threads, every other thread
// leaves the count as it found it, so the store is still right.

/// Hold off preemption until the matching [`preempt_enable`].
pub(crate) fn preempt_disable() {
    preempt_disable_on(cpu::this());
}

/// Undo one [`preempt_disable`].
pub(crate) fn preempt_enable() {
    preempt_enable_on(cpu::this());
}

/// [`preempt_disable`] for a caller that has this CPU's record at hand.
#[inline]
pub(crate) fn preempt_disable_on(this: &cpu::Cpu) {
    let count = &this.preempt_off;
    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

/// [`preempt_enable`] for a caller that has this CPU's record at hand
/// (the same CPU's: threads never move between CPUs).
#[inline]
pub(crate) fn preempt_enable_on(this: &cpu::Cpu) {
    compiler_fence(Ordering::SeqCst);
    let count = &this.preempt_off;
    count.store(count.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
}

/// Whether the interrupted code may be switched away from.
pub(crate) fn is_preemptible() -> bool {
    cpu::this().preempt_off.load(Ordering::Relaxed) == 0 && !crate::arch::is_tracing()
}

/// Whether the code running on this CPU holds a kernel lock (or has
/// otherwise held off preemption): a fault taken there must not wait for
/// a lock, which it may be holding itself.
pub(crate) fn is_holding_locks() -> bool {
    cpu::this().preempt_off.load(Ordering::Relaxed) != 0
}

/// What a CPU does while it spins for a lock, registered by a higher
/// layer ([`set_spin_hook`]).
static SPIN_HOOK: spin::Once<fn()> = spin::Once::new();

/// Run `hook` in every round of a spin for a lock. The memory manager
/// registers its TLB catch-up: a CPU that spins with interrupts off (in
/// an exception upcall, backing a page on first touch) cannot take the
/// IPI of a CPU that holds the lock and waits for every TLB to drop a
/// page, so it must catch up by itself.
pub(crate) fn set_spin_hook(hook: fn()) {
    SPIN_HOOK.call_once(|| hook);
}

fn spin_hook() {
    if let Some(hook) = SPIN_HOOK.get() {
        hook();
    }
}

/// The raw lock under [`Lock`].
pub(crate) struct RawLock(AtomicBool);

// SAFETY: `lock` and `try_lock` only succeed by swapping false → true with
// acquire ordering, and `unlock` stores false with release ordering, so
// at most one holder exists and its writes are visible to the next.
unsafe impl lock_api::RawMutex for RawLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawLock(AtomicBool::new(false));
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        preempt_disable();
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.0.load(Ordering::Relaxed) {
                core::hint::spin_loop();
                spin_hook();
            }
        }
    }

    fn try_lock(&self) -> bool {
        preempt_disable();
        let is_locked = self
            .0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if !is_locked {
            preempt_enable();
        }
        is_locked
    }

    unsafe fn unlock(&self) {
        self.0.store(false, Ordering::Release);
        preempt_enable();
    }
}

/// A kernel spin lock (see the module documentation).
pub(crate) type Lock<T> = lock_api::Mutex<RawLock, T>;
/// Its guard.
pub(crate) type LockGuard<'a, T> = lock_api::MutexGuard<'a, RawLock, T>;
