//! File descriptors: the table, open file descriptions, and the calls
//! every ABI makes on them (read, write, seek, stat, dup, close, status
//! flags, directory listing, `poll`).
//!
//! An open file description ([`OpenFile`]) is an object behind the
//! [`FileObject`] trait plus its status flags; descriptors made by `dup`
//! share it (and so its position and flags). One implementation per kind,
//! each in its own file: the standard streams ([`stdio`]), RAM files and
//! directories ([`ram`]), host files ([`host`]), sockets ([`socket`]),
//! event counters ([`eventfd`]), pipes ([`pipe`]), `epoll` instances
//! ([`epoll`]) and the device files ([`dev`]). The trait's default methods give each
//! kind the errors a Linux kernel gives for what it cannot do (`ESPIPE`
//! for seeking a stream, `ENOTDIR` for listing a file, ...).
//!
//! Locks, always taken in this order: the descriptor table (only to look
//! up or change a slot), an object's own state, then whatever the object
//! calls (the RAM file system, the network stack). A blocking call holds
//! none of them while it waits.
//!
//! ABI-neutral: descriptors are `i32`, flags [`OpenFlags`], errors
//! [`Errno`]s. Above `fs` and `net`, which know nothing of descriptors.

mod dev;
mod epoll;
mod eventfd;
mod host;
mod pipe;
mod poll;
mod ram;
mod socket;
mod stdio;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags};
use eremite_interface::hypercall::Stream;

use crate::events::Blocking;
use crate::fs::{self, Listed};
use crate::net::{self, Readiness};
use crate::sync::Lock;

pub(crate) use epoll::{EpollEvent, EpollOp, Trigger, Watch};
pub(crate) use poll::{PollEntry, PollEvents, poll};

/// Most open descriptors at once (`EMFILE` beyond).
const MAX_FDS: usize = 65536;

/// Where `lseek` measures from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Whence {
    Start,
    Current,
    End,
}

/// What an open file description refers to: one implementation per kind.
/// Every method has the answer Linux gives for a kind that cannot do it.
/// `status` is the description's current status flags (`O_NONBLOCK`,
/// `O_APPEND`); access-mode checks are done before any method is called.
pub(crate) trait FileObject: Send + Sync {
    /// `read` at the description's position.
    fn read(&self, _buf: &mut [u8], _status: OpenFlags) -> Result<usize, Errno> {
        Err(errno::EINVAL)
    }

    /// `write` at the description's position (its end with `O_APPEND`).
    fn write(&self, _buf: &[u8], _status: OpenFlags) -> Result<usize, Errno> {
        Err(errno::EINVAL)
    }

    /// `writev`: the buffers in order, as one write where the kind can
    /// (a socket sends small ones as one segment).
    fn write_vectored(&self, bufs: &[&[u8]], status: OpenFlags) -> Result<usize, Errno> {
        write_each(bufs, |buf| self.write(buf, status))
    }

    /// `pread`: at `offset`, the position unchanged.
    fn pread(&self, _buf: &mut [u8], _offset: u64) -> Result<usize, Errno> {
        Err(errno::ESPIPE)
    }

    /// `pwrite`: at `offset` (at the end with `O_APPEND`, as on Linux).
    fn pwrite(&self, _buf: &[u8], _offset: u64, _status: OpenFlags) -> Result<usize, Errno> {
        Err(errno::ESPIPE)
    }

    /// `lseek`: the new position.
    fn seek(&self, _offset: i64, _whence: Whence) -> Result<u64, Errno> {
        Err(errno::ESPIPE)
    }

    /// `fstat`.
    fn stat(&self) -> Result<FileStat, Errno>;

    /// `ftruncate`.
    fn set_len(&self, _len_bytes: u64) -> Result<(), Errno> {
        Err(errno::EINVAL)
    }

    /// `fsync` (`data_only`: `fdatasync`): files in RAM, pipes, sockets
    /// and devices have nothing to make durable.
    fn sync(&self, _data_only: bool) -> Result<(), Errno> {
        Ok(())
    }

