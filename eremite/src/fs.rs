//! File-system operations that Rust's std for `x86_64-unknown-hermit`
//! reports as unsupported without asking the kernel, with std's
//! signatures: use `eremite::fs::rename(a, b)` where a Linux program would
//! write `std::fs::rename(a, b)`. Errors are the kernel's errno values as
//! [`io::Error::from_raw_os_error`], so `kind()` works as usual.
//!
//! Each function calls an ABI function the eremite kernel exports beside
//! hermit-abi's (`sys_rename`, `sys_symlink`, …); paths below a directory
//! mounted with `eremite run --mount` reach the host.

extern crate std;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::hermit::ffi::{OsStrExt, OsStringExt};
use std::os::hermit::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::vec;

unsafe extern "C" {
    fn sys_rename(from: *const u8, to: *const u8) -> i32;
    fn sys_symlink(target: *const u8, link: *const u8) -> i32;
    fn sys_link(from: *const u8, to: *const u8) -> i32;
    fn sys_readlink(path: *const u8, buf: *mut u8, len: usize) -> isize;
    fn sys_truncate(path: *const u8, len: i64) -> i32;
    fn sys_ftruncate(fd: i32, len: i64) -> i32;
    fn sys_chmod(path: *const u8, mode: u32) -> i32;
    fn sys_realpath(path: *const u8, buf: *mut u8, len: usize) -> isize;
    fn sys_fsync(fd: i32) -> i32;
    fn sys_lstat(path: *const u8, stat: *mut Stat) -> i32;
}

/// hermit-abi's `struct stat` (timespecs as two words each).
#[repr(C)]
#[derive(Default)]
struct Stat {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: i64,
    blksize: i64,
    blocks: i64,
    times: [u64; 6],
}

/// Longest path the kernel accepts, NUL included.
const PATH_MAX: usize = 4096;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A non-negative result, or the error its negation names.
fn check(result: isize) -> io::Result<usize> {
    usize::try_from(result).map_err(|_| io::Error::from_raw_os_error(result.unsigned_abs() as i32))
}

fn length(len: u64) -> io::Result<i64> {
    i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(22))
}

/// Rename a file or directory, replacing `to` if it exists (as
/// [`std::fs::rename`] on Linux).
pub fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (c_path(from.as_ref())?, c_path(to.as_ref())?);
    // SAFETY: both are NUL-terminated strings that outlive the call.
    check(unsafe { sys_rename(from.as_ptr().cast(), to.as_ptr().cast()) } as isize).map(drop)
}

/// Create a symbolic link at `link` pointing to `original` (as
/// `std::os::unix::fs::symlink`).
pub fn symlink(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    let (original, link) = (c_path(original.as_ref())?, c_path(link.as_ref())?);
    // SAFETY: both are NUL-terminated strings that outlive the call.
    check(unsafe { sys_symlink(original.as_ptr().cast(), link.as_ptr().cast()) } as isize).map(drop)
}

/// Create a hard link `link` to the file `original` (as
/// [`std::fs::hard_link`]).
pub fn hard_link(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    let (original, link) = (c_path(original.as_ref())?, c_path(link.as_ref())?);
    // SAFETY: both are NUL-terminated strings that outlive the call.
    check(unsafe { sys_link(original.as_ptr().cast(), link.as_ptr().cast()) } as isize).map(drop)
}

/// The target of a symbolic link (as [`std::fs::read_link`]).
pub fn read_link(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = c_path(path.as_ref())?;
    let mut buf = vec![0u8; PATH_MAX];
    // SAFETY: `path` is NUL-terminated; `buf` is writable for its length.
    let n = check(unsafe { sys_readlink(path.as_ptr().cast(), buf.as_mut_ptr(), buf.len()) })?;
    buf.truncate(n);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Set the length of the file at `path` (as `truncate(2)`).
pub fn truncate(path: impl AsRef<Path>, len: u64) -> io::Result<()> {
    let path = c_path(path.as_ref())?;
    let len = length(len)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { sys_truncate(path.as_ptr().cast(), len) } as isize).map(drop)
}

/// Set the length of an open file (as [`File::set_len`]).
pub fn set_len(file: &File, len: u64) -> io::Result<()> {
    let len = length(len)?;
    // SAFETY: a plain call with integer arguments.
    check(unsafe { sys_ftruncate(file.as_raw_fd(), len) } as isize).map(drop)
}

/// Make an open file's data and metadata durable (as
/// [`File::sync_all`]): a file or directory in a host mount is synced on
/// the host (`fsync`); the RAM file system has nothing to flush.
pub fn sync_all(file: &File) -> io::Result<()> {
    // SAFETY: a plain call with an integer argument.
    check(unsafe { sys_fsync(file.as_raw_fd()) } as isize).map(drop)
}

/// Set the permission bits of `path` (as `chmod(2)`).
pub fn set_mode(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
    let path = c_path(path.as_ref())?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    check(unsafe { sys_chmod(path.as_ptr().cast(), mode) } as isize).map(drop)
}

/// The type and permission bits (`st_mode`) of `path`, not following a
/// symbolic link in the last component: what `std::os::unix::fs::
/// MetadataExt::mode` gives on Linux, which std for hermit lacks.
pub fn mode(path: impl AsRef<Path>) -> io::Result<u32> {
    let path = c_path(path.as_ref())?;
    let mut stat = Stat::default();
    // SAFETY: `path` is NUL-terminated; `stat` is a writable struct of the
    // layout the kernel writes.
    check(unsafe { sys_lstat(path.as_ptr().cast(), &mut stat) } as isize)?;
    Ok(stat.mode)
}

/// The absolute path without `.`, `..` or symbolic links (as
/// [`std::fs::canonicalize`]). Below a host mount, the host's own
/// symbolic links are not resolved.
pub fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = c_path(path.as_ref())?;
    let mut buf = vec![0u8; PATH_MAX];
    // SAFETY: `path` is NUL-terminated; `buf` is writable for its length.
    let n = check(unsafe { sys_realpath(path.as_ptr().cast(), buf.as_mut_ptr(), buf.len()) })?;
    buf.truncate(n);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Remove a directory and everything in it, without following symbolic
/// links (as [`std::fs::remove_dir_all`]); a file or link is just removed.
pub fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    if !std::fs::symlink_metadata(path)?.is_dir() {
        return std::fs::remove_file(path);
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir(path)
}
