//! Host tests of the mount sandbox against real temporary directories.
//!
//! Each test builds `outer/` with a `secret` file and the mounted `mnt/`
//! inside it, so every escape has something real to reach for; the tests
//! check both the errno and that nothing outside `mnt/` changed.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{
    DT_DIR, DT_LNK, DT_REG, DirRecord, O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW,
    O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
};
use zerocopy::FromBytes;

use super::*;

/// A directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "eremite-sandbox-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `outer/secret`, `outer/mnt/` (mount 0, read-write) and the same
/// directory again as mount 1, read-only.
pub(crate) struct Fixture {
    pub(crate) outer: TempDir,
    pub(crate) fs: HostFs,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let outer = TempDir::new();
        let secret = outer.path().join("secret");
        std::fs::write(&secret, b"top secret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(SECRET_MODE)).unwrap();
        std::fs::create_dir(outer.path().join("mnt")).unwrap();
        let spec = |is_read_only| MountSpec {
            host_dir: outer.path().join("mnt"),
            guest_path: "/data".into(),
            is_read_only,
        };
        let mounts = vec![
            Mount::open(&spec(false)).unwrap(),
            Mount::open(&spec(true)).unwrap(),
        ];
        Self {
            outer,
            fs: HostFs::new(mounts),
        }
    }

    pub(crate) fn mnt(&self) -> PathBuf {
        self.outer.path().join("mnt")
    }

    fn secret_is_untouched(&self) {
        let secret = self.outer.path().join("secret");
        assert_eq!(std::fs::read(&secret).unwrap(), b"top secret");
        let mode = std::fs::symlink_metadata(&secret)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, SECRET_MODE);
        let mut outside: Vec<_> = std::fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        outside.sort();
        assert_eq!(outside, ["mnt", "secret"], "nothing created outside");
    }
}

const SECRET_MODE: u32 = 0o604;

fn p(s: &str) -> GuestPath {
    GuestPath::parse(s.as_bytes().to_vec()).unwrap()
}

fn flags(raw: u32) -> OpenFlags {
    OpenFlags::parse(raw).unwrap()
}

const RW: u32 = 0;
const RO: u32 = 1;

fn open(fx: &mut Fixture, mount: u32, path: &str, raw: u32) -> Result<u64, Errno> {
    fx.fs
        .open(mount, &p(path), flags(raw), 0o644)
        .map(|(h, _)| h)
}

fn create(fx: &mut Fixture, path: &str, data: &[u8]) {
    let h = open(fx, RW, path, O_CREAT | O_WRONLY | O_TRUNC).unwrap();
    assert_eq!(fx.fs.write(RW, h, 0, data), Ok(data.len()));
    fx.fs.close(RW, h).unwrap();
}

fn read_all(fx: &mut Fixture, mount: u32, path: &str) -> Result<Vec<u8>, Errno> {
    let h = open(fx, mount, path, O_RDONLY)?;
    let mut buf = vec![0; 4096];
    let n = fx.fs.read(mount, h, 0, &mut buf)?;
    fx.fs.close(mount, h)?;
    buf.truncate(n);
    Ok(buf)
}

/// Parse a `ReadDir` reply into (name, kind, next).
fn records(mut bytes: &[u8]) -> Vec<(String, u8, u64)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (header, rest) = DirRecord::read_from_prefix(bytes).unwrap();
        let name = &rest[..usize::from(header.name_len)];
        out.push((
            String::from_utf8(name.to_vec()).unwrap(),
            header.kind,
            header.next,
        ));
        bytes = &bytes[DirRecord::size(name.len())..];
    }
    out
}

