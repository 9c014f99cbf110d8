use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use eremite_interface::fs::PATH_MAX;

use super::*;

// The open flags under their C names, for readable calls.
const O_RDONLY: OpenFlags = OpenFlags::RDONLY;
const O_WRONLY: OpenFlags = OpenFlags::WRONLY;
const O_RDWR: OpenFlags = OpenFlags::RDWR;
const O_CREAT: OpenFlags = OpenFlags::CREAT;
const O_EXCL: OpenFlags = OpenFlags::EXCL;
const O_TRUNC: OpenFlags = OpenFlags::TRUNC;
const O_DIRECTORY: OpenFlags = OpenFlags::DIRECTORY;
const O_NOFOLLOW: OpenFlags = OpenFlags::NOFOLLOW;

const NOW: i64 = 1_700_000_000_000_000_000;

fn ram(loc: Location) -> Ino {
    match loc {
        Location::Ram(ino) => ino,
        other => panic!("expected a RAM inode, got {other:?}"),
    }
}

fn parent(fs: &RamFs, path: &str) -> (Ino, Vec<u8>) {
    match fs.resolve_parent(path.as_bytes()).unwrap() {
        ParentLocation::Ram { dir, name, .. } => (dir, name),
        other => panic!("expected a RAM parent, got {other:?}"),
    }
}

fn mkdir(fs: &mut RamFs, path: &str) -> Result<Ino, Errno> {
    let (dir, name) = parent(fs, path);
    fs.mkdir(dir, &name, 0o755, NOW)
}

fn create(fs: &mut RamFs, path: &str, contents: &[u8]) -> Ino {
    let ino = ram(fs
        .open(path.as_bytes(), O_CREAT | O_WRONLY | O_TRUNC, 0o644, NOW)
        .unwrap());
    fs.write(ino, 0, contents, NOW).unwrap();
    fs.close(ino).unwrap();
    ino
}

fn read_all(fs: &mut RamFs, path: &str) -> Result<Vec<u8>, Errno> {
    let ino = ram(fs.open(path.as_bytes(), O_RDONLY, 0, NOW)?);
    let mut buf = vec![0; fs.len(ino)? as usize];
    let n = fs.read(ino, 0, &mut buf)?;
    buf.truncate(n);
    fs.close(ino)?;
    Ok(buf)
}

fn symlink(fs: &mut RamFs, target: &str, path: &str) -> Result<Ino, Errno> {
    let (dir, name) = parent(fs, path);
    fs.symlink(dir, &name, target.as_bytes(), NOW)
}

fn names(fs: &RamFs, path: &str) -> Vec<String> {
    let ino = ram(fs.resolve(path.as_bytes(), true).unwrap());
    let mut out = Vec::new();
    fs.read_dir(ino, &DirCursor::Start, |e| {
        out.push(String::from_utf8(e.name.to_vec()).unwrap());
        true
    })
    .unwrap();
    out
}

#[test]
fn create_write_read_and_stat() {
    let mut fs = RamFs::new(NOW);
    mkdir(&mut fs, "/a").unwrap();
    let ino = create(&mut fs, "/a/f", b"hello");
    assert_eq!(read_all(&mut fs, "/a/f").unwrap(), b"hello");
    let st = fs.stat(ino).unwrap();
    assert_eq!(st.size, 5);
    assert_eq!(st.mode, S_IFREG | 0o644);
    assert_eq!(st.nlink, 1);
    assert_eq!(st.ino, ino);
    let dir = fs.stat(ram(fs.resolve(b"/a", true).unwrap())).unwrap();
    assert_eq!(dir.mode, S_IFDIR | 0o755);
    assert_eq!(dir.nlink, 2);
    assert_eq!(fs.stat(ROOT).unwrap().nlink, 3);
}

