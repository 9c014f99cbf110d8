//! [`fs`](self) on every other target: the same functions over std, so a
//! program that calls `eremite::fs::set_len` also builds and runs as a
//! Linux program (see the hermit version for what each does there).

extern crate std;

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// As [`std::fs::rename`].
pub fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    std::fs::rename(from, to)
}

/// As `std::os::unix::fs::symlink`.
pub fn symlink(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    std::os::unix::fs::symlink(original, link)
}

/// As [`std::fs::hard_link`].
pub fn hard_link(original: impl AsRef<Path>, link: impl AsRef<Path>) -> io::Result<()> {
    std::fs::hard_link(original, link)
}

/// As [`std::fs::read_link`].
pub fn read_link(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    std::fs::read_link(path)
}

/// Set the length of the file at `path` (as `truncate(2)`).
pub fn truncate(path: impl AsRef<Path>, len: u64) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(len)
}

/// As [`File::set_len`].
pub fn set_len(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}

/// As [`File::sync_all`].
pub fn sync_all(file: &File) -> io::Result<()> {
    file.sync_all()
}

/// Set the permission bits of `path` (as `chmod(2)`).
pub fn set_mode(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The type and permission bits (`st_mode`) of `path`, not following a
/// symbolic link in the last component.
pub fn mode(path: impl AsRef<Path>) -> io::Result<u32> {
    Ok(std::fs::symlink_metadata(path)?.mode())
}

/// As [`std::fs::canonicalize`].
pub fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

/// As [`std::fs::remove_dir_all`].
pub fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    std::fs::remove_dir_all(path)
}