    /// `getdents64`: entries from the position until `emit` has no room;
    /// `max_bytes` is the caller's buffer size.
    fn read_dir(
        &self,
        _max_bytes: usize,
        _emit: &mut dyn FnMut(Listed<'_>) -> bool,
    ) -> Result<usize, Errno> {
        Err(errno::ENOTDIR)
    }

    /// What `poll` reports now: files and streams are always ready.
    fn readiness(&self) -> Readiness {
        Readiness {
            is_readable: true,
            is_writable: true,
            ..Readiness::default()
        }
    }

    /// `FIONREAD`: the bytes a `read` could take now. Seekable files:
    /// from the position to the end; streams that cannot tell: `ENOTTY`.
    fn available(&self) -> Result<usize, Errno> {
        let position = self.seek(0, Whence::Current).map_err(|_| errno::ENOTTY)?;
        let size = self.stat()?.size;
        Ok(usize::try_from(size.saturating_sub(position)).unwrap_or(usize::MAX))
    }

    /// A count that moves whenever something arrives or room frees, and
    /// only then (see `eremite_net::Stack::progress`): edge-triggered
    /// `epoll` reports a ready descriptor again when it moves. Kinds that
    /// are always ready never move.
    fn progress(&self) -> u64 {
        0
    }

    /// Whether `epoll` may watch it (Linux: `EPERM` for regular files and
    /// directories, which are always ready).
    fn can_epoll(&self) -> bool {
        true
    }

    /// The `epoll` instance, for `epoll_ctl` and `epoll_wait` (`EINVAL`
    /// for every other kind).
    fn as_epoll(&self) -> Option<&epoll::Epoll> {
        None
    }

    /// The socket, for socket calls (`ENOTSOCK` for every other kind).
    fn as_socket(&self) -> Option<&net::Socket> {
        None
    }

    /// Whether it is one end of a `socketpair`.
    fn is_socket_pair(&self) -> bool {
        false
    }

    /// The path it was opened by (files and directories), for the `*at`
    /// calls and `fchdir`.
    fn path(&self) -> Option<&[u8]> {
        None
    }
}

/// An open file description: shared by descriptors made with `dup`. The
/// object is its last field, so one allocation holds both (an
/// `Arc<OpenFile<RamFile>>` becomes an `Arc<OpenFile>`).
pub(crate) struct OpenFile<T: ?Sized = dyn FileObject> {
    /// Access mode, `O_APPEND` and `O_NONBLOCK` (the latter two change
    /// with `F_SETFL`), as [`OpenFlags`] bits.
    status: AtomicU32,
    object: T,
}

impl OpenFile {
    fn new<T: FileObject + 'static>(object: T, flags: OpenFlags) -> Arc<Self> {
        let kept = flags.access() | (flags & OpenFlags::STATUS);
        Arc::new(OpenFile {
            status: AtomicU32::new(kept.bits()),
            object,
        })
    }

    fn status(&self) -> OpenFlags {
        OpenFlags::from_bits_retain(self.status.load(Ordering::Relaxed))
    }
}

/// How a call on a description with `status` waits.
pub(crate) fn blocking(status: OpenFlags) -> Blocking {
    if status.contains(OpenFlags::NONBLOCK) {
        Blocking::Never
    } else {
        Blocking::For(None)
    }
}

/// The descriptor table.
struct FdTable {
    slots: Vec<Option<Arc<OpenFile>>>,
    /// No slot below this is free.
    lowest_free: usize,
}

impl FdTable {
    fn insert(&mut self, file: Arc<OpenFile>) -> Result<i32, Errno> {
        self.insert_from(file, 0)
    }

    /// Put `file` in the lowest free slot from `min` on.
    fn insert_from(&mut self, file: Arc<OpenFile>, min: usize) -> Result<i32, Errno> {
        let from = self.lowest_free.max(min);
        let free = (from..self.slots.len()).find(|&i| self.slots[i].is_none());
        let fd = match free {
            Some(fd) => fd,
            None if from.max(self.slots.len()) < MAX_FDS => {
                let fd = from.max(self.slots.len());
                self.slots.resize(fd + 1, None);
                fd
            }
            None => return Err(errno::EMFILE),
        };
        self.slots[fd] = Some(file);
        // Every slot from `lowest_free` to `fd` is taken now.
        if from == self.lowest_free {
            self.lowest_free = fd + 1;
        }
        Ok(fd as i32)
    }

