//! Readiness: `poll`, `ppoll`, `select`, `pselect6` over the descriptor
//! layer's wait (`fd::poll`), `epoll_*` over its `epoll` instances, and
//! the descriptors they watch that are not files: `eventfd`, `pipe`.

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::OpenFlags;

use super::{SysResult, fd_value, ptr, user, value};
use crate::{fd, time};

use super::super::pollfd::{POLLIN, POLLOUT, POLLPRI, POLLRDNORM, POLLWRNORM, revents};

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
    let ready = fd::poll(&mut entries, deadline_ns)?;
    for (i, (raw, entry)) in raw.iter().zip(&entries).enumerate() {
        let revents = revents(raw.events, entry.ready);
        user::write(base.wrapping_add(i), PollFd { revents, ..*raw })?;
    }
    Ok(value(ready))
}

/// `poll(2)`: a negative timeout waits for ever.
pub(super) fn poll(fds: u64, count: usize, timeout_ms: i32) -> SysResult {
    poll_until(fds, count, deadline_ms(timeout_ms))
}

/// `ppoll(2)`: a `timespec` timeout (`NULL`: for ever); the signal mask
/// is accepted (no signal is delivered during the wait).
pub(super) fn ppoll(fds: u64, count: usize, timeout: u64, _mask: u64) -> SysResult {
    let deadline =
        super::time::timeout_ns(timeout, None)?.map(|ns| time::monotonic_ns().saturating_add(ns));
    poll_until(fds, count, deadline)
}

/// `poll`'s deadline for a timeout in ms (negative: none).
fn deadline_ms(timeout_ms: i32) -> Option<u64> {
    u64::try_from(timeout_ms)
        .ok()
        .map(|ms| time::monotonic_ns().saturating_add(ms * 1_000_000))
}

/// `fd_set`: a bitmap of descriptors in 64-bit words.
const FD_SET_WORD_BITS: usize = 64;

/// Read the first `nfds` bits of the set at `at` (`NULL`: empty).
fn read_fd_set(at: u64, nfds: usize) -> Result<Vec<u64>, Errno> {
    let words = nfds.div_ceil(FD_SET_WORD_BITS);
    if at == 0 {
        return Ok(alloc::vec![0; words]);
    }
    let mut set = (0..words)
        .map(|i| user::read(ptr::<u64>(at).wrapping_add(i)))
        .collect::<Result<Vec<u64>, Errno>>()?;
    // Bits at and past `nfds` are not looked at.
    if let Some(last) = set.last_mut()
        && !nfds.is_multiple_of(FD_SET_WORD_BITS)
    {
        *last &= (1 << (nfds % FD_SET_WORD_BITS)) - 1;
    }
    Ok(set)
}

fn write_fd_set(at: u64, set: &[u64]) -> Result<(), Errno> {
    if at == 0 {
        return Ok(());
    }
    for (i, &word) in set.iter().enumerate() {
        user::write(ptr::<u64>(at).wrapping_add(i), word)?;
    }
    Ok(())
}

fn is_set(set: &[u64], fd: usize) -> bool {
    set[fd / FD_SET_WORD_BITS] & (1 << (fd % FD_SET_WORD_BITS)) != 0
}

/// `select`'s core: the three sets at `read`, `write` and `except`, of
/// descriptors below `nfds`, until one is ready or `deadline_ns` passes.
/// A descriptor that is not open is `EBADF`; there is no out-of-band
/// data, so `except` comes back empty.
fn select_until(
    nfds: i32,
    read: u64,
    write: u64,
    except: u64,
    deadline_ns: Option<u64>,
) -> SysResult {
    let nfds = usize::try_from(nfds).map_err(|_| errno::EINVAL)?;
    if nfds > MAX_POLL_FDS {
        return Err(errno::EINVAL);
    }
    let (reads, writes, excepts) = (
        read_fd_set(read, nfds)?,
        read_fd_set(write, nfds)?,
        read_fd_set(except, nfds)?,
    );
    let mut entries: Vec<fd::PollEntry> = (0..nfds)
        .filter(|&fd| is_set(&reads, fd) || is_set(&writes, fd) || is_set(&excepts, fd))
        .map(|fd| {
            let mut wanted = fd::PollEvents::empty();
            wanted.set(fd::PollEvents::IN, is_set(&reads, fd));
            wanted.set(fd::PollEvents::OUT, is_set(&writes, fd));
            fd::PollEntry {
                fd: i32::try_from(fd).unwrap_or(i32::MAX),
                wanted,
                ready: fd::PollEvents::empty(),
            }
        })
        .collect();
    fd::poll(&mut entries, deadline_ns)?;
    let words = nfds.div_ceil(FD_SET_WORD_BITS);
    let (mut reads_out, mut writes_out) = (alloc::vec![0u64; words], alloc::vec![0u64; words]);
    let mut count = 0;
    for entry in &entries {
        if entry.ready.contains(fd::PollEvents::INVALID) {
            return Err(errno::EBADF);
        }
        let fd = usize::try_from(entry.fd).unwrap_or(0);
        let bit = 1 << (fd % FD_SET_WORD_BITS);
        // Linux: readable also on a hang-up or an error, writable also on
        // an error.
        let failed = entry.ready.intersects(fd::PollEvents::ERR);
        let readable = entry
            .ready
            .intersects(fd::PollEvents::IN | fd::PollEvents::HUP)
            || failed;
        if is_set(&reads, fd) && readable {
            reads_out[fd / FD_SET_WORD_BITS] |= bit;
            count += 1;
        }
        if is_set(&writes, fd) && (entry.ready.contains(fd::PollEvents::OUT) || failed) {
            writes_out[fd / FD_SET_WORD_BITS] |= bit;
            count += 1;
        }
    }
    write_fd_set(read, &reads_out)?;
    write_fd_set(write, &writes_out)?;
    write_fd_set(except, &alloc::vec![0; words])?;
    Ok(value(count))
}

