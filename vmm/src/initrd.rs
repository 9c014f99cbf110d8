//! The initial ramdisk: what `--initrd DIR_OR_ARCHIVE` names, turned into
//! the cpio "newc" archive that the kernel unpacks into `/` before `main`
//! (see `docs/boot-protocol.md`, "Initial ramdisk").
//!
//! [`build`] accepts three things:
//! - a directory, walked in sorted order without following symlinks:
//!   directories, regular files (with their permission bits and mtime) and
//!   symlinks (stored as links). Names are relative to the directory, whose
//!   own entry is not stored. Sockets, FIFOs and devices are refused;
//! - a newc archive (magic `070701`), checked with `eremite_cpio::entries`
//!   and passed through unchanged. Members other than files, directories
//!   and symlinks are refused;
//! - a tar archive (ustar/GNU/pax, or an old v7 header with a valid
//!   checksum), converted to newc: directories, files, symlinks, and hard
//!   links as copies of the earlier file. Absolute and `..` names and other
//!   member types are refused.
//!
//! Owners are not kept (everything belongs to uid 0 in the guest).
//!
//! [`place`] copies the archive to the top of guest RAM, where the boot
//! info points the kernel to it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use eremite_cpio::{CpioError, EntryKind, MAGIC, WriteError, Writer, normalise_name};
use eremite_interface::layout::{LOW_RAM_END, PAGE_SIZE};

use crate::boot_info::BootError;
use crate::memory::GuestRam;

/// Why `--initrd` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// A file or directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is neither a directory nor a known archive.
    #[error("{0}: not a directory, cpio (newc) or tar archive")]
    Format(PathBuf),
    /// A compressed archive.
    #[error("{0}: compressed archives are not supported; decompress it first")]
    Compressed(PathBuf),
    /// A cpio archive in another format than newc.
    #[error("{0}: a cpio archive in another format than newc; write it with `cpio -o -H newc`")]
    CpioFormat(PathBuf),
    /// A member that is not a regular file, directory or symlink.
    #[error(
        "{place} is a {what}: only regular files, directories and symlinks can go in the initrd"
    )]
    Unsupported {
        /// The host path, or the archive and member name.
        place: String,
        /// What it is.
        what: &'static str,
    },
    /// A name that cannot be stored (absolute, `..`, too long).
    #[error("{place}: {source}")]
    Name {
        /// The host path, or the archive and member name.
        place: String,
        /// Why.
        source: WriteError,
    },
    /// A newc archive that does not parse.
    #[error("{path}: {source}")]
    Cpio {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: CpioError,
    },
    /// A tar archive that does not parse.
    #[error("{path}: bad tar archive: {source}")]
    Tar {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A tar hard link to a name that is not an earlier regular file.
    #[error("{place}: hard link to {target:?}, which is not an earlier file in the archive")]
    Link {
        /// The archive and member name.
        place: String,
        /// The link's target.
        target: String,
    },
    /// More data than any guest memory holds below 4 GiB, where it goes.
    #[error(
        "{0}: the initrd would be larger than {LOW_RAM_END} bytes, the most guest memory below 4 GiB (where it is placed)"
    )]
    TooLarge(PathBuf),
    /// The archive does not leave the kernel enough memory.
    #[error(
        "initrd of {len} bytes does not fit in the first {} MiB of guest memory (where it is placed, below 3 GiB); use a larger --memory",
        mem_size >> 20
    )]
    DoesNotFit {
        /// Length of the archive.
        len: u64,
        /// End of the guest memory below the hole.
        mem_size: u64,
    },
}

/// Free memory the kernel keeps at least, between the image and the
/// initrd, for its heap and the main thread's stack.
pub(crate) const MIN_FREE_BYTES: u64 = 4 << 20;

/// Where the initrd went in guest memory (zero when there is none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Guest address, page aligned.
    pub(crate) addr: u64,
    /// Length in bytes.
    pub(crate) len: u64,
}

/// Where an initrd of `len` bytes goes: as high as possible in the RAM
/// below the hole, `[0, mem_size)`, page aligned, leaving at least [`MIN_FREE_BYTES`]
/// above `free_start` (the end of the image).
pub(crate) fn address(len: u64, free_start: u64, mem_size: u64) -> Result<u64, InitrdError> {
    let top = mem_size.checked_sub(len);
    match top.map(|top| top & !(PAGE_SIZE - 1)) {
        Some(addr) if addr >= free_start.saturating_add(MIN_FREE_BYTES) => Ok(addr),
        _ => Err(InitrdError::DoesNotFit { len, mem_size }),
    }
}

