//! The file systems: `/` is the RAM file system of `eremite-vfs`, and
//! directories mounted with `--mount` are served by the host ([`host`]).
//!
//! Every path operation resolves its path in the RAM file system first,
//! under its lock; a path that leads below a mount point comes back as a
//! [`Location::Mount`] and goes to the host. Operations that involve two
//! paths (rename, link) work within one file system only (`EXDEV`).
//! [`open`] hands out a [`RamNode`] or a [`HostHandle`], which the
//! descriptor layer (`fd`) wraps in an open file description; positions
//! and descriptors are its business, not ours.
//!
//! Locks: the RAM file system's lock is the innermost kernel lock here;
//! no lock is held across a hypercall.
//!
//! ABI-neutral and a leaf of the kernel: errors are [`Errno`]s, paths are
//! byte strings, flags are [`OpenFlags`]; nothing here knows descriptors,
//! sockets or any ABI.

pub(crate) mod host;
mod initrd;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use eremite_interface::BootInfo;
use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{DirRecord, FileStat, OpenFlags};
use eremite_interface::hypercall::HostFsOp;
use eremite_vfs::{DirCursor, Kind, Location, ParentLocation, RamFs};
use zerocopy::FromBytes;

use crate::sync::Lock;
use crate::{bootinfo, mm, time};

static RAM: Lock<Option<RamFs>> = Lock::new(None);
/// The current directory, absolute (hermit-abi has none: its paths are
/// relative to `/`, which is where this starts).
static CWD: Lock<Vec<u8>> = Lock::new(Vec::new());

/// `path` made absolute: relative paths are taken from `base` (a
/// directory's absolute path), or from the current directory.
pub(crate) fn absolute(base: Option<&[u8]>, path: &[u8]) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    let mut full = match base {
        Some(base) => base.to_vec(),
        None => CWD.lock().clone(),
    };
    if full.is_empty() {
        full.push(b'/');
    }
    if full.last() != Some(&b'/') {
        full.push(b'/');
    }
    full.extend_from_slice(path);
    full
}

/// The current directory.
pub(crate) fn current_dir() -> Vec<u8> {
    let cwd = CWD.lock();
    if cwd.is_empty() {
        b"/".to_vec()
    } else {
        cwd.clone()
    }
}

/// `chdir`: `path` (absolute) must be a directory; the current directory
/// becomes its canonical path.
pub(crate) fn set_current_dir(path: &[u8]) -> Result<(), Errno> {
    let canonical = canonicalize(path)?;
    if stat(&canonical, true)?.mode & eremite_interface::fs::S_IFMT
        != eremite_interface::fs::S_IFDIR
    {
        return Err(errno::ENOTDIR);
    }
    *CWD.lock() = canonical;
    Ok(())
}

fn with_ram<T>(op: impl FnOnce(&mut RamFs) -> Result<T, Errno>) -> Result<T, Errno> {
    match RAM.lock().as_mut() {
        Some(fs) => op(fs),
        None => Err(errno::ENOSYS),
    }
}

/// Heap that must stay free for an operation that may create or grow
/// something in the RAM file system to go ahead.
const RESERVE_BYTES: usize = 64 << 10;

/// [`with_ram`] for operations that allocate: `ENOSPC` when memory is
/// nearly gone, so the file system fills up instead of the kernel
/// running out of heap.
fn with_ram_growing<T>(op: impl FnOnce(&mut RamFs) -> Result<T, Errno>) -> Result<T, Errno> {
    ensure_room()?;
    with_ram(op)
}

fn now_ns() -> i64 {
    i64::try_from(time::realtime_ns()).unwrap_or(i64::MAX)
}

