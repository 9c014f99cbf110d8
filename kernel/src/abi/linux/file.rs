//! Files and descriptors: the read/write family, `open`/`openat` and the
//! other path calls (relative to a directory descriptor or the current
//! directory), `stat`, directory listing, `fcntl`, `dup`.

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags};

use super::{SysResult, fd_value, int, ptr, user, value};
use crate::{fd, fs};

/// The directory descriptor that means the current directory.
pub(super) const AT_FDCWD: i32 = -100;
/// `*at` flags.
pub(super) const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
pub(super) const AT_REMOVEDIR: u32 = 0x200;
const AT_EMPTY_PATH: u32 = 0x1000;

// Linux x86_64's open flags (`include/uapi/asm-generic/fcntl.h`).
pub(super) const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
pub(super) const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_NOCTTY: u32 = 0o400;
pub(super) const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const O_NONBLOCK: u32 = 0o4000;
const O_DSYNC: u32 = 0o10000;
const O_LARGEFILE: u32 = 0o100000;
const O_DIRECTORY: u32 = 0o200000;
const O_NOFOLLOW: u32 = 0o400000;
const O_NOATIME: u32 = 0o1000000;
const O_CLOEXEC: u32 = 0o2000000;
const O_SYNC: u32 = 0o4010000;
/// `O_TMPFILE` is this with `O_DIRECTORY`.
const O_TMPFILE_BIT: u32 = 0o20000000;

/// Linux's open flags and the core's.
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

/// Flags accepted and without effect here: no terminals, 64-bit offsets
/// always, every write already reaches RAM or the host.
const IGNORED_OPEN_FLAGS: u32 = O_NOCTTY | O_LARGEFILE | O_NOATIME | O_DSYNC | O_SYNC;

/// The core's flags for Linux's `raw`: `EINVAL` for a flag it does not
/// support (`O_PATH`, `O_DIRECT`, `O_ASYNC`; `O_TMPFILE` is `openat`'s).
fn open_flags(raw: u32) -> Result<OpenFlags, Errno> {
    let mut flags = OpenFlags::empty();
    let mut known = IGNORED_OPEN_FLAGS;
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

/// Linux's bits for the core's `flags` (`F_GETFL`).
fn linux_open_flags(flags: OpenFlags) -> u32 {
    OPEN_FLAGS
        .iter()
        .filter(|(_, flag)| flags.contains(*flag))
        .fold(O_LARGEFILE, |raw, (bit, _)| raw | bit)
}

/// The absolute path of the path argument at `path`, relative to the
/// directory `dirfd` (or the current directory).
fn at(dirfd: i32, path: u64) -> Result<Vec<u8>, Errno> {
    let path = user::path(ptr(path))?;
    if path.is_empty() {
        return Err(errno::ENOENT);
    }
    let base = if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
        None
    } else {
        Some(fd::path_of(dirfd)?)
    };
    Ok(fs::absolute(base.as_deref(), path))
}

pub(super) fn read(fd: i32, buf: u64, len: usize) -> SysResult {
    fd::read(fd, user::slice_mut(ptr(buf), len)?).map(value)
}

pub(super) fn write(fd: i32, buf: u64, len: usize) -> SysResult {
    fd::write(fd, user::slice(ptr(buf), len)?).map(value)
}

fn offset(offset: i64) -> Result<u64, Errno> {
    u64::try_from(offset).map_err(|_| errno::EINVAL)
}

pub(super) fn pread(fd: i32, buf: u64, len: usize, at: i64) -> SysResult {
    fd::pread(fd, user::slice_mut(ptr(buf), len)?, offset(at)?).map(value)
}

pub(super) fn pwrite(fd: i32, buf: u64, len: usize, at: i64) -> SysResult {
    fd::pwrite(fd, user::slice(ptr(buf), len)?, offset(at)?).map(value)
}

/// `struct iovec`.
#[derive(Clone, Copy)]
#[repr(C)]
struct IoVec {
    base: u64,
    len: u64,
}

