//! Host directories mounted with `--mount`: each operation is one
//! [`HostFs`] hypercall (see `docs/hypercalls/03-host-fs.md`). The VMM
//! resolves paths beneath the mount's directory and refuses writes to a
//! read-only mount; buffers are passed by address and checked there too.

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags};
use eremite_interface::hypercall::{HostFs, HostFsOp};

use crate::hypervisor;

/// One request with the fields every call sets.
fn request(op: HostFsOp, mount: u32) -> HostFs {
    HostFs {
        op: op as u32,
        mount,
        ..HostFs::default()
    }
}

fn with_path(mut request: HostFs, path: &[u8]) -> HostFs {
    request.path = path.as_ptr() as u64;
    request.path_len = path.len() as u64;
    request
}

fn call(mut request: HostFs) -> Result<u64, Errno> {
    hypervisor::host_fs(&mut request);
    if request.result < 0 {
        Err(Errno(
            i32::try_from(-request.result).unwrap_or(errno::EIO.0),
        ))
    } else {
        Ok(request.result as u64)
    }
}

/// Open `path`; the VMM's handle.
pub(crate) fn open(mount: u32, path: &[u8], flags: OpenFlags, mode: u32) -> Result<u64, Errno> {
    let mut r = with_path(request(HostFsOp::Open, mount), path);
    r.flags = flags.bits();
    r.mode = mode;
    call(r)
}

/// Close a handle; errors are not interesting to anyone.
pub(crate) fn close(mount: u32, handle: u64) {
    let mut r = request(HostFsOp::Close, mount);
    r.handle = handle;
    let _ = call(r);
}

/// A `Read` or `Write` of the `len` bytes at `buf`, at `offset`; at most
/// [`HostFs::MAX_IO_BYTES`] per call.
fn transfer(
    op: HostFsOp,
    mount: u32,
    handle: u64,
    offset: u64,
    buf: u64,
    len: usize,
) -> Result<usize, Errno> {
    let mut r = request(op, mount);
    r.handle = handle;
    r.offset = offset;
    r.buf = buf;
    r.buf_len = (len as u64).min(HostFs::MAX_IO_BYTES);
    call(r).map(|n| n as usize)
}

/// A copy of our own for a transfer whose buffer lies in the virtual
/// window (not guest-physical addresses the VMM could use).
fn needs_copy(buf: &[u8]) -> bool {
    eremite_interface::layout::is_in_virtual_window(buf.as_ptr() as u64, buf.len() as u64)
}

/// Largest copy of a window buffer per transfer.
const COPY_BYTES: usize = 64 << 10;

/// Read at `offset`.
pub(crate) fn read(mount: u32, handle: u64, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    if needs_copy(buf) {
        let mut copy = alloc::vec![0u8; buf.len().min(COPY_BYTES)];
        let n = read(mount, handle, offset, &mut copy)?;
        buf[..n].copy_from_slice(&copy[..n]);
        return Ok(n);
    }
    transfer(
        HostFsOp::Read,
        mount,
        handle,
        offset,
        buf.as_mut_ptr() as u64,
        buf.len(),
    )
}

/// Write at `offset` (at the end for a handle opened with `O_APPEND`).
pub(crate) fn write(mount: u32, handle: u64, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
    if needs_copy(buf) {
        let copy = buf[..buf.len().min(COPY_BYTES)].to_vec();
        return write(mount, handle, offset, &copy);
    }
    transfer(
        HostFsOp::Write,
        mount,
        handle,
        offset,
        buf.as_ptr() as u64,
        buf.len(),
    )
}

fn stat_into(mut r: HostFs) -> Result<FileStat, Errno> {
    let mut stat = FileStat::default();
    r.buf = &raw mut stat as u64;
    r.buf_len = size_of::<FileStat>() as u64;
    call(r)?;
    Ok(stat)
}

/// `stat`/`lstat` of `path`.
pub(crate) fn stat(mount: u32, path: &[u8], follow_last: bool) -> Result<FileStat, Errno> {
    let mut r = with_path(request(HostFsOp::Stat, mount), path);
    if !follow_last {
        r.flags = HostFs::NOFOLLOW;
    }
    stat_into(r)
}

/// `fstat` of a handle.
pub(crate) fn fstat(mount: u32, handle: u64) -> Result<FileStat, Errno> {
    let mut r = request(HostFsOp::Fstat, mount);
    r.handle = handle;
    stat_into(r)
}

/// An operation on one path with a mode (mkdir, chmod) or without.
pub(crate) fn path_op(op: HostFsOp, mount: u32, path: &[u8], mode: u32) -> Result<(), Errno> {
    let mut r = with_path(request(op, mount), path);
    r.mode = mode;
    call(r).map(drop)
}

/// An operation on two paths: rename, link (`path` → `path2`), symlink
/// (a link at `path` pointing to `path2`).
pub(crate) fn two_path_op(
    op: HostFsOp,
    mount: u32,
    path: &[u8],
    path2: &[u8],
) -> Result<(), Errno> {
    let mut r = with_path(request(op, mount), path);
    r.path2 = path2.as_ptr() as u64;
    r.path2_len = path2.len() as u64;
    call(r).map(drop)
}

/// The target of a symbolic link, truncated to `buf`; the bytes copied.
pub(crate) fn readlink(mount: u32, path: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
    if needs_copy(buf) {
        let mut copy = alloc::vec![0u8; buf.len().min(COPY_BYTES)];
        let n = readlink(mount, path, &mut copy)?;
        buf[..n].copy_from_slice(&copy[..n]);
        return Ok(n);
    }
    let mut r = with_path(request(HostFsOp::Readlink, mount), path);
    r.buf = buf.as_mut_ptr() as u64;
    r.buf_len = buf.len() as u64;
    call(r).map(|n| (n as usize).min(buf.len()))
}

/// Set the length of `path`.
pub(crate) fn truncate(mount: u32, path: &[u8], len_bytes: u64) -> Result<(), Errno> {
    let mut r = with_path(request(HostFsOp::Truncate, mount), path);
    r.offset = len_bytes;
    call(r).map(drop)
}

/// Set the length of a handle.
pub(crate) fn ftruncate(mount: u32, handle: u64, len_bytes: u64) -> Result<(), Errno> {
    let mut r = request(HostFsOp::Ftruncate, mount);
    r.handle = handle;
    r.offset = len_bytes;
    call(r).map(drop)
}

/// Directory records from `cookie` into `buf`; the bytes filled (0 at
/// the end).
pub(crate) fn read_dir(
    mount: u32,
    handle: u64,
    cookie: u64,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let mut r = request(HostFsOp::ReadDir, mount);
    r.handle = handle;
    r.offset = cookie;
    r.buf = buf.as_mut_ptr() as u64;
    r.buf_len = buf.len() as u64;
    call(r).map(|n| (n as usize).min(buf.len()))
}