    /// Put `file` in slot `fd`, returning what was there (closed by the
    /// caller, outside the table's lock).
    fn replace(&mut self, fd: i32, file: Arc<OpenFile>) -> Result<Option<Arc<OpenFile>>, Errno> {
        let i = usize::try_from(fd)
            .ok()
            .filter(|&i| i < MAX_FDS)
            .ok_or(errno::EBADF)?;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        let old = self.slots[i].replace(file);
        if i == self.lowest_free {
            self.lowest_free = i + 1;
        }
        Ok(old)
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

static FILES: Lock<FdTable> = Lock::new(FdTable {
    slots: Vec::new(),
    lowest_free: 0,
});

fn file(fd: i32) -> Result<Arc<OpenFile>, Errno> {
    FILES.lock().get(fd)
}

/// A new descriptor for `object`.
fn insert<T: FileObject + 'static>(object: T, flags: OpenFlags) -> Result<i32, Errno> {
    let file = OpenFile::new(object, flags);
    FILES.lock().insert(file)
}

/// Open descriptors 0, 1 and 2: standard input, output and error. Called
/// once at boot, before `main`.
pub(crate) fn init() -> Result<(), &'static str> {
    let opened = [
        insert(stdio::Stdin, OpenFlags::RDONLY),
        insert(stdio::Output(Stream::Stdout), OpenFlags::WRONLY),
        insert(stdio::Output(Stream::Stderr), OpenFlags::WRONLY),
    ];
    match opened {
        [Ok(0), Ok(1), Ok(2)] => Ok(()),
        _ => Err("cannot open the standard streams"),
    }
}

/// `open`: the new descriptor.
pub(crate) fn open(path: &[u8], flags: OpenFlags, mode: u32) -> Result<i32, Errno> {
    // On failure the object is dropped, which closes the file.
    let name = fs::absolute(None, path).into_boxed_slice();
    if let Some(device) = dev::Device::at(&name) {
        return insert(device, flags);
    }
    match fs::open(path, flags, mode)? {
        fs::Opened::Ram(node) => insert(ram::RamFile::new(node, name), flags),
        fs::Opened::Host(handle) => insert(host::HostFile::new(handle, name), flags),
    }
}

/// A file with no name in the directory `dir`, open with `flags` (Linux's
/// `O_TMPFILE`): made under a name no one uses and unlinked at once, so
/// it lives as long as it is open and no one else can open it.
pub(crate) fn open_unnamed(dir: &[u8], flags: OpenFlags, mode: u32) -> Result<i32, Errno> {
    static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let flags = (flags - OpenFlags::DIRECTORY) | OpenFlags::CREAT | OpenFlags::EXCL;
    for _ in 0..64 {
        let n = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        let mut path = dir.to_vec();
        path.extend_from_slice(alloc::format!("/.eremite-unnamed-{n}").as_bytes());
        match open(&path, flags, mode) {
            Ok(fd) => {
                if let Err(error) = fs::unlink(&path) {
                    let _ = close(fd);
                    return Err(error);
                }
                return Ok(fd);
            }
            Err(errno::EEXIST) => {}
            Err(error) => return Err(error),
        }
    }
    Err(errno::EEXIST)
}

/// A descriptor for a new socket; `O_NONBLOCK` in `flags` applies.
pub(crate) fn open_socket(socket: net::Socket, flags: OpenFlags) -> Result<i32, Errno> {
    insert(
        socket::SocketFile(socket),
        OpenFlags::RDWR | (flags & OpenFlags::NONBLOCK),
    )
}

/// `eventfd`: a descriptor for a new event counter starting at `initial`
/// (`EFD_SEMAPHORE` if `is_semaphore`); `O_NONBLOCK` in `flags` applies.
pub(crate) fn open_eventfd(
    initial: u64,
    is_semaphore: bool,
    flags: OpenFlags,
) -> Result<i32, Errno> {
    insert(
        eventfd::EventFd::new(initial, is_semaphore),
        OpenFlags::RDWR | (flags & OpenFlags::NONBLOCK),
    )
}

/// `pipe`: descriptors for a new pipe's read and write ends; `O_NONBLOCK`
/// in `flags` applies to both.
pub(crate) fn open_pipe(flags: OpenFlags) -> Result<[i32; 2], Errno> {
    let (reader, writer) = pipe::new();
    let nonblock = flags & OpenFlags::NONBLOCK;
    insert_two(
        OpenFile::new(reader, OpenFlags::RDONLY | nonblock),
        OpenFile::new(writer, OpenFlags::WRONLY | nonblock),
    )
}

/// Descriptors for `first` and `second`, or neither.
fn insert_two(first: Arc<OpenFile>, second: Arc<OpenFile>) -> Result<[i32; 2], Errno> {
    let mut files = FILES.lock();
    let first_fd = files.insert(first)?;
    match files.insert(second) {
        Ok(second_fd) => Ok([first_fd, second_fd]),
        Err(error) => {
            let first = files.remove(first_fd);
            drop(files);
            drop(first);
            Err(error)
        }
    }
}