/// Most buffers in one vectored call (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Apply `op` to each buffer of the iovec array at `iov` until one comes
/// back short; the total.
fn vectored(
    iov: u64,
    count: usize,
    mut op: impl FnMut(u64, usize) -> Result<usize, Errno>,
) -> SysResult {
    let iovecs = iovecs(iov, count)?;
    fd::until_short(
        iovecs,
        |v| super::size(v.len),
        |v| op(v.base, super::size(v.len)),
    )
    .map(value)
}

/// The `count` entries of the iovec array at `iov`, each read when taken.
fn iovecs(iov: u64, count: usize) -> Result<impl Iterator<Item = Result<IoVec, Errno>>, Errno> {
    if count > IOV_MAX {
        return Err(errno::EINVAL);
    }
    Ok((0..count).map(move |i| user::read(ptr::<IoVec>(iov).wrapping_add(i))))
}

pub(super) fn readv(fd: i32, iov: u64, count: usize) -> SysResult {
    vectored(iov, count, |base, len| {
        fd::read(fd, user::slice_mut(ptr(base), len)?)
    })
}

pub(super) fn writev(fd: i32, iov: u64, count: usize) -> SysResult {
    let bufs = iovecs(iov, count)?
        .map(|v| v.and_then(|v| user::slice(ptr(v.base), super::size(v.len))))
        .collect::<Result<Vec<_>, _>>()?;
    fd::write_vectored(fd, &bufs).map(value)
}

pub(super) fn close(fd: i32) -> SysResult {
    fd::close(fd).map(|()| 0)
}

const SEEK_SET: i32 = 0;
const SEEK_CUR: i32 = 1;
const SEEK_END: i32 = 2;

pub(super) fn lseek(fd: i32, offset: i64, whence: i32) -> SysResult {
    let whence = match whence {
        SEEK_SET => fd::Whence::Start,
        SEEK_CUR => fd::Whence::Current,
        SEEK_END => fd::Whence::End,
        _ => return Err(errno::EINVAL),
    };
    fd::seek(fd, offset, whence)
}

/// `openat(2)`; `O_TMPFILE` makes an unnamed file in the directory.
pub(super) fn openat(dirfd: i32, path: u64, flags: u32, mode: u32) -> SysResult {
    let path = at(dirfd, path)?;
    if flags & O_TMPFILE_BIT != 0 {
        // As Linux: the directory flag is part of it, and the file must
        // be opened for writing.
        let core = open_flags(flags & !O_TMPFILE_BIT)?;
        let is_writable = core.intersects(OpenFlags::WRONLY | OpenFlags::RDWR);
        if flags & O_DIRECTORY == 0 || !is_writable || core.contains(OpenFlags::CREAT) {
            return Err(errno::EINVAL);
        }
        return fd::open_unnamed(&path, core, mode & 0o7777).map(fd_value);
    }
    fd::open(&path, open_flags(flags)?, mode & 0o7777).map(fd_value)
}

/// Linux x86_64's `struct stat`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Stat {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    pad: u32,
    rdev: u64,
    size: i64,
    blksize: i64,
    blocks: i64,
    atime: [i64; 2],
    mtime: [i64; 2],
    ctime: [i64; 2],
    unused: [i64; 3],
}

fn timespec(ns: i64) -> [i64; 2] {
    [ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000)]
}

impl From<FileStat> for Stat {
    fn from(s: FileStat) -> Self {
        Self {
            dev: 1,
            ino: s.ino,
            nlink: s.nlink,
            mode: s.mode,
            size: i64::try_from(s.size).unwrap_or(i64::MAX),
            blksize: 4096,
            blocks: i64::try_from(s.blocks).unwrap_or(i64::MAX),
            atime: timespec(s.atime_ns),
            mtime: timespec(s.mtime_ns),
            ctime: timespec(s.ctime_ns),
            ..Self::default()
        }
    }
}

fn stat_to(stat: FileStat, out: u64) -> SysResult {
    user::write(ptr::<Stat>(out), Stat::from(stat)).map(|()| 0)
}