#[test]
fn open_flags_behave_as_on_linux() {
    let mut fs = RamFs::new(NOW);
    create(&mut fs, "/f", b"data");
    assert_eq!(
        fs.open(b"/f", O_CREAT | O_EXCL | O_WRONLY, 0o644, NOW),
        Err(errno::EEXIST)
    );
    assert_eq!(fs.open(b"/missing", O_RDONLY, 0, NOW), Err(errno::ENOENT));
    assert_eq!(
        fs.open(b"/f", O_RDONLY | O_DIRECTORY, 0, NOW),
        Err(errno::ENOTDIR)
    );
    assert_eq!(fs.open(b"/", O_WRONLY, 0, NOW), Err(errno::EISDIR));
    assert_eq!(fs.open(b"/f/", O_RDONLY, 0, NOW), Err(errno::ENOTDIR));
    assert_eq!(
        fs.open(b"/f", O_WRONLY | O_RDWR, 0, NOW),
        Err(errno::EINVAL)
    );
    // O_TRUNC empties; without it the contents stay.
    let ino = ram(fs.open(b"/f", O_RDWR, 0, NOW).unwrap());
    assert_eq!(fs.len(ino).unwrap(), 4);
    fs.close(ino).unwrap();
    let ino = ram(fs.open(b"/f", O_WRONLY | O_TRUNC, 0, NOW).unwrap());
    assert_eq!(fs.len(ino).unwrap(), 0);
    fs.close(ino).unwrap();
    // A directory opens read-only, with or without O_DIRECTORY.
    let root = ram(fs.open(b"/", O_RDONLY | O_DIRECTORY, 0, NOW).unwrap());
    assert_eq!(root, ROOT);
    fs.close(root).unwrap();
}

#[test]
fn errors_for_bad_paths() {
    let mut fs = RamFs::new(NOW);
    create(&mut fs, "/file", b"");
    assert_eq!(fs.resolve(b"", true), Err(errno::ENOENT));
    assert_eq!(fs.resolve(b"/file/x", true), Err(errno::ENOTDIR));
    assert_eq!(mkdir(&mut fs, "/file"), Err(errno::EEXIST));
    assert_eq!(mkdir(&mut fs, "/"), Err(errno::EEXIST));
    assert_eq!(fs.resolve_parent(b"/nope/x").unwrap_err(), errno::ENOENT);
    let long = "x".repeat(NAME_MAX + 1);
    assert_eq!(
        fs.resolve(alloc::format!("/{long}").as_bytes(), true),
        Err(errno::ENAMETOOLONG)
    );
    assert_eq!(
        fs.resolve_parent(alloc::format!("/{long}").as_bytes()),
        Err(errno::ENAMETOOLONG)
    );
    assert_eq!(
        fs.mkdir(ROOT, long.as_bytes(), 0o755, NOW),
        Err(errno::ENAMETOOLONG)
    );
    let huge = "a/".repeat(PATH_MAX / 2);
    assert_eq!(fs.resolve(huge.as_bytes(), true), Err(errno::ENAMETOOLONG));
}

#[test]
fn dot_dot_and_relative_paths() {
    let mut fs = RamFs::new(NOW);
    mkdir(&mut fs, "/a").unwrap();
    mkdir(&mut fs, "/a/b").unwrap();
    create(&mut fs, "/a/f", b"1");
    assert_eq!(read_all(&mut fs, "/a/b/../f").unwrap(), b"1");
    assert_eq!(read_all(&mut fs, "a/./b/../../a//f").unwrap(), b"1");
    assert_eq!(read_all(&mut fs, "/../../a/f").unwrap(), b"1");
    assert_eq!(fs.canonicalize(b"//a/./b/..///f").unwrap().1, b"/a/f");
    assert_eq!(fs.canonicalize(b"/a/b/../..").unwrap().1, b"/");
}