/// `socketpair`: descriptors for the two ends of a connected pair of
/// stream sockets; `O_NONBLOCK` in `flags` applies to both.
pub(crate) fn open_socket_pair(flags: OpenFlags) -> Result<[i32; 2], Errno> {
    let (a, b) = pipe::new_pair();
    let nonblock = flags & OpenFlags::NONBLOCK;
    insert_two(
        OpenFile::new(a, OpenFlags::RDWR | nonblock),
        OpenFile::new(b, OpenFlags::RDWR | nonblock),
    )
}

/// Whether `fd` is one end of a `socketpair` (whose data calls are reads
/// and writes).
pub(crate) fn is_socket_pair(fd: i32) -> bool {
    file(fd).is_ok_and(|f| f.object.is_socket_pair())
}

/// `epoll_create`: a descriptor for a new, empty `epoll` instance.
pub(crate) fn open_epoll() -> Result<i32, Errno> {
    insert(epoll::Epoll::new(), OpenFlags::RDWR)
}

/// `epoll_ctl`: watch (or stop watching, or change how it watches) `fd`
/// with the instance `epfd` (`EINVAL` if `epfd` is not one, or is `fd`).
pub(crate) fn epoll_control(epfd: i32, op: EpollOp, fd: i32, how: Watch) -> Result<(), Errno> {
    let instance = file(epfd)?;
    let target = file(fd)?;
    let epoll = instance.object.as_epoll().ok_or(errno::EINVAL)?;
    if epfd == fd {
        return Err(errno::EINVAL);
    }
    epoll.control(op, fd, &target, how)
}

/// `epoll_wait`: up to `max` events from the instance `epfd`, waiting
/// until `deadline_ns` (monotonic; `None`: for ever) for the first.
pub(crate) fn epoll_wait(
    epfd: i32,
    max: usize,
    deadline_ns: Option<u64>,
) -> Result<Vec<EpollEvent>, Errno> {
    let instance = file(epfd)?;
    let epoll = instance.object.as_epoll().ok_or(errno::EINVAL)?;
    epoll.wait(max, deadline_ns)
}

/// Run `op` on the socket `fd` refers to, with whether calls on it may
/// wait: `ENOTSOCK` if it is not one.
pub(crate) fn with_socket<T>(
    fd: i32,
    op: impl FnOnce(&net::Socket, net::Mode) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let file = file(fd)?;
    let socket = file.object.as_socket().ok_or(errno::ENOTSOCK)?;
    op(socket, socket::mode(file.status()))
}

/// `FIONREAD` on `fd` (see [`FileObject::available`]).
pub(crate) fn available(fd: i32) -> Result<usize, Errno> {
    file(fd)?.object.available()
}

/// The path the file `fd` was opened by (`ENOTDIR` for a stream or a
/// socket).
pub(crate) fn path_of(fd: i32) -> Result<Vec<u8>, Errno> {
    file(fd)?
        .object
        .path()
        .map(<[u8]>::to_vec)
        .ok_or(errno::ENOTDIR)
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

/// `dup2`/`dup3`: make `new` refer to the description `old` refers to,
/// closing what `new` referred to.
pub(crate) fn dup_to(old: i32, new: i32) -> Result<i32, Errno> {
    let replaced = {
        let mut files = FILES.lock();
        let file = files.get(old)?;
        files.replace(new, file)?
    };
    drop(replaced);
    Ok(new)
}

/// `fcntl(F_DUPFD)`: a second descriptor, the lowest free one from `min`.
pub(crate) fn dup_from(fd: i32, min: usize) -> Result<i32, Errno> {
    let mut files = FILES.lock();
    let file = files.get(fd)?;
    files.insert_from(file, min)
}

/// `fcntl`'s `F_GETFL`.
pub(crate) fn status_flags(fd: i32) -> Result<OpenFlags, Errno> {
    Ok(file(fd)?.status())
}

/// `fcntl`'s `F_SETFL`: only `O_APPEND` and `O_NONBLOCK` change.
pub(crate) fn set_status_flags(fd: i32, flags: OpenFlags) -> Result<(), Errno> {
    let file = file(fd)?;
    let old = file.status();
    let new = (old - OpenFlags::STATUS) | (flags & OpenFlags::STATUS);
    file.status.store(new.bits(), Ordering::Relaxed);
    Ok(())
}

/// `read` at the file position.
pub(crate) fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let file = readable(fd)?;
    file.object.read(buf, file.status())
}

