//! The `HostFs` hypercall (`docs/hypercalls/03-host-fs.md`): decode a raw
//! [`hypercall::HostFs`] into a [`HostFsRequest`] (paths copied out of
//! guest memory and parsed, buffers checked to lie inside it, lengths
//! capped), then serve it with [`sandbox::HostFs`], copying data in and out
//! of guest memory by checked copies.

use super::host_size;
use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::FileStat;
use eremite_interface::hypercall::{self, HostFsOp};
use zerocopy::IntoBytes;

use super::GuestError;
use crate::memory::GuestRam;
use crate::sandbox::{self, GuestPath, LinkTarget, Links, MAX_PATH_BYTES, OpenFlags};

/// A guest buffer known to lie inside guest RAM, its length already capped
/// to what the call will touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestBuf {
    addr: u64,
    len: u64,
}

/// A validated `HostFs` request: which mount, and what to do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostFsRequest {
    /// Index into the mounts; checked against them when served.
    pub(crate) mount: u32,
    pub(crate) op: FsOp,
}

/// One operation, with its arguments parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FsOp {
    Open {
        path: GuestPath,
        flags: OpenFlags,
        mode: u32,
        /// Where the opened file's stat goes too, if anywhere.
        stat: Option<GuestBuf>,
    },
    Close {
        handle: u64,
    },
    /// The list of handles at `list` (`u64`s, at most
    /// [`hypercall::HostFs::MAX_CLOSE_BATCH`]).
    CloseMany {
        list: GuestBuf,
    },
    Read {
        handle: u64,
        buf: GuestBuf,
        offset: u64,
    },
    Write {
        handle: u64,
        buf: GuestBuf,
        offset: u64,
    },
    Stat {
        path: GuestPath,
        buf: GuestBuf,
        links: Links,
    },
    Fstat {
        handle: u64,
        buf: GuestBuf,
    },
    Mkdir {
        path: GuestPath,
        mode: u32,
    },
    Unlink {
        path: GuestPath,
    },
    Rmdir {
        path: GuestPath,
    },
    Rename {
        from: GuestPath,
        to: GuestPath,
    },
    Symlink {
        path: GuestPath,
        target: LinkTarget,
    },
    Readlink {
        path: GuestPath,
        buf: GuestBuf,
    },
    Truncate {
        path: GuestPath,
        len: u64,
    },
    Ftruncate {
        handle: u64,
        len: u64,
    },
    ReadDir {
        handle: u64,
        buf: GuestBuf,
        cookie: u64,
    },
    Link {
        existing: GuestPath,
        new: GuestPath,
    },
    Chmod {
        path: GuestPath,
        mode: u32,
    },
    Sync {
        handle: u64,
        data_only: bool,
    },
}

/// Copy `len` bytes at `addr` out of guest memory, refusing more than a
/// path may have before allocating anything.
fn read_path_bytes(ram: &GuestRam, addr: u64, len: u64) -> Result<Vec<u8>, GuestError> {
    if len > MAX_PATH_BYTES {
        return Err(GuestError::BadPath(sandbox::PathError::TooLong(len)));
    }
    ram.check(addr, len)
        .map_err(|_| GuestError::PathOutsideRam(addr))?;
    let mut bytes = vec![0; host_size(len)];
    ram.read(addr, &mut bytes)
        .map_err(|_| GuestError::PathOutsideRam(addr))?;
    Ok(bytes)
}

fn read_path(ram: &GuestRam, addr: u64, len: u64) -> Result<GuestPath, GuestError> {
    GuestPath::parse(read_path_bytes(ram, addr, len)?).map_err(GuestError::BadPath)
}

/// `[addr, addr + min(len, cap))`, checked to lie inside guest RAM.
fn guest_buf(ram: &GuestRam, addr: u64, len: u64, cap: u64) -> Result<GuestBuf, GuestError> {
    let len = len.min(cap);
    ram.check(addr, len)
        .map_err(|_| GuestError::BufferOutsideRam(addr))?;
    Ok(GuestBuf { addr, len })
}

