//! Writing an archive: [`Writer`] appends members to a buffer and ends it
//! with the trailer.

use alloc::vec::Vec;
use core::fmt;

use crate::mode::{PERMISSIONS, S_IFDIR, S_IFLNK, S_IFREG};
use crate::{HEADER_LEN, MAGIC, MAX_NAME_LEN, TRAILER_NAME, normalise_name};

/// Why a member cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The name is not canonical (see [`normalise_name`]: relative, no
    /// leading `./`, no `.`, `..` or empty components, no NUL), is `.`
    /// for something other than a directory, or is `TRAILER!!!`.
    BadName,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// The data is 4 GiB or more (newc sizes are 32 bits).
    TooLarge,
    /// A symlink target is empty, longer than [`MAX_NAME_LEN`] or has a
    /// NUL byte.
    BadSymlinkTarget,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName => {
                f.write_str("the name is not a relative path without `.`, `..` or empty components")
            }
            Self::NameTooLong => write!(f, "the name is longer than {MAX_NAME_LEN} bytes"),
            Self::TooLarge => f.write_str("the file is 4 GiB or larger"),
            Self::BadSymlinkTarget => {
                f.write_str("the symlink target is empty, too long or has a NUL byte")
            }
        }
    }
}

impl core::error::Error for WriteError {}

/// Builds a newc archive in memory.
///
/// Names must already be canonical (what [`normalise_name`] returns);
/// `.` names the root directory and may only be a directory. The writer
/// does not check that parents come first or that names are unique.
/// `mode` arguments give the permission bits (`& 0o7777`); the file type
/// comes from the method. Owners are 0, inode numbers count up from 1,
/// and `nlink` is 2 for directories and 1 otherwise, so no member is a
/// hard link.
#[derive(Clone, Debug)]
pub struct Writer {
    archive: Vec<u8>,
    next_ino: u32,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            archive: Vec::new(),
            next_ino: 1,
        }
    }

    /// Bytes written so far (without the trailer).
    pub fn len_bytes(&self) -> usize {
        self.archive.len()
    }

    /// Add a directory.
    pub fn add_dir(
        &mut self,
        name: impl AsRef<[u8]>,
        mode: u32,
        mtime: u32,
    ) -> Result<(), WriteError> {
        let name = name.as_ref();
        check_name(name, true)?;
        self.member(name, S_IFDIR | (mode & PERMISSIONS), 2, mtime, &[])
    }

    /// Add a regular file with contents `data`.
    pub fn add_file(
        &mut self,
        name: impl AsRef<[u8]>,
        mode: u32,
        mtime: u32,
        data: &[u8],
    ) -> Result<(), WriteError> {
        let name = name.as_ref();
        check_name(name, false)?;
        self.member(name, S_IFREG | (mode & PERMISSIONS), 1, mtime, data)
    }

    /// Add a symbolic link to `target` (stored as is, not resolved).
    pub fn add_symlink(
        &mut self,
        name: impl AsRef<[u8]>,
        mode: u32,
        mtime: u32,
        target: impl AsRef<[u8]>,
    ) -> Result<(), WriteError> {
        let name = name.as_ref();
        let target = target.as_ref();
        check_name(name, false)?;
        if target.is_empty() || target.len() > MAX_NAME_LEN || target.contains(&0) {
            return Err(WriteError::BadSymlinkTarget);
        }
        self.member(name, S_IFLNK | (mode & PERMISSIONS), 1, mtime, target)
    }

    /// Write the trailer and return the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(TRAILER_NAME, 0, 0, 1, 0, 0);
        self.archive
    }

    fn member(
        &mut self,
        name: &[u8],
        mode: u32,
        nlink: u32,
        mtime: u32,
        data: &[u8],
    ) -> Result<(), WriteError> {
        let size = u32::try_from(data.len()).map_err(|_| WriteError::TooLarge)?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1).max(1);
        self.header(name, ino, mode, nlink, mtime, size);
        self.archive.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    /// Header, name and padding. `name` is at most [`MAX_NAME_LEN`] bytes.
    fn header(&mut self, name: &[u8], ino: u32, mode: u32, nlink: u32, mtime: u32, size: u32) {
        // Checked by the callers: a name of at most MAX_NAME_LEN bytes.
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check (unused in newc).
        let fields = [ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, namesize, 0];
        self.archive.reserve(HEADER_LEN + name.len() + 4);
        self.archive.extend_from_slice(MAGIC);
        for field in fields {
            push_hex(&mut self.archive, field);
        }
        self.archive.extend_from_slice(name);
        self.archive.push(0);
        self.pad();
    }

    /// Zeroes up to the next multiple of 4 bytes.
    fn pad(&mut self) {
        let padded = self.archive.len().next_multiple_of(4);
        self.archive.resize(padded, 0);
    }
}

/// A canonical name of bounded length, `.` only if `is_dir`.
fn check_name(name: &[u8], is_dir: bool) -> Result<(), WriteError> {
    if name.len() > MAX_NAME_LEN {
        return Err(WriteError::NameTooLong);
    }
    let is_canonical = normalise_name(name) == Some(name);
    if !is_canonical || (name == b"." && !is_dir) || name == TRAILER_NAME {
        return Err(WriteError::BadName);
    }
    Ok(())
}

/// `value` as 8 upper-case hex digits.
fn push_hex(out: &mut Vec<u8>, value: u32) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..8).rev() {
        let nibble = (value >> (shift * 4)) & 0xf;
        out.push(DIGITS[nibble as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_canonical() {
        let mut w = Writer::new();
        for bad in [&b"./a"[..], b"/a", b"a/", b"a/../b", b"", b"TRAILER!!!"] {
            assert_eq!(w.add_file(bad, 0o644, 0, b""), Err(WriteError::BadName));
        }
        assert_eq!(w.add_file(".", 0o644, 0, b""), Err(WriteError::BadName));
        assert_eq!(w.add_symlink(".", 0o777, 0, "x"), Err(WriteError::BadName));
        assert_eq!(w.add_dir(".", 0o755, 0), Ok(()));
        let long = [b'a'; MAX_NAME_LEN + 1];
        assert_eq!(w.add_dir(long, 0o755, 0), Err(WriteError::NameTooLong));
        assert_eq!(w.add_dir(&long[1..], 0o755, 0), Ok(()));
    }

    #[test]
    fn symlink_targets_are_checked() {
        let mut w = Writer::new();
        for bad in [&b""[..], b"a\0b", &[b'x'; MAX_NAME_LEN + 1]] {
            assert_eq!(
                w.add_symlink("l", 0o777, 0, bad),
                Err(WriteError::BadSymlinkTarget)
            );
        }
        assert_eq!(w.add_symlink("l", 0o777, 0, "../../etc"), Ok(()));
    }

    #[test]
    fn members_are_four_byte_aligned() {
        let mut w = Writer::new();
        w.add_file("abc", 0o644, 7, b"12345").unwrap();
        assert_eq!(w.len_bytes() % 4, 0);
        let archive = w.finish();
        assert_eq!(archive.len() % 4, 0);
        // 110-byte header, "abc\0", padding to 116, 5 bytes, padding to 124.
        assert_eq!(&archive[110..114], b"abc\0");
        assert_eq!(&archive[116..121], b"12345");
        assert_eq!(&archive[124..130], MAGIC);
    }
}