/// `pread`: at `offset`, the position unchanged.
pub(crate) fn pread(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    readable(fd)?.object.pread(buf, offset)
}

/// `write` at the file position (at the end with `O_APPEND`).
pub(crate) fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    let file = writable(fd)?;
    file.object.write(buf, file.status())
}

/// `writev`: `bufs` in order; what went before a failure is the result.
pub(crate) fn write_vectored(fd: i32, bufs: &[&[u8]]) -> Result<usize, Errno> {
    let file = writable(fd)?;
    file.object.write_vectored(bufs, file.status())
}

/// Write each of `bufs` with `write` until one is short (see
/// [`until_short`]).
pub(crate) fn write_each(
    bufs: &[&[u8]],
    write: impl FnMut(&[u8]) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    until_short(bufs.iter().map(|buf| Ok(*buf)), |buf| buf.len(), write)
}

/// Move each of `items` (`len` bytes long) with `op` until one comes back
/// short: the total, or the error if nothing moved (what moved before a
/// failure is the result, as for `readv(2)` and `writev(2)`). An item that
/// cannot be had (an `iovec` outside the program's memory) fails the call.
pub(crate) fn until_short<T>(
    items: impl IntoIterator<Item = Result<T, Errno>>,
    len: impl Fn(&T) -> usize,
    mut op: impl FnMut(T) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    let mut total = 0usize;
    for item in items {
        let item = item?;
        let wanted = len(&item);
        let n = match op(item) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n);
        if n < wanted {
            break;
        }
    }
    Ok(total)
}

/// `pwrite`: at `offset`, the position unchanged.
pub(crate) fn pwrite(fd: i32, buf: &[u8], offset: u64) -> Result<usize, Errno> {
    let file = writable(fd)?;
    file.object.pwrite(buf, offset, file.status())
}

fn readable(fd: i32) -> Result<Arc<OpenFile>, Errno> {
    let file = file(fd)?;
    if !file.status().is_readable() {
        return Err(errno::EBADF);
    }
    Ok(file)
}

fn writable(fd: i32) -> Result<Arc<OpenFile>, Errno> {
    let file = file(fd)?;
    if !file.status().is_writable() {
        return Err(errno::EBADF);
    }
    Ok(file)
}

/// `lseek`: the new position.
pub(crate) fn seek(fd: i32, offset: i64, whence: Whence) -> Result<u64, Errno> {
    file(fd)?.object.seek(offset, whence)
}

/// `fstat`.
pub(crate) fn fstat(fd: i32) -> Result<FileStat, Errno> {
    file(fd)?.object.stat()
}

/// `ftruncate`.
pub(crate) fn set_len(fd: i32, len_bytes: u64) -> Result<(), Errno> {
    let file = file(fd)?;
    if !file.status().is_writable() {
        return Err(errno::EINVAL);
    }
    file.object.set_len(len_bytes)
}

/// `fsync` (`data_only`: `fdatasync`): a file or directory in a mount is
/// synced on the host; RAM needs nothing.
pub(crate) fn sync(fd: i32, data_only: bool) -> Result<(), Errno> {
    file(fd)?.object.sync(data_only)
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
    file(fd)?.object.read_dir(max_bytes, &mut emit)
}

/// A position and directory-listing progress, for the kinds that have
/// them: where `SEEK_END` is comes from the object.
#[derive(Default)]
struct Position {
    offset: u64,
    dir: fs::DirPosition,
}

impl Position {
    /// `lseek` from `whence` (`end` answers where the end is).
    fn seek(
        &mut self,
        offset: i64,
        whence: Whence,
        end: impl FnOnce() -> Result<u64, Errno>,
    ) -> Result<u64, Errno> {
        let base = match whence {
            Whence::Start => 0,
            Whence::Current => self.offset,
            Whence::End => end()?,
        };
        let target = i128::from(base) + i128::from(offset);
        let target = u64::try_from(target)
            .ok()
            .filter(|&t| t <= eremite_vfs::MAX_FILE_BYTES)
            .ok_or(errno::EINVAL)?;
        if target == 0 {
            // Rewinding a directory restarts its listing.
            self.dir.rewind();
        }
        self.offset = target;
        Ok(target)
    }
}