/// Set up `/` and the mount points, and unpack the initial ramdisk
/// (`initrd`, which is not kept). Called once at boot, before `main`.
pub(crate) fn init(info: &BootInfo, initrd: Option<&[u8]>) -> Result<(), &'static str> {
    let mut fs = RamFs::new(now_ns());
    for (index, path) in bootinfo::strings(&info.mounts).enumerate() {
        let index = u32::try_from(index).map_err(|_| "too many mounts")?;
        fs.mount(path, index, now_ns())
            .map_err(|_| "cannot create a mount point")?;
    }
    if let Some(archive) = initrd {
        initrd::unpack(&mut fs, archive)?;
    }
    *RAM.lock() = Some(fs);
    Ok(())
}

/// What [`open`] opened.
pub(crate) enum Opened {
    Ram(RamNode),
    Host(HostHandle),
}

/// Open `path` with `flags` (creating it with `mode` under `O_CREAT`).
pub(crate) fn open(path: &[u8], flags: OpenFlags, mode: u32) -> Result<Opened, Errno> {
    let opened = if flags.contains(OpenFlags::CREAT) {
        with_ram_growing(|fs| fs.open(path, flags, mode, now_ns()))
    } else {
        with_ram(|fs| fs.open(path, flags, mode, now_ns()))
    };
    Ok(match opened? {
        Location::Ram(ino) => Opened::Ram(RamNode(ino)),
        Location::Mount { mount, path } => {
            let (handle, stat) = host::open(mount, &path, flags, mode)?;
            Opened::Host(HostHandle {
                mount,
                handle,
                opened: stat,
                opened_ns: time::monotonic_ns(),
                is_changed: AtomicBool::new(false),
            })
        }
    })
}

/// The first `limit` bytes of the file at `path` (a configuration file the
/// kernel itself reads, such as `/etc/hosts`).
pub(crate) fn read_head(path: &[u8], limit: usize) -> Result<Vec<u8>, Errno> {
    let opened = open(path, OpenFlags::empty(), 0)?;
    let mut bytes = alloc::vec![0u8; limit];
    let mut len = 0;
    while len < limit {
        let n = match &opened {
            Opened::Ram(node) => node.read(len as u64, &mut bytes[len..])?,
            Opened::Host(handle) => handle.read(len as u64, &mut bytes[len..])?,
        };
        if n == 0 {
            break;
        }
        len += n;
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// One entry handed to a directory-listing consumer.
pub(crate) struct Listed<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) ino: u64,
    pub(crate) dirent_type: u8,
    /// Position after this entry.
    pub(crate) next: u64,
}

/// Where a directory listing stands: the RAM file system's cursor, the
/// host's cookie, and how many entries were listed (for `d_off`).
#[derive(Default)]
pub(crate) struct DirPosition {
    ram_cursor: DirCursor,
    host_cookie: u64,
    listed: u64,
}

/// An open file of the RAM file system: the inode counts it as open
/// until it is dropped.
pub(crate) struct RamNode(eremite_vfs::Ino);

impl Drop for RamNode {
    fn drop(&mut self) {
        let _ = with_ram(|fs| fs.close(self.0));
    }
}

impl RamNode {
    /// Read at `offset`.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        with_ram(|fs| fs.read(self.0, offset, buf))
    }

    /// Write at `offset`, or at the end (`None`, for `O_APPEND`, decided
    /// under the file system's lock); the bytes written and where.
    pub(crate) fn write(&self, offset: Option<u64>, buf: &[u8]) -> Result<(usize, u64), Errno> {
        with_ram(|fs| {
            let offset = match offset {
                Some(offset) => offset,
                None => fs.len(self.0)?,
            };
            // Only a write that stores new bytes may allocate.
            if !fs.is_overwrite(self.0, offset, buf.len() as u64) {
                ensure_room()?;
            }
            let n = fs.write(self.0, offset, buf, now_ns())?;
            Ok((n, offset))
        })
    }

    /// Where `SEEK_END` measures from: the length, 0 for a directory.
    pub(crate) fn seek_end(&self) -> Result<u64, Errno> {
        with_ram(|fs| match fs.kind(self.0)? {
            Kind::Dir => Ok(0),
            _ => fs.len(self.0),
        })
    }

    pub(crate) fn stat(&self) -> Result<FileStat, Errno> {
        with_ram(|fs| fs.stat(self.0))
    }

    pub(crate) fn set_len(&self, len_bytes: u64) -> Result<(), Errno> {
        with_ram(|fs| fs.set_len(self.0, len_bytes, now_ns()))
    }

    /// List the directory from `position`; `emit` returns `false` when it
    /// has no room for an entry (which is then not consumed). The number
    /// of entries emitted.
    pub(crate) fn read_dir(
        &self,
        position: &mut DirPosition,
        mut emit: impl FnMut(Listed<'_>) -> bool,
    ) -> Result<usize, Errno> {
        let listed = position.listed;
        let mut count = 0;
        let cursor = with_ram(|fs| {
            fs.read_dir(self.0, &position.ram_cursor, |e| {
                let accepted = emit(Listed {
                    name: e.name,
                    ino: e.ino,
                    dirent_type: e.kind.dirent_type(),
                    next: listed + count as u64 + 1,
                });
                count += usize::from(accepted);
                accepted
            })
        })?;
        position.ram_cursor = cursor;
        position.listed += count as u64;
        Ok(count)
    }
}