/// Copy `archive` to the top of the guest RAM below the hole (see
/// [`address`]): the kernel's first heap arena.
pub(crate) fn place(
    ram: &GuestRam,
    free_start: u64,
    archive: &[u8],
) -> Result<Placed, crate::Error> {
    let len = archive.len() as u64;
    let addr = address(len, free_start, ram.low_end())?;
    ram.write(addr, archive).map_err(BootError::from)?;
    Ok(Placed { addr, len })
}

/// The newc archive for `path`: a directory, a newc archive or a tar
/// archive (see the module documentation).
#[cfg(test)]
fn build(path: &Path) -> Result<Vec<u8>, InitrdError> {
    build_within(path, LOW_RAM_END)
}

/// [`build`], refusing as soon as it is clear that the archive would be
/// larger than `limit` bytes (the guest memory it must fit in) and before
/// reading more than that.
pub(crate) fn build_within(path: &Path, limit: u64) -> Result<Vec<u8>, InitrdError> {
    let read_error = |source| InitrdError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_error)?;
    if meta.is_dir() {
        let mut writer = Writer::new();
        add_dir_contents(&mut writer, path, b"", path, limit)?;
        return Ok(writer.finish());
    }
    let mut file = crate::memory::open_regular(path).map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    if len > limit {
        return Err(too_large(path, len, limit));
    }
    // The format is known from the first block: junk is refused without
    // reading the rest, and a tar archive is converted as it is read.
    let mut header = Vec::with_capacity(TAR_BLOCK);
    (&mut file)
        .take(TAR_BLOCK as u64)
        .read_to_end(&mut header)
        .map_err(read_error)?;
    if header.starts_with(MAGIC) {
        let mut bytes = header;
        (&mut file)
            .take(limit + 1 - bytes.len() as u64)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > limit {
            return Err(too_large(path, bytes.len() as u64, limit));
        }
        check_newc(path, &bytes)?;
        Ok(bytes)
    } else if is_tar(&header) {
        tar_to_newc(path, &file, limit)
    } else if header.starts_with(b"0707") || header.starts_with(&[0xc7, 0x71]) {
        Err(InitrdError::CpioFormat(path.to_owned()))
    } else if COMPRESSED_MAGICS.iter().any(|m| header.starts_with(m)) {
        Err(InitrdError::Compressed(path.to_owned()))
    } else {
        Err(InitrdError::Format(path.to_owned()))
    }
}

/// A tar archive's block size: its headers are one block.
const TAR_BLOCK: usize = 512;

/// A host file the VMM puts in the initrd by itself (a dynamic program's
/// libraries, see `linux::closure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestFile {
    /// Absolute path in the guest.
    pub(crate) guest: String,
    /// The host file (symlinks are followed when it is read).
    pub(crate) host: PathBuf,
}

/// A file the VMM writes into the initrd from memory (the guest's
/// `/etc/hosts` and `/etc/resolv.conf` under user-mode networking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MadeFile {
    /// Absolute path in the guest.
    pub(crate) guest: String,
    /// Its contents (mode 0644).
    pub(crate) data: Vec<u8>,
}

