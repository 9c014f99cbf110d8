//! The file-system differential test: one sequence of operations, run in
//! eremite (on its RAM file system) and natively on Linux (in a directory
//! on tmpfs), prints a transcript; the two must match line for line.
//!
//! `fsdiff ROOT` works below ROOT (which must not exist yet) and prints
//! paths relative to it. Errors print as their errno, so a wrong error
//! code is a difference. Inode numbers and times are never printed.

#[cfg(target_os = "hermit")]
use eremite as _;

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What std for hermit lacks comes from `eremite::fs`; on Linux, std and
/// `std::os::unix` have it.
#[cfg(target_os = "hermit")]
mod sys {
    pub use eremite::fs::{
        canonicalize, hard_link, mode, read_link, remove_dir_all, rename, set_len, set_mode,
        symlink, truncate,
    };
}

#[cfg(not(target_os = "hermit"))]
mod sys {
    use std::fs::{File, OpenOptions, Permissions};
    use std::io;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    pub use std::fs::{canonicalize, hard_link, read_link, remove_dir_all, rename};
    pub use std::os::unix::fs::symlink;

    pub fn truncate(path: impl AsRef<Path>, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    pub fn set_len(file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    pub fn set_mode(path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, Permissions::from_mode(mode))
    }

    pub fn mode(path: impl AsRef<Path>) -> io::Result<u32> {
        Ok(std::fs::symlink_metadata(path)?.mode())
    }
}

struct Transcript {
    root: PathBuf,
}

impl Transcript {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Print `label: ok VALUE` or `label: err ERRNO`.
    fn show<T: Debug>(&self, label: &str, result: io::Result<T>) {
        match result {
            Ok(v) => println!("{label}: ok {v:?}"),
            Err(e) => println!("{label}: err {}", e.raw_os_error().unwrap_or(-1)),
        }
    }

    /// A path from the system, relative to the root.
    fn rel(&self, path: &Path) -> String {
        let root = self.root.to_string_lossy();
        path.to_string_lossy().replacen(&*root, "<root>", 1)
    }

    fn describe(&self, rel: &str) -> io::Result<String> {
        let meta = fs::symlink_metadata(self.p(rel))?;
        let kind = if meta.file_type().is_symlink() {
            "link"
        } else if meta.is_dir() {
            "dir"
        } else {
            "file"
        };
        let size = if meta.is_dir() { 0 } else { meta.len() };
        Ok(format!("{kind} size {size}"))
    }

    fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.p(rel))? {
            let entry = entry?;
            let t = entry.file_type()?;
            let kind = if t.is_symlink() {
                "l"
            } else if t.is_dir() {
                "d"
            } else {
                "f"
            };
            names.push(format!("{}:{kind}", entry.file_name().to_string_lossy()));
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, rel: &str) -> io::Result<String> {
        fs::read(self.p(rel)).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: fsdiff ROOT"));
    fs::create_dir(&root).expect("create the root");
    let t = Transcript { root };

    // Creating, writing, reading.
    t.show("write a", fs::write(t.p("a"), b"hello"));
    t.show("read a", t.read("a"));
    t.show("describe a", t.describe("a"));
    t.show(
        "create_new a",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(t.p("a")),
    );
    t.show("open missing", File::open(t.p("missing")));
    t.show(
        "append a",
        OpenOptions::new()
            .append(true)
            .open(t.p("a"))
            .and_then(|mut f| f.write_all(b" world")),
    );
    t.show("read a", t.read("a"));
    t.show(
        "truncating open a",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(t.p("a"))
            .map(|_| ()),
    );
    t.show("describe a", t.describe("a"));
    t.show(
        "read-only write",
        File::open(t.p("a")).and_then(|mut f| f.write(b"x")),
    );

    // Seeks and holes.
    let hole = (|| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(t.p("sparse"))?;
        f.seek(SeekFrom::Start(100_000))?;
        f.write_all(b"tail")?;
        let end = f.seek(SeekFrom::End(0))?;
        let back = f.seek(SeekFrom::Current(-50))?;
        f.seek(SeekFrom::Start(99_990))?;
        let mut buf = [9u8; 14];
        let n = f.read(&mut buf)?;
        let before_start = f
            .seek(SeekFrom::Current(-1_000_000))
            .map_err(|e| e.raw_os_error());
        Ok::<_, io::Error>((end, back, n, buf, before_start))
    })();
    t.show("sparse file", hole);
    t.show("describe sparse", t.describe("sparse"));

    // Directories.
    t.show("mkdir d", fs::create_dir(t.p("d")));
    t.show("mkdir d again", fs::create_dir(t.p("d")));
    t.show("mkdir under a file", fs::create_dir(t.p("a/x")));
    t.show("mkdir missing parent", fs::create_dir(t.p("nope/x")));
    t.show("mkdir with trailing slash", fs::create_dir(t.p("d2/")));
    t.show("create_dir_all", fs::create_dir_all(t.p("d/e/f")));
    for name in ["z", "b", "y"] {
        t.show(
            &format!("write d/{name}"),
            fs::write(t.p(&format!("d/{name}")), name),
        );
    }
    t.show("list d", t.list("d"));
    t.show("list a file", t.list("a"));
    t.show("stat through a file", fs::metadata(t.p("a/")));
    t.show("rmdir non-empty", fs::remove_dir(t.p("d/e")));
    t.show("rmdir a file", fs::remove_dir(t.p("a")));
    t.show("unlink a dir", fs::remove_file(t.p("d")));
    t.show(
        "open dir for writing",
        OpenOptions::new().write(true).open(t.p("d")),
    );
    t.show("rmdir empty", fs::remove_dir(t.p("d/e/f")));
    t.show("rmdir missing", fs::remove_dir(t.p("d/e/f")));