pub(super) fn fstat(fd: i32, out: u64) -> SysResult {
    stat_to(fd::fstat(fd)?, out)
}

pub(super) fn fstatat(dirfd: i32, path: u64, out: u64, flags: u32) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(errno::EINVAL);
    }
    if flags & AT_EMPTY_PATH != 0 && user::path(ptr(path))?.is_empty() {
        return fstat(dirfd, out);
    }
    let follow = flags & AT_SYMLINK_NOFOLLOW == 0;
    stat_to(fs::stat(&at(dirfd, path)?, follow)?, out)
}

/// `struct statx_timestamp`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct StatxTime {
    seconds: i64,
    nanos: u32,
    reserved: i32,
}

impl StatxTime {
    fn of(ns: i64) -> Self {
        let [seconds, nanos] = timespec(ns);
        Self {
            seconds,
            nanos: u32::try_from(nanos).unwrap_or(0),
            reserved: 0,
        }
    }
}

/// `struct statx`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Statx {
    mask: u32,
    blksize: u32,
    attributes: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u16,
    spare0: u16,
    ino: u64,
    size: u64,
    blocks: u64,
    attributes_mask: u64,
    atime: StatxTime,
    btime: StatxTime,
    ctime: StatxTime,
    mtime: StatxTime,
    rdev_major: u32,
    rdev_minor: u32,
    dev_major: u32,
    dev_minor: u32,
    spare: [u64; 14],
}

const _: () = assert!(size_of::<Statx>() == 256);

/// `statx(2)`: what `fstatat` knows, in `struct statx` (every basic field;
/// no birth time). `mask` only says what the caller needs; all is given.
pub(super) fn statx(dirfd: i32, path: u64, flags: u32, _mask: u32, out: u64) -> SysResult {
    /// Every field of `STATX_BASIC_STATS`.
    const STATX_BASIC_STATS: u32 = 0x7ff;
    /// How to sync with a remote file system: nothing to do here.
    const AT_STATX_SYNC_TYPE: u32 = 0x6000;
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE) != 0 {
        return Err(errno::EINVAL);
    }
    let stat = if flags & AT_EMPTY_PATH != 0 && user::path(ptr(path))?.is_empty() {
        fd::fstat(dirfd)?
    } else {
        fs::stat(&at(dirfd, path)?, flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    let statx = Statx {
        mask: STATX_BASIC_STATS,
        blksize: 4096,
        nlink: u32::try_from(stat.nlink).unwrap_or(u32::MAX),
        mode: u16::try_from(stat.mode & 0xffff).unwrap_or(0),
        ino: stat.ino,
        size: stat.size,
        blocks: stat.blocks,
        atime: StatxTime::of(stat.atime_ns),
        ctime: StatxTime::of(stat.ctime_ns),
        mtime: StatxTime::of(stat.mtime_ns),
        dev_minor: 1,
        ..Statx::default()
    };
    user::write(ptr::<Statx>(out), statx).map(|()| 0)
}

/// `access`/`faccessat`: the file exists (every process here is root, so
/// every permission is granted, as for root on Linux but for execute,
/// which needs some execute bit).
pub(super) fn faccessat(dirfd: i32, path: u64, mode: u32) -> SysResult {
    const X_OK: u32 = 1;
    let stat = fs::stat(&at(dirfd, path)?, true)?;
    if mode & X_OK != 0 && stat.mode & 0o111 == 0 {
        return Err(errno::EACCES);
    }
    Ok(0)
}

/// Terminal and socket `ioctl`s: none of the descriptors is a terminal.
pub(super) fn ioctl(fd: i32, request: u32, arg: u64) -> SysResult {
    const FIONBIO: u32 = 0x5421;
    const FIONREAD: u32 = 0x541b;
    match request {
        FIONREAD => {
            let n = fd::available(fd)?;
            user::write(ptr::<i32>(arg), i32::try_from(n).unwrap_or(i32::MAX)).map(|()| 0)
        }
        FIONBIO => {
            let is_on = user::read(ptr::<i32>(arg))? != 0;
            let mut flags = fd::status_flags(fd)?;
            flags.set(OpenFlags::NONBLOCK, is_on);
            fd::set_status_flags(fd, flags).map(|()| 0)
        }
        _ => fd::fstat(fd).and(Err(errno::ENOTTY)),
    }
}

const F_DUPFD: i32 = 0;
const F_GETFD: i32 = 1;
const F_SETFD: i32 = 2;
const F_GETFL: i32 = 3;
const F_SETFL: i32 = 4;
const F_GETLK: i32 = 5;
const F_SETLK: i32 = 6;
const F_SETLKW: i32 = 7;
const F_DUPFD_CLOEXEC: i32 = 1030;
/// `struct flock`'s `l_type` for "no lock".
const F_UNLCK: i16 = 2;

pub(super) fn fcntl(fd: i32, command: i32, arg: u64) -> SysResult {
    match command {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            fd::dup_from(fd, usize::try_from(int(arg)).map_err(|_| errno::EINVAL)?).map(fd_value)
        }
        // There is no exec: close-on-exec is accepted and means nothing.
        F_GETFD | F_SETFD => fd::status_flags(fd).map(|_| 0),
        F_GETFL => fd::status_flags(fd).map(|f| u64::from(linux_open_flags(f))),
        F_SETFL => {
            let raw = super::uint(arg) & (O_APPEND | O_NONBLOCK);
            fd::set_status_flags(fd, open_flags(raw)?).map(|()| 0)
        }
        // One process: no other can hold a lock, so every lock is granted.
        F_SETLK | F_SETLKW => fd::status_flags(fd).map(|_| 0),
        F_GETLK => {
            fd::status_flags(fd)?;
            user::write(ptr::<i16>(arg), F_UNLCK).map(|()| 0)
        }
        _ => Err(errno::EINVAL),
    }
}