#[test]
fn symlinks_resolve_and_loop_detection_works() {
    let mut fs = RamFs::new(NOW);
    mkdir(&mut fs, "/d").unwrap();
    create(&mut fs, "/d/f", b"x");
    symlink(&mut fs, "d/f", "/rel").unwrap();
    symlink(&mut fs, "/d", "/abs").unwrap();
    symlink(&mut fs, "../d/f", "/d/up").unwrap();
    assert_eq!(read_all(&mut fs, "/rel").unwrap(), b"x");
    assert_eq!(read_all(&mut fs, "/abs/f").unwrap(), b"x");
    assert_eq!(read_all(&mut fs, "/abs/up").unwrap(), b"x");
    assert_eq!(fs.canonicalize(b"/abs/up").unwrap().1, b"/d/f");
    // lstat sees the link; O_NOFOLLOW refuses it.
    let link = ram(fs.resolve(b"/rel", false).unwrap());
    assert_eq!(fs.kind(link).unwrap(), Kind::Symlink);
    assert_eq!(fs.readlink(link).unwrap(), b"d/f");
    assert_eq!(fs.stat(link).unwrap().mode & S_IFLNK, S_IFLNK);
    assert_eq!(
        fs.open(b"/rel", O_RDONLY | O_NOFOLLOW, 0, NOW),
        Err(errno::ELOOP)
    );
    // A cycle, and a chain longer than the limit.
    symlink(&mut fs, "/loop2", "/loop1").unwrap();
    symlink(&mut fs, "/loop1", "/loop2").unwrap();
    assert_eq!(fs.resolve(b"/loop1", true), Err(errno::ELOOP));
    assert_eq!(
        fs.kind(ram(fs.resolve(b"/loop1", false).unwrap())),
        Ok(Kind::Symlink)
    );
    let mut prev = String::from("/d/f");
    for i in 0..=MAX_SYMLINKS {
        let name = alloc::format!("/chain{i}");
        symlink(&mut fs, &prev, &name).unwrap();
        prev = name;
    }
    assert_eq!(
        fs.kind(ram(fs.resolve(b"/chain39", true).unwrap())),
        Ok(Kind::File)
    );
    assert_eq!(fs.resolve(b"/chain40", true), Err(errno::ELOOP));
    // A trailing slash follows a link to a directory.
    assert_eq!(
        ram(fs.resolve(b"/abs/", false).unwrap()),
        ram(fs.resolve(b"/d", true).unwrap())
    );
    // Creating through a dangling link creates its target.
    symlink(&mut fs, "/d/new", "/dangling").unwrap();
    let ino = ram(fs
        .open(b"/dangling", O_CREAT | O_WRONLY, 0o600, NOW)
        .unwrap());
    fs.close(ino).unwrap();
    assert_eq!(ram(fs.resolve(b"/d/new", true).unwrap()), ino);
    assert_eq!(
        fs.open(b"/dangling", O_CREAT | O_EXCL | O_WRONLY, 0o600, NOW),
        Err(errno::EEXIST)
    );
}

#[test]
fn unlinked_open_file_stays_readable_until_closed() {
    let mut fs = RamFs::new(NOW);
    create(&mut fs, "/f", b"still here");
    let ino = ram(fs.open(b"/f", O_RDONLY, 0, NOW).unwrap());
    let count = fs.inode_count();
    fs.unlink(ROOT, b"f", NOW).unwrap();
    assert_eq!(fs.resolve(b"/f", true), Err(errno::ENOENT));
    let mut buf = [0; 10];
    assert_eq!(fs.read(ino, 0, &mut buf).unwrap(), 10);
    assert_eq!(&buf, b"still here");
    assert_eq!(fs.stat(ino).unwrap().nlink, 0);
    assert_eq!(fs.inode_count(), count);
    fs.close(ino).unwrap();
    assert_eq!(fs.inode_count(), count - 1);
    assert_eq!(fs.stat(ino), Err(errno::EBADF));
}

