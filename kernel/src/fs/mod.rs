//! The VFS: one file-descriptor table for files, directories and the
//! standard streams; `/` is the RAM file system of `eremite-vfs`, and
//! directories mounted with `--mount` are served by the host ([`host`]).
//!
//! Every path operation resolves its path in the RAM file system first,
//! under its lock; a path that leads below a mount point comes back as a
//! [`Location::Mount`] and goes to the host. Operations that involve two
//! paths (rename, link) work within one file system only (`EXDEV`).
//!
//! Locks, always taken in this order: the descriptor table (only to look
//! up or change a slot), an open file's state, the RAM file system. No
//! lock is held across a hypercall except an open file's own state.
//!
//! ABI-neutral: errors are [`Errno`]s, paths are byte strings, and the
//! `abi` layer converts records to hermit-abi's structs.

pub(crate) mod host;
mod initrd;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::BootInfo;
use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{
    DirRecord, FileStat, O_ACCMODE, O_APPEND, O_CREAT, O_DIRECTORY, O_NONBLOCK, O_RDONLY, O_RDWR,
    O_WRONLY,
};
use eremite_interface::hypercall::{HostFsOp, Stream};
use eremite_vfs::{DirCursor, Kind, Location, ParentLocation, RamFs};
use zerocopy::FromBytes;

use crate::sync::Lock;
use crate::{boot, console, mm, net, time};

/// Most open descriptors at once (`EMFILE` beyond).
const MAX_FDS: usize = 65536;

/// `S_IFCHR`: what the standard streams are.
const S_IFCHR: u32 = 0o020000;
/// `S_IFSOCK`.
const S_IFSOCK: u32 = 0o140000;

/// What an open file description refers to.
enum Object {
    Stdin,
    Output(Stream),
    Ram(eremite_vfs::Ino),
    Host {
        mount: u32,
        handle: u64,
    },
    /// Closed by its own `Drop`.
    Socket(net::Socket),
    EventFd(net::EventFd),
}

/// Position and directory-listing progress of an open file.
#[derive(Default)]
struct FileState {
    offset: u64,
    ram_cursor: DirCursor,
    host_cookie: u64,
    /// Entries returned so far (for `d_off`).
    listed: u64,
}

/// An open file description: shared by descriptors made with `dup`.
pub(crate) struct OpenFile {
    object: Object,
    /// Access mode and `O_APPEND`/`O_NONBLOCK` (the latter two change with
    /// `F_SETFL`).
    flags: AtomicU32,
    state: Lock<FileState>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        match self.object {
            Object::Ram(ino) => {
                let _ = with_ram(|fs| fs.close(ino));
            }
            Object::Host { mount, handle } => host::close(mount, handle),
            Object::Stdin | Object::Output(_) | Object::Socket(_) | Object::EventFd(_) => {}
        }
    }
}

impl OpenFile {
    fn new(object: Object, flags: u32) -> Arc<Self> {
        Arc::new(Self {
            object,
            flags: AtomicU32::new(flags & (O_ACCMODE | O_APPEND | O_NONBLOCK)),
            state: Lock::new(FileState::default()),
        })
    }

