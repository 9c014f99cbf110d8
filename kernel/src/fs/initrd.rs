//! Unpack the initial ramdisk (a cpio "newc" archive the VMM placed in
//! guest memory, see `docs/boot-protocol.md`) into `/` before `main`.
//! Modes, modification times and symbolic links are kept; members that
//! land below a mount point are hidden by it and skipped, and so are
//! devices, FIFOs and sockets.

use alloc::vec::Vec;

use eremite_cpio::EntryKind;
use eremite_interface::fs::OpenFlags;
use eremite_vfs::{Kind, Location, ROOT, RamFs};

use crate::console::klog;

const NS_PER_SEC: i64 = 1_000_000_000;

/// Unpack `archive` into `fs`.
pub(super) fn unpack(fs: &mut RamFs, archive: &[u8]) -> Result<(), &'static str> {
    let now = super::now_ns();
    let (mut files, mut skipped) = (0usize, 0usize);
    for entry in eremite_cpio::entries(archive) {
        let entry = entry.map_err(|_| "the initrd is not a valid cpio (newc) archive")?;
        let mtime_ns = i64::from(entry.mtime) * NS_PER_SEC;
        if entry.is_root() {
            let _ = fs.chmod(ROOT, entry.permissions(), now);
            continue;
        }
        let (parent, name) = match entry.name.iter().rposition(|&b| b == b'/') {
            Some(slash) => (&entry.name[..slash], &entry.name[slash + 1..]),
            None => (&b""[..], entry.name),
        };
        let Ok(dir) = fs.make_dirs(parent, 0o755, now) else {
            skipped += 1;
            continue;
        };
        let ino = match entry.kind() {
            EntryKind::Directory => match fs.lookup(dir, name) {
                Ok(ino) if fs.kind(ino) == Ok(Kind::Dir) => Ok(ino),
                _ => fs.mkdir(dir, name, entry.permissions(), now),
            },
            EntryKind::Symlink => fs.symlink(dir, name, entry.data, now),
            EntryKind::File => write_file(fs, entry.name, entry.data, now),
            EntryKind::Other => {
                skipped += 1;
                continue;
            }
        };
        match ino {
            Ok(ino) => {
                if entry.kind() != EntryKind::Symlink {
                    let _ = fs.chmod(ino, entry.permissions(), now);
                }
                let _ = fs.set_times(ino, mtime_ns);
                files += 1;
            }
            Err(eremite_interface::errno::ENOSPC | eremite_interface::errno::ENOMEM) => {
                return Err("out of memory unpacking the initrd; use a larger --memory");
            }
            Err(_) => skipped += 1,
        }
    }
    klog!("initrd: {files} files and directories unpacked, {skipped} skipped");
    Ok(())
}

fn write_file(
    fs: &mut RamFs,
    name: &[u8],
    data: &[u8],
    now: i64,
) -> Result<eremite_vfs::Ino, eremite_interface::errno::Errno> {
    let mut path = Vec::with_capacity(name.len() + 1);
    path.push(b'/');
    path.extend_from_slice(name);
    match fs.open(
        &path,
        OpenFlags::CREAT | OpenFlags::WRONLY | OpenFlags::TRUNC,
        0o600,
        now,
    )? {
        Location::Ram(ino) => {
            let written = fs.write(ino, 0, data, now);
            fs.close(ino)?;
            written?;
            Ok(ino)
        }
        // Below a mount point: hidden by the mount.
        Location::Mount { .. } => Err(eremite_interface::errno::EXDEV),
    }
}
