//! Host directories mounted into the guest (`--mount`), as the `HostFs`
//! hypercall uses them.
//!
//! [`Mount`] holds an `O_PATH` descriptor of the host directory, opened
//! once before the guest starts. [`HostFs`] holds the mounts and the files
//! the guest has opened (numbered handles, at most [`MAX_OPEN_HANDLES`]).
//!
//! The guest is hostile, so no guest path is ever handed to a plain
//! `open(2)` or `*at(2)` call. Every path is first parsed into a
//! [`GuestPath`] (form only), then resolved by `openat2(2)` relative to the
//! mount's descriptor with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the
//! kernel refuses `..` above the mount, absolute symbolic links and links
//! that lead out (`EXDEV`) and `/proc` magic links (`ELOOP`), atomically,
//! so a rename racing the lookup cannot lead it out either. Operations on a
//! last component (mkdir, unlink, rmdir, rename, symlink, link) open the
//! *parent* that way and act on the bare final name relative to it
//! ([`SandboxedPath`]); a final name of `.`, `..` or the mount itself is
//! refused first, and trailing slashes are handled here, because Linux
//! would follow a symbolic link named with one. Operations that follow a
//! final symbolic link (open, stat, truncate, chmod) let `openat2` follow
//! it, beneath the mount. Modes from the guest lose their set-id bits.
//!
//! Errors are the host's errno values, which are Linux's, as the guest's.
//! Neighbours: `hypercall` decodes requests and copies guest memory in and
//! out; `spec` parses `--mount` values.

#![forbid(unsafe_code)]

mod path;
mod spec;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{
    DT_DIR, DT_LNK, DT_REG, DirRecord, FileStat, O_ACCMODE, O_APPEND, O_CLOEXEC, O_CREAT,
    O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFCHR,
    S_IFDIR, S_IFIFO, S_IFMT, S_IFSOCK,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use zerocopy::IntoBytes;

pub use path::PathError;
pub(crate) use path::{GuestPath, LinkTarget, MAX_PATH_BYTES};
use path::{LastComponent, NameKind};
pub(crate) use spec::check_mounts;
pub use spec::{MAX_MOUNTS, MountSpec, MountSpecError, parse_mount_spec};

/// Most files and directories the guest may hold open at once.
pub(crate) const MAX_OPEN_HANDLES: usize = 4096;

/// The host's directory records read at a time while listing: a
/// `ReadDir` reads the directory from the guest's cookie with a buffer of
/// this size, so a listing costs the VMM this much however large the
/// directory.
const LISTING_CHUNK_BYTES: usize = 32 << 10;

/// How every guest path is resolved: beneath the mount, no magic links.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` gives `EAGAIN` when a rename elsewhere raced the lookup; it is
/// tried this many times before the guest gets `EAGAIN`.
const RESOLVE_TRIES: u32 = 4;

/// The permission bits a guest may set: all but set-user-ID and
/// set-group-ID. A VMM run as root would otherwise let the guest leave a
/// set-user-ID root program in a host directory.
const GUEST_MODE_BITS: u32 = 0o1777;

fn guest_mode(mode: u32) -> Mode {
    Mode::from_bits_truncate(mode & GUEST_MODE_BITS)
}

fn host(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

fn io(e: std::io::Error) -> Errno {
    e.raw_os_error().map_or(errno::EIO, Errno)
}

/// A host directory the guest sees below a guest path.
#[derive(Debug)]
pub(crate) struct Mount {
    /// The host directory, `O_PATH | O_DIRECTORY`.
    dir: OwnedFd,
    is_read_only: bool,
}

impl Mount {
    /// The host directory (`O_PATH`), for the Landlock rule that allows it.
    pub(crate) fn dir(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.dir)
    }

    /// Whether the guest may only read it.
    pub(crate) fn is_read_only(&self) -> bool {
        self.is_read_only
    }

    /// Open the host directory of `spec`.
    pub(crate) fn open(spec: &MountSpec) -> std::io::Result<Self> {
        let dir = rustix::fs::open(
            &spec.host_dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            dir,
            is_read_only: spec.is_read_only,
        })
    }