#[test]
fn files_are_created_written_read_and_stated() {
    let mut fx = Fixture::new();
    let h = open(&mut fx, RW, "f", O_CREAT | O_RDWR).unwrap();
    assert_eq!(fx.fs.write(RW, h, 0, b"hello world"), Ok(11));
    assert_eq!(fx.fs.write(RW, h, 6, b"WORLD"), Ok(5));
    let mut buf = [0; 64];
    assert_eq!(fx.fs.read(RW, h, 0, &mut buf), Ok(11));
    assert_eq!(&buf[..11], b"hello WORLD");
    assert_eq!(fx.fs.read(RW, h, 11, &mut buf), Ok(0), "end of file");
    let st = fx.fs.fstat(RW, h).unwrap();
    assert_eq!(st.size, 11);
    assert_eq!(st.mode & S_IFMT, S_IFREG);
    assert_eq!(st.nlink, 1);
    let host = std::fs::metadata(fx.mnt().join("f")).unwrap();
    assert_eq!(st.ino, host.ino());
    assert_eq!(st.mode, host.mode());
    assert_eq!(st.mtime_ns / 1_000_000_000, host.mtime());
    assert_eq!(fx.fs.stat(RW, &p("f"), Links::Follow), Ok(st));
    fx.fs.close(RW, h).unwrap();
    assert_eq!(std::fs::read(fx.mnt().join("f")).unwrap(), b"hello WORLD");
    // The mount's own directory, by the empty path.
    let root = fx.fs.stat(RW, &p(""), Links::Follow).unwrap();
    assert_eq!(root.mode & S_IFMT, S_IFDIR);
    assert_eq!(root.ino, std::fs::metadata(fx.mnt()).unwrap().ino());
}

#[test]
fn open_flags_behave_as_on_linux() {
    let mut fx = Fixture::new();
    create(&mut fx, "f", b"abc");
    std::fs::create_dir(fx.mnt().join("d")).unwrap();
    symlink("f", fx.mnt().join("lf")).unwrap();
    assert_eq!(
        open(&mut fx, RW, "f", O_CREAT | O_EXCL | O_WRONLY),
        Err(errno::EEXIST)
    );
    assert_eq!(open(&mut fx, RW, "f", O_DIRECTORY), Err(errno::ENOTDIR));
    assert_eq!(open(&mut fx, RW, "d", O_WRONLY), Err(errno::EISDIR));
    assert_eq!(open(&mut fx, RW, "d", O_RDWR), Err(errno::EISDIR));
    assert!(open(&mut fx, RW, "d", O_RDONLY | O_DIRECTORY).is_ok());
    assert_eq!(open(&mut fx, RW, "lf", O_NOFOLLOW), Err(errno::ELOOP));
    assert_eq!(read_all(&mut fx, RW, "lf"), Ok(b"abc".to_vec()));
    assert_eq!(open(&mut fx, RW, "missing", O_RDONLY), Err(errno::ENOENT));
    // O_APPEND writes go to the end whatever the offset says.
    let h = open(&mut fx, RW, "f", O_WRONLY | O_APPEND).unwrap();
    assert_eq!(fx.fs.write(RW, h, 0, b"de"), Ok(2));
    assert_eq!(fx.fs.write(RW, h, 1, b"f"), Ok(1));
    assert_eq!(read_all(&mut fx, RW, "f"), Ok(b"abcdef".to_vec()));
    // O_TRUNC empties it; writing to a read-only handle is the host's EBADF.
    let h = open(&mut fx, RW, "f", O_RDONLY | O_TRUNC).unwrap();
    assert_eq!(fx.fs.write(RW, h, 0, b"x"), Err(errno::EBADF));
    assert_eq!(read_all(&mut fx, RW, "f"), Ok(Vec::new()));
    let h = fx
        .fs
        .open(RW, &p("suid"), flags(O_CREAT | O_WRONLY), 0o4755)
        .unwrap()
        .0;
    assert_eq!(
        fx.fs.fstat(RW, h).unwrap().mode & 0o6000,
        0,
        "no set-id bits"
    );
    assert_eq!(OpenFlags::parse(3), None, "both write bits");
    assert_eq!(OpenFlags::parse(0o10000000), None, "an unknown bit");
}

