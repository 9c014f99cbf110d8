//! cpio archives in the "newc" format (the SVR4 "New ASCII Format",
//! magic `070701`; see `man 5 cpio` and the Linux kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`): the
//! format of eremite's initial ramdisk.
//!
//! The VMM builds the archive with [`Writer`] (from a directory or a tar
//! file) or checks one the user gives with [`entries`]; the kernel reads it
//! with [`entries`] and unpacks it into its RAM file system before `main`.
//!
//! Each member is a 110-byte header of ASCII hex fields, the NUL-terminated
//! name, padding to a multiple of 4 bytes, the data (for a symlink, its
//! target), and padding to a multiple of 4 again. The member named
//! `TRAILER!!!` ends the archive; bytes after it are ignored.
//!
//! The reader takes untrusted bytes: every field and length is checked,
//! arithmetic is checked, and nothing panics or allocates. Names are
//! normalised by [`normalise_name`]: relative, no `.`, `..` or empty
//! components, the root directory spelled `.`.
//!
//! Hard links (regular files with `nlink > 1` sharing an inode number)
//! become copies: in newc only the last member of a group carries the data,
//! so the reader gives the earlier, empty members the data of the last one
//! (see [`Entries`] for the exact rule). The writer never writes links.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod name;
mod read;
mod write;

pub use name::normalise_name;
pub use read::{CpioError, CpioErrorKind, Entries, Entry, EntryKind, entries};
pub use write::{WriteError, Writer};

/// The magic number that starts every newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// Length of a newc header: the magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// Name of the member that ends an archive.
pub const TRAILER_NAME: &[u8] = b"TRAILER!!!";
/// Longest name or symlink target in bytes, without the NUL (Linux's
/// `PATH_MAX` is 4096 with it).
pub const MAX_NAME_LEN: usize = 4095;

/// File-type and permission bits of [`Entry::mode`] (`man 7 inode`).
pub mod mode {
    /// Mask of the file-type bits.
    pub const S_IFMT: u32 = 0o170_000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100_000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040_000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120_000;
    /// Permission bits, with set-user-ID, set-group-ID and sticky.
    pub const PERMISSIONS: u32 = 0o7777;
}