    fn check_writable(&self) -> Result<(), Errno> {
        if self.is_read_only {
            Err(errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// `openat2(dir, path, flags | O_CLOEXEC, mode, RESOLVE)`: the only way
    /// a guest path reaches the host.
    fn open_beneath(&self, path: &[u8], flags: OFlags, mode: Mode) -> Result<File, Errno> {
        let mut tries = 1;
        loop {
            match rustix::fs::openat2(&self.dir, path, flags | OFlags::CLOEXEC, mode, RESOLVE) {
                Err(rustix::io::Errno::AGAIN) if tries < RESOLVE_TRIES => tries += 1,
                result => return result.map(File::from).map_err(host),
            }
        }
    }

    /// Open `path` itself (following a final symbolic link, beneath) with
    /// `O_PATH`, for stat and type checks.
    fn open_path(&self, path: &GuestPath, flags: OFlags) -> Result<File, Errno> {
        self.open_beneath(path.for_open(), OFlags::PATH | flags, Mode::empty())
    }

    /// Open the parent directory of `path`'s last component beneath the
    /// mount.
    fn resolve_parent<'p>(&self, path: &'p GuestPath) -> Result<SandboxedPath<'p>, Errno> {
        let last = path.split_last();
        let parent =
            self.open_beneath(last.parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok(SandboxedPath { parent, last })
    }
}

/// The last component of a guest path and its parent directory, which was
/// opened beneath the mount: the `*at` calls on `name` relative to
/// `parent` can only touch an entry of that directory. Only
/// [`Mount::resolve_parent`] builds one.
struct SandboxedPath<'p> {
    parent: File,
    last: LastComponent<'p>,
}

impl SandboxedPath<'_> {
    /// The final name, or `on_special`'s errno when it is `.`, `..` or the
    /// mount itself (Linux's answer differs by call).
    fn name(&self, on_special: fn(NameKind) -> Errno) -> Result<&[u8], Errno> {
        match self.last.kind {
            NameKind::Normal => Ok(self.last.name),
            other => Err(on_special(other)),
        }
    }

    /// `lstat` of the entry (not following a symbolic link).
    fn file_type(&self) -> Result<FileType, Errno> {
        let stat = rustix::fs::statat(&self.parent, self.last.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(host)?;
        Ok(FileType::from_raw_mode(stat.st_mode))
    }

    /// With a trailing slash the entry must be a directory: Linux's answer
    /// for a path like `file/` as the target of `link` or `symlink`.
    fn refuse_slash_for_new_name(&self) -> Result<(), Errno> {
        if !self.last.has_trailing_slash {
            return Ok(());
        }
        self.file_type()?;
        Err(errno::EEXIST)
    }
}

/// Validated `open` flags: only those [`eremite_interface::fs`] names, and
/// not both write bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFlags(u32);

impl OpenFlags {
    const KNOWN: u32 = O_ACCMODE
        | O_CREAT
        | O_EXCL
        | O_TRUNC
        | O_APPEND
        | O_NONBLOCK
        | O_DIRECTORY
        | O_NOFOLLOW
        | O_CLOEXEC;

    /// `None` for unknown bits or an access mode of 3.
    pub(crate) fn parse(raw: u32) -> Option<Self> {
        if raw & !Self::KNOWN != 0 || raw & O_ACCMODE == O_ACCMODE {
            return None;
        }
        Some(Self(raw))
    }

    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    fn can_modify(self) -> bool {
        self.0 & O_ACCMODE != O_RDONLY || self.has(O_CREAT) || self.has(O_TRUNC)
    }

    /// The host's flags. Always `O_NONBLOCK | O_NOCTTY`: a FIFO or a
    /// terminal in the mount must not block the VMM or become its
    /// controlling terminal.
    fn host(self) -> OFlags {
        let mut flags = OFlags::NONBLOCK | OFlags::NOCTTY;
        flags |= match self.0 & O_ACCMODE {
            O_WRONLY => OFlags::WRONLY,
            O_RDWR => OFlags::RDWR,
            _ => OFlags::RDONLY,
        };
        for (bit, flag) in [
            (O_CREAT, OFlags::CREATE),
            (O_EXCL, OFlags::EXCL),
            (O_TRUNC, OFlags::TRUNC),
            (O_APPEND, OFlags::APPEND),
            (O_DIRECTORY, OFlags::DIRECTORY),
            (O_NOFOLLOW, OFlags::NOFOLLOW),
        ] {
            if self.has(bit) {
                flags |= flag;
            }
        }
        flags
    }
}

/// Whether `Stat` follows a symbolic link in the last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// `stat`.
    Follow,
    /// `lstat`.
    NoFollow,
}