/// The initrd for `files`, then `made`, and then what `user` (`--initrd`)
/// names, whose members win on a clash (the kernel unpacks in order);
/// `None` when there is nothing.
pub(crate) fn compose(
    files: &[GuestFile],
    made: &[MadeFile],
    user: Option<&Path>,
    limit: u64,
) -> Result<Option<Vec<u8>>, InitrdError> {
    let user_archive = user.map(|path| build_within(path, limit)).transpose()?;
    if files.is_empty() && made.is_empty() {
        return Ok(user_archive);
    }
    let mut writer = Writer::new();
    for file in files {
        let read_error = |source| InitrdError::Read {
            path: file.host.clone(),
            source,
        };
        let meta = fs::metadata(&file.host).map_err(read_error)?;
        let data = fs::read(&file.host).map_err(read_error)?;
        writer
            .add_file(
                file.guest.trim_start_matches('/'),
                meta.mode(),
                clamp_mtime(meta.mtime()),
                &data,
            )
            .map_err(|source| InitrdError::Name {
                place: file.guest.clone(),
                source,
            })?;
        if writer.len_bytes() as u64 > limit {
            return Err(too_large(&file.host, writer.len_bytes() as u64, limit));
        }
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for file in made {
        writer
            .add_file(
                file.guest.trim_start_matches('/'),
                0o100_644,
                clamp_mtime(now),
                &file.data,
            )
            .map_err(|source| InitrdError::Name {
                place: file.guest.clone(),
                source,
            })?;
    }
    if let (Some(archive), Some(path)) = (&user_archive, user) {
        for entry in eremite_cpio::entries(archive) {
            let entry = entry.map_err(|source| InitrdError::Cpio {
                path: path.to_owned(),
                source,
            })?;
            if entry.is_root() {
                continue;
            }
            let added = match entry.kind() {
                EntryKind::Directory => writer.add_dir(entry.name, entry.mode, entry.mtime),
                EntryKind::File => writer.add_file(entry.name, entry.mode, entry.mtime, entry.data),
                EntryKind::Symlink => {
                    writer.add_symlink(entry.name, entry.mode, entry.mtime, entry.data)
                }
                EntryKind::Other => continue,
            };
            added.map_err(|source| InitrdError::Name {
                place: member_place(path, entry.name),
                source,
            })?;
        }
    }
    Ok(Some(writer.finish()))
}

/// gzip, bzip2, xz, zstd, lz4.
const COMPRESSED_MAGICS: [&[u8]; 5] = [
    &[0x1f, 0x8b],
    b"BZh",
    &[0xfd, b'7', b'z', b'X', b'Z', 0],
    &[0x28, 0xb5, 0x2f, 0xfd],
    &[0x04, 0x22, 0x4d, 0x18],
];

/// The error for an archive from `path` of `len` bytes, over `limit`.
fn too_large(path: &Path, len: u64, limit: u64) -> InitrdError {
    if limit >= LOW_RAM_END {
        InitrdError::TooLarge(path.to_owned())
    } else {
        InitrdError::DoesNotFit {
            len,
            mem_size: limit,
        }
    }
}

/// Add everything below the host directory `dir` (whose archive name is
/// `prefix`, empty for the root), sorted by name, depth first, refusing
/// an archive larger than `limit` before reading the file that makes it so.
fn add_dir_contents(
    writer: &mut Writer,
    dir: &Path,
    prefix: &[u8],
    root: &Path,
    limit: u64,
) -> Result<(), InitrdError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| InitrdError::Read { path, source }
    };
    let mut children = fs::read_dir(dir)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .map_err(read_error(dir))?;
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        let path = child.path();
        let file_name = child.file_name();
        let mut name = prefix.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(file_name.as_bytes());
        // Does not follow symlinks.
        let meta = fs::symlink_metadata(&path).map_err(read_error(&path))?;
        let mode = meta.mode();
        let mtime = clamp_mtime(meta.mtime());
        let kind = meta.file_type();
        let name_error = |source| InitrdError::Name {
            place: path.display().to_string(),
            source,
        };
        if kind.is_dir() {
            writer.add_dir(&name, mode, mtime).map_err(name_error)?;
            add_dir_contents(writer, &path, &name, root, limit)?;
        } else if kind.is_file() {
            let total = (writer.len_bytes() as u64).saturating_add(meta.len());
            if total > limit {
                return Err(too_large(root, total, limit));
            }
            let mut data = Vec::new();
            crate::memory::open_regular(&path)
                .and_then(|mut file| file.read_to_end(&mut data))
                .map_err(read_error(&path))?;
            writer
                .add_file(&name, mode, mtime, &data)
                .map_err(name_error)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(read_error(&path))?;
            writer
                .add_symlink(&name, mode, mtime, target.as_os_str().as_bytes())
                .map_err(name_error)?;
        } else {
            let what = if kind.is_socket() {
                "socket"
            } else if kind.is_fifo() {
                "FIFO"
            } else if kind.is_char_device() {
                "character device"
            } else if kind.is_block_device() {
                "block device"
            } else {
                "special file"
            };
            return Err(InitrdError::Unsupported {
                place: path.display().to_string(),
                what,
            });
        }
    }
    Ok(())
}

