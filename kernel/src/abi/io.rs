//! read/write family on file descriptors. Only the standard streams exist
//! so far: 0 reads as end of file, 1 and 2 go to the host console.

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::Stream;

use super::{ret, user};
use crate::console;

/// One `struct iovec` of hermit-abi.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct IoVec {
    base: *mut u8,
    len: usize,
}

/// Most iovecs accepted in one call (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

fn output_stream(fd: i32) -> Result<Stream, Errno> {
    match fd {
        1 => Ok(Stream::Stdout),
        2 => Ok(Stream::Stderr),
        _ => Err(errno::EBADF),
    }
}

fn write(fd: i32, buf: *const u8, len: usize) -> Result<usize, Errno> {
    let stream = output_stream(fd)?;
    console::write(stream, user::slice(buf, len)?)
}

fn read(fd: i32, buf: *mut u8, len: usize) -> Result<usize, Errno> {
    match fd {
        // No standard input is connected yet: end of file.
        0 => user::slice_mut(buf, len).map(|_| 0),
        _ => Err(errno::EBADF),
    }
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

/// Apply `op` to each buffer of an iovec array; the total transferred.
fn for_each_iovec(
    iov: *const IoVec,
    count: usize,
    mut op: impl FnMut(*mut u8, usize) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    iovecs(iov, count)?.try_fold(0usize, |total, v| {
        let v = v?;
        Ok(total.saturating_add(op(v.base, v.len)?))
    })
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

#[unsafe(no_mangle)]
pub extern "C" fn sys_close(fd: i32) -> i32 {
    ret(match fd {
        0..=2 => Ok(0),
        _ => Err(errno::EBADF),
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_lseek(fd: i32, _offset: isize, _whence: i32) -> isize {
    ret::<Result<usize, Errno>>(match fd {
        0..=2 => Err(errno::ESPIPE),
        _ => Err(errno::EBADF),
    })
}