/// A file or directory the guest opened.
#[derive(Debug)]
struct Handle {
    file: File,
    mount: u32,
    /// What the guest opened, for a snapshot to open it again.
    path: GuestPath,
    flags: OpenFlags,
    is_dir: bool,
    is_append: bool,
    /// A FIFO, socket or character device: read and written in order,
    /// with no offset (`pread` would fail with `ESPIPE`).
    is_stream: bool,
}

/// The guest's open files in a snapshot.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedFiles {
    next_handle: u64,
    handles: Vec<SavedFile>,
}

/// One open file in a snapshot: its handle, mount, path and open flags.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SavedFile {
    number: u64,
    mount: u32,
    path: Vec<u8>,
    flags: u32,
}

/// The host side of every mount and the guest's open files.
#[derive(Debug)]
pub(crate) struct HostFs {
    mounts: Vec<Mount>,
    handles: HashMap<u64, Handle>,
    /// The next handle number; numbers are never reused, so a stale handle
    /// cannot name a file opened later.
    next_handle: u64,
    /// At most this many open handles ([`MAX_OPEN_HANDLES`]; less in tests).
    handle_limit: usize,
}

impl HostFs {
    /// Serve `mounts`, in the order of `BootInfo::mounts`.
    pub(crate) fn new(mounts: Vec<Mount>) -> Self {
        Self {
            mounts,
            handles: HashMap::new(),
            next_handle: 1,
            handle_limit: MAX_OPEN_HANDLES,
        }
    }

    /// The mounts, in order.
    pub(crate) fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The guest's open files as a snapshot keeps them: by path, to be
    /// opened again at restore. A FIFO, socket or device cannot be.
    pub(crate) fn save(&self) -> Result<SavedFiles, String> {
        let mut handles = Vec::with_capacity(self.handles.len());
        for (&number, handle) in &self.handles {
            if handle.is_stream {
                return Err(format!(
                    "the guest has a FIFO, socket or device on a mount open ({})",
                    String::from_utf8_lossy(handle.path.for_open())
                ));
            }
            handles.push(SavedFile {
                number,
                mount: handle.mount,
                path: handle.path.for_open().to_vec(),
                flags: handle.flags.0,
            });
        }
        handles.sort_by_key(|h| h.number);
        Ok(SavedFiles {
            next_handle: self.next_handle,
            handles,
        })
    }

    /// Open again the files a snapshot kept, under their old handles, as
    /// they were opened but without creating or truncating anything. The
    /// paths are checked and resolved beneath their mounts as the guest's
    /// own are (a snapshot is not trusted). Fails, naming the file (under
    /// its mount's name in `mount_names`), if one cannot be opened (it was
    /// removed or renamed since, say).
    pub(crate) fn restore(
        &mut self,
        saved: &SavedFiles,
        mount_names: &[String],
    ) -> Result<(), String> {
        for file in &saved.handles {
            let name = || String::from_utf8_lossy(&file.path).into_owned();
            let path = GuestPath::parse(file.path.clone())
                .map_err(|e| format!("a saved path is bad ({}): {e}", name()))?;
            let flags = OpenFlags::parse(file.flags & !(O_CREAT | O_EXCL | O_TRUNC))
                .ok_or_else(|| format!("bad saved open flags for {}", name()))?;
            let mount = self
                .mounts
                .get(file.mount as usize)
                .ok_or_else(|| format!("{} is on a mount the VM does not have", name()))?;
            let host = mount_names
                .get(file.mount as usize)
                .map_or("?", String::as_str);
            let opened = if flags.can_modify() {
                mount.check_writable()
            } else {
                Ok(())
            }
            .and_then(|()| mount.open_beneath(path.for_open(), flags.host(), Mode::empty()))
            .map_err(|e| {
                format!(
                    "the guest had {host}/{} open, and it cannot be opened again: {}",
                    name(),
                    std::io::Error::from_raw_os_error(e.0)
                )
            })?;
            let stat = file_stat(&opened).map_err(|_| format!("cannot stat {}", name()))?;
            if self.handles.len() >= self.handle_limit || file.number == 0 {
                return Err("more open files than a VM may have".into());
            }
            self.handles.insert(
                file.number,
                Handle {
                    file: opened,
                    mount: file.mount,
                    path,
                    flags,
                    is_dir: stat.mode & S_IFMT == S_IFDIR,
                    is_append: flags.has(O_APPEND),
                    is_stream: false,
                },
            );
        }
        let highest = saved.handles.iter().map(|h| h.number).max().unwrap_or(0);
        self.next_handle = saved.next_handle.max(highest.saturating_add(1));
        Ok(())
    }

