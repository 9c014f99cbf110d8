//! `eventfd(2)`: a 64-bit counter that threads add to and take from,
//! which `poll` watches like a socket (mio and tokio wake their event
//! loop with one).

use eremite_interface::errno::{self, Errno};
use eremite_net::Readiness;

use super::{Blocking, changed, wait_until};
use crate::sync::Lock;
use crate::time;

/// The largest value the counter holds (Linux: `0xffff_ffff_ffff_fffe`).
const MAX: u64 = u64::MAX - 1;

/// An event counter.
pub(crate) struct EventFd {
    count: Lock<u64>,
    /// `EFD_SEMAPHORE`: a read takes 1, not everything.
    is_semaphore: bool,
}

impl EventFd {
    /// A counter starting at `initial`; `EFD_SEMAPHORE` if `is_semaphore`.
    pub(crate) fn new(initial: u64, is_semaphore: bool) -> Self {
        Self {
            count: Lock::new(initial.min(MAX)),
            is_semaphore,
        }
    }

    /// `read(2)` of 8 bytes: the count (or 1 for a semaphore), which is
    /// taken; waits while it is zero unless `blocking` says not to.
    pub(crate) fn read(&self, blocking: Blocking) -> Result<u64, Errno> {
        let take = || {
            let mut count = self.count.lock();
            match *count {
                0 => None,
                n if self.is_semaphore => {
                    *count = n - 1;
                    Some(1)
                }
                n => {
                    *count = 0;
                    Some(n)
                }
            }
        };
        let value = self.wait(blocking, take)?;
        changed();
        Ok(value)
    }

    /// `write(2)` of 8 bytes: add `value`; waits while the sum would
    /// pass the maximum unless `blocking` says not to.
    pub(crate) fn write(&self, value: u64, blocking: Blocking) -> Result<(), Errno> {
        if value == u64::MAX {
            return Err(errno::EINVAL);
        }
        let add = || {
            let mut count = self.count.lock();
            let sum = count.checked_add(value).filter(|&sum| sum <= MAX)?;
            *count = sum;
            Some(())
        };
        self.wait(blocking, add)?;
        changed();
        Ok(())
    }

    fn wait<T>(&self, blocking: Blocking, mut op: impl FnMut() -> Option<T>) -> Result<T, Errno> {
        let deadline = match blocking {
            Blocking::Never => return op().ok_or(errno::EAGAIN),
            Blocking::For(timeout) => timeout.map(|ns| time::monotonic_ns().saturating_add(ns)),
        };
        wait_until(deadline, op).ok_or(errno::EAGAIN)
    }

    /// What `poll(2)` reports: readable while non-zero, writable while 1
    /// more fits.
    pub(crate) fn readiness(&self) -> Readiness {
        let count = *self.count.lock();
        Readiness {
            is_readable: count > 0,
            is_writable: count < MAX,
            ..Readiness::default()
        }
    }
}