/// A buffer for one [`FileStat`].
fn stat_buf(ram: &GuestRam, raw: &hypercall::HostFs) -> Result<GuestBuf, GuestError> {
    let size = size_of::<FileStat>() as u64;
    if raw.buf_len < size {
        return Err(GuestError::BufferTooSmall(raw.buf_len));
    }
    guest_buf(ram, raw.buf, size, size)
}

/// Parse a raw request. Paths are copied out of guest memory here.
pub(crate) fn decode(raw: &hypercall::HostFs, ram: &GuestRam) -> Result<HostFsRequest, GuestError> {
    let op = HostFsOp::try_from(raw.op).map_err(GuestError::UnknownHostFsOp)?;
    let path = || read_path(ram, raw.path, raw.path_len);
    let path2 = || read_path(ram, raw.path2, raw.path2_len);
    let io_buf = || guest_buf(ram, raw.buf, raw.buf_len, hypercall::HostFs::MAX_IO_BYTES);
    let handle = raw.handle;
    let op = match op {
        HostFsOp::Open => FsOp::Open {
            path: path()?,
            flags: OpenFlags::parse(raw.flags).ok_or(GuestError::BadFlags(raw.flags))?,
            mode: raw.mode,
            stat: match raw.buf_len {
                0 => None,
                _ => Some(stat_buf(ram, raw)?),
            },
        },
        HostFsOp::Close => FsOp::Close { handle },
        HostFsOp::CloseMany => FsOp::CloseMany {
            list: guest_buf(
                ram,
                raw.buf,
                raw.buf_len - raw.buf_len % 8,
                hypercall::HostFs::MAX_CLOSE_BATCH * 8,
            )?,
        },
        HostFsOp::Read => FsOp::Read {
            handle,
            buf: io_buf()?,
            offset: raw.offset,
        },
        HostFsOp::Write => FsOp::Write {
            handle,
            buf: io_buf()?,
            offset: raw.offset,
        },
        HostFsOp::Stat => FsOp::Stat {
            path: path()?,
            buf: stat_buf(ram, raw)?,
            links: match raw.flags {
                0 => Links::Follow,
                hypercall::HostFs::NOFOLLOW => Links::NoFollow,
                other => return Err(GuestError::BadFlags(other)),
            },
        },
        HostFsOp::Fstat => FsOp::Fstat {
            handle,
            buf: stat_buf(ram, raw)?,
        },
        HostFsOp::Mkdir => FsOp::Mkdir {
            path: path()?,
            mode: raw.mode,
        },
        HostFsOp::Unlink => FsOp::Unlink { path: path()? },
        HostFsOp::Rmdir => FsOp::Rmdir { path: path()? },
        HostFsOp::Rename => FsOp::Rename {
            from: path()?,
            to: path2()?,
        },
        HostFsOp::Symlink => FsOp::Symlink {
            path: path()?,
            target: LinkTarget::parse(read_path_bytes(ram, raw.path2, raw.path2_len)?)
                .map_err(GuestError::BadPath)?,
        },
        HostFsOp::Readlink => FsOp::Readlink {
            path: path()?,
            buf: guest_buf(ram, raw.buf, raw.buf_len, MAX_PATH_BYTES)?,
        },
        HostFsOp::Truncate => FsOp::Truncate {
            path: path()?,
            len: raw.offset,
        },
        HostFsOp::Ftruncate => FsOp::Ftruncate {
            handle,
            len: raw.offset,
        },
        HostFsOp::ReadDir => FsOp::ReadDir {
            handle,
            buf: io_buf()?,
            cookie: raw.offset,
        },
        HostFsOp::Link => FsOp::Link {
            existing: path()?,
            new: path2()?,
        },
        HostFsOp::Chmod => FsOp::Chmod {
            path: path()?,
            mode: raw.mode,
        },
        HostFsOp::Sync => FsOp::Sync {
            handle,
            data_only: match raw.flags {
                0 => false,
                hypercall::HostFs::DATA_ONLY => true,
                other => return Err(GuestError::BadFlags(other)),
            },
        },
    };
    Ok(HostFsRequest {
        mount: raw.mount,
        op,
    })
}