/// A host mtime (seconds, maybe negative) as newc's unsigned 32 bits.
fn clamp_mtime(mtime: i64) -> u32 {
    u32::try_from(mtime.max(0)).unwrap_or(u32::MAX)
}

/// "archive (entry name)" for messages.
fn member_place(archive: &Path, name: &[u8]) -> String {
    format!(
        "{} (member {})",
        archive.display(),
        String::from_utf8_lossy(name)
    )
}

/// Parse the whole newc archive and refuse member types the kernel cannot
/// hold.
fn check_newc(path: &Path, bytes: &[u8]) -> Result<(), InitrdError> {
    for entry in eremite_cpio::entries(bytes) {
        let entry = entry.map_err(|source| InitrdError::Cpio {
            path: path.to_owned(),
            source,
        })?;
        if entry.kind() == EntryKind::Other {
            return Err(InitrdError::Unsupported {
                place: member_place(path, entry.name),
                what: file_type_name(entry.mode),
            });
        }
    }
    Ok(())
}

/// The file type in a mode, for messages.
fn file_type_name(mode: u32) -> &'static str {
    match mode & eremite_cpio::mode::S_IFMT {
        0o020_000 => "character device",
        0o060_000 => "block device",
        0o010_000 => "FIFO",
        0o140_000 => "socket",
        _ => "file of unknown type",
    }
}

/// Whether `bytes` starts with a tar header: the ustar magic at offset 257
/// (POSIX `ustar\0`, GNU `ustar `), or an old v7 header whose checksum
/// (offset 148, octal) matches.
fn is_tar(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..TAR_BLOCK) else {
        return false;
    };
    if header[257..262] == *b"ustar" {
        return true;
    }
    let field = &header[148..156];
    let mut digits = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(u8::is_ascii_digit);
    let Some(recorded) = digits.try_fold(0u32, |sum, d| {
        sum.checked_mul(8)?.checked_add(u32::from(d - b'0'))
    }) else {
        return false;
    };
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    header[0] != 0 && recorded == sum
}

/// Convert the tar archive `file` to newc, reading it once from the
/// start, one member at a time: the VMM holds the newc archive (at most
/// `limit` bytes) and one member's data, never the tar archive whole.
fn tar_to_newc(path: &Path, file: &fs::File, limit: u64) -> Result<Vec<u8>, InitrdError> {
    use std::os::unix::fs::FileExt;
    use tar::EntryType;

    let tar_error = |source| InitrdError::Tar {
        path: path.to_owned(),
        source,
    };
    let mut start = file;
    io::Seek::rewind(&mut start).map_err(tar_error)?;
    let mut writer = Writer::new();
    // Regular files so far: archive name -> where their data is in `file`
    // and its length, so that a hard link can be read again from there.
    let mut files: HashMap<Vec<u8>, (u64, usize)> = HashMap::new();
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        let header = entry.header();
        let kind = header.entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let raw_name = entry.path_bytes().into_owned();
        let place = || member_place(path, &raw_name);
        let name_error = |source| InitrdError::Name {
            place: place(),
            source,
        };
        let name = tar_name(&raw_name).ok_or_else(|| name_error(WriteError::BadName))?;
        if name == b"." {
            // The root itself: its mode and owner are not kept.
            continue;
        }
        let mode = header.mode().map_err(tar_error)?;
        let mtime = header
            .mtime()
            .map_err(tar_error)
            .map(|t| u32::try_from(t).unwrap_or(u32::MAX))?;
        // A member whose data alone would not fit is refused before its
        // data is read.
        let data_len = match kind {
            EntryType::Regular | EntryType::Continuous => entry.size(),
            _ => 0,
        };
        let after = (writer.len_bytes() as u64).saturating_add(data_len);
        if after > limit {
            return Err(too_large(path, after, limit));
        }
        match kind {
            EntryType::Directory => writer.add_dir(name, mode, mtime).map_err(name_error)?,
            EntryType::Regular | EntryType::Continuous => {
                let at = entry.raw_file_position();
                let mut data = Vec::with_capacity(data_len as usize);
                entry.read_to_end(&mut data).map_err(tar_error)?;
                if data.len() as u64 != data_len {
                    return Err(tar_error(io::ErrorKind::UnexpectedEof.into()));
                }
                writer
                    .add_file(name, mode, mtime, &data)
                    .map_err(name_error)?;
                files.insert(name.to_vec(), (at, data.len()));
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                writer
                    .add_symlink(name, mode, mtime, &target)
                    .map_err(name_error)?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let earlier = tar_name(&target).and_then(|t| files.get(t).copied());
                let Some((at, len)) = earlier else {
                    return Err(InitrdError::Link {
                        place: place(),
                        target: String::from_utf8_lossy(&target).into_owned(),
                    });
                };
                let after = (writer.len_bytes() as u64).saturating_add(len as u64);
                if after > limit {
                    return Err(too_large(path, after, limit));
                }
                let mut data = vec![0; len];
                file.read_exact_at(&mut data, at).map_err(tar_error)?;
                writer
                    .add_file(name, mode, mtime, &data)
                    .map_err(name_error)?;
                files.insert(name.to_vec(), (at, len));
            }
            other => {
                return Err(InitrdError::Unsupported {
                    place: place(),
                    what: tar_type_name(other),
                });
            }
        }
        if writer.len_bytes() as u64 > limit {
            return Err(too_large(path, writer.len_bytes() as u64, limit));
        }
    }
    Ok(writer.finish())
}