    fn is_readable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & O_ACCMODE != O_WRONLY
    }

    fn is_writable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & O_ACCMODE != O_RDONLY
    }

    fn is_append(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & O_APPEND != 0
    }

    /// Whether calls on it may wait (no `O_NONBLOCK`).
    fn mode(&self) -> net::Mode {
        if self.flags.load(Ordering::Relaxed) & O_NONBLOCK != 0 {
            net::Mode::NonBlocking
        } else {
            net::Mode::Blocking
        }
    }

    /// Read or write a socket or an event counter, which may block and
    /// so must not hold the file's state lock: `None` for other objects.
    fn stream_io(&self, io: StreamIo<'_>, at: Option<u64>) -> Option<Result<usize, Errno>> {
        let blocking = match self.mode() {
            net::Mode::NonBlocking => net::Blocking::Never,
            net::Mode::Blocking => net::Blocking::For(None),
        };
        let result = match (&self.object, io) {
            (Object::Socket(_) | Object::EventFd(_), _) if at.is_some() => Err(errno::ESPIPE),
            (Object::Socket(socket), StreamIo::Read(buf)) => {
                net::recv(socket, buf, net::Receive::Take, self.mode())
            }
            (Object::Socket(socket), StreamIo::Write(buf)) => {
                net::send(socket, buf, None, self.mode())
            }
            (Object::EventFd(counter), StreamIo::Read(buf)) => match buf.get_mut(..8) {
                Some(out) => counter.read(blocking).map(|value| {
                    out.copy_from_slice(&value.to_ne_bytes());
                    8
                }),
                None => Err(errno::EINVAL),
            },
            (Object::EventFd(counter), StreamIo::Write(buf)) => {
                match buf.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    Some(bytes) => counter
                        .write(u64::from_ne_bytes(bytes), blocking)
                        .map(|()| 8),
                    None => Err(errno::EINVAL),
                }
            }
            _ => return None,
        };
        Some(result)
    }
}

/// The buffer of a read or a write.
enum StreamIo<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// The descriptor table.
struct FdTable {
    slots: Vec<Option<Arc<OpenFile>>>,
    /// No slot below this is free.
    lowest_free: usize,
}

impl FdTable {
    fn insert(&mut self, file: Arc<OpenFile>) -> Result<i32, Errno> {
        let free = (self.lowest_free..self.slots.len()).find(|&i| self.slots[i].is_none());
        let fd = match free {
            Some(fd) => fd,
            None if self.slots.len() < MAX_FDS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(errno::EMFILE),
        };
        self.slots[fd] = Some(file);
        self.lowest_free = fd + 1;
        Ok(fd as i32)
    }

    fn get(&self, fd: i32) -> Result<Arc<OpenFile>, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::clone)
            .ok_or(errno::EBADF)
    }

    fn remove(&mut self, fd: i32) -> Result<Arc<OpenFile>, Errno> {
        let i = usize::try_from(fd).map_err(|_| errno::EBADF)?;
        let file = self
            .slots
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(errno::EBADF)?;
        self.lowest_free = self.lowest_free.min(i);
        Ok(file)
    }
}

static RAM: Lock<Option<RamFs>> = Lock::new(None);
static FILES: Lock<FdTable> = Lock::new(FdTable {
    slots: Vec::new(),
    lowest_free: 0,
});

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

fn file(fd: i32) -> Result<Arc<OpenFile>, Errno> {
    FILES.lock().get(fd)
}

/// Set up `/`, the mount points and the standard streams, and unpack the
/// initial ramdisk (`initrd`, which is not kept). Called once at boot,
/// before `main`.
pub(crate) fn init(info: &BootInfo, initrd: Option<&[u8]>) -> Result<(), &'static str> {
    let mut fs = RamFs::new(now_ns());
    for (index, path) in boot::strings(&info.mounts).enumerate() {
        let index = u32::try_from(index).map_err(|_| "too many mounts")?;
        fs.mount(path, index, now_ns())
            .map_err(|_| "cannot create a mount point")?;
    }
    if let Some(archive) = initrd {
        initrd::unpack(&mut fs, archive)?;
    }
    *RAM.lock() = Some(fs);
    let mut files = FILES.lock();
    for (object, flags) in [
        (Object::Stdin, O_RDONLY),
        (Object::Output(Stream::Stdout), O_WRONLY),
        (Object::Output(Stream::Stderr), O_WRONLY),
    ] {
        files
            .insert(OpenFile::new(object, flags))
            .map_err(|_| "cannot open the standard streams")?;
    }
    Ok(())
}

