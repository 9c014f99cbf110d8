//! Host directories mounted with `--mount`: each operation is one
//! [`HostFs`] hypercall (see `docs/hypercalls/03-host-fs.md`). The VMM
//! resolves paths beneath the mount's directory and refuses writes to a
//! read-only mount; buffers are passed by address and checked there too.
//!
//! Every call is a VM exit (~30 µs here), so two are saved where they can
//! be without changing what a program sees: an open brings the file's
//! stat back with the handle, and closes are gathered and sent
//! [`CLOSE_BATCH`] at a time (a closed handle is the kernel's alone: the
//! host file only stays open a little longer; an open that finds the
//! VMM's handles used up sends the gathered closes first).

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags};
use eremite_interface::hypercall::{HostFs, HostFsOp};

use crate::hypervisor;
use crate::sync::Lock;

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

/// Open `path`; the VMM's handle and the file's stat at the open.
pub(crate) fn open(
    mount: u32,
    path: &[u8],
    flags: OpenFlags,
    mode: u32,
) -> Result<(u64, FileStat), Errno> {
    let mut r = with_path(request(HostFsOp::Open, mount), path);
    r.flags = flags.bits();
    r.mode = mode;
    let mut stat = FileStat::default();
    r.buf = &raw mut stat as u64;
    r.buf_len = size_of::<FileStat>() as u64;
    match call(r) {
        Err(errno::EMFILE) if flush_closes() > 0 => call(r),
        result => result,
    }
    .map(|handle| (handle, stat))
}

/// Closes gathered before they are sent in one call.
const CLOSE_BATCH: usize = 32;
const _: () = assert!(CLOSE_BATCH as u64 <= HostFs::MAX_CLOSE_BATCH);

/// Handles closed by the kernel, not yet by the VMM: (mount, handle).
static CLOSING: Lock<Vec<(u32, u64)>> = Lock::new(Vec::new());

/// Close a handle (see the module's documentation: the VMM hears of it
/// with the next [`CLOSE_BATCH`]); errors are not interesting to anyone.
pub(crate) fn close(mount: u32, handle: u64) {
    let is_full = {
        let mut closing = CLOSING.lock();
        closing.push((mount, handle));
        closing.len() >= CLOSE_BATCH
    };
    if is_full {
        flush_closes();
    }
}

/// Send the gathered closes, one call per mount; how many there were.
fn flush_closes() -> usize {
    let closing = core::mem::take(&mut *CLOSING.lock());
    let mut mounts: Vec<u32> = closing.iter().map(|&(mount, _)| mount).collect();
    mounts.sort_unstable();
    mounts.dedup();
    for mount in mounts {
        let handles: Vec<u64> = closing
            .iter()
            .filter(|&&(m, _)| m == mount)
            .map(|&(_, handle)| handle)
            .collect();
        for chunk in handles.chunks(CLOSE_BATCH) {
            let mut r = request(HostFsOp::CloseMany, mount);
            r.buf = chunk.as_ptr() as u64;
            r.buf_len = size_of_val(chunk) as u64;
            let _ = call(r);
        }
    }
    closing.len()
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

/// Make a handle's data (`data_only`) or data and metadata durable on
/// the host: `fdatasync` or `fsync` there.
pub(crate) fn sync(mount: u32, handle: u64, data_only: bool) -> Result<(), Errno> {
    let mut r = request(HostFsOp::Sync, mount);
    r.handle = handle;
    r.flags = if data_only { HostFs::DATA_ONLY } else { 0 };
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
