//! Readiness changes, and the wait that blocking calls and `poll` share.
//!
//! One kernel-wide counter, [`CHANGES`], is bumped ([`changed`]) whenever
//! something that a blocked call or `poll` may be waiting for could have
//! changed: the network stack after a poll that moved data, an event
//! counter after a read or a write. [`wait_until`] looks, and if the
//! answer is not there yet, futex-waits on the counter value it saw
//! before looking, so a change between the look and the wait is never
//! missed. One counter for everything costs a few spurious looks and
//! keeps `poll` over mixed descriptors simple. Calls blocked on one
//! object that many threads may block on at once (a socket) wait on a
//! [`Channel`] of their own instead, which its owner wakes only when what
//! they wait for is there.
//!
//! A device that can end a wait by an interrupt (the network card)
//! announces itself ([`set_device_present`]); from then on a thread
//! waiting here is never counted as deadlocked.
//!
//! ABI-neutral; above `sched` and `time`, below every user of it.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};

use crate::{sched, time};

/// Bumped whenever waiters should look again.
static CHANGES: AtomicU32 = AtomicU32::new(0);
/// Whether a device may end a wait (see the module docs).
static HAS_DEVICE: AtomicBool = AtomicBool::new(false);

/// Tell every thread blocked in [`wait_until`] to look again.
pub(crate) fn changed() {
    CHANGES.fetch_add(1, Ordering::SeqCst);
    sched::futex_wake(&CHANGES, -1);
}

/// A device that interrupts is present: waits may end by its interrupt.
pub(crate) fn set_device_present() {
    HAS_DEVICE.store(true, Ordering::SeqCst);
}

/// Futex-wait while `*word == seen`, up to `timeout_ns`; a wait that a
/// device may end when one is present.
pub(crate) fn wait_word(word: &AtomicU32, seen: u32, timeout_ns: Option<u64>) -> Result<(), Errno> {
    if HAS_DEVICE.load(Ordering::SeqCst) {
        sched::device_wait(word, seen, timeout_ns)
    } else {
        sched::futex_wait(word, seen, timeout_ns)
    }
}

/// Asked by a waiting thread, in its own context, whether a signal should
/// end its wait (the Linux ABI registers it; without it nothing does).
static INTERRUPT_CHECK: spin::Once<fn() -> bool> = spin::Once::new();

/// Register what tells a waiting thread that a signal ends its wait; the
/// first registration wins.
pub(crate) fn set_interrupt_check(check: fn() -> bool) {
    INTERRUPT_CHECK.call_once(|| check);
}

/// A signal may end some waits now: every waiter looks again and asks.
pub(crate) fn interrupt() {
    changed();
    if let Some(wake_channels) = ON_INTERRUPT.get() {
        wake_channels();
    }
}

/// What wakes the waiters of every [`Channel`] when a signal comes (the
/// network's sockets register it).
static ON_INTERRUPT: spin::Once<fn()> = spin::Once::new();

/// Register what wakes every channel's waiters for a signal; the first
/// registration wins.
pub(crate) fn set_channel_interrupt(wake_all: fn()) {
    ON_INTERRUPT.call_once(|| wake_all);
}

/// A word some waiters wait on instead of [`CHANGES`], so that only they
/// are woken when what they wait for changes (a socket's blocked calls:
/// with hundreds of them, waking every one at each change costs more than
/// the change).
pub(crate) struct Channel(AtomicU32);

impl Channel {
    pub(crate) const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Tell this channel's waiters to look again.
    pub(crate) fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        sched::futex_wake(&self.0, -1);
    }
}

/// [`wait_until`] on `channel`: woken by [`Channel::wake`] (and by a
/// signal), not by every change.
pub(crate) fn wait_until_on<T>(
    channel: &Channel,
    deadline_ns: Option<u64>,
    look: impl FnMut() -> Option<T>,
) -> Result<Option<T>, Errno> {
    wait_for_on(&channel.0, deadline_ns, look, true)
}

/// Look with `look` until it has an answer (`Ok(Some)`) or `deadline_ns`
/// (monotonic) passes (`Ok(None)`), waiting for a change in between; a
/// signal for this thread ends the wait with `EINTR` (see
/// [`set_interrupt_check`]).
pub(crate) fn wait_until<T>(
    deadline_ns: Option<u64>,
    look: impl FnMut() -> Option<T>,
) -> Result<Option<T>, Errno> {
    wait_for(deadline_ns, look, true)
}

/// [`wait_until`] that no signal ends (the kernel's own waits).
pub(crate) fn wait_until_uninterrupted<T>(
    deadline_ns: Option<u64>,
    look: impl FnMut() -> Option<T>,
) -> Option<T> {
    wait_for(deadline_ns, look, false).unwrap_or(None)
}

fn wait_for<T>(
    deadline_ns: Option<u64>,
    look: impl FnMut() -> Option<T>,
    is_interruptible: bool,
) -> Result<Option<T>, Errno> {
    wait_for_on(&CHANGES, deadline_ns, look, is_interruptible)
}

fn wait_for_on<T>(
    word: &AtomicU32,
    deadline_ns: Option<u64>,
    mut look: impl FnMut() -> Option<T>,
    is_interruptible: bool,
) -> Result<Option<T>, Errno> {
    loop {
        let seen = word.load(Ordering::SeqCst);
        if let Some(answer) = look() {
            return Ok(Some(answer));
        }
        let timeout_ns = match deadline_ns {
            Some(deadline) => match deadline.checked_sub(time::monotonic_ns()) {
                Some(left) if left > 0 => Some(left),
                _ => return Ok(None),
            },
            None => None,
        };
        if is_interruptible
            && INTERRUPT_CHECK
                .get()
                .is_some_and(|is_interrupted| is_interrupted())
        {
            return Err(errno::EINTR);
        }
        let _ = wait_word(word, seen, timeout_ns);
    }
}

/// How a call waits when it cannot go on at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocking {
    /// `O_NONBLOCK`: fail with `EAGAIN` (or `EINPROGRESS`).
    Never,
    /// Wait, up to a timeout in ns (`SO_RCVTIMEO`/`SO_SNDTIMEO`) if any,
    /// then fail with `EAGAIN`.
    For(Option<u64>),
}

impl Blocking {
    /// The monotonic deadline of a wait that starts now (`None`: none).
    pub(crate) fn deadline_ns(self) -> Option<u64> {
        match self {
            Self::Never => Some(0),
            Self::For(timeout) => timeout.map(|ns| time::monotonic_ns().saturating_add(ns)),
        }
    }
}
