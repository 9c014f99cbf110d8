//! File-system calls on paths, `stat` and directory listing; also the
//! calls Rust's std for hermit does not make (rename, symlink, readlink,
//! truncate, link, chmod, realpath), which the `eremite` crate's
//! `eremite::fs` offers to applications.

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags};

use super::time::Timespec;
use super::{exported, ret, user};
use crate::{fd, fs};

// hermit-abi's open flags (hermit-abi 0.5 `O_*`; `O_NOFOLLOW` is Linux's
// value, which `eremite::fs` passes).
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;
pub(super) const O_APPEND: u32 = 0o2000;
pub(super) const O_NONBLOCK: u32 = 0o4000;
const O_DIRECTORY: u32 = 0o200000;
const O_NOFOLLOW: u32 = 0o400000;
const O_CLOEXEC: u32 = 0o2000000;

/// hermit-abi's open flags and the core's.
const OPEN_FLAGS: [(u32, OpenFlags); 10] = [
    (O_WRONLY, OpenFlags::WRONLY),
    (O_RDWR, OpenFlags::RDWR),
    (O_CREAT, OpenFlags::CREAT),
    (O_EXCL, OpenFlags::EXCL),
    (O_TRUNC, OpenFlags::TRUNC),
    (O_APPEND, OpenFlags::APPEND),
    (O_NONBLOCK, OpenFlags::NONBLOCK),
    (O_DIRECTORY, OpenFlags::DIRECTORY),
    (O_NOFOLLOW, OpenFlags::NOFOLLOW),
    (O_CLOEXEC, OpenFlags::CLOEXEC),
];

/// The core's flags for hermit-abi's `raw`: `EINVAL` for a bit it does not
/// know.
pub(super) fn open_flags(raw: u32) -> Result<OpenFlags, Errno> {
    let mut flags = OpenFlags::empty();
    let mut known = 0;
    for (bit, flag) in OPEN_FLAGS {
        if raw & bit != 0 {
            flags |= flag;
        }
        known |= bit;
    }
    if raw & !known != 0 {
        return Err(errno::EINVAL);
    }
    Ok(flags)
}

/// hermit-abi's bits for the core's `flags`.
pub(super) fn hermit_open_flags(flags: OpenFlags) -> u32 {
    OPEN_FLAGS
        .iter()
        .filter(|(_, flag)| flags.contains(*flag))
        .fold(0, |raw, (bit, _)| raw | bit)
}

/// hermit-abi's `struct stat`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct Stat {
    st_dev: u64,
    st_ino: u64,
    st_nlink: u64,
    st_mode: u32,
    st_uid: u32,
    st_gid: u32,
    st_rdev: u64,
    st_size: i64,
    st_blksize: i64,
    st_blocks: i64,
    st_atim: Timespec,
    st_mtim: Timespec,
    st_ctim: Timespec,
}

fn timespec(ns: i64) -> Timespec {
    Timespec::from_ns(u64::try_from(ns).unwrap_or(0))
}

impl From<FileStat> for Stat {
    fn from(s: FileStat) -> Self {
        Self {
            st_ino: s.ino,
            st_nlink: s.nlink,
            st_mode: s.mode,
            st_size: i64::try_from(s.size).unwrap_or(i64::MAX),
            st_blksize: 4096,
            st_blocks: i64::try_from(s.blocks).unwrap_or(i64::MAX),
            st_atim: timespec(s.atime_ns),
            st_mtim: timespec(s.mtime_ns),
            st_ctim: timespec(s.ctime_ns),
            ..Self::default()
        }
    }
}

fn open(name: *const u8, flags: i32, mode: i32) -> Result<i32, Errno> {
    let flags = open_flags(flags.cast_unsigned())?;
    fd::open(user::path(name)?, flags, mode.cast_unsigned())
}

exported! {
    fn sys_open(name: *const u8, flags: i32, mode: i32) -> i32 {
        ret(open(name, flags, mode))
    }
}

exported! {
    fn sys_opendir(name: *const u8) -> i32 {
        ret(user::path(name)
            .and_then(|p| fd::open(p, OpenFlags::RDONLY | OpenFlags::DIRECTORY, 0)))
    }
}

