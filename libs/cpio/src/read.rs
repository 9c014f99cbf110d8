//! Reading an archive: [`entries`] walks the members of untrusted bytes
//! without allocating and without panicking.

use core::fmt;

use crate::mode::{PERMISSIONS, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::{HEADER_LEN, MAGIC, MAX_NAME_LEN, TRAILER_NAME, normalise_name};

/// One member of an archive. The slices borrow from the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The normalised name (see [`normalise_name`]): a relative path, or
    /// `.` for the root directory. Parents need not have come before.
    pub name: &'a [u8],
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner's user ID.
    pub uid: u32,
    /// Owner's group ID.
    pub gid: u32,
    /// Modification time, in seconds since the Unix epoch.
    pub mtime: u32,
    /// Inode number as the writer recorded it.
    pub ino: u32,
    /// Number of links as the writer recorded it.
    pub nlink: u32,
    /// The contents of a regular file, or the target of a symlink (not
    /// empty, no NUL). Empty for a directory.
    pub data: &'a [u8],
}

/// What kind of file an [`Entry`] is, from its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else: a device, FIFO, socket or an unknown type. Callers
    /// decide whether to refuse or skip it.
    Other,
}

impl Entry<'_> {
    /// The file type.
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFREG => EntryKind::File,
            S_IFDIR => EntryKind::Directory,
            S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }

    /// The permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & PERMISSIONS
    }

    /// Whether this is the root directory itself (name `.`).
    pub fn is_root(&self) -> bool {
        self.name == b"."
    }
}

/// Why an archive cannot be read: what is wrong and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpioError {
    /// Byte offset in the archive of the member's header (the end of the
    /// archive for [`CpioErrorKind::MissingTrailer`]).
    pub offset: usize,
    /// What is wrong.
    pub kind: CpioErrorKind,
}

/// What is wrong with an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioErrorKind {
    /// The archive ends inside a header, name, padding or data.
    Truncated,
    /// No `070701` magic where a header should start (other cpio formats,
    /// including the CRC variant `070702`, are not read).
    BadMagic,
    /// The named header field is not exactly 8 ASCII hex digits.
    BadField(&'static str),
    /// The name size is 0 or the name is longer than [`MAX_NAME_LEN`].
    BadNameSize,
    /// The last byte of the name is not NUL.
    NameNotTerminated,
    /// The name has an interior NUL, a `..`, `.` or empty component.
    BadName,
    /// The archive ends without a `TRAILER!!!` member.
    MissingTrailer,
    /// The member named `.` (the root) is not a directory.
    RootNotDirectory,
    /// A directory member has data.
    DirectoryWithData,
    /// A symlink's target is empty, longer than [`MAX_NAME_LEN`] or has a
    /// NUL byte.
    BadSymlinkTarget,
}

impl fmt::Display for CpioErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("the archive ends inside a member"),
            Self::BadMagic => f.write_str("no newc header (magic 070701)"),
            Self::BadField(field) => write!(f, "header field {field} is not 8 hex digits"),
            Self::BadNameSize => write!(f, "name size is 0 or over {}", MAX_NAME_LEN + 1),
            Self::NameNotTerminated => f.write_str("name does not end with a NUL byte"),
            Self::BadName => f.write_str("name has a NUL byte or a `..`, `.` or empty component"),
            Self::MissingTrailer => f.write_str("no TRAILER!!! member at the end"),
            Self::RootNotDirectory => f.write_str("the root `.` is not a directory"),
            Self::DirectoryWithData => f.write_str("a directory has data"),
            Self::BadSymlinkTarget => {
                f.write_str("symlink target is empty, too long or has a NUL byte")
            }
        }
    }
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.kind, self.offset)
    }
}

impl core::error::Error for CpioError {}

/// The members of `archive` up to its trailer (see [`Entries`]).
pub fn entries(archive: &[u8]) -> Entries<'_> {
    Entries {
        archive,
        pos: 0,
        is_done: false,
        link_run: None,
    }
}