impl DirPosition {
    /// Back to the first entry (a seek to 0).
    pub(crate) fn rewind(&mut self) {
        *self = Self::default();
    }
}

/// A file open on the host (a `--mount`): the VMM's handle, closed when
/// dropped, and the file's stat when it was opened.
pub(crate) struct HostHandle {
    mount: u32,
    handle: u64,
    opened: FileStat,
    opened_ns: u64,
    /// Written or resized through this handle since the open.
    is_changed: AtomicBool,
}

/// How long the stat an open brought back answers `fstat` on the handle
/// (unless the handle changed the file): a program that opens and then
/// asks at once (nginx serves each request so) saves an exit; one that
/// watches a file grow (`tail -f`) asks again later and sees the host's
/// change, as with an NFS attribute cache, but one millisecond long.
const OPENED_STAT_FRESH_NS: u64 = 1_000_000;

impl Drop for HostHandle {
    fn drop(&mut self) {
        host::close(self.mount, self.handle);
    }
}

impl HostHandle {
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        host::read(self.mount, self.handle, offset, buf)
    }

    pub(crate) fn write(&self, offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        self.is_changed.store(true, Ordering::Relaxed);
        host::write(self.mount, self.handle, offset, buf)
    }

    pub(crate) fn stat(&self) -> Result<FileStat, Errno> {
        let is_fresh = time::monotonic_ns().saturating_sub(self.opened_ns) < OPENED_STAT_FRESH_NS;
        if is_fresh && !self.is_changed.load(Ordering::Relaxed) {
            return Ok(self.opened);
        }
        host::fstat(self.mount, self.handle)
    }

    pub(crate) fn set_len(&self, len_bytes: u64) -> Result<(), Errno> {
        self.is_changed.store(true, Ordering::Relaxed);
        host::ftruncate(self.mount, self.handle, len_bytes)
    }

    /// `fsync`/`fdatasync` (`data_only`) on the host file or directory.
    pub(crate) fn sync(&self, data_only: bool) -> Result<(), Errno> {
        host::sync(self.mount, self.handle, data_only)
    }

    /// As [`RamNode::read_dir`]; `max_bytes` bounds the records fetched
    /// from the host per call.
    pub(crate) fn read_dir(
        &self,
        position: &mut DirPosition,
        max_bytes: usize,
        mut emit: impl FnMut(Listed<'_>) -> bool,
    ) -> Result<usize, Errno> {
        let mut records = alloc::vec![0u8; max_bytes.min(64 << 10)];
        let filled = host::read_dir(self.mount, self.handle, position.host_cookie, &mut records)?;
        let mut rest = &records[..filled];
        let mut count = 0;
        while let Ok((record, tail)) = DirRecord::read_from_prefix(rest) {
            let name_len = usize::from(record.name_len);
            let (Some(name), Some(next_rest)) =
                (tail.get(..name_len), rest.get(DirRecord::size(name_len)..))
            else {
                break;
            };
            if !emit(Listed {
                name,
                ino: record.ino,
                dirent_type: record.kind,
                next: position.listed + count as u64 + 1,
            }) {
                break;
            }
            count += 1;
            position.host_cookie = record.next;
            rest = next_rest;
        }
        position.listed += count as u64;
        Ok(count)
    }
}