/// Open `path`; the new descriptor.
pub(crate) fn open(path: &[u8], flags: u32, mode: u32) -> Result<i32, Errno> {
    let opened = if flags & O_CREAT != 0 {
        with_ram_growing(|fs| fs.open(path, flags, mode, now_ns()))
    } else {
        with_ram(|fs| fs.open(path, flags, mode, now_ns()))
    };
    let object = match opened? {
        Location::Ram(ino) => Object::Ram(ino),
        Location::Mount { mount, path } => Object::Host {
            mount,
            handle: host::open(mount, &path, flags, mode)?,
        },
    };
    // On failure the description is dropped, which closes the file.
    FILES.lock().insert(OpenFile::new(object, flags))
}

/// A descriptor for a new socket; `O_NONBLOCK` in `flags` applies.
pub(crate) fn open_socket(socket: net::Socket, flags: u32) -> Result<i32, Errno> {
    FILES
        .lock()
        .insert(OpenFile::new(Object::Socket(socket), O_RDWR | flags))
}

/// A descriptor for a new event counter; `O_NONBLOCK` in `flags` applies.
pub(crate) fn open_eventfd(counter: net::EventFd, flags: u32) -> Result<i32, Errno> {
    FILES
        .lock()
        .insert(OpenFile::new(Object::EventFd(counter), O_RDWR | flags))
}

/// Run `op` on the socket `fd` refers to: `ENOTSOCK` if it is not one.
pub(crate) fn with_socket<T>(
    fd: i32,
    op: impl FnOnce(&net::Socket, net::Mode) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let file = file(fd)?;
    match &file.object {
        Object::Socket(socket) => op(socket, file.mode()),
        _ => Err(errno::ENOTSOCK),
    }
}

/// An open file kept open while `poll` looks at it.
pub(crate) struct Held(Arc<OpenFile>);

impl Held {
    /// What `poll` watches in it.
    pub(crate) fn pollable(&self) -> net::Pollable<'_> {
        match &self.0.object {
            Object::Socket(socket) => net::Pollable::Socket(socket),
            Object::EventFd(counter) => net::Pollable::EventFd(counter),
            _ => net::Pollable::Other,
        }
    }
}

/// Hold the open file `fd` refers to.
pub(crate) fn hold(fd: i32) -> Result<Held, Errno> {
    file(fd).map(Held)
}

/// Close a descriptor (the file when it was the last one).
pub(crate) fn close(fd: i32) -> Result<(), Errno> {
    let file = FILES.lock().remove(fd)?;
    drop(file);
    Ok(())
}

/// Close every descriptor, as a process's exit does: sockets then end
/// their connections (see `net::finish`).
pub(crate) fn close_all() {
    let slots = core::mem::take(&mut FILES.lock().slots);
    drop(slots);
}

/// A second descriptor for the same open file description.
pub(crate) fn dup(fd: i32) -> Result<i32, Errno> {
    let mut files = FILES.lock();
    let file = files.get(fd)?;
    files.insert(file)
}

/// `fcntl`'s `F_GETFL`.
pub(crate) fn status_flags(fd: i32) -> Result<u32, Errno> {
    Ok(file(fd)?.flags.load(Ordering::Relaxed))
}

/// `fcntl`'s `F_SETFL`: only `O_APPEND` and `O_NONBLOCK` change.
pub(crate) fn set_status_flags(fd: i32, flags: u32) -> Result<(), Errno> {
    let file = file(fd)?;
    let changeable = O_APPEND | O_NONBLOCK;
    let old = file.flags.load(Ordering::Relaxed);
    file.flags.store(
        (old & !changeable) | (flags & changeable),
        Ordering::Relaxed,
    );
    Ok(())
}