/// `struct timeval`.
#[derive(Clone, Copy)]
#[repr(C)]
struct TimeVal {
    seconds: i64,
    micros: i64,
}

/// `select(2)`: a `timeval` timeout (`NULL`: for ever), updated to the
/// time left, as Linux does.
pub(super) fn select(nfds: i32, read: u64, write: u64, except: u64, timeout: u64) -> SysResult {
    let deadline = if timeout == 0 {
        None
    } else {
        let tv = user::read(ptr::<TimeVal>(timeout))?;
        let (Ok(seconds), Ok(micros)) = (u64::try_from(tv.seconds), u64::try_from(tv.micros))
        else {
            return Err(errno::EINVAL);
        };
        if micros >= 1_000_000 {
            return Err(errno::EINVAL);
        }
        let ns = seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(micros * 1000);
        Some(time::monotonic_ns().saturating_add(ns))
    };
    let result = select_until(nfds, read, write, except, deadline);
    if let Some(deadline) = deadline {
        let left = deadline.saturating_sub(time::monotonic_ns());
        let tv = TimeVal {
            seconds: i64::try_from(left / 1_000_000_000).unwrap_or(i64::MAX),
            micros: i64::try_from((left % 1_000_000_000) / 1000).unwrap_or(0),
        };
        user::write(ptr::<TimeVal>(timeout), tv)?;
    }
    result
}

/// `pselect6(2)`: a `timespec` timeout (`NULL`: for ever); the signal
/// mask is accepted (no signal is delivered during the wait).
pub(super) fn pselect6(nfds: i32, read: u64, write: u64, except: u64, timeout: u64) -> SysResult {
    let deadline =
        super::time::timeout_ns(timeout, None)?.map(|ns| time::monotonic_ns().saturating_add(ns));
    select_until(nfds, read, write, except, deadline)
}

const EPOLLIN: u32 = 0x1;
const EPOLLOUT: u32 = 0x4;
const EPOLLERR: u32 = 0x8;
const EPOLLHUP: u32 = 0x10;
const EPOLLRDNORM: u32 = 0x40;
const EPOLLWRNORM: u32 = 0x100;
const EPOLLRDHUP: u32 = 0x2000;
const EPOLLEXCLUSIVE: u32 = 1 << 28;
const EPOLLONESHOT: u32 = 1 << 30;
const EPOLLET: u32 = 1 << 31;
const EPOLL_CLOEXEC: u32 = 0o2000000;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLL_CTL_MOD: i32 = 3;
/// Most events one `epoll_wait` returns (Linux: `INT_MAX / 12`).
const EPOLL_MAX_EVENTS: usize = (i32::MAX as usize) / size_of::<EpollEvent>();

/// `struct epoll_event`: packed on x86_64.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct EpollEvent {
    events: u32,
    data: u64,
}

/// `epoll_create(2)`: the size hint must be positive, and is otherwise
/// unused.
pub(super) fn epoll_create(size: i32) -> SysResult {
    if size <= 0 {
        return Err(errno::EINVAL);
    }
    fd::open_epoll().map(fd_value)
}

/// `epoll_create1(2)`.
pub(super) fn epoll_create1(flags: u32) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(errno::EINVAL);
    }
    fd::open_epoll().map(fd_value)
}