/// Iterator over the members of an archive, from [`entries`].
///
/// It yields every member before `TRAILER!!!` in archive order, the root
/// directory `.` included when the archive has one, and stops after the
/// trailer or after the first error (an archive without a trailer ends
/// with [`CpioErrorKind::MissingTrailer`]). Bytes after the trailer are
/// ignored.
///
/// Hard links become copies. newc stores a group of links (regular files
/// with the same `ino`, `devmajor` and `devminor`, `nlink > 1`) as
/// consecutive members of which only the last has data, as GNU cpio and
/// libarchive write them. A member of such a run with no data gets the
/// data of the first member after it in the same run that has some (so
/// the run of an empty file stays empty). Links that are not consecutive
/// are not joined: the members without data come out empty. The lookahead
/// is remembered per run, so the whole walk stays linear in the archive.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    archive: &'a [u8],
    /// Offset of the next header.
    pos: usize,
    is_done: bool,
    /// The last run of hard links looked ahead in.
    link_run: Option<LinkRun<'a>>,
}

/// The result of looking ahead through a run of hard links.
#[derive(Clone, Copy, Debug)]
struct LinkRun<'a> {
    key: LinkKey,
    /// The data found (empty if none).
    data: &'a [u8],
    /// Offset of the member that has the data, or of the first one after
    /// the run: members of the run before it share `data`.
    until: usize,
}

/// `(ino, devmajor, devminor)`: what makes members links of one file.
type LinkKey = (u32, u32, u32);

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.is_done {
            return None;
        }
        let result = self.next_entry();
        if !matches!(result, Ok(Some(_))) {
            self.is_done = true;
        }
        result.transpose()
    }
}

impl core::iter::FusedIterator for Entries<'_> {}

impl<'a> Entries<'a> {
    fn next_entry(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let pos = self.pos;
        let member = parse_member(self.archive, pos)?;
        if member.name == TRAILER_NAME {
            return Ok(None);
        }
        self.pos = member.next;
        let error = |kind| CpioError { offset: pos, kind };
        let name = normalise_name(member.name).ok_or(error(CpioErrorKind::BadName))?;
        let header = member.header;
        let mut data = member.data;
        match header.mode & S_IFMT {
            S_IFDIR if !data.is_empty() => return Err(error(CpioErrorKind::DirectoryWithData)),
            S_IFLNK if data.is_empty() || data.len() > MAX_NAME_LEN || data.contains(&0) => {
                return Err(error(CpioErrorKind::BadSymlinkTarget));
            }
            S_IFREG if header.nlink > 1 && data.is_empty() => {
                data = self.linked_data(pos, header.link_key(), member.next);
            }
            _ => {}
        }
        if name == b"." && header.mode & S_IFMT != S_IFDIR {
            return Err(error(CpioErrorKind::RootNotDirectory));
        }
        Ok(Some(Entry {
            name,
            mode: header.mode,
            uid: header.uid,
            gid: header.gid,
            mtime: header.mtime,
            ino: header.ino,
            nlink: header.nlink,
            data,
        }))
    }

    /// The data of the hard-link run that the empty member at `pos` (whose
    /// successor starts at `next`) belongs to.
    fn linked_data(&mut self, pos: usize, key: LinkKey, next: usize) -> &'a [u8] {
        if let Some(run) = self.link_run
            && run.key == key
            && pos < run.until
        {
            return run.data;
        }
        let mut at = next;
        let mut data: &'a [u8] = &[];
        // Ends: each member is at least HEADER_LEN bytes, so `at` grows
        // until parsing fails at the end of the archive.
        while let Ok(member) = parse_member(self.archive, at) {
            let header = member.header;
            if member.name == TRAILER_NAME
                || header.mode & S_IFMT != S_IFREG
                || header.link_key() != key
            {
                break;
            }
            if !member.data.is_empty() {
                data = member.data;
                break;
            }
            at = member.next;
        }
        self.link_run = Some(LinkRun {
            key,
            data,
            until: at,
        });
        data
    }
}

