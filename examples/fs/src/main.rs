//! File systems from a std program: `fs selftest` checks the RAM file
//! system's POSIX behaviour, `fs tree DIR` prints a tree with contents and
//! modes (initial ramdisk tests), `fs mount DIR` works inside a host
//! mount, `fs scale FILES DIRS` creates and lists many files.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Instant, SystemTime};

use eremite as _;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("selftest") => selftest(),
        Some("tree") => tree(Path::new(args.get(2).map_or("/", String::as_str))),
        Some("mount") => mount(Path::new(&args[2]), args.get(3).map(Path::new)),
        Some("scale") => scale(args[2].parse().unwrap(), args[3].parse().unwrap()),
        Some("fill") => fill(),
        Some("concurrent") => concurrent(args[2].parse().unwrap()),
        Some("race") => race(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("sync") => sync(Path::new(&args[2])),
        _ => {
            eprintln!(
                "usage: fs selftest | tree DIR | mount DIR [RO_DIR] | scale FILES DIRS | fill"
            );
            std::process::exit(2);
        }
    }
}

/// Run one named check; a failed assertion panics with its name.
fn check(name: &str, f: impl FnOnce()) {
    f();
    println!("ok {name}");
}

fn kind<T: std::fmt::Debug>(r: std::io::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .unwrap_or(-1)
}

