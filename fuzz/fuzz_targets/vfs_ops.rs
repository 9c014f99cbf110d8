//! Random operation sequences on the RAM file system, paths included
//! (symbolic links, `..`, trailing slashes, long names): no operation may
//! panic, and every inode must stay reachable or open (no leaks).
#![no_main]

use eremite_interface::fs::{O_CREAT, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR, O_TRUNC, OpenFlags};
use eremite_vfs::{DirCursor, Location, ParentLocation, ROOT, RamFs};
use libfuzzer_sys::fuzz_target;

const NAMES: [&[u8]; 8] = [
    b"a",
    b"b",
    b"..",
    b".",
    b"c/",
    b"",
    b"l",
    b"long-name-xxxxxxxx",
];

fn path(bytes: &mut impl Iterator<Item = u8>) -> Vec<u8> {
    let len = bytes.next().unwrap_or(0) % 5;
    let mut p = if bytes.next().unwrap_or(0) % 2 == 0 {
        b"/".to_vec()
    } else {
        Vec::new()
    };
    for _ in 0..=len {
        p.extend_from_slice(NAMES[usize::from(bytes.next().unwrap_or(0)) % NAMES.len()]);
        p.push(b'/');
    }
    if bytes.next().unwrap_or(0) % 2 == 0 {
        p.pop();
    }
    p
}

fn parent(fs: &RamFs, p: &[u8]) -> Option<(u64, Vec<u8>)> {
    match fs.resolve_parent(p) {
        Ok(ParentLocation::Ram { dir, name, .. }) => Some((dir, name)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut fs = RamFs::new(0);
    let mut open = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let p = path(&mut bytes);
        match op % 10 {
            0 => {
                let flags = [
                    O_RDONLY,
                    O_RDWR | O_CREAT,
                    O_RDWR | O_CREAT | O_EXCL,
                    O_RDWR | O_TRUNC,
                    O_RDONLY | O_NOFOLLOW,
                ];
                if let Ok(Location::Ram(ino)) = fs.open(
                    &p,
                    OpenFlags::from_bits_retain(flags[usize::from(op / 10) % flags.len()]),
                    0o644,
                    1,
                ) {
                    open.push(ino);
                }
            }
            1 => {
                if let Some((dir, name)) = parent(&fs, &p) {
                    let _ = fs.mkdir(dir, &name, 0o755, 1);
                }
            }
            2 => {
                if let Some((dir, name)) = parent(&fs, &p) {
                    let _ = fs.unlink(dir, &name, 1);
                }
            }
            3 => {
                if let Some((dir, name)) = parent(&fs, &p) {
                    let _ = fs.rmdir(dir, &name, 1);
                }
            }
            4 => {
                let q = path(&mut bytes);
                if let (Some((a, an)), Some((b, bn))) = (parent(&fs, &p), parent(&fs, &q)) {
                    let _ = fs.rename(a, &an, b, &bn, 1);
                }
            }
            5 => {
                let target = path(&mut bytes);
                if let Some((dir, name)) = parent(&fs, &p) {
                    let _ = fs.symlink(dir, &name, &target, 1);
                }
            }
            6 => {
                if let Some(&ino) = open.last() {
                    let offset = u64::from(bytes.next().unwrap_or(0)) * 997;
                    let _ = fs.write(ino, offset, &[op; 7], 1);
                    let mut buf = [0u8; 64];
                    let _ = fs.read(ino, offset / 2, &mut buf);
                }
            }
            7 => {
                if let Some(ino) = open.pop() {
                    fs.close(ino).expect("an open inode closes");
                }
            }
            8 => {
                let _ = fs.canonicalize(&p);
                if let Ok(Location::Ram(ino)) = fs.resolve(&p, false) {
                    let _ = fs.stat(ino);
                    let _ = fs.read_dir(ino, &DirCursor::Start, |_| true);
                }
            }
            _ => {
                if let Ok(Location::Ram(ino)) = fs.resolve(&p, true) {
                    let _ = fs.set_len(ino, u64::from(op) * 4099, 1);
                }
            }
        }
    }
    for ino in open.drain(..) {
        fs.close(ino).expect("an open inode closes");
    }
    // Everything left is reachable from the root.
    fn count(fs: &RamFs, dir: u64, seen: &mut std::collections::BTreeSet<u64>) {
        let mut children = Vec::new();
        let _ = fs.read_dir(dir, &DirCursor::Start, |e| {
            if e.name != b"." && e.name != b".." {
                children.push((e.ino, e.kind));
            }
            true
        });
        for (ino, kind) in children {
            if seen.insert(ino) && kind == eremite_vfs::Kind::Dir {
                count(fs, ino, seen);
            }
        }
    }
    let mut seen = std::collections::BTreeSet::from([ROOT]);
    count(&fs, ROOT, &mut seen);
    assert_eq!(fs.inode_count(), seen.len(), "an inode leaked");
});