    // An unlinked open file stays readable.
    t.show("write gone", fs::write(t.p("gone"), b"still here"));
    let kept = File::open(t.p("gone"));
    t.show("unlink gone", fs::remove_file(t.p("gone")));
    t.show("stat gone", fs::metadata(t.p("gone")));
    t.show(
        "read unlinked",
        kept.and_then(|mut f| {
            let mut s = String::new();
            f.read_to_string(&mut s).map(|_| s)
        }),
    );

    // Rename.
    t.show("write r1", fs::write(t.p("r1"), b"one"));
    t.show("write r2", fs::write(t.p("r2"), b"two"));
    t.show("rename r1 over r2", sys::rename(t.p("r1"), t.p("r2")));
    t.show("read r2", t.read("r2"));
    t.show("read r1", t.read("r1"));
    t.show("rename into d", sys::rename(t.p("r2"), t.p("d/r3")));
    t.show("list d", t.list("d"));
    t.show("rename missing", sys::rename(t.p("r1"), t.p("r4")));
    t.show("rename to itself", sys::rename(t.p("d/r3"), t.p("d/r3")));
    t.show("mkdir empty", fs::create_dir(t.p("empty")));
    t.show(
        "rename dir over non-empty",
        sys::rename(t.p("empty"), t.p("d")),
    );
    t.show("rename dir over file", sys::rename(t.p("empty"), t.p("a")));
    t.show("rename file over dir", sys::rename(t.p("a"), t.p("empty")));
    t.show(
        "rename dir into itself",
        sys::rename(t.p("d"), t.p("d/e/inside")),
    );
    t.show(
        "rename dir over empty dir",
        sys::rename(t.p("d/e"), t.p("empty")),
    );
    t.show("list root", t.list(""));
    t.show("list d", t.list("d"));

    // Links.
    t.show("hard link", sys::hard_link(t.p("d/r3"), t.p("hard")));
    t.show("hard link a dir", sys::hard_link(t.p("d"), t.p("dlink")));
    t.show(
        "rename onto own hard link",
        sys::rename(t.p("hard"), t.p("d/r3")),
    );
    t.show("list root", t.list(""));
    t.show("symlink rel", sys::symlink("d/z", t.p("sl")));
    t.show("symlink abs", sys::symlink(t.p("d"), t.p("sla")));
    t.show("symlink dangling", sys::symlink("nowhere", t.p("dangling")));
    t.show("symlink exists", sys::symlink("x", t.p("sl")));
    t.show("read via rel", t.read("sl"));
    t.show("read via abs", t.read("sla/y"));
    t.show("read dangling", t.read("dangling"));
    t.show("readlink rel", sys::read_link(t.p("sl")).map(|p| t.rel(&p)));
    t.show(
        "readlink abs",
        sys::read_link(t.p("sla")).map(|p| t.rel(&p)),
    );
    t.show("readlink file", sys::read_link(t.p("a")));
    t.show("describe sl", t.describe("sl"));
    t.show("stat follows", fs::metadata(t.p("sl")).map(|m| m.len()));
    t.show("list root", t.list(""));
    t.show("symlink loop 1", sys::symlink("loop2", t.p("loop1")));
    t.show("symlink loop 2", sys::symlink("loop1", t.p("loop2")));
    t.show("open loop", File::open(t.p("loop1")));
    t.show(
        "create through dangling",
        fs::write(t.p("dangling"), b"made"),
    );
    t.show("read nowhere", t.read("nowhere"));
    t.show(
        "canonicalize",
        sys::canonicalize(t.p("sla/../sla/./b")).map(|p| t.rel(&p)),
    );
    t.show("canonicalize missing", sys::canonicalize(t.p("d/missing")));

    // Truncate and modes.
    t.show("write tr", fs::write(t.p("tr"), b"0123456789"));
    t.show("truncate shrink", sys::truncate(t.p("tr"), 4));
    t.show("read tr", t.read("tr"));
    t.show(
        "set_len grow",
        OpenOptions::new()
            .write(true)
            .open(t.p("tr"))
            .and_then(|f| sys::set_len(&f, 7)),
    );
    t.show("read tr", t.read("tr"));
    t.show("truncate a dir", sys::truncate(t.p("d"), 0));
    t.show("set mode", sys::set_mode(t.p("tr"), 0o640));
    t.show("mode", sys::mode(t.p("tr")).map(|m| format!("{m:o}")));
    t.show(
        "mode of a link",
        sys::mode(t.p("sl")).map(|m| format!("{:o}", m & 0o170000)),
    );

    // Names that are too long.
    let long = "n".repeat(256);
    t.show("long name", fs::write(t.p(&long), b""));
    let deep = "d/".repeat(2100);
    t.show("long path", fs::metadata(t.p(&deep)));

    // Remove everything.
    t.show("remove_dir_all", sys::remove_dir_all(t.p("d")));
    t.show("list root", t.list(""));
    t.show("remove_dir_all root", sys::remove_dir_all(&t.root));
    t.show("root gone", fs::metadata(&t.root).map(|_| ()));
    println!("end of transcript");
}
