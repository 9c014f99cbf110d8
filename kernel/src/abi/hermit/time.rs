//! Clocks and sleeping.

use eremite_interface::errno::{self, Errno};

use super::{exported, ret, user};
use crate::{sched, time};

/// hermit-abi's `timespec` (note the 32-bit nanoseconds).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i32,
}

const CLOCK_REALTIME: i32 = 1;
const CLOCK_MONOTONIC: i32 = 4;
const NS_PER_SEC: u64 = 1_000_000_000;

impl Timespec {
    pub(super) fn from_ns(ns: u64) -> Self {
        Self {
            tv_sec: (ns / NS_PER_SEC) as i64,
            tv_nsec: (ns % NS_PER_SEC) as i32,
        }
    }

    /// Nanoseconds, or `EINVAL` for a negative or malformed value.
    pub(super) fn to_ns(self) -> Result<u64, Errno> {
        let secs = u64::try_from(self.tv_sec).map_err(|_| errno::EINVAL)?;
        let nanos = u64::try_from(self.tv_nsec).map_err(|_| errno::EINVAL)?;
        if nanos >= NS_PER_SEC {
            return Err(errno::EINVAL);
        }
        Ok(secs.saturating_mul(NS_PER_SEC).saturating_add(nanos))
    }
}

exported! {
    fn sys_clock_gettime(clock: i32, tp: *mut Timespec) -> i32 {
        ret((|| {
            let ns = match clock {
                CLOCK_REALTIME => time::realtime_ns(),
                CLOCK_MONOTONIC => time::monotonic_ns(),
                _ => return Err(errno::EINVAL),
            };
            user::write(tp, Timespec::from_ns(ns))?;
            Ok(0)
        })())
    }
}

exported! {
    fn sys_nanosleep(req: *const Timespec) -> i32 {
        ret((|| {
            sched::sleep_ns(user::read(req)?.to_ns()?);
            Ok(0)
        })())
    }
}

exported! {
    fn sys_usleep(usecs: u64) {
        sched::sleep_ns(usecs.saturating_mul(1000));
    }
}
