//! eremite's root file system: an in-memory tree of directories, regular
//! files and symbolic links, with POSIX path resolution and mount points.
//!
//! Pure logic with no `unsafe` and no knowledge of the hermit ABI: the
//! kernel's `fs` module wraps one [`RamFs`] in a lock, keeps the file
//! descriptor table, and sends operations on paths below a mount point to
//! the host (see `docs/hypercalls/03-host-fs.md`). Time is explicit: every
//! operation that stamps a time takes `now_ns` (ns since the Unix epoch),
//! so the host tests control it.
//!
//! Key types:
//! - [`RamFs`]: the inode table. Directories are ordered maps from name to
//!   inode, so a lookup costs O(log n) and a directory listing resumes
//!   after the last name it returned ([`DirCursor`]), whatever the size of
//!   the directory and however it changes in between.
//! - [`Location`] / [`ParentLocation`]: where a path leads, in this file
//!   system or below a mount point; the second form is for operations that
//!   create or remove the last component.
//!
//! Path rules follow Linux's `path_resolution(7)`: at most
//! [`MAX_SYMLINKS`] symbolic links per resolution (`ELOOP`), components of
//! at most `NAME_MAX` bytes and paths shorter than `PATH_MAX`
//! (`ENAMETOOLONG`), a trailing `/` requires a directory, relative paths
//! start at `/` (there is no working directory), and `..` of `/` is `/`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod data;
mod walk;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Bound;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{
    DT_DIR, DT_LNK, DT_REG, FileStat, NAME_MAX, OpenFlags, S_IFDIR, S_IFLNK, S_IFREG, S_IPERM,
};

use data::FileData;
pub use data::MAX_FILE_BYTES;

/// An inode number.
pub type Ino = u64;

/// The root directory's inode.
pub const ROOT: Ino = 1;

/// Most symbolic links followed while resolving one path (Linux's limit).
pub const MAX_SYMLINKS: u32 = 40;

/// Permission bits masked out of every new file's mode (a fixed umask).
pub const UMASK: u32 = 0o022;

/// Where a path leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An inode of this file system.
    Ram(Ino),
    /// A path below mount point `mount`, relative to the mount's root,
    /// without `.` or `..` components (empty: the mount's root).
    Mount {
        /// The mount's number.
        mount: u32,
        /// The path below it.
        path: Vec<u8>,
    },
}

/// Where the last component of a path lives, for operations that create,
/// remove or rename it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentLocation {
    /// Entry `name` of directory `dir` of this file system. `name` is never
    /// empty, but may be `.` or `..`, which every operation refuses in its
    /// own way.
    Ram {
        /// The parent directory.
        dir: Ino,
        /// The last component.
        name: Vec<u8>,
        /// The path ended in `/`: the entry must be (or become) a directory.
        has_trailing_slash: bool,
    },
    /// A path below mount point `mount` (see [`Location::Mount`]).
    Mount {
        /// The mount's number.
        mount: u32,
        /// The path below it, last component included.
        path: Vec<u8>,
    },
}

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

impl Kind {
    /// The `DT_*` value for directory entries.
    pub fn dirent_type(self) -> u8 {
        match self {
            Kind::File => DT_REG,
            Kind::Dir => DT_DIR,
            Kind::Symlink => DT_LNK,
        }
    }

    fn mode_type(self) -> u32 {
        match self {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
        }
    }
}

/// How far a directory listing got. Listings return `.` and `..` first,
/// then the entries in name order; the cursor remembers the last name, so
/// entries added or removed meanwhile neither repeat nor hide the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DirCursor {
    /// Nothing returned yet.
    #[default]
    Start,
    /// `.` returned.
    AfterDot,
    /// `.` and `..` returned.
    AfterDotDot,
    /// Entries up to and including this name returned.
    After(Box<[u8]>),
}

/// One entry of a directory listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Its name.
    pub name: &'a [u8],
    /// Its inode.
    pub ino: Ino,
    /// Its type.
    pub kind: Kind,
}