#[test]
fn rmdir_unlink_and_their_errors() {
    let mut fs = RamFs::new(NOW);
    mkdir(&mut fs, "/d").unwrap();
    create(&mut fs, "/d/f", b"");
    assert_eq!(fs.rmdir(ROOT, b"d", NOW), Err(errno::ENOTEMPTY));
    assert_eq!(fs.unlink(ROOT, b"d", NOW), Err(errno::EISDIR));
    let d = ram(fs.resolve(b"/d", true).unwrap());
    assert_eq!(fs.rmdir(d, b"f", NOW), Err(errno::ENOTDIR));
    assert_eq!(fs.rmdir(d, b".", NOW), Err(errno::EINVAL));
    assert_eq!(fs.unlink(d, b"missing", NOW), Err(errno::ENOENT));
    fs.unlink(d, b"f", NOW).unwrap();
    fs.rmdir(ROOT, b"d", NOW).unwrap();
    assert_eq!(fs.stat(ROOT).unwrap().nlink, 2);
    assert_eq!(fs.inode_count(), 1);
}

#[test]
fn rename_replaces_and_refuses_as_linux_does() {
    let mut fs = RamFs::new(NOW);
    mkdir(&mut fs, "/a").unwrap();
    mkdir(&mut fs, "/b").unwrap();
    create(&mut fs, "/a/f", b"new");
    create(&mut fs, "/b/g", b"old");
    let (a, b) = (
        ram(fs.resolve(b"/a", true).unwrap()),
        ram(fs.resolve(b"/b", true).unwrap()),
    );
    // Across directories, replacing a file.
    fs.rename(a, b"f", b, b"g", NOW).unwrap();
    assert_eq!(read_all(&mut fs, "/b/g").unwrap(), b"new");
    assert_eq!(fs.resolve(b"/a/f", true), Err(errno::ENOENT));
    // Directories: into a non-empty one, onto a file, below itself.
    mkdir(&mut fs, "/a/sub").unwrap();
    assert_eq!(
        fs.rename(ROOT, b"b", ROOT, b"a", NOW),
        Err(errno::ENOTEMPTY)
    );
    assert_eq!(fs.rename(ROOT, b"a", b, b"g", NOW), Err(errno::ENOTDIR));
    assert_eq!(fs.rename(b, b"g", ROOT, b"a", NOW), Err(errno::EISDIR));
    let sub = ram(fs.resolve(b"/a/sub", true).unwrap());
    assert_eq!(fs.rename(ROOT, b"a", sub, b"x", NOW), Err(errno::EINVAL));
    // A directory replaces an empty one, and its `..` follows.
    mkdir(&mut fs, "/empty").unwrap();
    fs.rename(a, b"sub", ROOT, b"empty", NOW).unwrap();
    assert_eq!(ram(fs.resolve(b"/empty", true).unwrap()), sub);
    assert_eq!(ram(fs.resolve(b"/empty/..", true).unwrap()), ROOT);
    assert_eq!(fs.stat(a).unwrap().nlink, 2);
    assert_eq!(fs.stat(ROOT).unwrap().nlink, 5);
    // Renaming onto another name of the same inode does nothing.
    fs.link(ram(fs.resolve(b"/b/g", true).unwrap()), ROOT, b"h", NOW)
        .unwrap();
    fs.rename(b, b"g", ROOT, b"h", NOW).unwrap();
    assert_eq!(read_all(&mut fs, "/b/g").unwrap(), b"new");
    assert_eq!(
        fs.rename(ROOT, b"missing", ROOT, b"x", NOW),
        Err(errno::ENOENT)
    );
}

