//! The profiler's clock: a POSIX timer per vCPU thread whose signal (the
//! kick signal, whose handler does nothing) interrupts that thread's
//! `KVM_RUN` at a fixed rate, so the vCPU loop takes a sample at the exit
//! (`crate::profile`). Wall-clock (`CLOCK_MONOTONIC`): an idle vCPU is
//! sampled too, in the kernel's idle gate.

use std::time::Duration;

/// An armed timer; disarmed and deleted on drop.
pub(super) struct SampleTimer(libc::timer_t);

impl SampleTimer {
    /// Signal the calling thread with `signal` `hz` times a second.
    pub(super) fn start(hz: u32, signal: libc::c_int) -> std::io::Result<Self> {
        // SAFETY: `sigevent` is a plain C struct for which all zeroes is a
        // valid value (no notification); the fields that matter are set
        // below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = signal;
        // SAFETY: `gettid` has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; the kernel
        // writes the new timer's id to `timer`.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &raw mut event, &raw mut timer) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let timer = Self(timer);
        let period = Duration::from_secs(1) / hz.max(1);
        let spec = libc::timespec {
            tv_sec: libc::time_t::try_from(period.as_secs()).unwrap_or(1),
            tv_nsec: libc::c_long::from(period.subsec_nanos()),
        };
        let interval = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        // SAFETY: `timer.0` is the timer made above; `interval` is valid
        // for the call and the old value is not asked for.
        if unsafe { libc::timer_settime(timer.0, 0, &raw const interval, std::ptr::null_mut()) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(timer)
    }
}

impl Drop for SampleTimer {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a timer this value made and nothing else
        // deletes; deleting also disarms it.
        unsafe { libc::timer_delete(self.0) };
    }
}
