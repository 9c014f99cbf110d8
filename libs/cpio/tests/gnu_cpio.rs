//! Interoperability with GNU cpio: it extracts what [`Writer`] writes,
//! and the reader reads what it writes. `./x test` installs the `cpio`
//! tool (Debian package `cpio`); without it these tests fail and say so.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use eremite_cpio::{EntryKind, Writer, entries};

/// A fresh, empty directory under the system temporary directory, removed
/// on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "eremite-cpio-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn has_cpio() -> bool {
    let found = Command::new("cpio")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "GNU cpio is not installed: run the tests with `./x test`, which installs it (apt-get install cpio)"
    );
    found
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn gnu_cpio_extracts_what_the_writer_writes() {
    if !has_cpio() {
        return;
    }
    let mut w = Writer::new();
    w.add_dir("bin", 0o755, 1_000_000).unwrap();
    w.add_file("bin/tool", 0o755, 1_000_001, b"#!/bin/sh\n")
        .unwrap();
    w.add_dir("secret", 0o700, 1_000_002).unwrap();
    w.add_file("secret/key", 0o600, 1_000_003, &[0xA5; 1000])
        .unwrap();
    w.add_file("empty", 0o644, 1_000_004, b"").unwrap();
    w.add_symlink("bin/link", 0o777, 1_000_005, "../empty")
        .unwrap();
    let archive = w.finish();

    let dir = TempDir::new("extract");
    let mut child = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    assert!(child.wait().unwrap().success(), "cpio -idm failed");

    let root = &dir.0;
    assert_eq!(fs::read(root.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(root.join("secret/key")).unwrap(), [0xA5; 1000]);
    assert_eq!(fs::read(root.join("empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(root.join("bin/link")).unwrap(),
        Path::new("../empty")
    );
    assert_eq!(mode_of(&root.join("bin/tool")), 0o755);
    assert_eq!(mode_of(&root.join("secret/key")), 0o600);
    assert_eq!(mode_of(&root.join("empty")), 0o644);
    let meta = fs::metadata(root.join("secret/key")).unwrap();
    assert_eq!(meta.mtime(), 1_000_003);
    // Restore write permission so the directory can be removed.
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_reader_reads_what_gnu_cpio_writes() {
    if !has_cpio() {
        return;
    }
    let dir = TempDir::new("create");
    let root = &dir.0;
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/file"), b"contents").unwrap();
    fs::set_permissions(root.join("a/b/file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::hard_link(root.join("a/b/file"), root.join("a/hard")).unwrap();
    symlink("b/file", root.join("a/sym")).unwrap();
    let output = Command::new("sh")
        .args(["-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(output.status.success(), "find | cpio -o failed");
    let archive = output.stdout;
    assert_eq!(archive.len() % 512, 0, "GNU cpio pads to 512 bytes");

    let mut got: Vec<_> = entries(&archive)
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8(e.name.to_vec()).unwrap(),
                e.kind(),
                e.permissions(),
                e.data.to_vec(),
            )
        })
        .collect();
    // GNU cpio defers hard links to the end of their group: sort by name.
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let expect = |name: &str, kind, mode, data: &[u8]| (name.to_owned(), kind, mode, data.to_vec());
    assert_eq!(
        got,
        [
            expect(".", EntryKind::Directory, mode_of(root), b""),
            expect("a", EntryKind::Directory, mode_of(&root.join("a")), b""),
            expect("a/b", EntryKind::Directory, mode_of(&root.join("a/b")), b""),
            // Hard links become copies: both names get the data.
            expect("a/b/file", EntryKind::File, 0o640, b"contents"),
            expect("a/hard", EntryKind::File, 0o640, b"contents"),
            expect("a/sym", EntryKind::Symlink, 0o777, b"b/file"),
            expect("empty", EntryKind::File, mode_of(&root.join("empty")), b""),
        ]
    );
}
