//! hermit-abi's socket calls behind safe functions: the crate's only
//! `unsafe`. Each call returns a negative errno on failure (the form std's
//! hermit code reads too), which becomes an [`io::Error`] here; a
//! descriptor the kernel returns becomes an [`OwnedFd`] at once.

use std::ffi::{c_int, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use hermit_abi as abi;

use crate::sockaddr::{SockAddr, SockAddrStorage, socklen_t};

fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}

fn check_size(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::from_raw_os_error(-(ret as i32)))
}

/// Own a descriptor the kernel has just returned.
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` is a descriptor the kernel has just opened for this
    // call (a successful `socket`, `accept` or `dup`); nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(crate) fn socket(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: integers only.
    check(unsafe { abi::socket(domain, ty, protocol) }).map(owned)
}

pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: `addr` points to `addr.len()` readable bytes (its storage is
    // larger), borrowed for the call.
    check(unsafe { abi::bind(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len()) }).map(drop)
}

pub(crate) fn connect(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: as in `bind`.
    check(unsafe { abi::connect(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len()) }).map(drop)
}

pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: c_int) -> io::Result<()> {
    // SAFETY: integers only.
    check(unsafe { abi::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// Run a call that returns an address through a `sockaddr` pointer and a
/// length it updates.
fn with_address<T>(
    call: impl FnOnce(*mut abi::sockaddr, *mut socklen_t) -> io::Result<T>,
) -> io::Result<(T, SockAddr)> {
    let mut storage = SockAddrStorage::zeroed();
    let mut len = storage.size_of();
    let value = call(storage.as_mut_ptr(), &raw mut len)?;
    Ok((value, SockAddr::from_kernel(storage, len)))
}

pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<(OwnedFd, SockAddr)> {
    with_address(|addr, len| {
        // SAFETY: `addr` has `*len` writable bytes and `len` is writable,
        // both live for the call.
        check(unsafe { abi::accept(fd.as_raw_fd(), addr, len) }).map(owned)
    })
}

pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    with_address(|addr, len| {
        // SAFETY: as in `accept`.
        check(unsafe { abi::getsockname(fd.as_raw_fd(), addr, len) })
    })
    .map(|(_, addr)| addr)
}

pub(crate) fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    with_address(|addr, len| {
        // SAFETY: as in `accept`.
        check(unsafe { abi::getpeername(fd.as_raw_fd(), addr, len) })
    })
    .map(|(_, addr)| addr)
}

pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: integers only.
    check(unsafe { abi::dup(fd.as_raw_fd()) }).map(owned)
}

/// The descriptor's status flags (`F_GETFL`): `O_NONBLOCK`.
pub(crate) fn status_flags(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    // SAFETY: integers only.
    check(unsafe { abi::fcntl(fd.as_raw_fd(), abi::F_GETFL, 0) })
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, is_nonblocking: bool) -> io::Result<()> {
    let mut value = c_int::from(is_nonblocking);
    // SAFETY: `FIONBIO` reads one `int` through the pointer, which is
    // valid for the call.
    check(unsafe { abi::ioctl(fd.as_raw_fd(), abi::FIONBIO, (&raw mut value).cast()) }).map(drop)
}

pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: c_int) -> io::Result<()> {
    // SAFETY: integers only.
    check(unsafe { abi::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

/// A buffer the kernel may write received bytes into, initialised or not.
pub(crate) trait RecvBuf {
    fn as_mut_ptr(&mut self) -> *mut u8;
    fn len(&self) -> usize;
}

impl RecvBuf for [u8] {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        <[u8]>::as_mut_ptr(self)
    }
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

impl RecvBuf for [MaybeUninit<u8>] {
    fn as_mut_ptr(&mut self) -> *mut u8 {
        <[MaybeUninit<u8>]>::as_mut_ptr(self).cast()
    }
    fn len(&self) -> usize {
        <[MaybeUninit<u8>]>::len(self)
    }
}

pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut (impl RecvBuf + ?Sized),
    flags: c_int,
) -> io::Result<usize> {
    // SAFETY: `buf` has `buf.len()` writable bytes, borrowed mutably for
    // the call; the kernel only writes bytes (a valid `u8` or
    // `MaybeUninit<u8>` each).
    check_size(unsafe { abi::recv(fd.as_raw_fd(), buf.as_mut_ptr(), buf.len(), flags) })
}

pub(crate) fn recv_from(
    fd: BorrowedFd<'_>,
    buf: &mut (impl RecvBuf + ?Sized),
    flags: c_int,
) -> io::Result<(usize, SockAddr)> {
    with_address(|addr, len| {
        // SAFETY: as in `recv` for `buf`, and as in `accept` for `addr`
        // and `len`.
        check_size(unsafe {
            abi::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
                flags,
                addr,
                len,
            )
        })
    })
}

pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: `buf` has `buf.len()` readable bytes, borrowed for the call.
    check_size(unsafe { abi::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) })
}

pub(crate) fn send_to(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    flags: c_int,
    addr: &SockAddr,
) -> io::Result<usize> {
    // SAFETY: as in `send` for `buf`, and as in `bind` for `addr`.
    check_size(unsafe {
        abi::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            flags,
            addr.as_ptr().cast(),
            addr.len(),
        )
    })
}

/// Wait up to `timeout_ms` (negative: for ever) for `events` on `fd`; the
/// events that happened (none when the time ran out).
pub(crate) fn poll(fd: BorrowedFd<'_>, events: i16, timeout_ms: c_int) -> io::Result<i16> {
    let mut entry = abi::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one writable `pollfd`, live for the call.
    check(unsafe { abi::poll(&raw mut entry, 1, timeout_ms) })?;
    Ok(entry.revents)
}

/// A value a socket option is read or written as: plain data that every
/// bit pattern the kernel may write is a valid value of.
pub(crate) trait OptionValue: Copy {
    fn zero() -> Self;
}

impl OptionValue for c_int {
    fn zero() -> Self {
        0
    }
}

impl OptionValue for abi::linger {
    fn zero() -> Self {
        Self::default()
    }
}

impl OptionValue for abi::timeval {
    fn zero() -> Self {
        Self {
            tv_sec: 0,
            tv_usec: 0,
        }
    }
}

pub(crate) fn get_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    level: c_int,
    name: c_int,
) -> io::Result<T> {
    let mut value = T::zero();
    let mut len = size_of::<T>() as socklen_t;
    // SAFETY: `value` has `len` writable bytes and `len` is writable, both
    // live for the call; any bytes the kernel writes make a valid `T`
    // (`OptionValue` is only for plain integers and structs of them).
    check(unsafe {
        abi::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast::<c_void>(),
            &raw mut len,
        )
    })?;
    Ok(value)
}

pub(crate) fn set_option<T: OptionValue>(
    fd: BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: T,
) -> io::Result<()> {
    // SAFETY: `value` has `size_of::<T>()` readable bytes, live for the
    // call.
    check(unsafe {
        abi::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<c_void>(),
            size_of::<T>() as socklen_t,
        )
    })
    .map(drop)
}