/// Serve a request; `Ok` is the value for `result`.
pub(crate) fn serve(
    request: &HostFsRequest,
    ram: &GuestRam,
    fs: &mut sandbox::HostFs,
) -> Result<i64, Errno> {
    let m = request.mount;
    let done = |()| 0;
    let efault = |_| errno::EFAULT;
    match &request.op {
        FsOp::Open {
            path,
            flags,
            mode,
            stat,
        } => {
            let (handle, opened) = fs.open(m, path, *flags, *mode)?;
            if let Some(buf) = stat
                && ram.write(buf.addr, opened.as_bytes()).is_err()
            {
                // The guest never learns the handle: do not keep it.
                let _ = fs.close(m, handle);
                return Err(errno::EFAULT);
            }
            Ok(as_result(handle))
        }
        FsOp::Close { handle } => fs.close(m, *handle).map(done),
        FsOp::CloseMany { list } => {
            let mut bytes = vec![0; host_size(list.len)];
            ram.read(list.addr, &mut bytes).map_err(efault)?;
            let closed = bytes
                .as_chunks::<8>()
                .0
                .iter()
                .filter(|b| fs.close(m, u64::from_le_bytes(**b)).is_ok())
                .count();
            Ok(as_result(closed as u64))
        }
        FsOp::Read {
            handle,
            buf,
            offset,
        } => {
            let mut data = vec![0; host_size(buf.len)];
            let n = fs.read(m, *handle, *offset, &mut data)?;
            ram.write(buf.addr, &data[..n]).map_err(efault)?;
            Ok(as_result(n as u64))
        }
        FsOp::Write {
            handle,
            buf,
            offset,
        } => {
            let mut data = vec![0; host_size(buf.len)];
            ram.read(buf.addr, &mut data).map_err(efault)?;
            fs.write(m, *handle, *offset, &data)
                .map(|n| as_result(n as u64))
        }
        FsOp::Stat { path, buf, links } => {
            let stat = fs.stat(m, path, *links)?;
            ram.write(buf.addr, stat.as_bytes()).map_err(efault)?;
            Ok(0)
        }
        FsOp::Fstat { handle, buf } => {
            let stat = fs.fstat(m, *handle)?;
            ram.write(buf.addr, stat.as_bytes()).map_err(efault)?;
            Ok(0)
        }
        FsOp::Mkdir { path, mode } => fs.mkdir(m, path, *mode).map(done),
        FsOp::Unlink { path } => fs.unlink(m, path).map(done),
        FsOp::Rmdir { path } => fs.rmdir(m, path).map(done),
        FsOp::Rename { from, to } => fs.rename(m, from, to).map(done),
        FsOp::Symlink { path, target } => fs.symlink(m, path, target).map(done),
        FsOp::Readlink { path, buf } => {
            let target = fs.readlink(m, path)?;
            let shown = target.len().min(host_size(buf.len));
            ram.write(buf.addr, &target[..shown]).map_err(efault)?;
            Ok(as_result(target.len() as u64))
        }
        FsOp::Truncate { path, len } => fs.truncate(m, path, *len).map(done),
        FsOp::Ftruncate { handle, len } => fs.ftruncate(m, *handle, *len).map(done),
        FsOp::ReadDir {
            handle,
            buf,
            cookie,
        } => {
            let records = fs.read_dir(m, *handle, *cookie, host_size(buf.len))?;
            ram.write(buf.addr, &records).map_err(efault)?;
            Ok(as_result(records.len() as u64))
        }
        FsOp::Link { existing, new } => fs.link(m, existing, new).map(done),
        FsOp::Chmod { path, mode } => fs.chmod(m, path, *mode).map(done),
        FsOp::Sync { handle, data_only } => fs.sync(m, *handle, *data_only).map(done),
    }
}

