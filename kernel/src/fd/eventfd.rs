//! `eventfd(2)`: a 64-bit counter that threads add to and take from,
//! which `poll` watches like a socket (mio and tokio wake their event
//! loop with one). Reads and writes move 8 bytes; a blocked one waits
//! for a change (`events`).

use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags};

use super::{FileObject, blocking};
use crate::events::{self, Blocking};
use crate::net::Readiness;
use crate::sync::Lock;

/// The largest value the counter holds (Linux: `0xffff_ffff_ffff_fffe`).
const MAX: u64 = u64::MAX - 1;

/// An event counter.
pub(super) struct EventFd {
    count: Lock<u64>,
    /// Reads and writes so far: every write is news to an edge-triggered
    /// `epoll` (mio wakes its loop by writing to a counter it never
    /// reads).
    progress: AtomicU64,
    /// `EFD_SEMAPHORE`: a read takes 1, not everything.
    is_semaphore: bool,
}

impl EventFd {
    /// A counter starting at `initial`; `EFD_SEMAPHORE` if `is_semaphore`.
    pub(super) fn new(initial: u64, is_semaphore: bool) -> Self {
        Self {
            count: Lock::new(initial.min(MAX)),
            progress: AtomicU64::new(0),
            is_semaphore,
        }
    }

    /// Take the count (or 1 for a semaphore); waits while it is zero
    /// unless `blocking` says not to.
    fn take(&self, blocking: Blocking) -> Result<u64, Errno> {
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
        let value = events::wait_until(blocking.deadline_ns(), take)?.ok_or(errno::EAGAIN)?;
        self.progress.fetch_add(1, Ordering::Relaxed);
        events::changed();
        Ok(value)
    }

    /// Add `value`; waits while the sum would pass the maximum unless
    /// `blocking` says not to.
    fn add(&self, value: u64, blocking: Blocking) -> Result<(), Errno> {
        if value == u64::MAX {
            return Err(errno::EINVAL);
        }
        let add = || {
            let mut count = self.count.lock();
            let sum = count.checked_add(value).filter(|&sum| sum <= MAX)?;
            *count = sum;
            Some(())
        };
        events::wait_until(blocking.deadline_ns(), add)?.ok_or(errno::EAGAIN)?;
        self.progress.fetch_add(1, Ordering::Relaxed);
        events::changed();
        Ok(())
    }
}

impl FileObject for EventFd {
    fn read(&self, buf: &mut [u8], status: OpenFlags) -> Result<usize, Errno> {
        let out = buf.get_mut(..8).ok_or(errno::EINVAL)?;
        let value = self.take(blocking(status))?;
        out.copy_from_slice(&value.to_ne_bytes());
        Ok(8)
    }

    fn write(&self, buf: &[u8], status: OpenFlags) -> Result<usize, Errno> {
        let bytes = buf
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or(errno::EINVAL)?;
        self.add(u64::from_ne_bytes(bytes), blocking(status))?;
        Ok(8)
    }

    /// Linux shows an anonymous inode, mode 0600 and no type bits.
    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(FileStat {
            mode: 0o600,
            nlink: 1,
            ..FileStat::default()
        })
    }

    fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Readable while non-zero, writable while 1 more fits.
    fn readiness(&self) -> Readiness {
        let count = *self.count.lock();
        Readiness {
            is_readable: count > 0,
            is_writable: count < MAX,
            ..Readiness::default()
        }
    }
}