/// `stat` (`follow_last`) or `lstat`.
pub(crate) fn stat(path: &[u8], follow_last: bool) -> Result<FileStat, Errno> {
    at_path(
        path,
        follow_last,
        |fs, ino| fs.stat(ino),
        |mount, path| host::stat(mount, path, follow_last),
    )
}

/// Run `ram` on the parent directory and name of `path`, or `mount` on its
/// host path.
fn at_parent<T>(
    path: &[u8],
    ram: impl FnOnce(&mut RamFs, eremite_vfs::Ino, &[u8], bool) -> Result<T, Errno>,
    mount: impl FnOnce(u32, &[u8]) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let routed = with_ram(|fs| match fs.resolve_parent(path)? {
        ParentLocation::Ram {
            dir,
            name,
            has_trailing_slash,
        } => ram(fs, dir, &name, has_trailing_slash).map(Ok),
        ParentLocation::Mount { mount, path } => Ok(Err((mount, path))),
    })?;
    routed.or_else(|(index, path)| mount(index, &path))
}

/// `ENOSPC` when the heap is nearly gone (see [`with_ram_growing`]).
fn ensure_room() -> Result<(), Errno> {
    if mm::has_room(RESERVE_BYTES) {
        Ok(())
    } else {
        Err(errno::ENOSPC)
    }
}

/// `mkdir`.
pub(crate) fn mkdir(path: &[u8], mode: u32) -> Result<(), Errno> {
    ensure_room()?;
    at_parent(
        path,
        |fs, dir, name, _| fs.mkdir(dir, name, mode, now_ns()).map(drop),
        |mount, path| host::path_op(HostFsOp::Mkdir, mount, path, mode),
    )
}

/// `rmdir`.
pub(crate) fn rmdir(path: &[u8]) -> Result<(), Errno> {
    at_parent(
        path,
        |fs, dir, name, _| fs.rmdir(dir, name, now_ns()),
        |mount, path| host::path_op(HostFsOp::Rmdir, mount, path, 0),
    )
}

/// `unlink`.
pub(crate) fn unlink(path: &[u8]) -> Result<(), Errno> {
    at_parent(
        path,
        |fs, dir, name, has_trailing_slash| {
            if has_trailing_slash {
                // `unlink("x/")`: a directory, or not one.
                return match fs.kind(fs.lookup(dir, name)?)? {
                    Kind::Dir => Err(errno::EISDIR),
                    _ => Err(errno::ENOTDIR),
                };
            }
            fs.unlink(dir, name, now_ns())
        },
        |mount, path| host::path_op(HostFsOp::Unlink, mount, path, 0),
    )
}

/// `symlink(target, path)`: a link at `path` pointing to `target`.
pub(crate) fn symlink(target: &[u8], path: &[u8]) -> Result<(), Errno> {
    ensure_room()?;
    at_parent(
        path,
        |fs, dir, name, _| fs.symlink(dir, name, target, now_ns()).map(drop),
        |mount, path| host::two_path_op(HostFsOp::Symlink, mount, path, target),
    )
}

