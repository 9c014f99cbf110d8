//! Counting semaphores (hermit-abi's `sem_*`), on the scheduler's futex.
//!
//! The application names a semaphore by the handle `create` returns; the
//! kernel keeps every live one in a table, so a handle that was never
//! made, or was destroyed, is `EINVAL` rather than a wild pointer.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};

use crate::sync::Lock;
use crate::{sched, time};

struct Table {
    live: BTreeMap<u64, Arc<AtomicU32>>,
    next: u64,
}

/// Handles start at 1, so 0 (a null `sem_t`) is never one.
static TABLE: Lock<Table> = Lock::new(Table {
    live: BTreeMap::new(),
    next: 1,
});

fn get(handle: u64) -> Result<Arc<AtomicU32>, Errno> {
    TABLE.lock().live.get(&handle).cloned().ok_or(errno::EINVAL)
}

/// A new semaphore holding `value`; its handle.
pub(crate) fn create(value: u32) -> u64 {
    let mut table = TABLE.lock();
    let handle = table.next;
    table.next += 1;
    table.live.insert(handle, Arc::new(AtomicU32::new(value)));
    handle
}

/// Forget a semaphore (threads still waiting on it keep it alive until
/// they are woken, which only a timeout can do now).
pub(crate) fn destroy(handle: u64) -> Result<(), Errno> {
    TABLE
        .lock()
        .live
        .remove(&handle)
        .map(drop)
        .ok_or(errno::EINVAL)
}

/// Add one and wake a waiter.
pub(crate) fn post(handle: u64) -> Result<(), Errno> {
    let count = get(handle)?;
    count
        .try_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_add(1))
        .map_err(|_| errno::EOVERFLOW)?;
    sched::futex_wake(&count, 1);
    Ok(())
}

/// Take one if there is one: `EAGAIN` if not.
pub(crate) fn try_wait(handle: u64) -> Result<(), Errno> {
    take(&*get(handle)?).then_some(()).ok_or(errno::EAGAIN)
}

fn take(count: &AtomicU32) -> bool {
    count
        .try_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
        .is_ok()
}

/// Take one, waiting until there is one or the monotonic clock passes
/// `deadline_ns` (`ETIMEDOUT`).
pub(crate) fn wait(handle: u64, deadline_ns: Option<u64>) -> Result<(), Errno> {
    let count = get(handle)?;
    loop {
        if take(&count) {
            return Ok(());
        }
        let timeout_ns = match deadline_ns {
            Some(deadline) => match deadline.checked_sub(time::monotonic_ns()) {
                Some(left) if left > 0 => Some(left),
                _ => return Err(errno::ETIMEDOUT),
            },
            None => None,
        };
        match sched::futex_wait(&count, 0, timeout_ns) {
            Ok(()) => {}
            Err(e) if e == errno::EAGAIN || e == errno::ETIMEDOUT => {}
            Err(e) => return Err(e),
        }
    }
}