pub(super) fn dup(fd: i32) -> SysResult {
    fd::dup(fd).map(fd_value)
}

/// `dup3` (`dup2` when `is_dup2`: the same descriptor twice is no error).
pub(super) fn dup3(old: i32, new: i32, flags: u32, is_dup2: bool) -> SysResult {
    if flags & !O_CLOEXEC != 0 {
        return Err(errno::EINVAL);
    }
    if old == new {
        return if is_dup2 {
            fd::status_flags(old).map(|_| fd_value(new))
        } else {
            Err(errno::EINVAL)
        };
    }
    fd::dup_to(old, new).map(fd_value)
}

/// `flock(2)`: the operation is checked and granted. eremite runs one
/// process, so no other holds a lock; two descriptors of one program do
/// not exclude each other (as they would on Linux).
pub(super) fn flock(fd: i32, operation: i32) -> SysResult {
    const LOCK_SH: i32 = 1;
    const LOCK_EX: i32 = 2;
    const LOCK_NB: i32 = 4;
    const LOCK_UN: i32 = 8;
    fd::status_flags(fd)?;
    match operation & !LOCK_NB {
        LOCK_SH | LOCK_EX | LOCK_UN => Ok(0),
        _ => Err(errno::EINVAL),
    }
}

pub(super) fn fsync(fd: i32, data_only: bool) -> SysResult {
    fd::sync(fd, data_only).map(|()| 0)
}

pub(super) fn truncate(path: u64, len: i64) -> SysResult {
    fs::truncate(&at(AT_FDCWD, path)?, offset(len)?).map(|()| 0)
}

pub(super) fn ftruncate(fd: i32, len: i64) -> SysResult {
    fd::set_len(fd, offset(len)?).map(|()| 0)
}

/// `getcwd(2)`: the path and its NUL; the length with the NUL.
pub(super) fn getcwd(buf: u64, len: usize) -> SysResult {
    let cwd = fs::current_dir();
    let out = user::slice_mut(ptr(buf), len)?;
    let dest = out.get_mut(..=cwd.len()).ok_or(errno::ERANGE)?;
    dest[..cwd.len()].copy_from_slice(&cwd);
    dest[cwd.len()] = 0;
    Ok(value(cwd.len() + 1))
}