#[test]
fn directory_listing_resumes_after_changes() {
    let mut fs = RamFs::new(NOW);
    mkdir(&mut fs, "/d").unwrap();
    for name in ["c", "a", "b"] {
        create(&mut fs, &alloc::format!("/d/{name}"), b"");
    }
    assert_eq!(names(&fs, "/d"), [".", "..", "a", "b", "c"]);
    let d = ram(fs.resolve(b"/d", true).unwrap());
    // Take two at a time; remove "b" and add "aa" in between.
    let mut got = Vec::new();
    let mut take = |fs: &RamFs, cursor: &DirCursor| {
        let mut n = 0;
        fs.read_dir(d, cursor, |e| {
            if n == 2 {
                return false;
            }
            n += 1;
            got.push(String::from_utf8(e.name.to_vec()).unwrap());
            true
        })
        .unwrap()
    };
    let cursor = take(&fs, &DirCursor::Start);
    fs.unlink(d, b"b", NOW).unwrap();
    create(&mut fs, "/d/0", b"");
    create(&mut fs, "/d/bb", b"");
    let cursor = take(&fs, &cursor);
    let cursor = take(&fs, &cursor);
    let end = take(&fs, &cursor);
    // "b" is gone before it was reached; the new names are after the
    // cursor and are seen, the others exactly once.
    assert_eq!(got, [".", "..", "0", "a", "bb", "c"]);
    assert_eq!(end, cursor);
}

#[test]
fn mounts_route_paths_to_the_host() {
    let mut fs = RamFs::new(NOW);
    fs.mount(b"/mnt/data", 3, NOW).unwrap();
    let mount = |path: &str| Location::Mount {
        mount: 3,
        path: path.as_bytes().to_vec(),
    };
    assert_eq!(fs.resolve(b"/mnt/data", true).unwrap(), mount(""));
    assert_eq!(fs.resolve(b"/mnt/data/x/./y", true).unwrap(), mount("x/y"));
    assert_eq!(fs.resolve(b"/mnt/data/x/../y", true).unwrap(), mount("y"));
    // `..` out of the mount's root comes back to the RAM file system.
    assert_eq!(
        fs.resolve(b"/mnt/data/../data/../", true).unwrap(),
        fs.resolve(b"/mnt", true).unwrap()
    );
    symlink(&mut fs, "/mnt/data/z", "/link").unwrap();
    assert_eq!(fs.resolve(b"/link", true).unwrap(), mount("z"));
    assert_eq!(
        fs.resolve_parent(b"/mnt/data/new").unwrap(),
        ParentLocation::Mount {
            mount: 3,
            path: b"new".to_vec()
        }
    );
    assert_eq!(
        fs.resolve_parent(b"/mnt/data/a/b").unwrap(),
        ParentLocation::Mount {
            mount: 3,
            path: b"a/b".to_vec()
        }
    );
    assert_eq!(
        fs.open(b"/mnt/data/f", O_CREAT | O_WRONLY, 0o644, NOW),
        Ok(mount("f"))
    );
    assert_eq!(fs.canonicalize(b"/link").unwrap().1, b"/mnt/data/z");
    let mnt = ram(fs.resolve(b"/mnt", true).unwrap());
    assert_eq!(fs.rmdir(mnt, b"data", NOW), Err(errno::EBUSY));
    assert_eq!(fs.rename(mnt, b"data", ROOT, b"x", NOW), Err(errno::EBUSY));
    assert_eq!(fs.mount(b"/mnt/data", 4, NOW), Err(errno::EBUSY));
}

#[test]
fn large_directories_stay_fast_and_small_files_stay_small() {
    let mut fs = RamFs::new(NOW);
    for d in 0..100 {
        let dir = mkdir(&mut fs, &alloc::format!("/d{d}")).unwrap();
        for f in 0..100 {
            let name = alloc::format!("file{f}");
            let ino = ram(fs
                .open(
                    alloc::format!("/d{d}/{name}").as_bytes(),
                    O_CREAT | O_WRONLY,
                    0o644,
                    NOW,
                )
                .unwrap());
            fs.write(ino, 0, name.as_bytes(), NOW).unwrap();
            fs.close(ino).unwrap();
            let _ = dir;
        }
    }
    assert_eq!(fs.inode_count(), 1 + 100 + 100 * 100);
    assert_eq!(read_all(&mut fs, "/d57/file42").unwrap(), b"file42");
    assert_eq!(names(&fs, "/d3").len(), 102);
}