    /// No mounts: every request gets `EINVAL`.
    #[cfg(test)]
    pub(crate) fn empty() -> Self {
        Self::new(Vec::new())
    }

    fn mount(&self, index: u32) -> Result<&Mount, Errno> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.mounts.get(i))
            .ok_or(errno::EINVAL)
    }

    fn handle(&mut self, mount: u32, handle: u64) -> Result<&mut Handle, Errno> {
        self.mount(mount)?;
        self.handles
            .get_mut(&handle)
            .filter(|h| h.mount == mount)
            .ok_or(errno::EBADF)
    }

    /// `open(path, flags, mode)`; returns a handle and the opened file's
    /// stat (the open looks at it anyway).
    pub(crate) fn open(
        &mut self,
        mount: u32,
        path: &GuestPath,
        flags: OpenFlags,
        mode: u32,
    ) -> Result<(u64, FileStat), Errno> {
        let m = self.mount(mount)?;
        if flags.can_modify() {
            m.check_writable()?;
        }
        if self.handles.len() >= self.handle_limit {
            return Err(errno::EMFILE);
        }
        let mode = if flags.has(O_CREAT) {
            guest_mode(mode)
        } else {
            Mode::empty()
        };
        let file = m.open_beneath(path.for_open(), flags.host(), mode)?;
        let stat = file_stat(&file)?;
        let is_dir = stat.mode & S_IFMT == S_IFDIR;
        let is_stream = matches!(stat.mode & S_IFMT, S_IFIFO | S_IFSOCK | S_IFCHR);
        let number = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            number,
            Handle {
                file,
                mount,
                path: path.clone(),
                flags,
                is_dir,
                is_append: flags.has(O_APPEND),
                is_stream,
            },
        );
        Ok((number, stat))
    }

    /// Close a handle.
    pub(crate) fn close(&mut self, mount: u32, handle: u64) -> Result<(), Errno> {
        self.handle(mount, handle)?;
        self.handles.remove(&handle);
        Ok(())
    }

    /// `pread` into `buf` (a plain `read` for a stream); returns the bytes
    /// read.
    pub(crate) fn read(
        &mut self,
        mount: u32,
        handle: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        let h = self.handle(mount, handle)?;
        if h.is_stream {
            rustix::io::read(&h.file, buf).map_err(host)
        } else {
            rustix::io::pread(&h.file, buf, offset).map_err(host)
        }
    }

    /// `pwrite` of `data` (a plain `write` at the end for `O_APPEND` and
    /// for a stream); returns the bytes written.
    pub(crate) fn write(
        &mut self,
        mount: u32,
        handle: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, Errno> {
        let is_read_only = self.mount(mount)?.is_read_only;
        let h = self.handle(mount, handle)?;
        if is_read_only {
            return Err(errno::EROFS);
        }
        if h.is_append || h.is_stream {
            rustix::io::write(&h.file, data).map_err(host)
        } else {
            rustix::io::pwrite(&h.file, data, offset).map_err(host)
        }
    }

    /// `stat` or `lstat` of `path`.
    pub(crate) fn stat(
        &self,
        mount: u32,
        path: &GuestPath,
        links: Links,
    ) -> Result<FileStat, Errno> {
        let flags = match links {
            Links::Follow => OFlags::empty(),
            Links::NoFollow => OFlags::NOFOLLOW,
        };
        file_stat(&self.mount(mount)?.open_path(path, flags)?)
    }

    /// `fstat` of a handle.
    pub(crate) fn fstat(&mut self, mount: u32, handle: u64) -> Result<FileStat, Errno> {
        file_stat(&self.handle(mount, handle)?.file)
    }

    /// `mkdir(path, mode)`.
    pub(crate) fn mkdir(&self, mount: u32, path: &GuestPath, mode: u32) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let p = m.resolve_parent(path)?;
        let name = p.name(|_| errno::EEXIST)?;
        rustix::fs::mkdirat(&p.parent, name, guest_mode(mode)).map_err(host)
    }

    /// `unlink(path)`: a non-directory.
    pub(crate) fn unlink(&self, mount: u32, path: &GuestPath) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let p = m.resolve_parent(path)?;
        let name = p.name(|_| errno::EISDIR)?;
        if p.last.has_trailing_slash {
            return Err(match p.file_type()? {
                FileType::Directory => errno::EISDIR,
                _ => errno::ENOTDIR,
            });
        }
        rustix::fs::unlinkat(&p.parent, name, AtFlags::empty()).map_err(host)
    }

    /// `rmdir(path)`: an empty directory.
    pub(crate) fn rmdir(&self, mount: u32, path: &GuestPath) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let p = m.resolve_parent(path)?;
        let name = p.name(|kind| match kind {
            NameKind::Dot => errno::EINVAL,
            NameKind::DotDot => errno::ENOTEMPTY,
            NameKind::Root | NameKind::Normal => errno::EBUSY,
        })?;
        rustix::fs::unlinkat(&p.parent, name, AtFlags::REMOVEDIR).map_err(host)
    }

    /// `rename(from, to)`, both in this mount.
    pub(crate) fn rename(&self, mount: u32, from: &GuestPath, to: &GuestPath) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let (old, new) = (m.resolve_parent(from)?, m.resolve_parent(to)?);
        let old_name = old.name(|_| errno::EBUSY)?;
        let new_name = new.name(|_| errno::EBUSY)?;
        let has_slash = old.last.has_trailing_slash || new.last.has_trailing_slash;
        if has_slash && old.file_type()? != FileType::Directory {
            return Err(errno::ENOTDIR);
        }
        rustix::fs::renameat(&old.parent, old_name, &new.parent, new_name).map_err(host)
    }

    /// `symlink(target, path)`: the target is stored as given.
    pub(crate) fn symlink(
        &self,
        mount: u32,
        path: &GuestPath,
        target: &LinkTarget,
    ) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let p = m.resolve_parent(path)?;
        let name = p.name(|_| errno::EEXIST)?;
        p.refuse_slash_for_new_name()?;
        rustix::fs::symlinkat(target.as_bytes(), &p.parent, name).map_err(host)
    }

    /// `readlink(path)`: the whole target.
    pub(crate) fn readlink(&self, mount: u32, path: &GuestPath) -> Result<Vec<u8>, Errno> {
        let link = self.mount(mount)?.open_path(path, OFlags::NOFOLLOW)?;
        if !link.metadata().map_err(io)?.is_symlink() {
            return Err(errno::EINVAL);
        }
        // An empty path reads the link an `O_PATH | O_NOFOLLOW` descriptor
        // names (readlinkat(2), since Linux 2.6.39).
        let target = rustix::fs::readlinkat(&link, "", Vec::new()).map_err(host)?;
        Ok(target.into_bytes())
    }

    /// `truncate(path, len)`.
    pub(crate) fn truncate(&self, mount: u32, path: &GuestPath, len: u64) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let file = m.open_beneath(
            path.for_open(),
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        rustix::fs::ftruncate(&file, len).map_err(host)
    }

    /// `ftruncate(handle, len)`.
    pub(crate) fn ftruncate(&mut self, mount: u32, handle: u64, len: u64) -> Result<(), Errno> {
        let is_read_only = self.mount(mount)?.is_read_only;
        let h = self.handle(mount, handle)?;
        if is_read_only {
            return Err(errno::EROFS);
        }
        rustix::fs::ftruncate(&h.file, len).map_err(host)
    }

    /// `link(existing, new)`: a hard link, not following `existing` if it
    /// is a symbolic link.
    pub(crate) fn link(
        &self,
        mount: u32,
        existing: &GuestPath,
        new: &GuestPath,
    ) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let (old, new) = (m.resolve_parent(existing)?, m.resolve_parent(new)?);
        let old_name = old.name(|_| errno::EPERM)?;
        let new_name = new.name(|_| errno::EEXIST)?;
        if old.last.has_trailing_slash {
            return Err(match old.file_type()? {
                FileType::Directory => errno::EPERM,
                _ => errno::ENOTDIR,
            });
        }
        new.refuse_slash_for_new_name()?;
        rustix::fs::linkat(
            &old.parent,
            old_name,
            &new.parent,
            new_name,
            AtFlags::empty(),
        )
        .map_err(host)
    }

    /// `chmod(path, mode)`, following a final symbolic link beneath the
    /// mount. Regular files and directories only (`EPERM` for others):
    /// `fchmodat` has no race-free way to refuse a symbolic link, so the
    /// object is opened beneath the mount and changed through its
    /// descriptor.
    pub(crate) fn chmod(&self, mount: u32, path: &GuestPath, mode: u32) -> Result<(), Errno> {
        let m = self.mount(mount)?;
        m.check_writable()?;
        let mode = guest_mode(mode);
        let object = m.open_path(path, OFlags::empty())?;
        let meta = object.metadata().map_err(io)?;
        if meta.is_dir() {
            // `.` relative to the directory's own descriptor is that
            // directory, whatever its name is by now.
            return rustix::fs::chmodat(&object, ".", mode, AtFlags::empty()).map_err(host);
        }
        if !meta.is_file() {
            return Err(errno::EPERM);
        }
        let open = |access| {
            m.open_beneath(
                path.for_open(),
                access | OFlags::NONBLOCK | OFlags::NOCTTY,
                Mode::empty(),
            )
        };
        let file = match open(OFlags::RDONLY) {
            Err(e) if e == errno::EACCES => open(OFlags::WRONLY)?,
            other => other?,
        };
        if !file.metadata().map_err(io)?.is_file() {
            return Err(errno::EPERM);
        }
        rustix::fs::fchmod(&file, mode).map_err(host)
    }

    /// `fsync` (`data_only`: `fdatasync`) of handle `handle`: a file's
    /// data, or a directory's entries (what makes a rename durable).
    pub(crate) fn sync(&mut self, mount: u32, handle: u64, data_only: bool) -> Result<(), Errno> {
        let h = self.handle(mount, handle)?;
        if data_only {
            rustix::fs::fdatasync(&h.file).map_err(host)
        } else {
            rustix::fs::fsync(&h.file).map_err(host)
        }
    }

    /// Directory records of handle `handle` from `cookie` on, as many whole
    /// ones as fit in `max_bytes`; empty at the end. A cookie is the
    /// host's own position in the directory (`d_off`; 0 is the start), so
    /// nothing of a listing is kept between calls: entries made or
    /// removed meanwhile show or not as they would on the host.
    pub(crate) fn read_dir(
        &mut self,
        mount: u32,
        handle: u64,
        cookie: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, Errno> {
        let h = self.handle(mount, handle)?;
        if !h.is_dir {
            return Err(errno::ENOTDIR);
        }
        // A cookie the host never gave (beyond `i64::MAX`) is past the end.
        if i64::try_from(cookie).is_err() {
            return Ok(Vec::new());
        }
        rustix::fs::seek(&h.file, rustix::fs::SeekFrom::Start(cookie)).map_err(host)?;
        let mut chunk = vec![std::mem::MaybeUninit::uninit(); LISTING_CHUNK_BYTES];
        let mut entries = rustix::fs::RawDir::new(&h.file, &mut chunk);
        let mut out = Vec::new();
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(host)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let size = DirRecord::size(name.len());
            if out.len() + size > max_bytes {
                if out.is_empty() {
                    return Err(errno::EINVAL);
                }
                break;
            }
            let record = DirRecord {
                ino: entry.ino(),
                next: entry.next_entry_cookie(),
                kind: match entry.file_type() {
                    FileType::Directory => DT_DIR,
                    FileType::RegularFile => DT_REG,
                    FileType::Symlink => DT_LNK,
                    _ => 0,
                },
                reserved: 0,
                name_len: u16::try_from(name.len()).unwrap_or(u16::MAX),
                reserved2: 0,
            };
            out.extend_from_slice(record.as_bytes());
            out.extend_from_slice(name);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        Ok(out)
    }
}

fn file_stat(file: &File) -> Result<FileStat, Errno> {
    let meta = file.metadata().map_err(io)?;
    let ns = |secs: i64, nsecs: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsecs);
    Ok(FileStat {
        ino: meta.ino(),
        nlink: meta.nlink(),
        size: meta.size(),
        blocks: meta.blocks(),
        mode: meta.mode(),
        reserved: 0,
        atime_ns: ns(meta.atime(), meta.atime_nsec()),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    })
}
