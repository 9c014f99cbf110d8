//! The read/write family on file descriptors (files, directories, the
//! standard streams, sockets and event counters all live in `fd`'s table).

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};

use super::fs::{O_APPEND, O_NONBLOCK, hermit_open_flags, open_flags};
use super::{exported, ret, user};
use crate::fd;

/// One `struct iovec` of hermit-abi.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct IoVec {
    base: *mut u8,
    len: usize,
}

/// Most iovecs accepted in one call (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

fn write(fd: i32, buf: *const u8, len: usize) -> Result<usize, Errno> {
    fd::write(fd, user::slice(buf, len)?)
}

fn read(fd: i32, buf: *mut u8, len: usize) -> Result<usize, Errno> {
    fd::read(fd, user::slice_mut(buf, len)?)
}

fn iovecs(
    iov: *const IoVec,
    count: usize,
) -> Result<impl Iterator<Item = Result<IoVec, Errno>>, Errno> {
    if count > IOV_MAX {
        return Err(errno::EINVAL);
    }
    Ok((0..count).map(move |i| user::read(iov.wrapping_add(i))))
}

/// Apply `op` to each buffer of an iovec array until one is short; the
/// total transferred.
fn for_each_iovec(
    iov: *const IoVec,
    count: usize,
    mut op: impl FnMut(*mut u8, usize) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    fd::until_short(iovecs(iov, count)?, |v| v.len, |v| op(v.base, v.len))
}

exported! {
    fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
        ret(write(fd, buf, len))
    }
}

exported! {
    fn sys_writev(fd: i32, iov: *const IoVec, iovcnt: usize) -> isize {
        ret((|| {
            let bufs = iovecs(iov, iovcnt)?
                .map(|v| v.and_then(|v| user::slice(v.base, v.len)))
                .collect::<Result<Vec<_>, _>>()?;
            fd::write_vectored(fd, &bufs)
        })())
    }
}

exported! {
    fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
        ret(read(fd, buf, len))
    }
}

exported! {
    fn sys_readv(fd: i32, iov: *const IoVec, iovcnt: usize) -> isize {
        ret(for_each_iovec(iov, iovcnt, |base, len| read(fd, base, len)))
    }
}

exported! {
    /// `pread(2)`: read at `offset` without moving the file position.
    fn sys_pread(fd: i32, buf: *mut u8, len: usize, offset: i64) -> isize {
        ret(u64::try_from(offset)
            .map_err(|_| errno::EINVAL)
            .and_then(|at| fd::pread(fd, user::slice_mut(buf, len)?, at)))
    }
}

exported! {
    /// `pwrite(2)`: write at `offset` without moving the file position.
    fn sys_pwrite(fd: i32, buf: *const u8, len: usize, offset: i64) -> isize {
        ret(u64::try_from(offset)
            .map_err(|_| errno::EINVAL)
            .and_then(|at| fd::pwrite(fd, user::slice(buf, len)?, at)))
    }
}

exported! {
    fn sys_close(fd: i32) -> i32 {
        ret(fd::close(fd).map(|()| 0))
    }
}

const SEEK_SET: i32 = 0;
const SEEK_CUR: i32 = 1;
const SEEK_END: i32 = 2;

exported! {
    fn sys_lseek(fd: i32, offset: isize, whence: i32) -> isize {
        let whence = match whence {
            SEEK_SET => fd::Whence::Start,
            SEEK_CUR => fd::Whence::Current,
            SEEK_END => fd::Whence::End,
            _ => return ret::<Result<usize, Errno>>(Err(errno::EINVAL)),
        };
        ret(fd::seek(fd, offset as i64, whence)
            .and_then(|pos| usize::try_from(pos).map_err(|_| errno::EOVERFLOW)))
    }
}

exported! {
    fn sys_dup(fd: i32) -> i32 {
        ret(fd::dup(fd))
    }
}

const F_DUPFD: i32 = 0;
const F_GETFD: i32 = 1;
const F_SETFD: i32 = 2;
const F_GETFL: i32 = 3;
const F_SETFL: i32 = 4;
/// What `F_SETFL` may change: `O_APPEND` and `O_NONBLOCK` (others are
/// ignored, as on Linux).
const OPEN_STATUS_FLAGS: u32 = O_APPEND | O_NONBLOCK;

exported! {
    fn sys_fcntl(fd: i32, cmd: i32, arg: i32) -> i32 {
        ret(match cmd {
            F_DUPFD => fd::dup(fd),
            // There is no exec, so close-on-exec is accepted and means nothing.
            F_GETFD | F_SETFD => fd::status_flags(fd).map(|_| 0),
            F_GETFL => fd::status_flags(fd).map(|f| hermit_open_flags(f) as i32),
            F_SETFL => open_flags(arg.cast_unsigned() & OPEN_STATUS_FLAGS)
                .and_then(|flags| fd::set_status_flags(fd, flags))
                .map(|()| 0),
            _ => Err(errno::EINVAL),
        })
    }
}

exported! {
    /// `fsync(2)`: a file in a mount is synced on the host (see
    /// `fd::sync`).
    fn sys_fsync(fd: i32) -> i32 {
        ret(fd::sync(fd, false).map(|()| 0))
    }
}