/// Read at the file position (or at `at`, for `pread`).
pub(crate) fn read(fd: i32, buf: &mut [u8], at: Option<u64>) -> Result<usize, Errno> {
    let file = file(fd)?;
    if !file.is_readable() {
        return Err(errno::EBADF);
    }
    if let Some(result) = file.stream_io(StreamIo::Read(buf), at) {
        return result;
    }
    let mut state = file.state.lock();
    let offset = at.unwrap_or(state.offset);
    let n = match file.object {
        Object::Stdin if at.is_some() => return Err(errno::ESPIPE),
        // No standard input is connected yet: end of file.
        Object::Stdin => 0,
        Object::Output(_) => return Err(errno::EBADF),
        Object::Ram(ino) => with_ram(|fs| fs.read(ino, offset, buf))?,
        Object::Host { mount, handle } => host::read(mount, handle, offset, buf)?,
        Object::Socket(_) | Object::EventFd(_) => unreachable!("handled by stream_io"),
    };
    if at.is_none() {
        state.offset = offset + n as u64;
    }
    Ok(n)
}

/// Write at the file position (at the end with `O_APPEND`, or at `at`
/// for `pwrite`).
pub(crate) fn write(fd: i32, buf: &[u8], at: Option<u64>) -> Result<usize, Errno> {
    let file = file(fd)?;
    if !file.is_writable() {
        return Err(errno::EBADF);
    }
    if let Some(result) = file.stream_io(StreamIo::Write(buf), at) {
        return result;
    }
    let mut state = file.state.lock();
    match file.object {
        Object::Output(_) if at.is_some() => Err(errno::ESPIPE),
        Object::Output(stream) => console::write(stream, buf),
        Object::Stdin => Err(errno::EBADF),
        Object::Ram(ino) => with_ram(|fs| {
            // As on Linux, pwrite on an O_APPEND file appends too.
            let offset = if file.is_append() {
                fs.len(ino)?
            } else {
                at.unwrap_or(state.offset)
            };
            // Only a write that stores new bytes may allocate.
            if !fs.is_overwrite(ino, offset, buf.len() as u64) {
                ensure_room()?;
            }
            let n = fs.write(ino, offset, buf, now_ns())?;
            if at.is_none() {
                state.offset = offset + n as u64;
            }
            Ok(n)
        }),
        Object::Host { mount, handle } => {
            let offset = at.unwrap_or(state.offset);
            let n = host::write(mount, handle, offset, buf)?;
            if at.is_none() {
                state.offset = if file.is_append() {
                    host::fstat(mount, handle)?.size
                } else {
                    offset + n as u64
                };
            }
            Ok(n)
        }
        Object::Socket(_) | Object::EventFd(_) => unreachable!("handled by stream_io"),
    }
}

/// Where `lseek` measures from.
#[derive(Clone, Copy)]
pub(crate) enum Whence {
    Start,
    Current,
    End,
}

/// Move the file position; the new position.
pub(crate) fn seek(fd: i32, offset: i64, whence: Whence) -> Result<u64, Errno> {
    let file = file(fd)?;
    let mut state = file.state.lock();
    let base = match (whence, &file.object) {
        (_, Object::Stdin | Object::Output(_) | Object::Socket(_) | Object::EventFd(_)) => {
            return Err(errno::ESPIPE);
        }
        (Whence::Start, _) => 0,
        (Whence::Current, _) => state.offset,
        (Whence::End, Object::Ram(ino)) => with_ram(|fs| match fs.kind(*ino)? {
            Kind::Dir => Ok(0),
            _ => fs.len(*ino),
        })?,
        (Whence::End, Object::Host { mount, handle }) => host::fstat(*mount, *handle)?.size,
    };
    let target = i128::from(base) + i128::from(offset);
    let target = u64::try_from(target)
        .ok()
        .filter(|&t| t <= eremite_vfs::MAX_FILE_BYTES)
        .ok_or(errno::EINVAL)?;
    if target == 0 {
        // Rewinding a directory restarts its listing.
        state.ram_cursor = DirCursor::Start;
        state.host_cookie = 0;
        state.listed = 0;
    }
    state.offset = target;
    Ok(target)
}