fn selftest() {
    check("write and read back", || {
        fs::write("/hello.txt", b"hello, file").unwrap();
        assert_eq!(fs::read_to_string("/hello.txt").unwrap(), "hello, file");
        assert_eq!(fs::metadata("/hello.txt").unwrap().len(), 11);
    });
    check("relative paths start at /", || {
        assert_eq!(fs::read("hello.txt").unwrap(), b"hello, file");
    });
    check("append", || {
        let mut f = OpenOptions::new().append(true).open("/hello.txt").unwrap();
        f.write_all(b"!").unwrap();
        drop(f);
        assert_eq!(fs::read("/hello.txt").unwrap(), b"hello, file!");
    });
    check("create_new refuses an existing file", || {
        let r = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open("/hello.txt");
        assert_eq!(kind(r), ErrorKind::AlreadyExists);
    });
    check("truncate on open", || {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open("/hello.txt")
            .unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
    });
    check("seek past the end leaves a hole of zeros", || {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open("/sparse")
            .unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"end").unwrap();
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), (1 << 20) + 3);
        f.seek(SeekFrom::Start(4096)).unwrap();
        let mut buf = [1u8; 64];
        f.read_exact(&mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(f.seek(SeekFrom::Current(-10)).unwrap(), 4096 + 64 - 10);
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), (1 << 20) + 3);
        assert!(meta.is_file());
    });
    check("large file round trip", || {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        fs::write("/big", &data).unwrap();
        assert_eq!(fs::read("/big").unwrap(), data);
        fs::remove_file("/big").unwrap();
    });
    check("metadata: type, mode, times", || {
        let before = SystemTime::now();
        fs::write("/t", b"x").unwrap();
        let meta = fs::metadata("/t").unwrap();
        let modified = meta.modified().unwrap();
        assert!(modified >= before - std::time::Duration::from_secs(1));
        assert!(modified <= SystemTime::now());
        assert!(!meta.permissions().readonly());
        assert!(fs::metadata("/").unwrap().is_dir());
    });
    check("directories: create, list, remove", || {
        fs::create_dir_all("/d/e/f").unwrap();
        for name in ["b", "a", "c"] {
            fs::write(format!("/d/{name}"), name).unwrap();
        }
        let mut names: Vec<String> = fs::read_dir("/d")
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c", "e"]);
        let e = fs::read_dir("/d")
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "e")
            .unwrap();
        assert!(e.file_type().unwrap().is_dir());
        assert_eq!(errno(fs::remove_dir("/d/e")), 39, "ENOTEMPTY");
        fs::remove_dir("/d/e/f").unwrap();
        fs::remove_dir("/d/e").unwrap();
        assert_eq!(kind(fs::create_dir("/d")), ErrorKind::AlreadyExists);
        assert_eq!(kind(fs::create_dir("/nope/x")), ErrorKind::NotFound);
    });
    check("errors have the right kinds", || {
        assert_eq!(kind(File::open("/missing")), ErrorKind::NotFound);
        // std for hermit maps only a few errnos to kinds; the numbers are
        // Linux's.
        assert_eq!(errno(File::open("/d/a/x")), 20, "ENOTDIR");
        assert_eq!(errno(fs::remove_file("/d")), 21, "EISDIR");
        assert_eq!(errno(fs::read_dir("/d/a")), 20, "ENOTDIR");
        assert_eq!(
            errno(OpenOptions::new().write(true).open("/d")),
            21,
            "EISDIR"
        );
        let long = format!("/{}", "n".repeat(300));
        assert_eq!(errno(File::create(&long)), 36, "ENAMETOOLONG");
    });
    check("an unlinked open file stays readable", || {
        fs::write("/gone", b"still here").unwrap();
        let mut f = File::open("/gone").unwrap();
        fs::remove_file("/gone").unwrap();
        assert_eq!(kind(fs::metadata("/gone")), ErrorKind::NotFound);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "still here");
    });
    check(
        "rename replaces atomically and refuses what Linux refuses",
        || {
            fs::write("/r1", b"one").unwrap();
            fs::write("/r2", b"two").unwrap();
            eremite::fs::rename("/r1", "/r2").unwrap();
            assert_eq!(fs::read("/r2").unwrap(), b"one");
            assert_eq!(kind(fs::metadata("/r1")), ErrorKind::NotFound);
            eremite::fs::rename("/r2", "/d/r3").unwrap();
            assert_eq!(fs::read("/d/r3").unwrap(), b"one");
            fs::create_dir("/full").unwrap();
            fs::write("/full/x", b"").unwrap();
            fs::create_dir("/empty").unwrap();
            assert_eq!(
                errno(eremite::fs::rename("/empty", "/full")),
                39,
                "ENOTEMPTY"
            );
            eremite::fs::rename("/full", "/empty").unwrap();
            assert!(fs::metadata("/empty/x").is_ok());
            assert_eq!(
                errno(eremite::fs::rename("/empty", "/empty/x/y")),
                20,
                "ENOTDIR"
            );
            fs::create_dir("/empty/sub").unwrap();
            assert_eq!(
                errno(eremite::fs::rename("/empty", "/empty/sub/z")),
                22,
                "EINVAL"
            );
        },
    );
    check("symlinks, read_link, canonicalize, loops", || {
        eremite::fs::symlink("/d/a", "/link").unwrap();
        eremite::fs::symlink("d", "/dirlink").unwrap();
        assert_eq!(fs::read("/link").unwrap(), b"a");
        assert_eq!(fs::read("/dirlink/b").unwrap(), b"b");
        assert_eq!(eremite::fs::read_link("/link").unwrap(), Path::new("/d/a"));
        assert!(
            fs::symlink_metadata("/link")
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(fs::metadata("/link").unwrap().is_file());
        assert_eq!(
            eremite::fs::canonicalize("/dirlink/../dirlink/./b").unwrap(),
            Path::new("/d/b")
        );
        eremite::fs::symlink("/loop-b", "/loop-a").unwrap();
        eremite::fs::symlink("/loop-a", "/loop-b").unwrap();
        assert_eq!(errno(File::open("/loop-a")), 40, "ELOOP");
        assert_eq!(
            kind(eremite::fs::read_link("/d/a")),
            ErrorKind::InvalidInput
        );
    });
    check("truncate, set_len, hard_link, set_mode, sync_all", || {
        fs::write("/tr", b"0123456789").unwrap();
        eremite::fs::truncate("/tr", 4).unwrap();
        assert_eq!(fs::read("/tr").unwrap(), b"0123");
        let f = OpenOptions::new().write(true).open("/tr").unwrap();
        eremite::fs::set_len(&f, 6).unwrap();
        eremite::fs::sync_all(&f).unwrap();
        assert_eq!(fs::read("/tr").unwrap(), b"0123\0\0");
        eremite::fs::hard_link("/tr", "/tr2").unwrap();
        fs::remove_file("/tr").unwrap();
        assert_eq!(fs::read("/tr2").unwrap(), b"0123\0\0");
        eremite::fs::set_mode("/tr2", 0o444).unwrap();
        assert!(fs::metadata("/tr2").unwrap().permissions().readonly());
    });
    check("remove_dir_all does not follow links", || {
        fs::create_dir_all("/tree/a/b").unwrap();
        fs::write("/tree/a/b/f", b"").unwrap();
        fs::write("/keep", b"kept").unwrap();
        eremite::fs::symlink("/keep", "/tree/a/l").unwrap();
        eremite::fs::remove_dir_all("/tree").unwrap();
        assert_eq!(kind(fs::metadata("/tree")), ErrorKind::NotFound);
        assert_eq!(fs::read("/keep").unwrap(), b"kept");
    });
    println!("selftest passed");
}