/// A tar member name as a newc name: relative (a leading `./` is fine),
/// no `..`, one trailing `/` allowed (directories).
fn tar_name(raw: &[u8]) -> Option<&[u8]> {
    if raw.starts_with(b"/") {
        return None;
    }
    let trimmed = match raw.strip_suffix(b"/") {
        Some(rest) if !rest.is_empty() => rest,
        _ => raw,
    };
    normalise_name(trimmed)
}

/// A tar member type, for messages.
fn tar_type_name(kind: tar::EntryType) -> &'static str {
    use tar::EntryType;
    match kind {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::GNUSparse => "sparse file",
        _ => "tar member of an unsupported type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eremite_cpio::Entry;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use crate::sandbox::tests::TempDir;

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `(name, kind, permissions, data)` of every member.
    fn summary(archive: &[u8]) -> Vec<(String, EntryKind, u32, Vec<u8>)> {
        eremite_cpio::entries(archive)
            .map(|e| {
                let e: Entry<'_> = e.unwrap();
                (
                    String::from_utf8(e.name.to_vec()).unwrap(),
                    e.kind(),
                    e.permissions(),
                    e.data.to_vec(),
                )
            })
            .collect()
    }

    fn entry(
        name: &str,
        kind: EntryKind,
        mode: u32,
        data: &[u8],
    ) -> (String, EntryKind, u32, Vec<u8>) {
        (name.to_owned(), kind, mode, data.to_vec())
    }

    /// A tree with nested directories, modes, an empty file and symlinks
    /// (one to a directory, one dangling).
    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("etc/conf.d")).unwrap();
        fs::create_dir(root.join("bin")).unwrap();
        fs::write(root.join("bin/run"), b"#!/bin/sh\n").unwrap();
        set_mode(&root.join("bin/run"), 0o755);
        fs::write(root.join("etc/conf.d/secret"), b"key").unwrap();
        set_mode(&root.join("etc/conf.d/secret"), 0o600);
        fs::write(root.join("empty"), b"").unwrap();
        set_mode(&root.join("empty"), 0o644);
        set_mode(&root.join("etc"), 0o755);
        set_mode(&root.join("etc/conf.d"), 0o700);
        set_mode(&root.join("bin"), 0o755);
        symlink("conf.d/secret", root.join("etc/link")).unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        symlink("nowhere", root.join("dangling")).unwrap();
    }

    fn sample_summary() -> Vec<(String, EntryKind, u32, Vec<u8>)> {
        use EntryKind::{Directory, File, Symlink};
        vec![
            entry("bin", Directory, 0o755, b""),
            entry("bin/run", File, 0o755, b"#!/bin/sh\n"),
            entry("dangling", Symlink, 0o777, b"nowhere"),
            entry("empty", File, 0o644, b""),
            entry("etc", Directory, 0o755, b""),
            entry("etc/conf.d", Directory, 0o700, b""),
            entry("etc/conf.d/secret", File, 0o600, b"key"),
            entry("etc/link", Symlink, 0o777, b"conf.d/secret"),
            entry("etc-link", Symlink, 0o777, b"/etc"),
        ]
    }

    #[test]
    fn the_initrd_goes_page_aligned_to_the_top_of_ram() {
        let mem = 64 << 20;
        assert_eq!(address(1, 0x30_0000, mem).unwrap(), mem - 0x1000);
        assert_eq!(address(0x1000, 0x30_0000, mem).unwrap(), mem - 0x1000);
        assert_eq!(address(0x1001, 0x30_0000, mem).unwrap(), mem - 0x2000);
        let room = mem - 0x30_0000 - MIN_FREE_BYTES;
        assert_eq!(
            address(room, 0x30_0000, mem).unwrap(),
            0x30_0000 + MIN_FREE_BYTES
        );
    }

    #[test]
    fn place_copies_the_archive_to_the_top_of_ram() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let mut w = Writer::new();
        w.add_file("f", 0o644, 0, b"data").unwrap();
        let archive = w.finish();
        let placed = place(&ram, 0x30_0000, &archive).unwrap();
        assert_eq!(
            placed,
            Placed {
                addr: (8 << 20) - 0x1000,
                len: archive.len() as u64
            }
        );
        let mut back = vec![0; archive.len()];
        ram.read(placed.addr, &mut back).unwrap();
        assert_eq!(back, archive);
        let error = place(&ram, 0x40_0000, &archive).unwrap_err();
        assert!(
            matches!(error, crate::Error::Initrd(InitrdError::DoesNotFit { .. })),
            "{error}"
        );
    }

    #[test]
    fn an_initrd_that_leaves_too_little_memory_is_refused() {
        let mem = 64 << 20;
        let room = mem - 0x30_0000 - MIN_FREE_BYTES;
        for len in [room + 1, mem, mem + 1, u64::MAX] {
            let error = address(len, 0x30_0000, mem).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "initrd of {len} bytes does not fit in the first 64 MiB of guest memory (where it is placed, below 3 GiB); use a larger --memory"
                )
            );
        }
    }

    #[test]
    fn a_directory_becomes_a_sorted_archive_without_following_symlinks() {
        let dir = TempDir::new();
        sample_tree(dir.path());
        let archive = build(dir.path()).unwrap();
        let mut expected = sample_summary();
        // Sorted by file name within each directory: "etc" < "etc-link"
        // at the top, and "etc"'s children come right after it.
        expected.sort_by(|a, b| {
            let key = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
            key(&a.0).cmp(&key(&b.0))
        });
        assert_eq!(summary(&archive), expected);
        assert_eq!(build(dir.path()).unwrap(), archive, "deterministic");
    }

    #[test]
    fn mtimes_are_kept() {
        let dir = TempDir::new();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890);
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(when)
            .unwrap();
        let archive = build(dir.path()).unwrap();
        let e = eremite_cpio::entries(&archive).next().unwrap().unwrap();
        assert_eq!(e.mtime, 1_234_567_890);
        assert_eq!(clamp_mtime(-5), 0);
        assert_eq!(clamp_mtime(i64::MAX), u32::MAX);
    }

    #[test]
    fn an_empty_directory_is_just_a_trailer() {
        let dir = TempDir::new();
        assert_eq!(build(dir.path()).unwrap(), Writer::new().finish());
    }

    #[test]
    fn sockets_are_refused() {
        let dir = TempDir::new();
        fs::write(dir.path().join("a"), b"").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let error = build(dir.path()).unwrap_err();
        assert!(
            matches!(&error, InitrdError::Unsupported { what: "socket", place } if place.ends_with("/sock")),
            "{error}"
        );
    }

    #[test]
    fn a_missing_path_is_a_read_error() {
        let dir = TempDir::new();
        let error = build(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(error, InitrdError::Read { .. }), "{error}");
        assert!(error.to_string().contains("nope"), "{error}");
    }

    #[test]
    fn a_newc_archive_passes_through_after_a_check() {
        let dir = TempDir::new();
        let mut w = Writer::new();
        w.add_dir("d", 0o755, 0).unwrap();
        w.add_file("d/f", 0o644, 0, b"data").unwrap();
        let archive = w.finish();
        let path = dir.path().join("initrd.cpio");
        fs::write(&path, &archive).unwrap();
        assert_eq!(build(&path).unwrap(), archive);

        fs::write(&path, &archive[..archive.len() - 20]).unwrap();
        let error = build(&path).unwrap_err();
        assert!(matches!(error, InitrdError::Cpio { .. }), "{error}");
        assert!(error.to_string().starts_with(&path.display().to_string()));
    }

    #[test]
    fn device_members_of_a_newc_archive_are_refused() {
        let dir = TempDir::new();
        // A hand-made member for a character device, then the trailer.
        let mut archive = b"070701".to_vec();
        for field in [1u32, 0o020_600, 0, 0, 1, 0, 0, 0, 0, 5, 1, 12, 0] {
            archive.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        archive.extend_from_slice(b"dev/console\0");
        archive.resize(archive.len().next_multiple_of(4), 0);
        archive.extend(Writer::new().finish());
        let path = dir.path().join("initrd.cpio");
        fs::write(&path, &archive).unwrap();
        let error = build(&path).unwrap_err();
        assert!(
            matches!(&error, InitrdError::Unsupported { what: "character device", place } if place.contains("dev/console")),
            "{error}"
        );
    }

    fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(1_000_000);
        header
    }

    #[test]
    fn a_tar_archive_is_converted() {
        use tar::EntryType;
        let dir = TempDir::new();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, kind, mode, data: &[u8]| {
            let mut h = tar_header(kind, mode, data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("./", EntryType::Directory, 0o755, b"");
        add("./bin/", EntryType::Directory, 0o755, b"");
        add("./bin/run", EntryType::Regular, 0o755, b"#!/bin/sh\n");
        add("./etc/", EntryType::Directory, 0o700, b"");
        add("./etc/secret", EntryType::Regular, 0o600, b"key");
        add("./empty", EntryType::Regular, 0o644, b"");
        let mut link = tar_header(EntryType::Symlink, 0o777, 0);
        b.append_link(&mut link, "./bin/sh", "run").unwrap();
        let mut hard = tar_header(EntryType::Link, 0o755, 0);
        b.append_link(&mut hard, "hard", "./bin/run").unwrap();
        let long = format!("{}/file", "d".repeat(150));
        b.append_data(
            &mut tar_header(EntryType::Directory, 0o755, 0),
            "d".repeat(150),
            &b""[..],
        )
        .unwrap();
        b.append_data(
            &mut tar_header(EntryType::Regular, 0o644, 4),
            &long,
            &b"long"[..],
        )
        .unwrap();
        let tar = b.into_inner().unwrap();
        let path = dir.path().join("root.tar");
        fs::write(&path, &tar).unwrap();

        use EntryKind::{Directory, File, Symlink};
        assert_eq!(
            summary(&build(&path).unwrap()),
            [
                entry("bin", Directory, 0o755, b""),
                entry("bin/run", File, 0o755, b"#!/bin/sh\n"),
                entry("etc", Directory, 0o700, b""),
                entry("etc/secret", File, 0o600, b"key"),
                entry("empty", File, 0o644, b""),
                entry("bin/sh", Symlink, 0o777, b"run"),
                entry("hard", File, 0o755, b"#!/bin/sh\n"),
                entry(&"d".repeat(150), Directory, 0o755, b""),
                entry(&long, File, 0o644, b"long"),
            ]
        );
    }

    #[test]
    fn a_tar_of_the_sample_tree_matches_the_directory() {
        // The tar crate's own walk of a directory (symlinks kept as links).
        let dir = TempDir::new();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        sample_tree(&tree);
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", &tree).unwrap();
        let path = dir.path().join("tree.tar");
        fs::write(&path, b.into_inner().unwrap()).unwrap();
        let mut got = summary(&build(&path).unwrap());
        got.sort();
        let mut expected = sample_summary();
        expected.sort();
        assert_eq!(got, expected);
    }

    /// A one-member tar whose name is written raw (the tar crate's
    /// `set_path` refuses `..`).
    fn raw_name_tar(name: &[u8], kind: tar::EntryType) -> Vec<u8> {
        let mut header = tar_header(kind, 0o644, 0);
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, &b""[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn escaping_tar_names_are_refused() {
        let dir = TempDir::new();
        let path = dir.path().join("bad.tar");
        for name in [&b"/etc/passwd"[..], b"../x", b"a/../../x", b"a//b"] {
            fs::write(&path, raw_name_tar(name, tar::EntryType::Regular)).unwrap();
            let error = build(&path).unwrap_err();
            assert!(
                matches!(
                    error,
                    InitrdError::Name {
                        source: WriteError::BadName,
                        ..
                    }
                ),
                "{}: {error}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn other_tar_members_are_refused() {
        let dir = TempDir::new();
        let path = dir.path().join("fifo.tar");
        fs::write(&path, raw_name_tar(b"pipe", tar::EntryType::Fifo)).unwrap();
        let error = build(&path).unwrap_err();
        assert!(
            matches!(error, InitrdError::Unsupported { what: "FIFO", .. }),
            "{error}"
        );
        fs::write(&path, raw_name_tar(b"h", tar::EntryType::Link)).unwrap();
        let error = build(&path).unwrap_err();
        assert!(matches!(error, InitrdError::Link { .. }), "{error}");
    }

    #[test]
    fn an_old_v7_tar_is_recognised() {
        let mut header = tar::Header::new_old();
        header.set_path("f").unwrap();
        header.set_mode(0o640);
        header.set_size(2);
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        assert!(!tar[257..262].starts_with(b"ustar"));
        assert!(is_tar(&tar));
        let dir = TempDir::new();
        let path = dir.path().join("old.tar");
        fs::write(&path, &tar).unwrap();
        assert_eq!(
            summary(&build(&path).unwrap()),
            [entry("f", EntryKind::File, 0o640, b"hi")]
        );
    }

    #[test]
    fn a_truncated_tar_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(
            &mut tar_header(tar::EntryType::Regular, 0o644, 1000),
            "big",
            &[7u8; 1000][..],
        )
        .unwrap();
        let tar = b.into_inner().unwrap();
        let dir = TempDir::new();
        let path = dir.path().join("cut.tar");
        fs::write(&path, &tar[..900]).unwrap();
        let error = build(&path).unwrap_err();
        assert!(matches!(error, InitrdError::Tar { .. }), "{error}");
    }

    /// A sparse file of `len` bytes that starts with `head`.
    fn sparse(dir: &TempDir, head: &[u8], len: u64) -> PathBuf {
        let path = dir.path().join("sparse");
        fs::write(&path, head).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        path
    }

    /// How much of the file the process has read so far (`rchar` of
    /// `/proc/thread-self/io`: this thread's reads).
    fn bytes_read() -> u64 {
        let io = fs::read_to_string("/proc/thread-self/io").unwrap();
        let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
        line["rchar:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn junk_is_refused_from_its_first_block_without_reading_the_rest() {
        let dir = TempDir::new();
        let path = sparse(&dir, b"not an archive", 2 << 30);
        let before = bytes_read();
        let error = build_within(&path, 3 << 30).unwrap_err();
        assert!(matches!(error, InitrdError::Format(_)), "{error}");
        let read = bytes_read() - before;
        assert!(read < 1 << 20, "read {read} bytes of a junk file");
    }

    #[test]
    fn a_tar_member_too_large_for_memory_is_refused_before_its_data_is_read() {
        let dir = TempDir::new();
        let mut header = tar_header(tar::EntryType::Regular, 0o644, 2 << 30);
        header.set_path("huge").unwrap();
        header.set_cksum();
        // The file fits in memory; the member it claims to hold does not.
        let path = sparse(&dir, header.as_bytes(), 1 << 30);
        let before = bytes_read();
        let error = build_within(&path, 3 << 29).unwrap_err();
        assert!(matches!(error, InitrdError::DoesNotFit { .. }), "{error}");
        let read = bytes_read() - before;
        assert!(read < 1 << 20, "read {read} bytes before refusing");
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        let dir = TempDir::new();
        let path = dir.path().join("x");
        for (bytes, want) in [
            (
                &b"just some text\n"[..],
                "not a directory, cpio (newc) or tar archive",
            ),
            (&[0x1f, 0x8b, 8, 0][..], "compressed"),
            (b"070707000000", "another format than newc"),
            (b"", "not a directory"),
        ] {
            fs::write(&path, bytes).unwrap();
            let message = build(&path).unwrap_err().to_string();
            assert!(message.contains(want), "{message}");
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
        }
    }
}