fn stat_to(result: Result<FileStat, Errno>, out: *mut Stat) -> i32 {
    ret(result
        .and_then(|s| user::write(out, Stat::from(s)))
        .map(|()| 0))
}

exported! {
    fn sys_stat(name: *const u8, out: *mut Stat) -> i32 {
        stat_to(user::path(name).and_then(|p| fs::stat(p, true)), out)
    }
}

exported! {
    fn sys_lstat(name: *const u8, out: *mut Stat) -> i32 {
        stat_to(user::path(name).and_then(|p| fs::stat(p, false)), out)
    }
}

exported! {
    fn sys_fstat(fd: i32, out: *mut Stat) -> i32 {
        stat_to(fd::fstat(fd), out)
    }
}

exported! {
    fn sys_mkdir(name: *const u8, mode: u32) -> i32 {
        ret(user::path(name)
            .and_then(|p| fs::mkdir(p, mode))
            .map(|()| 0))
    }
}

exported! {
    fn sys_rmdir(name: *const u8) -> i32 {
        ret(user::path(name).and_then(fs::rmdir).map(|()| 0))
    }
}

exported! {
    fn sys_unlink(name: *const u8) -> i32 {
        ret(user::path(name).and_then(fs::unlink).map(|()| 0))
    }
}

exported! {
    fn sys_getdents64(fd: i32, dirp: *mut u8, count: usize) -> i64 {
        ret(user::slice_mut(dirp, count).and_then(|buf| super::super::dirents64(fd, buf))) as i64
    }
}

exported! {
    /// `rename(2)`; not in hermit-abi (std reports it unsupported), offered by
    /// `eremite::fs::rename`.
    fn sys_rename(from: *const u8, to: *const u8) -> i32 {
        ret(user::path(from)
            .and_then(|f| fs::rename(f, user::path(to)?))
            .map(|()| 0))
    }
}

exported! {
    /// `symlink(2)`: a link at `link` pointing to `target`.
    fn sys_symlink(target: *const u8, link: *const u8) -> i32 {
        ret(user::path(target)
            .and_then(|t| fs::symlink(t, user::path(link)?))
            .map(|()| 0))
    }
}

exported! {
    /// `link(2)`: a new name `to` for the file at `from`.
    fn sys_link(from: *const u8, to: *const u8) -> i32 {
        ret(user::path(from)
            .and_then(|f| fs::link(f, user::path(to)?))
            .map(|()| 0))
    }
}

exported! {
    /// `readlink(2)`: the bytes placed in `buf` (no NUL is added).
    fn sys_readlink(name: *const u8, buf: *mut u8, len: usize) -> isize {
        ret(user::path(name).and_then(|p| fs::readlink(p, user::slice_mut(buf, len)?)))
    }
}

exported! {
    /// `truncate(2)`.
    fn sys_truncate(name: *const u8, len: i64) -> i32 {
        ret(u64::try_from(len)
            .map_err(|_| errno::EINVAL)
            .and_then(|len| fs::truncate(user::path(name)?, len))
            .map(|()| 0))
    }
}

exported! {
    /// `ftruncate(2)`.
    fn sys_ftruncate(fd: i32, len: i64) -> i32 {
        ret(u64::try_from(len)
            .map_err(|_| errno::EINVAL)
            .and_then(|len| fd::set_len(fd, len))
            .map(|()| 0))
    }
}

exported! {
    /// `chmod(2)`.
    fn sys_chmod(name: *const u8, mode: u32) -> i32 {
        ret(user::path(name)
            .and_then(|p| fs::chmod(p, mode))
            .map(|()| 0))
    }
}

exported! {
    /// `realpath(3)` into `buf`: the length without the NUL that follows it;
    /// `ERANGE` when it does not fit.
    fn sys_realpath(name: *const u8, buf: *mut u8, len: usize) -> isize {
        ret(user::path(name).and_then(|p| {
            let path = fs::canonicalize(p)?;
            let out = user::slice_mut(buf, len)?;
            let dest = out.get_mut(..=path.len()).ok_or(errno::ERANGE)?;
            dest[..path.len()].copy_from_slice(&path);
            dest[path.len()] = 0;
            Ok(path.len())
        }))
    }
}