pub(super) fn chdir(path: u64) -> SysResult {
    fs::set_current_dir(&at(AT_FDCWD, path)?).map(|()| 0)
}

pub(super) fn fchdir(fd: i32) -> SysResult {
    fs::set_current_dir(&fd::path_of(fd)?).map(|()| 0)
}

pub(super) fn renameat(from_dir: i32, from: u64, to_dir: i32, to: u64) -> SysResult {
    fs::rename(&at(from_dir, from)?, &at(to_dir, to)?).map(|()| 0)
}

/// `renameat2`: without flags it is `renameat`; `RENAME_NOREPLACE` and
/// `RENAME_EXCHANGE` are not supported.
pub(super) fn renameat2(from_dir: i32, from: u64, to_dir: i32, to: u64, flags: u32) -> SysResult {
    if flags != 0 {
        return Err(errno::EINVAL);
    }
    renameat(from_dir, from, to_dir, to)
}

pub(super) fn mkdirat(dirfd: i32, path: u64, mode: u32) -> SysResult {
    fs::mkdir(&at(dirfd, path)?, mode & 0o7777).map(|()| 0)
}

pub(super) fn unlinkat(dirfd: i32, path: u64, flags: u32) -> SysResult {
    let path = at(dirfd, path)?;
    match flags {
        0 => fs::unlink(&path),
        AT_REMOVEDIR => fs::rmdir(&path),
        _ => Err(errno::EINVAL),
    }
    .map(|()| 0)
}

/// `linkat(2)`: `AT_SYMLINK_FOLLOW` is not supported (a link to the link
/// itself is made, as without it).
pub(super) fn linkat(from_dir: i32, from: u64, to_dir: i32, to: u64, flags: u32) -> SysResult {
    if flags != 0 {
        return Err(errno::EINVAL);
    }
    fs::link(&at(from_dir, from)?, &at(to_dir, to)?).map(|()| 0)
}

pub(super) fn symlinkat(target: u64, dirfd: i32, path: u64) -> SysResult {
    let target = user::path(ptr(target))?;
    fs::symlink(target, &at(dirfd, path)?).map(|()| 0)
}

pub(super) fn readlinkat(dirfd: i32, path: u64, buf: u64, len: usize) -> SysResult {
    if len == 0 {
        return Err(errno::EINVAL);
    }
    let out = user::slice_mut(ptr(buf), len)?;
    let path = at(dirfd, path)?;
    if path == b"/proc/self/exe" {
        // No /proc: the one link programs ask it for (Rust's
        // `current_exe`) is the path the program was started by.
        let exe = super::start::exe_path();
        let n = exe.len().min(out.len());
        out[..n].copy_from_slice(&exe[..n]);
        return Ok(value(n));
    }
    fs::readlink(&path, out).map(value)
}

pub(super) fn fchmodat(dirfd: i32, path: u64, mode: u32) -> SysResult {
    fs::chmod(&at(dirfd, path)?, mode & 0o7777).map(|()| 0)
}

/// `chown(2)` and friends: the file must exist (`AT_EMPTY_PATH` names
/// `dirfd` itself). Files keep no owner here (everything is root's, the
/// program runs as root, and nothing checks owners), so there is nothing
/// to change; root may, so it succeeds.
pub(super) fn fchownat(dirfd: i32, path: u64, flags: u32) -> SysResult {
    if flags & !(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 {
        return Err(errno::EINVAL);
    }
    let name = user::path(ptr(path))?;
    if name.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return fd::fstat(dirfd).map(|_| 0);
    }
    fs::stat(&at(dirfd, path)?, flags & AT_SYMLINK_NOFOLLOW == 0).map(|_| 0)
}

/// `fchown(2)`: as [`fchownat`], for an open descriptor.
pub(super) fn fchown(fd: i32) -> SysResult {
    fd::fstat(fd).map(|_| 0)
}

pub(super) fn getdents64(fd: i32, buf: u64, len: usize) -> SysResult {
    super::super::dirents64(fd, user::slice_mut(ptr(buf), len)?).map(value)
}