/// A count or handle as a non-negative `result` (they never reach 2^63).
fn as_result(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use eremite_interface::fs::{O_CREAT, O_DIRECTORY, O_RDONLY, O_RDWR, S_IFMT, S_IFREG};
    use eremite_interface::hypercall::Port;
    use zerocopy::FromBytes;

    use super::*;
    use crate::hypercall::{Call, Capture, Console, Next, Services, decode as decode_call, handle};
    use crate::sandbox::tests::{Fixture, TempDir};

    const RAM: u64 = 4 << 20;
    const REQ: u64 = 0x1000;
    const PATH: u64 = 0x2000;
    const PATH2: u64 = 0x3000;
    const BUF: u64 = 0x10_000;
    const MAX_IO: u64 = hypercall::HostFs::MAX_IO_BYTES;

    struct Guest {
        ram: GuestRam,
        services: Services<'static>,
        mnt: std::path::PathBuf,
        _outer: TempDir,
    }

    impl Guest {
        fn new() -> Self {
            let Fixture { outer, fs } = Fixture::new();
            let console = Console::new(
                Box::new(Capture::default()),
                Box::new(Capture::default()),
                false,
            );
            Self {
                ram: GuestRam::new(RAM).unwrap(),
                services: Services::new(Box::leak(Box::new(console)), fs),
                mnt: outer.path().join("mnt"),
                _outer: outer,
            }
        }

        /// Put `raw` at `REQ`, decode it as the vCPU loop does.
        fn decode(&self, raw: &hypercall::HostFs) -> Call {
            self.ram.write_obj(REQ, raw).unwrap();
            decode_call(
                Port::HostFs,
                &crate::hypercall::tests::value(REQ),
                &self.ram,
            )
            .unwrap()
        }

        /// Decode and handle `raw`; return what the VMM wrote to `result`.
        fn call(&mut self, raw: hypercall::HostFs) -> i64 {
            let call = self.decode(&raw);
            assert_eq!(handle(call, &self.ram, &self.services), Next::Resume);
            self.ram.read_obj::<hypercall::HostFs>(REQ).unwrap().result
        }
    }

    /// A request for `op` on mount 0 with `path` (written at `PATH`).
    fn req(guest: &Guest, op: HostFsOp, path: &str) -> hypercall::HostFs {
        guest.ram.write(PATH, path.as_bytes()).unwrap();
        hypercall::HostFs {
            op: op as u32,
            path: PATH,
            path_len: path.len() as u64,
            result: 0x5555,
            ..Default::default()
        }
    }

    fn neg(e: Errno) -> i64 {
        -i64::from(e.0)
    }

    #[test]
    fn layout_matches_docs_hypercalls_03() {
        assert_eq!(size_of::<hypercall::HostFs>(), 88);
        assert_eq!(hypercall::HostFs::RESULT_OFFSET, 80);
        assert_eq!(size_of::<FileStat>(), 64);
        assert_eq!(size_of::<eremite_interface::fs::DirRecord>(), 24);
    }

    #[test]
    fn files_round_trip_through_guest_memory() {
        let mut g = Guest::new();
        let mut open = req(&g, HostFsOp::Open, "f");
        open.flags = O_CREAT | O_RDWR;
        open.mode = 0o644;
        let h = g.call(open);
        assert!(h > 0, "{h}");
        let h = h.cast_unsigned();

        g.ram.write(BUF, b"from the guest").unwrap();
        let write = hypercall::HostFs {
            op: HostFsOp::Write as u32,
            handle: h,
            buf: BUF,
            buf_len: 14,
            ..Default::default()
        };
        assert_eq!(g.call(write), 14);
        assert_eq!(std::fs::read(g.mnt.join("f")).unwrap(), b"from the guest");

        let read = hypercall::HostFs {
            op: HostFsOp::Read as u32,
            handle: h,
            buf: BUF + 0x1000,
            buf_len: 100,
            offset: 5,
            ..Default::default()
        };
        assert_eq!(g.call(read), 9);
        let mut back = [0; 9];
        g.ram.read(BUF + 0x1000, &mut back).unwrap();
        assert_eq!(&back, b"the guest");

        let mut stat = req(&g, HostFsOp::Stat, "f");
        stat.buf = BUF;
        stat.buf_len = size_of::<FileStat>() as u64;
        assert_eq!(g.call(stat), 0);
        let st: FileStat = g.ram.read_obj(BUF).unwrap();
        assert_eq!((st.size, st.mode & S_IFMT), (14, S_IFREG));
        let fstat = hypercall::HostFs {
            op: HostFsOp::Fstat as u32,
            handle: h,
            buf: BUF + 0x2000,
            buf_len: 4096,
            ..Default::default()
        };
        assert_eq!(g.call(fstat), 0);
        assert_eq!(g.ram.read_obj::<FileStat>(BUF + 0x2000).unwrap(), st);

        let close = hypercall::HostFs {
            op: HostFsOp::Close as u32,
            handle: h,
            ..Default::default()
        };
        assert_eq!(g.call(close), 0);
        assert_eq!(g.call(close), neg(errno::EBADF));
        assert_eq!(g.call(read), neg(errno::EBADF));
    }

    #[test]
    fn open_can_return_the_stat_and_closes_can_be_batched() {
        let mut g = Guest::new();
        std::fs::write(g.mnt.join("page.html"), b"<p>hello</p>").unwrap();
        let mut handles = Vec::new();
        for _ in 0..3 {
            let mut open = req(&g, HostFsOp::Open, "page.html");
            open.flags = O_RDONLY;
            (open.buf, open.buf_len) = (BUF, size_of::<FileStat>() as u64);
            let h = g.call(open);
            assert!(h > 0, "{h}");
            handles.push(h.cast_unsigned());
            let st: FileStat = g.ram.read_obj(BUF).unwrap();
            assert_eq!((st.size, st.mode & S_IFMT), (12, S_IFREG));
        }
        // A stat buffer too small is the guest's mistake; the open fails
        // and leaves nothing open.
        let mut open = req(&g, HostFsOp::Open, "page.html");
        (open.buf, open.buf_len) = (BUF, 8);
        let call = g.decode(&open);
        assert_eq!(call.request, Err(GuestError::BufferTooSmall(8)));

        // Two of them and one that is not open: two closed.
        let list: Vec<u8> = [handles[0], 9999, handles[2]]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        g.ram.write(BUF, &list).unwrap();
        let close_many = hypercall::HostFs {
            op: HostFsOp::CloseMany as u32,
            buf: BUF,
            buf_len: list.len() as u64,
            ..Default::default()
        };
        assert_eq!(g.call(close_many), 2);
        let read = |handle| hypercall::HostFs {
            op: HostFsOp::Read as u32,
            handle,
            buf: BUF + 0x1000,
            buf_len: 4,
            ..Default::default()
        };
        assert_eq!(g.call(read(handles[0])), neg(errno::EBADF));
        assert_eq!(g.call(read(handles[1])), 4);
        assert_eq!(g.call(read(handles[2])), neg(errno::EBADF));
        // A list outside guest memory is refused before anything closes.
        let far = hypercall::HostFs {
            buf: RAM - 8,
            buf_len: 16,
            ..close_many
        };
        let call = g.decode(&far);
        assert_eq!(call.request, Err(GuestError::BufferOutsideRam(RAM - 8)));
    }

    #[test]
    fn second_paths_links_and_listings_work() {
        let mut g = Guest::new();
        std::fs::write(g.mnt.join("a"), b"x").unwrap();
        g.ram.write(PATH2, b"b").unwrap();
        let mut rename = req(&g, HostFsOp::Rename, "a");
        (rename.path2, rename.path2_len) = (PATH2, 1);
        assert_eq!(g.call(rename), 0);
        assert!(g.mnt.join("b").exists());

        g.ram.write(PATH2, b"../secret").unwrap();
        let mut symlink = req(&g, HostFsOp::Symlink, "s");
        (symlink.path2, symlink.path2_len) = (PATH2, 9);
        assert_eq!(g.call(symlink), 0);
        let mut readlink = req(&g, HostFsOp::Readlink, "s");
        (readlink.buf, readlink.buf_len) = (BUF, 3);
        assert_eq!(g.call(readlink), 9, "the whole length");
        let mut shown = [0; 4];
        g.ram.read(BUF, &mut shown).unwrap();
        assert_eq!(&shown, b"../\0", "only buf_len bytes written");
        let mut open = req(&g, HostFsOp::Open, "s");
        open.flags = O_RDONLY;
        assert_eq!(g.call(open), neg(errno::EXDEV));

        let mut open = req(&g, HostFsOp::Open, "");
        open.flags = O_RDONLY | O_DIRECTORY;
        let dir = g.call(open).cast_unsigned();
        let read_dir = hypercall::HostFs {
            op: HostFsOp::ReadDir as u32,
            handle: dir,
            buf: BUF,
            buf_len: u64::MAX,
            ..Default::default()
        };
        let n = g.call(read_dir);
        assert_eq!(n, 2 * 32, "two records of 24 + 1 bytes, padded");
        let record = DirRecordView::at(&g.ram, BUF);
        let second = DirRecordView::at(&g.ram, BUF + 32);
        let mut names = [record.name, second.name];
        names.sort();
        assert_eq!(names, [b'b', b's']);
        // Cookies are the host's positions: from the first's, the second.
        let mut from_first = read_dir;
        from_first.offset = record.next;
        assert_eq!(g.call(from_first), 32);
        assert_eq!(DirRecordView::at(&g.ram, BUF).name, second.name);
        let mut at_end = read_dir;
        at_end.offset = second.next;
        assert_eq!(g.call(at_end), 0);

        // Sync: a file, the directory, bad flags.
        let sync = |handle, flags| hypercall::HostFs {
            op: HostFsOp::Sync as u32,
            handle,
            flags,
            ..Default::default()
        };
        assert_eq!(g.call(sync(dir, 0)), 0);
        assert_eq!(g.call(sync(dir, hypercall::HostFs::DATA_ONLY)), 0);
        assert_eq!(g.call(sync(dir, 2)), neg(errno::EINVAL));
        assert_eq!(g.call(sync(dir + 100, 0)), neg(errno::EBADF));
    }

    /// A `DirRecord` with a one-byte name, read back from guest memory.
    struct DirRecordView {
        next: u64,
        name: u8,
    }

    impl DirRecordView {
        fn at(ram: &GuestRam, addr: u64) -> Self {
            let mut bytes = [0; 32];
            ram.read(addr, &mut bytes).unwrap();
            let (header, rest) =
                eremite_interface::fs::DirRecord::read_from_prefix(&bytes).unwrap();
            assert_eq!(header.name_len, 1);
            Self {
                next: header.next,
                name: rest[0],
            }
        }
    }

    #[test]
    fn bad_fields_are_answered_with_an_errno() {
        let mut g = Guest::new();
        for op in [0, 20, u32::MAX] {
            let raw = hypercall::HostFs {
                op,
                ..Default::default()
            };
            assert_eq!(g.decode(&raw).request, Err(GuestError::UnknownHostFsOp(op)));
            assert_eq!(g.call(raw), neg(errno::EINVAL));
        }
        let mut raw = req(&g, HostFsOp::Mkdir, "d");
        raw.mount = 2;
        assert_eq!(g.call(raw), neg(errno::EINVAL), "no mount 2");

        let cases: [(u64, u64, Errno); 5] = [
            (RAM - 2, 4, errno::EFAULT),
            (u64::MAX - 1, 4, errno::EFAULT),
            (PATH, u64::MAX, errno::ENAMETOOLONG),
            (PATH, MAX_PATH_BYTES + 1, errno::ENAMETOOLONG),
            (RAM, 1, errno::EFAULT),
        ];
        for (path, path_len, want) in cases {
            let mut raw = req(&g, HostFsOp::Mkdir, "d");
            (raw.path, raw.path_len) = (path, path_len);
            assert_eq!(g.call(raw), neg(want), "path {path:#x} len {path_len:#x}");
        }
        g.ram.write(PATH, b"a\0b").unwrap();
        let mut raw = req(&g, HostFsOp::Unlink, "");
        raw.path_len = 3;
        assert_eq!(g.call(raw), neg(errno::EINVAL), "NUL");
        assert_eq!(
            g.call(req(&g, HostFsOp::Unlink, "/etc/passwd")),
            neg(errno::EINVAL)
        );
        let mut rename = req(&g, HostFsOp::Rename, "x");
        (rename.path2, rename.path2_len) = (RAM + 8, 1);
        assert_eq!(g.call(rename), neg(errno::EFAULT), "second path");
        let mut symlink = req(&g, HostFsOp::Symlink, "x");
        symlink.path2_len = 0;
        assert_eq!(g.call(symlink), neg(errno::ENOENT), "empty target");

        let mut open = req(&g, HostFsOp::Open, "f");
        open.flags = 3;
        assert_eq!(g.call(open), neg(errno::EINVAL), "access mode 3");
        let mut stat = req(&g, HostFsOp::Stat, "");
        (stat.buf, stat.buf_len) = (BUF, size_of::<FileStat>() as u64 - 1);
        assert_eq!(g.call(stat), neg(errno::EINVAL), "small stat buffer");
        (stat.buf, stat.buf_len) = (RAM - 8, 1 << 20);
        assert_eq!(g.call(stat), neg(errno::EFAULT));
        (stat.buf, stat.buf_len, stat.flags) = (BUF, 4096, 2);
        assert_eq!(g.call(stat), neg(errno::EINVAL), "unknown stat flag");
        assert!(std::fs::read_dir(&g.mnt).unwrap().next().is_none());
    }

    #[test]
    fn data_buffers_are_checked_and_capped() {
        let mut g = Guest::new();
        std::fs::write(g.mnt.join("big"), vec![7u8; 2 << 20]).unwrap();
        let mut open = req(&g, HostFsOp::Open, "big");
        open.flags = O_RDWR;
        let h = g.call(open).cast_unsigned();
        let io = |op: HostFsOp, buf, buf_len| hypercall::HostFs {
            op: op as u32,
            handle: h,
            buf,
            buf_len,
            ..Default::default()
        };
        assert_eq!(g.call(io(HostFsOp::Read, BUF, u64::MAX)), MAX_IO as i64);
        assert_eq!(g.call(io(HostFsOp::Write, BUF, u64::MAX)), MAX_IO as i64);
        let all = [
            HostFsOp::Read,
            HostFsOp::Write,
            HostFsOp::ReadDir,
            HostFsOp::Readlink,
        ];
        let capped_at_max_io = &all[..3];
        for (buf, len, ops) in [
            (RAM - 4, 8, &all[..]),
            (u64::MAX - 1, 4, &all[..]),
            (RAM, 1, &all[..]),
            (RAM - MAX_IO + 1, u64::MAX, capped_at_max_io),
        ] {
            for &op in ops {
                assert_eq!(
                    g.call(io(op, buf, len)),
                    neg(errno::EFAULT),
                    "{op:?} buf {buf:#x} len {len:#x}"
                );
            }
        }
        assert_eq!(g.call(io(HostFsOp::Read, RAM + 1, 0)), neg(errno::EFAULT));
        assert_eq!(
            g.call(io(HostFsOp::Read, RAM, 0)),
            0,
            "empty read at the end"
        );
        assert_eq!(std::fs::metadata(g.mnt.join("big")).unwrap().len(), 2 << 20);
    }
}