#[test]
fn directories_are_listed_in_whole_records_by_cookie() {
    let mut fx = Fixture::new();
    create(&mut fx, "file", b"");
    std::fs::create_dir(fx.mnt().join("dir")).unwrap();
    symlink("file", fx.mnt().join("link")).unwrap();
    let long = "n".repeat(200);
    create(&mut fx, &long, b"");
    let h = open(&mut fx, RW, "", O_RDONLY | O_DIRECTORY).unwrap();
    let all = records(&fx.fs.read_dir(RW, h, 0, 1 << 20).unwrap());
    let mut names: Vec<_> = all.iter().map(|(n, k, _)| (n.clone(), *k)).collect();
    names.sort();
    let mut want = vec![
        ("dir".to_owned(), DT_DIR),
        ("file".to_owned(), DT_REG),
        ("link".to_owned(), DT_LNK),
        (long.clone(), DT_REG),
    ];
    want.sort();
    assert_eq!(names, want, "no . or ..");
    // The cookies are the host's positions: the last one is the end.
    let end = all.last().unwrap().2;
    assert_eq!(fx.fs.read_dir(RW, h, end, 1 << 20), Ok(Vec::new()), "end");
    assert_eq!(fx.fs.read_dir(RW, h, u64::MAX, 1 << 20), Ok(Vec::new()));

    // One record at a time, following the cookies, gives the same list.
    let mut cookie = 0;
    let mut one_by_one = Vec::new();
    loop {
        let bytes = fx.fs.read_dir(RW, h, cookie, 24 + 208).unwrap();
        if bytes.is_empty() {
            break;
        }
        let got = records(&bytes);
        assert!(bytes.len().is_multiple_of(8) && bytes.len() <= 232);
        cookie = got.last().unwrap().2;
        one_by_one.extend(got);
    }
    assert_eq!(one_by_one, all);
    // A buffer too small for the next record.
    assert_eq!(fx.fs.read_dir(RW, h, 0, 16), Err(errno::EINVAL));

    // Nothing is kept between calls: a new entry shows from the start.
    create(&mut fx, "later", b"");
    assert_eq!(
        records(&fx.fs.read_dir(RW, h, 0, 1 << 20).unwrap()).len(),
        5
    );

    let f = open(&mut fx, RW, "file", O_RDONLY).unwrap();
    assert_eq!(fx.fs.read_dir(RW, f, 0, 4096), Err(errno::ENOTDIR));
    fx.fs.close(RW, h).unwrap();
    assert_eq!(fx.fs.read_dir(RW, h, 0, 4096), Err(errno::EBADF));
}

#[test]
fn a_large_directory_is_listed_in_pieces_without_reading_it_whole() {
    let mut fx = Fixture::new();
    // 20,000 names of 200 bytes: 4 MB of names, far beyond one chunk.
    let names: Vec<String> = (0..20_000).map(|i| format!("{i:0>200}")).collect();
    for name in &names {
        std::fs::File::create(fx.mnt().join(name)).unwrap();
    }
    let h = open(&mut fx, RW, "", O_RDONLY | O_DIRECTORY).unwrap();
    let mut cookie = 0;
    let mut listed = Vec::new();
    let mut calls = 0;
    loop {
        let bytes = fx.fs.read_dir(RW, h, cookie, 64 << 10).unwrap();
        if bytes.is_empty() {
            break;
        }
        assert!(bytes.len() <= 64 << 10);
        let got = records(&bytes);
        cookie = got.last().unwrap().2;
        listed.extend(got.into_iter().map(|(name, _, _)| name));
        calls += 1;
    }
    listed.sort();
    assert_eq!(listed, names, "every name once");
    assert!(calls > 60, "{calls} calls for 4 MB of 64 KiB answers");
}

#[test]
fn sync_reaches_files_and_directories_on_the_host() {
    let mut fx = Fixture::new();
    let f = open(&mut fx, RW, "f", O_CREAT | O_WRONLY).unwrap();
    fx.fs.write(RW, f, 0, b"durable").unwrap();
    assert_eq!(fx.fs.sync(RW, f, false), Ok(()));
    assert_eq!(fx.fs.sync(RW, f, true), Ok(()));
    let d = open(&mut fx, RW, "", O_RDONLY | O_DIRECTORY).unwrap();
    assert_eq!(fx.fs.sync(RW, d, false), Ok(()));
    // A read-only mount's file may be synced (Linux allows it too).
    let r = open(&mut fx, RO, "f", O_RDONLY).unwrap();
    assert_eq!(fx.fs.sync(RO, r, true), Ok(()));
    assert_eq!(
        fx.fs.sync(RW, r, false),
        Err(errno::EBADF),
        "another mount's handle"
    );
    fx.fs.close(RW, f).unwrap();
    assert_eq!(fx.fs.sync(RW, f, false), Err(errno::EBADF), "closed");
}