#[derive(Debug)]
struct Dir {
    entries: BTreeMap<Box<[u8]>, Ino>,
    /// The directory that holds this one (the root: itself). Directories
    /// cannot be hard-linked, so there is exactly one.
    parent: Ino,
    /// Set when a host directory is mounted here: paths below are the
    /// mount's, and the entries above are hidden.
    mount: Option<u32>,
}

#[derive(Debug)]
enum Node {
    File(FileData),
    Dir(Dir),
    Symlink(Box<[u8]>),
}

#[derive(Debug)]
struct Inode {
    node: Node,
    /// Permission bits only (`S_IPERM`).
    perm: u32,
    nlink: u32,
    /// Open file descriptions referring to this inode: an unlinked file
    /// stays readable until the last is closed.
    open_count: u32,
    atime_ns: i64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Inode {
    fn new(node: Node, perm: u32, nlink: u32, now_ns: i64) -> Self {
        Self {
            node,
            perm: perm & S_IPERM,
            nlink,
            open_count: 0,
            atime_ns: now_ns,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
        }
    }

    fn kind(&self) -> Kind {
        match self.node {
            Node::File(_) => Kind::File,
            Node::Dir(_) => Kind::Dir,
            Node::Symlink(_) => Kind::Symlink,
        }
    }

    fn touch(&mut self, now_ns: i64) {
        self.mtime_ns = now_ns;
        self.ctime_ns = now_ns;
    }
}

/// The RAM file system.
#[derive(Debug)]
pub struct RamFs {
    /// Indexed by inode number; slot 0 is never used.
    inodes: Vec<Option<Inode>>,
    /// Free slots, reused before the table grows.
    free: Vec<Ino>,
}

/// `name` is `.` or `..`.
fn is_dot_or_dotdot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl RamFs {
    /// A file system holding only `/` (mode 0755).
    pub fn new(now_ns: i64) -> Self {
        let root = Inode::new(
            Node::Dir(Dir {
                entries: BTreeMap::new(),
                parent: ROOT,
                mount: None,
            }),
            0o755,
            2,
            now_ns,
        );
        Self {
            inodes: alloc::vec![None, Some(root)],
            free: Vec::new(),
        }
    }

    fn inode(&self, ino: Ino) -> Result<&Inode, Errno> {
        usize::try_from(ino)
            .ok()
            .and_then(|i| self.inodes.get(i))
            .and_then(Option::as_ref)
            .ok_or(errno::EBADF)
    }

    fn inode_mut(&mut self, ino: Ino) -> Result<&mut Inode, Errno> {
        usize::try_from(ino)
            .ok()
            .and_then(|i| self.inodes.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(errno::EBADF)
    }

    fn dir(&self, ino: Ino) -> Result<&Dir, Errno> {
        match &self.inode(ino)?.node {
            Node::Dir(dir) => Ok(dir),
            _ => Err(errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut Dir, Errno> {
        match &mut self.inode_mut(ino)?.node {
            Node::Dir(dir) => Ok(dir),
            _ => Err(errno::ENOTDIR),
        }
    }

    fn allocate(&mut self, inode: Inode) -> Ino {
        match self.free.pop() {
            Some(ino) => {
                self.inodes[ino as usize] = Some(inode);
                ino
            }
            None => {
                self.inodes.push(Some(inode));
                (self.inodes.len() - 1) as Ino
            }
        }
    }

    /// Drop the inode if nothing names it and nothing has it open.
    fn release_if_unused(&mut self, ino: Ino) {
        if let Ok(inode) = self.inode(ino)
            && inode.nlink == 0
            && inode.open_count == 0
        {
            self.inodes[ino as usize] = None;
            self.free.push(ino);
        }
    }

    /// Number of live inodes (the root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.len() - 1 - self.free.len()
    }

    /// The type of an inode.
    pub fn kind(&self, ino: Ino) -> Result<Kind, Errno> {
        Ok(self.inode(ino)?.kind())
    }

    /// The inode named `name` in directory `dir`.
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Ino, Errno> {
        self.dir(dir)?
            .entries
            .get(name)
            .copied()
            .ok_or(errno::ENOENT)
    }

    /// Where `path` leads; `follow_last`: whether a symbolic link in the
    /// last component is followed (`stat`) or returned (`lstat`).
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<Location, Errno> {
        let mut links = 0;
        self.walk(ROOT, path, follow_last, &mut links, None)
    }

    /// Where the last component of `path` lives (see [`ParentLocation`]).
    pub fn resolve_parent(&self, path: &[u8]) -> Result<ParentLocation, Errno> {
        let mut links = 0;
        self.walk_parent(ROOT, path, &mut links)
    }

    /// The absolute path without `.`, `..`, symbolic links or repeated
    /// slashes that names what `path` leads to, and that location. Below a
    /// mount point, the part inside the mount is only normalised (the
    /// host's symbolic links are not read), and whether it exists is for
    /// the caller to check.
    pub fn canonicalize(&self, path: &[u8]) -> Result<(Location, Vec<u8>), Errno> {
        let mut links = 0;
        let mut trail = Vec::new();
        let location = self.walk(ROOT, path, true, &mut links, Some(&mut trail))?;
        let mut out = Vec::new();
        for name in &trail {
            out.push(b'/');
            out.extend_from_slice(name);
        }
        if let Location::Mount { path, .. } = &location
            && !path.is_empty()
        {
            out.push(b'/');
            out.extend_from_slice(path);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Ok((location, out))
    }

    /// Open (and with `O_CREAT`, create) the file at `path`. On [`Location::Ram`] the inode
    /// counts one more open description: pair it with [`RamFs::close`].
    /// On [`Location::Mount`] nothing was done: the caller opens it there.
    pub fn open(
        &mut self,
        path: &[u8],
        flags: OpenFlags,
        mode: u32,
        now_ns: i64,
    ) -> Result<Location, Errno> {
        if !flags.has_valid_access() {
            return Err(errno::EINVAL);
        }
        let is_writable = flags.is_writable();
        let ino = if flags.contains(OpenFlags::CREAT) {
            match self.open_or_create(path, flags, mode, now_ns)? {
                (Location::Ram(ino), true) => {
                    self.inode_mut(ino)?.open_count += 1;
                    return Ok(Location::Ram(ino));
                }
                (Location::Ram(ino), false) => ino,
                (mount, _) => return Ok(mount),
            }
        } else {
            match self.resolve(path, !flags.contains(OpenFlags::NOFOLLOW))? {
                Location::Ram(ino) => ino,
                mount => return Ok(mount),
            }
        };
        let inode = self.inode_mut(ino)?;
        match (&mut inode.node, is_writable) {
            (Node::Symlink(_), _) => return Err(errno::ELOOP),
            (Node::Dir(_), true) => return Err(errno::EISDIR),
            (Node::Dir(_), false) if flags.contains(OpenFlags::TRUNC) => {
                return Err(errno::EISDIR);
            }
            (Node::File(_), _) if flags.contains(OpenFlags::DIRECTORY) => {
                return Err(errno::ENOTDIR);
            }
            (Node::File(data), true) if flags.contains(OpenFlags::TRUNC) && data.len() != 0 => {
                data.set_len(0)?;
                inode.touch(now_ns);
            }
            _ => {}
        }
        inode.open_count += 1;
        Ok(Location::Ram(ino))
    }

    /// The `O_CREAT` half of [`RamFs::open`]: the location, and whether it
    /// was created now. Follows a symbolic link in the last component (also
    /// a dangling one, creating its target) unless `O_EXCL`/`O_NOFOLLOW`.
    fn open_or_create(
        &mut self,
        path: &[u8],
        flags: OpenFlags,
        mode: u32,
        now_ns: i64,
    ) -> Result<(Location, bool), Errno> {
        let mut links = 0;
        let mut start = ROOT;
        let mut path: Vec<u8> = path.to_vec();
        loop {
            let (dir, name) = match self.walk_parent(start, &path, &mut links)? {
                ParentLocation::Mount { mount, path } => {
                    return Ok((Location::Mount { mount, path }, false));
                }
                ParentLocation::Ram {
                    dir,
                    name,
                    has_trailing_slash,
                } => {
                    if has_trailing_slash || is_dot_or_dotdot(&name) {
                        return Err(errno::EISDIR);
                    }
                    (dir, name)
                }
            };
            let Ok(existing) = self.lookup(dir, &name) else {
                if flags.contains(OpenFlags::DIRECTORY) {
                    return Err(errno::EINVAL);
                }
                let node = Node::File(FileData::default());
                let ino = self.link_new(dir, &name, node, mode & !UMASK, now_ns)?;
                return Ok((Location::Ram(ino), true));
            };
            if flags.contains(OpenFlags::EXCL) {
                return Err(errno::EEXIST);
            }
            match &self.inode(existing)?.node {
                Node::Symlink(target) if !flags.contains(OpenFlags::NOFOLLOW) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(errno::ELOOP);
                    }
                    path = target.to_vec();
                    start = dir;
                }
                _ => return Ok((Location::Ram(existing), false)),
            }
        }
    }

    /// Add a new inode as `name` in `dir`; `EEXIST` if the name is taken.
    fn link_new(
        &mut self,
        dir: Ino,
        name: &[u8],
        node: Node,
        perm: u32,
        now_ns: i64,
    ) -> Result<Ino, Errno> {
        if name.len() > NAME_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        let parent = self.dir(dir)?;
        if parent.entries.contains_key(name) || is_dot_or_dotdot(name) {
            return Err(errno::EEXIST);
        }
        if self.inode(dir)?.nlink == 0 {
            // The directory was removed while something still had it open.
            return Err(errno::ENOENT);
        }
        let is_dir = matches!(node, Node::Dir(_));
        let nlink = if is_dir { 2 } else { 1 };
        let ino = self.allocate(Inode::new(node, perm, nlink, now_ns));
        let parent_inode = self.inode_mut(dir)?;
        if is_dir {
            parent_inode.nlink += 1;
        }
        parent_inode.touch(now_ns);
        self.dir_mut(dir)?.entries.insert(name.into(), ino);
        Ok(ino)
    }

    /// One open description of `ino` fewer; frees an unlinked file with
    /// the last.
    pub fn close(&mut self, ino: Ino) -> Result<(), Errno> {
        let inode = self.inode_mut(ino)?;
        inode.open_count = inode.open_count.checked_sub(1).ok_or(errno::EBADF)?;
        self.release_if_unused(ino);
        Ok(())
    }

    /// Read from a regular file at `offset`; the count read.
    pub fn read(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match &self.inode(ino)?.node {
            Node::File(data) => Ok(data.read(offset, buf)),
            Node::Dir(_) => Err(errno::EISDIR),
            Node::Symlink(_) => Err(errno::EINVAL),
        }
    }

    /// Write to a regular file at `offset`; the count written.
    pub fn write(
        &mut self,
        ino: Ino,
        offset: u64,
        bytes: &[u8],
        now_ns: i64,
    ) -> Result<usize, Errno> {
        let inode = self.inode_mut(ino)?;
        match &mut inode.node {
            Node::File(data) => {
                let n = data.write(offset, bytes)?;
                if n > 0 {
                    inode.touch(now_ns);
                }
                Ok(n)
            }
            Node::Dir(_) => Err(errno::EISDIR),
            Node::Symlink(_) => Err(errno::EINVAL),
        }
    }

    /// Whether writing `len_bytes` at `offset` of a regular file would
    /// only overwrite stored bytes (and so allocate nothing).
    pub fn is_overwrite(&self, ino: Ino, offset: u64, len_bytes: u64) -> bool {
        match self.inode(ino).map(|inode| &inode.node) {
            Ok(Node::File(data)) => data.is_overwrite(offset, len_bytes),
            _ => false,
        }
    }

    /// Size in bytes of a regular file.
    pub fn len(&self, ino: Ino) -> Result<u64, Errno> {
        match &self.inode(ino)?.node {
            Node::File(data) => Ok(data.len()),
            Node::Dir(_) => Err(errno::EISDIR),
            Node::Symlink(_) => Err(errno::EINVAL),
        }
    }

    /// Truncate or extend a regular file (`truncate(2)`).
    pub fn set_len(&mut self, ino: Ino, len_bytes: u64, now_ns: i64) -> Result<(), Errno> {
        let inode = self.inode_mut(ino)?;
        match &mut inode.node {
            Node::File(data) => {
                data.set_len(len_bytes)?;
                inode.touch(now_ns);
                Ok(())
            }
            Node::Dir(_) => Err(errno::EISDIR),
            Node::Symlink(_) => Err(errno::EINVAL),
        }
    }

    /// Everything `stat` reports.
    pub fn stat(&self, ino: Ino) -> Result<FileStat, Errno> {
        let inode = self.inode(ino)?;
        let (size, allocated) = match &inode.node {
            Node::File(data) => (data.len(), data.allocated_bytes()),
            Node::Dir(_) => (4096, 0),
            Node::Symlink(target) => (target.len() as u64, target.len() as u64),
        };
        Ok(FileStat {
            ino,
            nlink: u64::from(inode.nlink),
            size,
            blocks: allocated.div_ceil(512),
            mode: inode.kind().mode_type() | inode.perm,
            reserved: 0,
            atime_ns: inode.atime_ns,
            mtime_ns: inode.mtime_ns,
            ctime_ns: inode.ctime_ns,
        })
    }

    /// Set the permission bits (`chmod(2)`).
    pub fn chmod(&mut self, ino: Ino, mode: u32, now_ns: i64) -> Result<(), Errno> {
        let inode = self.inode_mut(ino)?;
        inode.perm = mode & S_IPERM;
        inode.ctime_ns = now_ns;
        Ok(())
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: Ino) -> Result<&[u8], Errno> {
        match &self.inode(ino)?.node {
            Node::Symlink(target) => Ok(target),
            _ => Err(errno::EINVAL),
        }
    }

    /// Create directory `name` in `dir` (`mkdir(2)`).
    pub fn mkdir(&mut self, dir: Ino, name: &[u8], mode: u32, now_ns: i64) -> Result<Ino, Errno> {
        let node = Node::Dir(Dir {
            entries: BTreeMap::new(),
            parent: dir,
            mount: None,
        });
        self.link_new(dir, name, node, mode & !UMASK, now_ns)
    }

    /// Create a symbolic link `name` in `dir` pointing to `target`
    /// (`symlink(2)`; the target is not checked, and may dangle).
    pub fn symlink(
        &mut self,
        dir: Ino,
        name: &[u8],
        target: &[u8],
        now_ns: i64,
    ) -> Result<Ino, Errno> {
        if target.is_empty() || target.contains(&0) {
            return Err(errno::ENOENT);
        }
        if target.len() >= eremite_interface::fs::PATH_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        let node = Node::Symlink(target.into());
        self.link_new(dir, name, node, 0o777, now_ns)
    }

    /// A new name `name` in `dir` for the non-directory `ino` (`link(2)`).
    pub fn link(&mut self, ino: Ino, dir: Ino, name: &[u8], now_ns: i64) -> Result<(), Errno> {
        if self.kind(ino)? == Kind::Dir {
            return Err(errno::EPERM);
        }
        if name.len() > NAME_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        if self.dir(dir)?.entries.contains_key(name) || is_dot_or_dotdot(name) {
            return Err(errno::EEXIST);
        }
        if self.inode(dir)?.nlink == 0 {
            return Err(errno::ENOENT);
        }
        let inode = self.inode_mut(ino)?;
        inode.nlink = inode.nlink.checked_add(1).ok_or(errno::EMLINK)?;
        inode.ctime_ns = now_ns;
        self.inode_mut(dir)?.touch(now_ns);
        self.dir_mut(dir)?.entries.insert(name.into(), ino);
        Ok(())
    }

    /// Remove the non-directory `name` from `dir` (`unlink(2)`). The inode
    /// lives on while it is open.
    pub fn unlink(&mut self, dir: Ino, name: &[u8], now_ns: i64) -> Result<(), Errno> {
        if is_dot_or_dotdot(name) {
            return Err(errno::EISDIR);
        }
        let ino = self.lookup(dir, name)?;
        if self.kind(ino)? == Kind::Dir {
            return Err(errno::EISDIR);
        }
        self.dir_mut(dir)?.entries.remove(name);
        self.inode_mut(dir)?.touch(now_ns);
        let inode = self.inode_mut(ino)?;
        inode.nlink -= 1;
        inode.ctime_ns = now_ns;
        self.release_if_unused(ino);
        Ok(())
    }

    /// Remove the empty directory `name` from `dir` (`rmdir(2)`).
    pub fn rmdir(&mut self, dir: Ino, name: &[u8], now_ns: i64) -> Result<(), Errno> {
        match name {
            b"." => return Err(errno::EINVAL),
            b".." => return Err(errno::ENOTEMPTY),
            _ => {}
        }
        let ino = self.lookup(dir, name)?;
        let victim = self.dir(ino)?;
        if victim.mount.is_some() {
            return Err(errno::EBUSY);
        }
        if !victim.entries.is_empty() {
            return Err(errno::ENOTEMPTY);
        }
        self.dir_mut(dir)?.entries.remove(name);
        let parent = self.inode_mut(dir)?;
        parent.nlink -= 1;
        parent.touch(now_ns);
        self.inode_mut(ino)?.nlink = 0;
        self.release_if_unused(ino);
        Ok(())
    }

    /// Atomically rename `from_name` in `from_dir` to `to_name` in `to_dir`
    /// (`rename(2)`), replacing a file, or an empty directory with a
    /// directory.
    pub fn rename(
        &mut self,
        from_dir: Ino,
        from_name: &[u8],
        to_dir: Ino,
        to_name: &[u8],
        now_ns: i64,
    ) -> Result<(), Errno> {
        if is_dot_or_dotdot(from_name) || is_dot_or_dotdot(to_name) {
            return Err(errno::EBUSY);
        }
        if to_name.len() > NAME_MAX {
            return Err(errno::ENAMETOOLONG);
        }
        let ino = self.lookup(from_dir, from_name)?;
        let kind = self.kind(ino)?;
        self.dir(to_dir)?;
        if self.inode(to_dir)?.nlink == 0 {
            return Err(errno::ENOENT);
        }
        let replaced = self.lookup(to_dir, to_name).ok();
        if replaced == Some(ino) {
            // Two names of one inode (or the same name): nothing to do.
            return Ok(());
        }
        if kind == Kind::Dir {
            if self.dir(ino)?.mount.is_some() {
                return Err(errno::EBUSY);
            }
            // A directory cannot move below itself.
            let mut at = to_dir;
            loop {
                if at == ino {
                    return Err(errno::EINVAL);
                }
                if at == ROOT {
                    break;
                }
                at = self.dir(at)?.parent;
            }
        }
        if let Some(old) = replaced {
            match (kind, self.kind(old)?) {
                (Kind::Dir, Kind::Dir) => {
                    let target = self.dir(old)?;
                    if target.mount.is_some() {
                        return Err(errno::EBUSY);
                    }
                    if !target.entries.is_empty() {
                        return Err(errno::ENOTEMPTY);
                    }
                }
                (Kind::Dir, _) => return Err(errno::ENOTDIR),
                (_, Kind::Dir) => return Err(errno::EISDIR),
                _ => {}
            }
        }
        // Checks done: from here on nothing fails.
        if let Some(old) = replaced {
            let was_dir = self.kind(old)? == Kind::Dir;
            let inode = self.inode_mut(old)?;
            inode.nlink = if was_dir { 0 } else { inode.nlink - 1 };
            inode.ctime_ns = now_ns;
            if was_dir {
                self.inode_mut(to_dir)?.nlink -= 1;
            }
        }
        self.dir_mut(from_dir)?.entries.remove(from_name);
        self.dir_mut(to_dir)?.entries.insert(to_name.into(), ino);
        if kind == Kind::Dir && from_dir != to_dir {
            self.dir_mut(ino)?.parent = to_dir;
            self.inode_mut(from_dir)?.nlink -= 1;
            self.inode_mut(to_dir)?.nlink += 1;
        }
        self.inode_mut(from_dir)?.touch(now_ns);
        self.inode_mut(to_dir)?.touch(now_ns);
        self.inode_mut(ino)?.ctime_ns = now_ns;
        if let Some(old) = replaced {
            self.release_if_unused(old);
        }
        Ok(())
    }

    /// List directory `ino` from `cursor`: `emit` is called for each entry
    /// in order until it returns `false` (that entry is not consumed).
    /// Returns the cursor after the last consumed entry. A directory that
    /// was removed lists nothing.
    pub fn read_dir(
        &self,
        ino: Ino,
        cursor: &DirCursor,
        mut emit: impl FnMut(DirEntry<'_>) -> bool,
    ) -> Result<DirCursor, Errno> {
        let dir = self.dir(ino)?;
        if self.inode(ino)?.nlink == 0 {
            return Ok(cursor.clone());
        }
        let mut at = cursor.clone();
        if at == DirCursor::Start {
            let dot = DirEntry {
                name: b".",
                ino,
                kind: Kind::Dir,
            };
            if !emit(dot) {
                return Ok(at);
            }
            at = DirCursor::AfterDot;
        }
        if at == DirCursor::AfterDot {
            let dotdot = DirEntry {
                name: b"..",
                ino: dir.parent,
                kind: Kind::Dir,
            };
            if !emit(dotdot) {
                return Ok(at);
            }
            at = DirCursor::AfterDotDot;
        }
        let range = match &at {
            DirCursor::After(last) => dir
                .entries
                .range::<[u8], _>((Bound::Excluded(&**last), Bound::Unbounded)),
            _ => dir.entries.range::<[u8], _>(..),
        };
        let mut last = None;
        for (name, &child) in range {
            let kind = self.kind(child)?;
            if !emit(DirEntry {
                name,
                ino: child,
                kind,
            }) {
                break;
            }
            last = Some(name);
        }
        Ok(last.map_or(at, |name| DirCursor::After(name.clone())))
    }

    /// Make `path` a mount point for mount number `mount`, creating the
    /// directories on the way. What the directory held is hidden while
    /// the mount exists.
    pub fn mount(&mut self, path: &[u8], mount: u32, now_ns: i64) -> Result<(), Errno> {
        let dir = self.make_dirs(path, 0o755, now_ns)?;
        let entry = self.dir_mut(dir)?;
        if entry.mount.is_some() {
            return Err(errno::EBUSY);
        }
        entry.mount = Some(mount);
        Ok(())
    }

    /// `mkdir -p`: the directory at `path`, created with its parents where
    /// missing. Fails below a mount point (`EXDEV`).
    pub fn make_dirs(&mut self, path: &[u8], mode: u32, now_ns: i64) -> Result<Ino, Errno> {
        let mut dir = ROOT;
        for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            if self.dir(dir)?.mount.is_some() {
                return Err(errno::EXDEV);
            }
            dir = match name {
                b"." => dir,
                b".." => self.dir(dir)?.parent,
                _ => match self.lookup(dir, name) {
                    Ok(ino) if self.kind(ino)? == Kind::Dir => ino,
                    Ok(_) => return Err(errno::ENOTDIR),
                    Err(_) => self.mkdir(dir, name, mode, now_ns)?,
                },
            };
        }
        Ok(dir)
    }

    /// Set the times of an inode (for unpacking archives).
    pub fn set_times(&mut self, ino: Ino, mtime_ns: i64) -> Result<(), Errno> {
        let inode = self.inode_mut(ino)?;
        inode.mtime_ns = mtime_ns;
        inode.atime_ns = mtime_ns;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