/// Print every entry below `dir`, sorted: path, type, mode, and the
/// contents of small files.
fn tree(dir: &Path) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = eremite::fs::mode(&path).unwrap() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = eremite::fs::read_link(&path).unwrap();
            println!("{} link {:o} -> {}", path.display(), mode, target.display());
        } else if meta.is_dir() {
            println!("{} dir {:o}", path.display(), mode);
            tree(&path);
        } else {
            let contents = fs::read(&path).unwrap();
            println!(
                "{} file {:o} {:?}",
                path.display(),
                mode,
                String::from_utf8_lossy(&contents)
            );
        }
    }
}

/// Work inside a host mount (and a read-only one): what the host test
/// checks afterwards. Ends with `abort()`: what was written must be on the
/// host even when the guest crashes.
/// `fs sync DIR`: write a file in DIR, sync it, rename it, then sync DIR,
/// as a program that must not lose a file across a crash does.
fn sync(dir: &Path) {
    let mut f = File::create(dir.join("journal.tmp")).unwrap();
    f.write_all(b"committed\n").unwrap();
    eremite::fs::sync_all(&f).unwrap();
    drop(f);
    eremite::fs::rename(dir.join("journal.tmp"), dir.join("journal")).unwrap();
    let d = File::open(dir).unwrap();
    eremite::fs::sync_all(&d).unwrap();
    println!("synced");
}

fn mount(dir: &Path, read_only: Option<&Path>) {
    let read = fs::read_to_string(dir.join("from-host.txt")).unwrap();
    println!("read from host: {read}");
    fs::write(dir.join("from-guest.txt"), b"written by the guest\n").unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("from-guest.txt"))
        .unwrap();
    f.write_all(b"appended\n").unwrap();
    drop(f);
    fs::create_dir(dir.join("newdir")).unwrap();
    fs::write(dir.join("newdir/inner"), b"inner").unwrap();
    eremite::fs::rename(dir.join("newdir/inner"), dir.join("renamed")).unwrap();
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    println!("listing: {}", names.join(" "));
    let meta = fs::metadata(dir.join("renamed")).unwrap();
    println!("renamed is {} bytes", meta.len());
    // Escapes: `..` out of the mount comes back to the RAM file system, a
    // symlink inside that points out fails on the host.
    let escape = File::open(dir.join("../../etc/passwd"));
    println!(
        "dotdot escape: {:?}",
        escape.map(|_| ()).map_err(|e| e.kind())
    );
    let linked = fs::write(dir.join("escape-link/pwned"), b"escaped");
    println!("symlink escape: {:?}", linked.map_err(|e| e.raw_os_error()));
    let abs = fs::read(dir.join("abs-link"));
    println!(
        "absolute symlink escape: {:?}",
        abs.map(|_| ()).map_err(|e| e.raw_os_error())
    );
    let long = fs::metadata(dir.join("x/".repeat(3000)));
    println!(
        "long path: {:?}",
        long.map(|_| ()).map_err(|e| e.raw_os_error())
    );
    let nul = fs::write(dir.join("nul\0byte"), b"no");
    println!("path with NUL: {:?}", nul.map_err(|e| e.kind()));
    if let Some(ro) = read_only {
        let denied = fs::write(ro.join("denied"), b"no");
        println!(
            "read-only write: {:?}",
            denied.map_err(|e| e.raw_os_error())
        );
        let removed = fs::remove_file(ro.join("visible.txt"));
        println!(
            "read-only remove: {:?}",
            removed.map_err(|e| e.raw_os_error())
        );
        println!(
            "read-only read: {}",
            fs::read_to_string(ro.join("visible.txt")).unwrap().trim()
        );
    }
    std::process::abort();
}