/// `epoll_ctl(2)`.
pub(super) fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: u64) -> SysResult {
    let op = match op {
        EPOLL_CTL_ADD => fd::EpollOp::Add,
        EPOLL_CTL_MOD => fd::EpollOp::Modify,
        EPOLL_CTL_DEL => fd::EpollOp::Delete,
        _ => return Err(errno::EINVAL),
    };
    let raw = if op == fd::EpollOp::Delete {
        EpollEvent { events: 0, data: 0 }
    } else {
        user::read(ptr::<EpollEvent>(event))?
    };
    let events = raw.events;
    let mut wanted = fd::PollEvents::empty();
    wanted.set(fd::PollEvents::IN, events & (EPOLLIN | EPOLLRDNORM) != 0);
    wanted.set(fd::PollEvents::OUT, events & (EPOLLOUT | EPOLLWRNORM) != 0);
    wanted.set(fd::PollEvents::PEER_CLOSED, events & EPOLLRDHUP != 0);
    let mut trigger = fd::Trigger::empty();
    trigger.set(fd::Trigger::EDGE, events & EPOLLET != 0);
    trigger.set(fd::Trigger::ONESHOT, events & EPOLLONESHOT != 0);
    // Linux refuses EPOLLEXCLUSIVE with a modify; one waiter per event
    // is what it asks for, which every wait here is anyway.
    if op == fd::EpollOp::Modify && events & EPOLLEXCLUSIVE != 0 {
        return Err(errno::EINVAL);
    }
    // No out-of-band data or message queues: EPOLLPRI, EPOLLRDBAND,
    // EPOLLWRBAND and EPOLLMSG are never reported; EPOLLWAKEUP means
    // nothing without suspend.
    let how = fd::Watch {
        wanted,
        trigger,
        data: raw.data,
        asked: events,
    };
    fd::epoll_control(epfd, op, fd, how).map(|()| 0)
}

fn epoll_events(ready: fd::PollEvents) -> u32 {
    let mut events = 0;
    for (event, bits) in [
        (fd::PollEvents::IN, EPOLLIN | EPOLLRDNORM),
        (fd::PollEvents::OUT, EPOLLOUT | EPOLLWRNORM),
        (fd::PollEvents::ERR, EPOLLERR),
        (fd::PollEvents::HUP, EPOLLHUP),
        (fd::PollEvents::PEER_CLOSED, EPOLLRDHUP),
    ] {
        if ready.contains(event) {
            events |= bits;
        }
    }
    events
}

/// Wait on `epfd` until `deadline_ns` and write what came into the
/// `max` events at `out`.
fn epoll_until(epfd: i32, out: u64, max: i32, deadline_ns: Option<u64>) -> SysResult {
    let max = usize::try_from(max)
        .ok()
        .filter(|&m| (1..=EPOLL_MAX_EVENTS).contains(&m))
        .ok_or(errno::EINVAL)?;
    // Fail on a bad buffer before waiting, not after taking events.
    let room = max * size_of::<EpollEvent>();
    user::slice_mut(ptr(out), room)?;
    let found = fd::epoll_wait(epfd, max, deadline_ns)?;
    for (i, event) in found.iter().enumerate() {
        let raw = EpollEvent {
            // Only what was asked for, and errors and hang-ups always.
            events: epoll_events(event.events) & (event.asked | EPOLLERR | EPOLLHUP),
            data: event.data,
        };
        user::write(ptr::<EpollEvent>(out).wrapping_add(i), raw)?;
    }
    Ok(value(found.len()))
}

/// `epoll_wait(2)`: a negative timeout waits for ever.
pub(super) fn epoll_wait(epfd: i32, out: u64, max: i32, timeout_ms: i32) -> SysResult {
    epoll_until(epfd, out, max, deadline_ms(timeout_ms))
}

/// `epoll_pwait(2)`: the signal mask is accepted (no signal is delivered
/// during the wait).
pub(super) fn epoll_pwait(epfd: i32, out: u64, max: i32, timeout_ms: i32, _mask: u64) -> SysResult {
    epoll_until(epfd, out, max, deadline_ms(timeout_ms))
}

/// `epoll_pwait2(2)`: a `timespec` timeout (`NULL`: for ever).
pub(super) fn epoll_pwait2(epfd: i32, out: u64, max: i32, timeout: u64, _mask: u64) -> SysResult {
    let deadline =
        super::time::timeout_ns(timeout, None)?.map(|ns| time::monotonic_ns().saturating_add(ns));
    epoll_until(epfd, out, max, deadline)
}

/// `pipe2(2)`: `O_NONBLOCK` and `O_CLOEXEC` (no exec: nothing to do).
pub(super) fn pipe2(fds: u64, flags: u32) -> SysResult {
    const O_NONBLOCK: u32 = 0o4000;
    const O_CLOEXEC: u32 = 0o2000000;
    const O_DIRECT: u32 = 0o40000;
    if flags & !(O_NONBLOCK | O_CLOEXEC | O_DIRECT) != 0 {
        return Err(errno::EINVAL);
    }
    if flags & O_DIRECT != 0 {
        // Packet mode: not kept apart yet.
        return Err(errno::EINVAL);
    }
    // Check the output first: a pipe made for nobody would leak.
    user::write(ptr::<[i32; 2]>(fds), [-1, -1])?;
    let status = if flags & O_NONBLOCK != 0 {
        OpenFlags::NONBLOCK
    } else {
        OpenFlags::empty()
    };
    let pair = fd::open_pipe(status)?;
    user::write(ptr::<[i32; 2]>(fds), pair).map(|()| 0)
}

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
