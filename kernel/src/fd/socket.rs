//! Sockets as descriptors: reads and writes are `recv` and `send`; the
//! socket calls themselves reach the socket through
//! [`super::with_socket`].

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags, S_IFSOCK};

use super::FileObject;
use crate::fd;
use crate::net::{self, Readiness, Receive};

/// The most a vectored write gathers into one send.
const GATHER_BYTES: usize = 64 << 10;

/// What `fstat` shows of any socket (a network socket, one end of a
/// `socketpair`).
pub(super) fn socket_stat() -> FileStat {
    FileStat {
        mode: S_IFSOCK | 0o777,
        nlink: 1,
        ..FileStat::default()
    }
}

pub(super) struct SocketFile(pub(super) net::Socket);

/// Whether calls on a description with `status` may wait.
pub(super) fn mode(status: OpenFlags) -> net::Mode {
    if status.contains(OpenFlags::NONBLOCK) {
        net::Mode::NonBlocking
    } else {
        net::Mode::Blocking
    }
}

impl FileObject for SocketFile {
    fn read(&self, buf: &mut [u8], status: OpenFlags) -> Result<usize, Errno> {
        net::recv(&self.0, buf, Receive::Take, mode(status))
    }

    fn write(&self, buf: &[u8], status: OpenFlags) -> Result<usize, Errno> {
        net::send(&self.0, buf, None, mode(status))
    }

    /// Buffers that add up to at most [`GATHER_BYTES`] go as one send:
    /// sent one by one, a header and a small body leave as two segments
    /// and Nagle holds the second until the peer's delayed ACK (about 40
    /// ms from Linux), which made a keep-alive HTTP server 200 times
    /// slower. Larger writes fill whole segments anyway.
    fn write_vectored(&self, bufs: &[&[u8]], status: OpenFlags) -> Result<usize, Errno> {
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if bufs.len() < 2 || total > GATHER_BYTES {
            return fd::write_each(bufs, |buf| self.write(buf, status));
        }
        let mut gathered = Vec::new();
        gathered
            .try_reserve_exact(total)
            .map_err(|_| errno::ENOMEM)?;
        for buf in bufs {
            gathered.extend_from_slice(buf);
        }
        self.write(&gathered, status)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(socket_stat())
    }

    /// One socket at a time; `poll` asks the stack about all of its
    /// sockets at once instead (`net::readiness`).
    fn readiness(&self) -> Readiness {
        net::readiness(&[&self.0]).pop().unwrap_or_default().0
    }

    fn available(&self) -> Result<usize, Errno> {
        net::available(&self.0)
    }

    fn progress(&self) -> u64 {
        net::readiness(&[&self.0]).pop().unwrap_or_default().1
    }

    fn as_socket(&self) -> Option<&net::Socket> {
        Some(&self.0)
    }
}