#[test]
fn a_fifo_is_read_and_written_in_order_not_at_an_offset() {
    let mut fx = Fixture::new();
    let status = std::process::Command::new("mkfifo")
        .arg(fx.mnt().join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    // Read-write, so that opening it does not wait for another end.
    let h = open(&mut fx, RW, "fifo", O_RDWR).unwrap();
    assert_eq!(fx.fs.write(RW, h, 4096, b"first "), Ok(6));
    assert_eq!(fx.fs.write(RW, h, 0, b"second"), Ok(6));
    let mut buf = [0; 64];
    assert_eq!(fx.fs.read(RW, h, 12345, &mut buf), Ok(12));
    assert_eq!(&buf[..12], b"first second");
    fx.fs.close(RW, h).unwrap();
}

#[test]
fn names_are_made_changed_and_removed() {
    let mut fx = Fixture::new();
    let fs = &mut fx.fs;
    fs.mkdir(RW, &p("d"), 0o750).unwrap();
    fs.mkdir(RW, &p("d/e/"), 0o700).unwrap();
    assert_eq!(fs.mkdir(RW, &p("d"), 0o700), Err(errno::EEXIST));
    assert_eq!(fs.mkdir(RW, &p("nope/x"), 0o700), Err(errno::ENOENT));
    let st = fs.stat(RW, &p("d"), Links::Follow).unwrap();
    assert_eq!(st.mode & S_IFMT, S_IFDIR);
    assert_eq!(st.mode & 0o7777 & !0o750, 0, "no more than asked for");
    assert_eq!(fs.rmdir(RW, &p("d")), Err(errno::ENOTEMPTY));
    fs.rmdir(RW, &p("d/e/")).unwrap();

    let h = fs
        .open(RW, &p("d/f"), flags(O_CREAT | O_WRONLY), 0o600)
        .unwrap()
        .0;
    fs.write(RW, h, 0, b"0123456789").unwrap();
    fs.close(RW, h).unwrap();
    fs.truncate(RW, &p("d/f"), 4).unwrap();
    assert_eq!(fs.stat(RW, &p("d/f"), Links::Follow).unwrap().size, 4);
    let h = fs.open(RW, &p("d/f"), flags(O_RDWR), 0).unwrap().0;
    fs.ftruncate(RW, h, 2).unwrap();
    assert_eq!(fs.fstat(RW, h).unwrap().size, 2);
    fs.close(RW, h).unwrap();

    fs.chmod(RW, &p("d/f"), 0o640).unwrap();
    assert_eq!(
        fs.stat(RW, &p("d/f"), Links::Follow).unwrap().mode & 0o7777,
        0o640
    );
    fs.chmod(RW, &p("d/f"), 0o6755).unwrap();
    let mode = fs.stat(RW, &p("d/f"), Links::Follow).unwrap().mode;
    assert_eq!(mode & 0o7777, 0o755, "no set-id bits from the guest");
    fs.chmod(RW, &p("d"), 0o1711).unwrap();
    assert_eq!(
        fs.stat(RW, &p("d"), Links::Follow).unwrap().mode & 0o7777,
        0o1711
    );
    fs.chmod(RW, &p("d"), 0o711).unwrap();
    assert_eq!(
        fs.stat(RW, &p("d"), Links::Follow).unwrap().mode & 0o7777,
        0o711
    );

    fs.rename(RW, &p("d/f"), &p("g")).unwrap();
    assert_eq!(fs.stat(RW, &p("d/f"), Links::Follow), Err(errno::ENOENT));
    fs.link(RW, &p("g"), &p("d/h")).unwrap();
    assert_eq!(fs.stat(RW, &p("g"), Links::Follow).unwrap().nlink, 2);
    assert_eq!(fs.link(RW, &p("g"), &p("d/h")), Err(errno::EEXIST));
    assert_eq!(fs.link(RW, &p("d"), &p("d2")), Err(errno::EPERM));

    fs.symlink(RW, &p("s"), &LinkTarget::parse(b"d/h".to_vec()).unwrap())
        .unwrap();
    assert_eq!(fs.readlink(RW, &p("s")), Ok(b"d/h".to_vec()));
    assert_eq!(fs.readlink(RW, &p("g")), Err(errno::EINVAL));
    let lst = fs.stat(RW, &p("s"), Links::NoFollow).unwrap();
    assert_eq!((lst.mode & S_IFMT, lst.size), (S_IFLNK, 3));
    assert_eq!(
        fs.stat(RW, &p("s"), Links::Follow).unwrap().mode & S_IFMT,
        S_IFREG
    );
    // chmod follows the link to the file.
    fs.chmod(RW, &p("s"), 0o604).unwrap();
    assert_eq!(
        fs.stat(RW, &p("g"), Links::Follow).unwrap().mode & 0o7777,
        0o604
    );

    assert_eq!(fs.unlink(RW, &p("d")), Err(errno::EISDIR));
    assert_eq!(fs.rmdir(RW, &p("g")), Err(errno::ENOTDIR));
    assert_eq!(fs.unlink(RW, &p("g/")), Err(errno::ENOTDIR));
    fs.unlink(RW, &p("s")).unwrap();
    fs.unlink(RW, &p("g")).unwrap();
    fs.unlink(RW, &p("d/h")).unwrap();
    fs.rmdir(RW, &p("d")).unwrap();
    assert_eq!(std::fs::read_dir(fx.mnt()).unwrap().count(), 0);
}

#[test]
fn dot_names_and_the_mount_itself_are_refused() {
    let mut fx = Fixture::new();
    std::fs::create_dir(fx.mnt().join("a")).unwrap();
    let fs = &mut fx.fs;
    assert_eq!(fs.mkdir(RW, &p(""), 0o700), Err(errno::EEXIST));
    assert_eq!(fs.mkdir(RW, &p("a/."), 0o700), Err(errno::EEXIST));
    assert_eq!(fs.rmdir(RW, &p("")), Err(errno::EBUSY));
    assert_eq!(fs.rmdir(RW, &p("a/.")), Err(errno::EINVAL));
    assert_eq!(fs.rmdir(RW, &p("a/..")), Err(errno::ENOTEMPTY));
    assert_eq!(fs.unlink(RW, &p(".")), Err(errno::EISDIR));
    assert_eq!(fs.rename(RW, &p(""), &p("b")), Err(errno::EBUSY));
    assert_eq!(fs.rename(RW, &p("a"), &p("..")), Err(errno::EBUSY));
    let target = LinkTarget::parse(b"x".to_vec()).unwrap();
    assert_eq!(fs.symlink(RW, &p("a/.."), &target), Err(errno::EEXIST));
    assert_eq!(fs.symlink(RW, &p("new/"), &target), Err(errno::ENOENT));
    assert_eq!(fs.link(RW, &p("."), &p("b")), Err(errno::EPERM));
    assert!(fx.mnt().join("a").is_dir());
}

#[test]
fn nothing_outside_the_mount_is_reached() {
    let mut fx = Fixture::new();
    let outer = fx.outer.path().to_owned();
    std::fs::create_dir(fx.mnt().join("a")).unwrap();
    create(&mut fx, "inside", b"in");
    symlink("/etc", fx.mnt().join("etc")).unwrap();
    symlink("..", fx.mnt().join("up")).unwrap();
    symlink(outer.join("secret"), fx.mnt().join("abs")).unwrap();
    symlink("c2", fx.mnt().join("c1")).unwrap();
    symlink("a/../../secret", fx.mnt().join("c2")).unwrap();
    symlink("../created", fx.mnt().join("dangling")).unwrap();
    symlink("/proc/self/root/etc/passwd", fx.mnt().join("magic")).unwrap();

    let xdev_or_loop = |r: Result<u64, Errno>| {
        assert!(
            matches!(r, Err(e) if e == errno::EXDEV || e == errno::ELOOP),
            "{r:?}"
        );
    };
    for path in [
        "../secret",
        "a/../../secret",
        "./../secret",
        "etc/passwd",
        "up/secret",
        "abs",
        "c1",
        "magic",
        "up",
    ] {
        for raw in [O_RDONLY, O_RDWR, O_CREAT | O_WRONLY | O_TRUNC] {
            xdev_or_loop(open(&mut fx, RW, path, raw));
        }
        let fs = &mut fx.fs;
        xdev_or_loop(fs.stat(RW, &p(path), Links::Follow).map(|_| 0));
        xdev_or_loop(fs.truncate(RW, &p(path), 0).map(|_| 0));
        xdev_or_loop(fs.chmod(RW, &p(path), 0o777).map(|_| 0));
    }
    xdev_or_loop(open(&mut fx, RW, "dangling", O_CREAT | O_WRONLY));
    assert_eq!(
        GuestPath::parse(b"/etc/passwd".to_vec()),
        Err(PathError::Absolute)
    );

    let fs = &mut fx.fs;
    let xdev = Some(errno::EXDEV);
    // Operations on a last component: the parent is resolved beneath.
    assert_eq!(fs.unlink(RW, &p("../secret")).err(), xdev);
    assert_eq!(fs.unlink(RW, &p("up/secret")).err(), xdev);
    assert_eq!(fs.rmdir(RW, &p("up/mnt")).err(), xdev);
    assert_eq!(fs.mkdir(RW, &p("../x"), 0o777).err(), xdev);
    assert_eq!(fs.mkdir(RW, &p("up/x"), 0o777).err(), xdev);
    assert_eq!(fs.rename(RW, &p("inside"), &p("../stolen")).err(), xdev);
    assert_eq!(fs.rename(RW, &p("inside"), &p("up/stolen")).err(), xdev);
    assert_eq!(fs.rename(RW, &p("../secret"), &p("mine")).err(), xdev);
    assert_eq!(fs.rename(RW, &p("up/secret"), &p("mine")).err(), xdev);
    assert_eq!(fs.link(RW, &p("../secret"), &p("mine")).err(), xdev);
    assert_eq!(fs.link(RW, &p("inside"), &p("up/stolen")).err(), xdev);
    let target = LinkTarget::parse(b"x".to_vec()).unwrap();
    assert_eq!(fs.symlink(RW, &p("up/planted"), &target).err(), xdev);
    assert_eq!(fs.readlink(RW, &p("up/abs")).err(), xdev);
    // A trailing slash would make Linux follow the link: refused here.
    assert_eq!(fs.unlink(RW, &p("up/")), Err(errno::ENOTDIR));
    assert_eq!(fs.rmdir(RW, &p("up/")), Err(errno::ENOTDIR));
    assert_eq!(fs.rename(RW, &p("up/"), &p("x")), Err(errno::ENOTDIR));
    assert_eq!(fs.link(RW, &p("up/"), &p("x")), Err(errno::ENOTDIR));
    let lst = fs.stat(RW, &p("up/"), Links::NoFollow);
    assert!(lst.is_err(), "{lst:?}");

    // The links themselves are inside and may be looked at and moved.
    let lst = fs.stat(RW, &p("etc"), Links::NoFollow).unwrap();
    assert_eq!(lst.mode & S_IFMT, S_IFLNK);
    assert_eq!(fs.readlink(RW, &p("etc")), Ok(b"/etc".to_vec()));
    fs.rename(RW, &p("etc"), &p("a/etc")).unwrap();
    fs.link(RW, &p("a/etc"), &p("etc2")).unwrap();
    assert_eq!(
        fs.stat(RW, &p("etc2"), Links::NoFollow).unwrap().mode & S_IFMT,
        S_IFLNK
    );
    assert_eq!(fs.stat(RW, &p("etc2"), Links::Follow).err(), xdev);
    // Creating a link that points out is allowed; following it is not.
    let out =
        LinkTarget::parse(outer.join("secret").into_os_string().into_encoded_bytes()).unwrap();
    fs.symlink(RW, &p("planted"), &out).unwrap();
    xdev_or_loop(open(&mut fx, RW, "planted", O_RDONLY));
    fx.fs.unlink(RW, &p("planted")).unwrap();
    assert!(
        outer.join("secret").exists(),
        "unlink removed the link only"
    );
    fx.secret_is_untouched();
}

#[test]
fn read_only_mounts_refuse_every_change() {
    let mut fx = Fixture::new();
    create(&mut fx, "f", b"data");
    std::fs::create_dir(fx.mnt().join("d")).unwrap();
    let erofs = Some(errno::EROFS);
    for raw in [
        O_WRONLY,
        O_RDWR,
        O_CREAT,
        O_RDONLY | O_TRUNC,
        O_CREAT | O_EXCL,
    ] {
        assert_eq!(open(&mut fx, RO, "f", raw).err(), erofs, "flags {raw:#o}");
        assert_eq!(open(&mut fx, RO, "new", raw).err(), erofs, "flags {raw:#o}");
    }
    let fs = &mut fx.fs;
    let target = LinkTarget::parse(b"f".to_vec()).unwrap();
    assert_eq!(fs.mkdir(RO, &p("new"), 0o777).err(), erofs);
    assert_eq!(fs.unlink(RO, &p("f")).err(), erofs);
    assert_eq!(fs.rmdir(RO, &p("d")).err(), erofs);
    assert_eq!(fs.rename(RO, &p("f"), &p("g")).err(), erofs);
    assert_eq!(fs.symlink(RO, &p("s"), &target).err(), erofs);
    assert_eq!(fs.truncate(RO, &p("f"), 0).err(), erofs);
    assert_eq!(fs.link(RO, &p("f"), &p("g")).err(), erofs);
    assert_eq!(fs.chmod(RO, &p("f"), 0o777).err(), erofs);
    let h = fs.open(RO, &p("f"), flags(O_RDONLY), 0).unwrap().0;
    assert_eq!(fs.write(RO, h, 0, b"x").err(), erofs);
    assert_eq!(fs.ftruncate(RO, h, 0).err(), erofs);
    // Reading is fine.
    let mut buf = [0; 8];
    assert_eq!(fs.read(RO, h, 0, &mut buf), Ok(4));
    assert!(fs.stat(RO, &p("d"), Links::Follow).is_ok());
    let d = fs
        .open(RO, &p("d"), flags(O_RDONLY | O_DIRECTORY), 0)
        .unwrap()
        .0;
    assert_eq!(fs.read_dir(RO, d, 0, 4096), Ok(Vec::new()));
    assert_eq!(read_all(&mut fx, RW, "f"), Ok(b"data".to_vec()));
    let names: Vec<_> = std::fs::read_dir(fx.mnt()).unwrap().collect();
    assert_eq!(names.len(), 2, "nothing created");
}

#[test]
fn handles_belong_to_their_mount_and_are_never_reused() {
    let mut fx = Fixture::new();
    create(&mut fx, "f", b"x");
    let a = open(&mut fx, RW, "f", O_RDONLY).unwrap();
    let fs = &mut fx.fs;
    let mut buf = [0; 1];
    assert_eq!(
        fs.read(RO, a, 0, &mut buf),
        Err(errno::EBADF),
        "other mount"
    );
    assert_eq!(fs.close(RO, a), Err(errno::EBADF));
    assert_eq!(fs.read(RW, a + 100, 0, &mut buf), Err(errno::EBADF));
    assert_eq!(fs.read(RW, 0, 0, &mut buf), Err(errno::EBADF));
    assert_eq!(fs.read(7, a, 0, &mut buf), Err(errno::EINVAL), "no mount 7");
    assert_eq!(fs.stat(u32::MAX, &p(""), Links::Follow), Err(errno::EINVAL));
    fs.close(RW, a).unwrap();
    assert_eq!(fs.close(RW, a), Err(errno::EBADF));
    assert_eq!(fs.fstat(RW, a), Err(errno::EBADF));
    let b = fs.open(RW, &p("f"), flags(O_RDONLY), 0).unwrap().0;
    assert_ne!(a, b);
    assert_eq!(fs.read(RW, a, 0, &mut buf), Err(errno::EBADF));
}

#[test]
fn open_handles_are_bounded() {
    let mut fx = Fixture::new();
    fx.fs.handle_limit = 3;
    create(&mut fx, "f", b"");
    let handles: Vec<_> = (0..3)
        .map(|_| open(&mut fx, RW, "f", O_RDONLY).unwrap())
        .collect();
    assert_eq!(open(&mut fx, RW, "f", O_RDONLY), Err(errno::EMFILE));
    fx.fs.close(RW, handles[0]).unwrap();
    assert!(open(&mut fx, RW, "f", O_RDONLY).is_ok());
    assert_eq!(MAX_OPEN_HANDLES, HostFs::new(Vec::new()).handle_limit);
}

#[test]
fn a_missing_host_directory_cannot_be_opened() {
    let spec = MountSpec {
        host_dir: "/nonexistent-eremite-mount".into(),
        guest_path: "/data".into(),
        is_read_only: false,
    };
    assert!(Mount::open(&spec).is_err());
}

#[test]
fn run_refuses_bad_mounts_before_building_the_vm() {
    let dir = TempDir::new();
    let mut console =
        crate::Console::new(Box::new(std::io::sink()), Box::new(std::io::sink()), false);
    let spec = |host: &Path, guest: &str| MountSpec {
        host_dir: host.to_owned(),
        guest_path: guest.into(),
        is_read_only: false,
    };
    let mut config = crate::VmConfig::new(dir.path().join("no-image"));
    config.mounts = vec![spec(&dir.path().join("gone"), "/data")];
    let err = crate::run(&config, &mut console).unwrap_err();
    assert!(matches!(err, crate::Error::Mount(_)), "{err}");
    assert!(err.to_string().starts_with("cannot mount "), "{err}");
    assert_eq!(err.exit_code(), 125);
    config.mounts = vec![spec(dir.path(), "/data"), spec(dir.path(), "/data/sub")];
    let err = crate::run(&config, &mut console).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mount at /data/sub lies inside the mount at /data"
    );
}
