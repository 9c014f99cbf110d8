//! File-system constants and records shared by the kernel's VFS, the ABI
//! and the host-mount hypercall ([`crate::hypercall::HostFs`]).
//!
//! Open flags and mode bits have Linux's values, which are also
//! hermit-abi's (`hermit-abi` 0.5 `O_*`, `S_IF*`, `DT_*`), so one set of
//! numbers serves the application, the kernel and the VMM.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Open for reading only.
pub const O_RDONLY: u32 = 0o0;
/// Open for writing only.
pub const O_WRONLY: u32 = 0o1;
/// Open for reading and writing.
pub const O_RDWR: u32 = 0o2;
/// The two access-mode bits.
pub const O_ACCMODE: u32 = 0o3;
/// Create the file if it does not exist.
pub const O_CREAT: u32 = 0o100;
/// With `O_CREAT`: fail with `EEXIST` if it exists.
pub const O_EXCL: u32 = 0o200;
/// Truncate a regular file to length 0.
pub const O_TRUNC: u32 = 0o1000;
/// Every write goes to the end of the file.
pub const O_APPEND: u32 = 0o2000;
/// Non-blocking I/O (meaningless for files, accepted).
pub const O_NONBLOCK: u32 = 0o4000;
/// Fail with `ENOTDIR` unless the path names a directory.
pub const O_DIRECTORY: u32 = 0o200000;
/// Fail with `ELOOP` if the last component is a symbolic link (Linux's
/// value; hermit-abi does not name it).
pub const O_NOFOLLOW: u32 = 0o400000;
/// Close on exec: there is no exec, accepted and ignored.
pub const O_CLOEXEC: u32 = 0o2000000;

bitflags::bitflags! {
    /// `open(2)` flags as the kernel's core and the `HostFs` hypercall
    /// take them, with Linux's values (the `O_*` constants above). Each
    /// ABI converts its own numbers into these at its door; unknown bits
    /// are `EINVAL` there. The access mode is two bits: neither is
    /// read-only, and both together are invalid.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct OpenFlags: u32 {
        const WRONLY = O_WRONLY;
        const RDWR = O_RDWR;
        const CREAT = O_CREAT;
        const EXCL = O_EXCL;
        const TRUNC = O_TRUNC;
        const APPEND = O_APPEND;
        const NONBLOCK = O_NONBLOCK;
        const DIRECTORY = O_DIRECTORY;
        const NOFOLLOW = O_NOFOLLOW;
        const CLOEXEC = O_CLOEXEC;
    }
}

impl OpenFlags {
    /// Read-only: no access bit.
    pub const RDONLY: Self = Self::empty();
    /// The flags that `fcntl(F_SETFL)` may change.
    pub const STATUS: Self = Self::APPEND.union(Self::NONBLOCK);

    /// Whether the access mode is a valid one (not both bits).
    pub fn has_valid_access(self) -> bool {
        !self.contains(Self::WRONLY | Self::RDWR)
    }

    /// Whether the access mode allows reading.
    pub fn is_readable(self) -> bool {
        !self.contains(Self::WRONLY)
    }

    /// Whether the access mode allows writing.
    pub fn is_writable(self) -> bool {
        self.intersects(Self::WRONLY | Self::RDWR)
    }

    /// Only the access mode.
    pub fn access(self) -> Self {
        self & (Self::WRONLY | Self::RDWR)
    }
}

/// File-type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// FIFO (named or anonymous pipe).
pub const S_IFIFO: u32 = 0o010000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Socket.
pub const S_IFSOCK: u32 = 0o140000;
/// Permission bits of a mode (including set-id and sticky bits).
pub const S_IPERM: u32 = 0o7777;

/// `d_type` of a directory entry: directory.
pub const DT_DIR: u8 = 4;
/// `d_type`: regular file.
pub const DT_REG: u8 = 8;
/// `d_type`: symbolic link.
pub const DT_LNK: u8 = 10;

/// Longest file name (one path component), as on Linux.
pub const NAME_MAX: usize = 255;
/// Longest path, terminating NUL included, as on Linux.
pub const PATH_MAX: usize = 4096;

/// What `stat` reports about a file, in the form the kernel and the VMM
/// exchange (the ABI layer converts it to hermit-abi's `struct stat`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FileStat {
    /// Inode number, unique within one file system.
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Size in bytes (a symbolic link: the length of its target).
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Type and permission bits (`S_IF*` | permissions).
    pub mode: u32,
    /// Zero.
    pub reserved: u32,
    /// Last access, ns since the Unix epoch.
    pub atime_ns: i64,
    /// Last modification of the contents, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Last change of the inode, ns since the Unix epoch.
    pub ctime_ns: i64,
}

/// Header of one directory entry in a [`crate::hypercall::HostFsOp::ReadDir`]
/// reply: the header, then `name_len` bytes of name (no NUL), then zero
/// padding to the next multiple of 8 bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DirRecord {
    /// Inode number.
    pub ino: u64,
    /// Cookie to pass as `offset` to continue after this entry.
    pub next: u64,
    /// `DT_*` type, or 0 when unknown.
    pub kind: u8,
    /// Zero.
    pub reserved: u8,
    /// Length of the name that follows.
    pub name_len: u16,
    /// Zero.
    pub reserved2: u32,
}

impl DirRecord {
    /// Bytes one record with a name of `name_len` bytes takes.
    pub const fn size(name_len: usize) -> usize {
        (size_of::<DirRecord>() + name_len).next_multiple_of(8)
    }
}