/// Create `files` files spread over `dirs` directories, then list and
/// look them up.
fn scale(files: usize, dirs: usize) {
    let start = Instant::now();
    for d in 0..dirs {
        fs::create_dir(format!("/s{d}")).unwrap();
    }
    for i in 0..files {
        fs::write(format!("/s{}/file-{i}", i % dirs), i.to_le_bytes()).unwrap();
    }
    let created = start.elapsed();
    let start = Instant::now();
    let mut listed = 0;
    for d in 0..dirs {
        listed += fs::read_dir(format!("/s{d}")).unwrap().count();
    }
    let list_time = start.elapsed();
    let start = Instant::now();
    for i in (0..files).step_by(7) {
        let bytes = fs::read(format!("/s{}/file-{i}", i % dirs)).unwrap();
        assert_eq!(bytes, i.to_le_bytes());
    }
    let lookup_time = start.elapsed();
    assert_eq!(listed, files);
    println!(
        "created {files} files in {dirs} directories in {created:?}, listed {listed} in {list_time:?}, read every 7th in {lookup_time:?}"
    );
}

/// Fill the RAM file system until it is full: the error is ENOSPC, the
/// program keeps running, and deleting makes room again.
fn fill() {
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0usize;
    let error = loop {
        let mut f = File::create(format!("/fill-{written}")).unwrap();
        match f.write_all(&chunk) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    println!("full after {written} MiB: errno {:?}", error.raw_os_error());
    for i in 0..=written {
        fs::remove_file(format!("/fill-{i}")).unwrap();
    }
    fs::write("/after", &chunk).unwrap();
    println!("room again after deleting");
}

/// Write `DIR/swap/pwned` `n` times while the host swaps `DIR/swap`
/// between a directory inside the mount and a symbolic link that leads
/// out of it: no write may land outside.
fn race(dir: &Path, n: usize) {
    let target = dir.join("swap/pwned");
    let written = (0..n)
        .filter(|_| fs::write(&target, b"raced").is_ok())
        .count();
    println!("race: {written} of {n} writes succeeded");
}

/// `threads` threads create, write, rename and delete files in two shared
/// directories at once, yielding between steps; the final state must be
/// exactly what the operations imply.
fn concurrent(threads: usize) {
    const FILES: usize = 100;
    fs::create_dir("/shared").unwrap();
    fs::create_dir("/moved").unwrap();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                for f in 0..FILES {
                    let name = format!("/shared/t{t}-f{f}");
                    fs::write(&name, format!("{t}:{f}")).unwrap();
                    std::thread::yield_now();
                    match f % 4 {
                        0 => eremite::fs::rename(&name, format!("/moved/t{t}-f{f}")).unwrap(),
                        1 => fs::remove_file(&name).unwrap(),
                        2 => {
                            let mut file = OpenOptions::new().append(true).open(&name).unwrap();
                            file.write_all(b"+").unwrap();
                        }
                        _ => {}
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut shared: Vec<String> = fs::read_dir("/shared")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut moved: Vec<String> = fs::read_dir("/moved")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shared.sort();
    moved.sort();
    let mut expect_shared = Vec::new();
    let mut expect_moved = Vec::new();
    for t in 0..threads {
        for f in 0..FILES {
            let name = format!("t{t}-f{f}");
            let (dir, contents) = match f % 4 {
                0 => ("/moved", format!("{t}:{f}")),
                1 => continue,
                2 => ("/shared", format!("{t}:{f}+")),
                _ => ("/shared", format!("{t}:{f}")),
            };
            assert_eq!(
                fs::read_to_string(format!("{dir}/{name}")).unwrap(),
                contents
            );
            if dir == "/moved" {
                expect_moved.push(name);
            } else {
                expect_shared.push(name);
            }
        }
    }
    expect_shared.sort();
    expect_moved.sort();
    assert_eq!(shared, expect_shared);
    assert_eq!(moved, expect_moved);
    println!(
        "concurrent: {threads} threads, {} files left in /shared, {} in /moved",
        shared.len(),
        moved.len()
    );
}