/// Resolve the parents of two paths in one file system.
enum Pair {
    Ram {
        from: (eremite_vfs::Ino, Vec<u8>),
        to: (eremite_vfs::Ino, Vec<u8>),
    },
    Host {
        mount: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

fn parents(fs: &RamFs, from: &[u8], to: &[u8]) -> Result<Pair, Errno> {
    match (fs.resolve_parent(from)?, fs.resolve_parent(to)?) {
        (
            ParentLocation::Ram { dir, name, .. },
            ParentLocation::Ram {
                dir: to_dir,
                name: to_name,
                ..
            },
        ) => Ok(Pair::Ram {
            from: (dir, name),
            to: (to_dir, to_name),
        }),
        (
            ParentLocation::Mount { mount, path },
            ParentLocation::Mount {
                mount: to_mount,
                path: to_path,
            },
        ) if mount == to_mount => Ok(Pair::Host {
            mount,
            from: path,
            to: to_path,
        }),
        _ => Err(errno::EXDEV),
    }
}

/// `rename`.
pub(crate) fn rename(from: &[u8], to: &[u8]) -> Result<(), Errno> {
    let host = with_ram_growing(|fs| match parents(fs, from, to)? {
        Pair::Ram { from, to } => fs
            .rename(from.0, &from.1, to.0, &to.1, now_ns())
            .map(|()| None),
        Pair::Host { mount, from, to } => Ok(Some((mount, from, to))),
    })?;
    match host {
        None => Ok(()),
        Some((mount, from, to)) => host::two_path_op(HostFsOp::Rename, mount, &from, &to),
    }
}

/// `link(from, to)`: a new name `to` for the file at `from`.
pub(crate) fn link(from: &[u8], to: &[u8]) -> Result<(), Errno> {
    let host = with_ram_growing(|fs| match parents(fs, from, to)? {
        Pair::Ram { from, to } => {
            let ino = fs.lookup(from.0, &from.1)?;
            fs.link(ino, to.0, &to.1, now_ns()).map(|()| None)
        }
        Pair::Host { mount, from, to } => Ok(Some((mount, from, to))),
    })?;
    match host {
        None => Ok(()),
        Some((mount, from, to)) => host::two_path_op(HostFsOp::Link, mount, &from, &to),
    }
}

/// Run `ram` on the inode `path` leads to, or `mount` on its host path.
fn at_path<T>(
    path: &[u8],
    follow_last: bool,
    ram: impl FnOnce(&mut RamFs, eremite_vfs::Ino) -> Result<T, Errno>,
    mount: impl FnOnce(u32, &[u8]) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let routed = with_ram(|fs| match fs.resolve(path, follow_last)? {
        Location::Ram(ino) => ram(fs, ino).map(Ok),
        Location::Mount { mount, path } => Ok(Err((mount, path))),
    })?;
    routed.or_else(|(index, path)| mount(index, &path))
}

/// `readlink`: the target, truncated to `buf`; the bytes copied.
pub(crate) fn readlink(path: &[u8], buf: &mut [u8]) -> Result<usize, Errno> {
    let routed = with_ram(|fs| match fs.resolve(path, false)? {
        Location::Ram(ino) => {
            let target = fs.readlink(ino)?;
            let n = target.len().min(buf.len());
            buf[..n].copy_from_slice(&target[..n]);
            Ok(Ok(n))
        }
        Location::Mount { mount, path } => Ok(Err((mount, path))),
    })?;
    match routed {
        Ok(n) => Ok(n),
        Err((mount, path)) => host::readlink(mount, &path, buf),
    }
}

/// `truncate`.
pub(crate) fn truncate(path: &[u8], len_bytes: u64) -> Result<(), Errno> {
    at_path(
        path,
        true,
        |fs, ino| fs.set_len(ino, len_bytes, now_ns()),
        |mount, path| host::truncate(mount, path, len_bytes),
    )
}

/// `chmod`.
pub(crate) fn chmod(path: &[u8], mode: u32) -> Result<(), Errno> {
    at_path(
        path,
        true,
        |fs, ino| fs.chmod(ino, mode, now_ns()),
        |mount, path| host::path_op(HostFsOp::Chmod, mount, path, mode),
    )
}

/// `realpath`: the canonical absolute path of an existing file. Below a
/// mount point the host's own symbolic links are not resolved.
pub(crate) fn canonicalize(path: &[u8]) -> Result<Vec<u8>, Errno> {
    let (location, canonical) = with_ram(|fs| fs.canonicalize(path))?;
    if let Location::Mount { mount, path } = location {
        host::stat(mount, &path, true)?;
    }
    Ok(canonical)
}