/// The header fields that are used.
#[derive(Clone, Copy, Debug)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    devmajor: u32,
    devminor: u32,
}

impl Header {
    fn link_key(&self) -> LinkKey {
        (self.ino, self.devmajor, self.devminor)
    }
}

/// One member as stored, before its name is checked.
struct Member<'a> {
    header: Header,
    /// The name without its NUL.
    name: &'a [u8],
    data: &'a [u8],
    /// Offset of the next header (at most the archive's length).
    next: usize,
}

/// Names of the 13 header fields after the magic, in order.
const FIELDS: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];

/// Parse the member whose header starts at `pos`.
fn parse_member(archive: &[u8], pos: usize) -> Result<Member<'_>, CpioError> {
    let error = |kind| CpioError { offset: pos, kind };
    let rest = archive.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Err(error(CpioErrorKind::MissingTrailer));
    }
    let header = rest
        .get(..HEADER_LEN)
        .ok_or(error(CpioErrorKind::Truncated))?;
    let (magic, digits) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(error(CpioErrorKind::BadMagic));
    }
    let mut values = [0u32; FIELDS.len()];
    for ((value, field), digits) in values.iter_mut().zip(FIELDS).zip(digits.as_chunks::<8>().0) {
        *value = parse_hex(digits).ok_or(error(CpioErrorKind::BadField(field)))?;
    }
    let [
        ino,
        mode,
        uid,
        gid,
        nlink,
        mtime,
        filesize,
        devmajor,
        devminor,
        _rdevmajor,
        _rdevminor,
        namesize,
        _check,
    ] = values;
    let namesize = to_usize(namesize);
    if namesize == 0 || namesize > MAX_NAME_LEN + 1 {
        return Err(error(CpioErrorKind::BadNameSize));
    }
    let truncated = error(CpioErrorKind::Truncated);
    let name_start = pos.checked_add(HEADER_LEN).ok_or(truncated)?;
    let name_end = name_start.checked_add(namesize).ok_or(truncated)?;
    let name = archive.get(name_start..name_end).ok_or(truncated)?;
    let Some((&0, name)) = name.split_last() else {
        return Err(error(CpioErrorKind::NameNotTerminated));
    };
    if name.contains(&0) {
        return Err(error(CpioErrorKind::BadName));
    }
    let data_start = align4(name_end).ok_or(truncated)?;
    let data_end = data_start
        .checked_add(to_usize(filesize))
        .ok_or(truncated)?;
    let data = archive.get(data_start..data_end).ok_or(truncated)?;
    // The padding after the last member may be missing.
    let next = align4(data_end).map_or(archive.len(), |next| next.min(archive.len()));
    Ok(Member {
        header: Header {
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            devmajor,
            devminor,
        },
        name,
        data,
        next,
    })
}

/// Exactly 8 ASCII hex digits (either case) as a number.
fn parse_hex(digits: &[u8; 8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &digit| {
        let nibble = char::from(digit).to_digit(16)?;
        Some(value << 4 | nibble)
    })
}

/// `n` rounded up to a multiple of 4, if that fits.
fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// A 32-bit size as `usize` (saturating on 16-bit targets, where the
/// bounds checks then fail).
fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_fields_are_exactly_eight_hex_digits() {
        assert_eq!(parse_hex(b"0000001f"), Some(0x1f));
        assert_eq!(parse_hex(b"FFFFFFFF"), Some(u32::MAX));
        assert_eq!(parse_hex(b"000000+1"), None);
        assert_eq!(parse_hex(b"0000 001"), None);
        assert_eq!(parse_hex(b"0x000001"), None);
    }

    #[test]
    fn alignment_rounds_up_and_detects_overflow() {
        assert_eq!(align4(0), Some(0));
        assert_eq!(align4(121), Some(124));
        assert_eq!(align4(124), Some(124));
        assert_eq!(align4(usize::MAX), None);
    }
}
