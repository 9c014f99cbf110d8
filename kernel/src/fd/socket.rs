//! Sockets as descriptors: reads and writes are `recv` and `send`; the
//! socket calls themselves reach the socket through
//! [`super::with_socket`].

use eremite_interface::errno::Errno;
use eremite_interface::fs::{FileStat, OpenFlags};

use super::FileObject;
use crate::net::{self, Readiness, Receive};

/// `S_IFSOCK`.
const S_IFSOCK: u32 = 0o140000;

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