/// `fstat`.
pub(crate) fn fstat(fd: i32) -> Result<FileStat, Errno> {
    let file = file(fd)?;
    match file.object {
        Object::Stdin | Object::Output(_) => Ok(FileStat {
            mode: S_IFCHR | 0o620,
            nlink: 1,
            ..FileStat::default()
        }),
        Object::Ram(ino) => with_ram(|fs| fs.stat(ino)),
        Object::Host { mount, handle } => host::fstat(mount, handle),
        Object::Socket(_) => Ok(FileStat {
            mode: S_IFSOCK | 0o777,
            nlink: 1,
            ..FileStat::default()
        }),
        // Linux shows an anonymous inode, mode 0600 and no type bits.
        Object::EventFd(_) => Ok(FileStat {
            mode: 0o600,
            nlink: 1,
            ..FileStat::default()
        }),
    }
}

/// `ftruncate`.
pub(crate) fn set_len(fd: i32, len_bytes: u64) -> Result<(), Errno> {
    let file = file(fd)?;
    if !file.is_writable() {
        return Err(errno::EINVAL);
    }
    match file.object {
        Object::Stdin | Object::Output(_) | Object::Socket(_) | Object::EventFd(_) => {
            Err(errno::EINVAL)
        }
        Object::Ram(ino) => with_ram(|fs| fs.set_len(ino, len_bytes, now_ns())),
        Object::Host { mount, handle } => host::ftruncate(mount, handle, len_bytes),
    }
}

/// `fsync`: RAM needs nothing, and host writes are already on the host.
pub(crate) fn sync(fd: i32) -> Result<(), Errno> {
    file(fd).map(drop)
}

/// One entry handed to a directory-listing consumer.
pub(crate) struct Listed<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) ino: u64,
    pub(crate) dirent_type: u8,
    /// Position after this entry.
    pub(crate) next: u64,
}

/// List the directory `fd` from its position; `emit` returns `false` when
/// it has no room for an entry (which is then not consumed). `max_bytes`
/// bounds the records fetched from the host per call. Returns the number
/// of entries emitted.
pub(crate) fn read_dir(
    fd: i32,
    max_bytes: usize,
    mut emit: impl FnMut(Listed<'_>) -> bool,
) -> Result<usize, Errno> {
    let file = file(fd)?;
    let mut state = file.state.lock();
    let mut count = 0;
    match file.object {
        Object::Stdin | Object::Output(_) | Object::Socket(_) | Object::EventFd(_) => {
            return Err(errno::ENOTDIR);
        }
        Object::Ram(ino) => {
            let listed = state.listed;
            let cursor = with_ram(|fs| {
                fs.read_dir(ino, &state.ram_cursor, |e| {
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
            state.ram_cursor = cursor;
        }
        Object::Host { mount, handle } => {
            let mut records = alloc::vec![0u8; max_bytes.min(64 << 10)];
            let filled = host::read_dir(mount, handle, state.host_cookie, &mut records)?;
            let mut rest = &records[..filled];
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
                    next: state.listed + count as u64 + 1,
                }) {
                    break;
                }
                count += 1;
                state.host_cookie = record.next;
                rest = next_rest;
            }
        }
    }
    state.listed += count as u64;
    Ok(count)
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

/// `opendir`: `open` with `O_DIRECTORY`.
pub(crate) fn open_dir(path: &[u8]) -> Result<i32, Errno> {
    open(path, O_RDONLY | O_DIRECTORY, 0)
}

/// Flags a caller may pass to `open` (others are `EINVAL`).
pub(crate) const OPEN_FLAGS: u32 = O_ACCMODE
    | O_CREAT
    | eremite_interface::fs::O_EXCL
    | eremite_interface::fs::O_TRUNC
    | O_APPEND
    | O_NONBLOCK
    | O_DIRECTORY
    | eremite_interface::fs::O_NOFOLLOW
    | eremite_interface::fs::O_CLOEXEC;
