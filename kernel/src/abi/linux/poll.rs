//! `poll`, `ppoll` and `eventfd2` over the descriptor layer's readiness
//! wait (`fd::poll`).

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::OpenFlags;

use super::{SysResult, fd_value, ptr, user, value};
use crate::{fd, time};

const POLLIN: i16 = 0x1;
const POLLPRI: i16 = 0x2;
const POLLOUT: i16 = 0x4;
const POLLERR: i16 = 0x8;
const POLLHUP: i16 = 0x10;
const POLLNVAL: i16 = 0x20;
const POLLRDNORM: i16 = 0x40;
const POLLWRNORM: i16 = 0x100;

/// `struct pollfd`.
#[derive(Clone, Copy)]
#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/// Most descriptors one call takes (`RLIMIT_NOFILE`).
const MAX_POLL_FDS: usize = 65536;

fn wanted(events: i16) -> fd::PollEvents {
    let mut wanted = fd::PollEvents::empty();
    wanted.set(
        fd::PollEvents::IN,
        events & (POLLIN | POLLRDNORM | POLLPRI) != 0,
    );
    wanted.set(fd::PollEvents::OUT, events & (POLLOUT | POLLWRNORM) != 0);
    wanted
}

fn revents(events: i16, ready: fd::PollEvents) -> i16 {
    let mut revents = 0;
    if ready.contains(fd::PollEvents::IN) {
        revents |= events & (POLLIN | POLLRDNORM);
    }
    if ready.contains(fd::PollEvents::OUT) {
        revents |= events & (POLLOUT | POLLWRNORM);
    }
    for (event, bit) in [
        (fd::PollEvents::ERR, POLLERR),
        (fd::PollEvents::HUP, POLLHUP),
        (fd::PollEvents::INVALID, POLLNVAL),
    ] {
        if ready.contains(event) {
            revents |= bit;
        }
    }
    revents
}

/// Poll the `count` entries at `fds` until one is ready or `deadline_ns`
/// (monotonic) passes.
fn poll_until(fds: u64, count: usize, deadline_ns: Option<u64>) -> SysResult {
    if count > MAX_POLL_FDS {
        return Err(errno::EINVAL);
    }
    let base = ptr::<PollFd>(fds);
    let raw = (0..count)
        .map(|i| user::read(base.wrapping_add(i)))
        .collect::<Result<Vec<PollFd>, Errno>>()?;
    let mut entries: Vec<fd::PollEntry> = raw
        .iter()
        .map(|e| fd::PollEntry {
            fd: e.fd,
            wanted: wanted(e.events),
            ready: fd::PollEvents::empty(),
        })
        .collect();
    let ready = fd::poll(&mut entries, deadline_ns);
    for (i, (raw, entry)) in raw.iter().zip(&entries).enumerate() {
        let revents = revents(raw.events, entry.ready);
        user::write(base.wrapping_add(i), PollFd { revents, ..*raw })?;
    }
    Ok(value(ready))
}

/// `poll(2)`: a negative timeout waits for ever.
pub(super) fn poll(fds: u64, count: usize, timeout_ms: i32) -> SysResult {
    let deadline = u64::try_from(timeout_ms)
        .ok()
        .map(|ms| time::monotonic_ns().saturating_add(ms * 1_000_000));
    poll_until(fds, count, deadline)
}

/// `ppoll(2)`: a `timespec` timeout (`NULL`: for ever); the signal mask
/// is accepted (no signal is delivered during the wait).
pub(super) fn ppoll(fds: u64, count: usize, timeout: u64, _mask: u64) -> SysResult {
    let deadline =
        super::time::timeout_ns(timeout, None)?.map(|ns| time::monotonic_ns().saturating_add(ns));
    poll_until(fds, count, deadline)
}

/// `eventfd2(2)`.
pub(super) fn eventfd2(initial: u32, flags: u32) -> SysResult {
    const EFD_SEMAPHORE: u32 = 0o1;
    const EFD_NONBLOCK: u32 = 0o4000;
    const EFD_CLOEXEC: u32 = 0o2000000;
    if flags & !(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC) != 0 {
        return Err(errno::EINVAL);
    }
    let status = if flags & EFD_NONBLOCK != 0 {
        OpenFlags::NONBLOCK
    } else {
        OpenFlags::empty()
    };
    fd::open_eventfd(u64::from(initial), flags & EFD_SEMAPHORE != 0, status).map(fd_value)
}
