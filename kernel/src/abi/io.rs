//! read/write family on file descriptors: files, directories and the
//! standard streams all live in one table (`fs`).

use eremite_interface::errno::{self, Errno};

use super::{ret, user};
use crate::fs;

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
    fs::write(fd, user::slice(buf, len)?, None)
}

fn read(fd: i32, buf: *mut u8, len: usize) -> Result<usize, Errno> {
    fs::read(fd, user::slice_mut(buf, len)?, None)
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
    let mut total = 0usize;
    for v in iovecs(iov, count)? {
        let v = v?;
        let n = match op(v.base, v.len) {
            Ok(n) => n,
            // What was transferred before the error is the result.
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n);
        if n < v.len {
            break;
        }
    }
    Ok(total)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    ret(write(fd, buf, len))
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_writev(fd: i32, iov: *const IoVec, iovcnt: usize) -> isize {
    ret(for_each_iovec(iov, iovcnt, |base, len| {
        write(fd, base, len)
    }))
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
    ret(read(fd, buf, len))
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_readv(fd: i32, iov: *const IoVec, iovcnt: usize) -> isize {
    ret(for_each_iovec(iov, iovcnt, |base, len| read(fd, base, len)))
}

/// `pread(2)`: read at `offset` without moving the file position.
#[unsafe(no_mangle)]
pub extern "C" fn sys_pread(fd: i32, buf: *mut u8, len: usize, offset: i64) -> isize {
    ret(u64::try_from(offset)
        .map_err(|_| errno::EINVAL)
        .and_then(|at| fs::read(fd, user::slice_mut(buf, len)?, Some(at))))
}

/// `pwrite(2)`: write at `offset` without moving the file position.
#[unsafe(no_mangle)]
pub extern "C" fn sys_pwrite(fd: i32, buf: *const u8, len: usize, offset: i64) -> isize {
    ret(u64::try_from(offset)
        .map_err(|_| errno::EINVAL)
        .and_then(|at| fs::write(fd, user::slice(buf, len)?, Some(at))))
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_close(fd: i32) -> i32 {
    ret(fs::close(fd).map(|()| 0))
}

const SEEK_SET: i32 = 0;
const SEEK_CUR: i32 = 1;
const SEEK_END: i32 = 2;

#[unsafe(no_mangle)]
pub extern "C" fn sys_lseek(fd: i32, offset: isize, whence: i32) -> isize {
    let whence = match whence {
        SEEK_SET => fs::Whence::Start,
        SEEK_CUR => fs::Whence::Current,
        SEEK_END => fs::Whence::End,
        _ => return ret::<Result<usize, Errno>>(Err(errno::EINVAL)),
    };
    ret(fs::seek(fd, offset as i64, whence)
        .and_then(|pos| usize::try_from(pos).map_err(|_| errno::EOVERFLOW)))
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_dup(fd: i32) -> i32 {
    ret(fs::dup(fd))
}

const F_DUPFD: i32 = 0;
const F_GETFD: i32 = 1;
const F_SETFD: i32 = 2;
const F_GETFL: i32 = 3;
const F_SETFL: i32 = 4;

#[unsafe(no_mangle)]
pub extern "C" fn sys_fcntl(fd: i32, cmd: i32, arg: i32) -> i32 {
    ret(match cmd {
        F_DUPFD => fs::dup(fd),
        // There is no exec, so close-on-exec is accepted and means nothing.
        F_GETFD | F_SETFD => fs::status_flags(fd).map(|_| 0),
        F_GETFL => fs::status_flags(fd).map(|f| f as i32),
        F_SETFL => fs::set_status_flags(fd, arg as u32).map(|()| 0),
        _ => Err(errno::EINVAL),
    })
}

/// `fsync(2)`: nothing to do (see `fs::sync`).
#[unsafe(no_mangle)]
pub extern "C" fn sys_fsync(fd: i32) -> i32 {
    ret(fs::sync(fd).map(|()| 0))
}
