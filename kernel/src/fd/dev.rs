//! The device files every Linux program may open: `/dev/null`,
//! `/dev/zero`, `/dev/random` and `/dev/urandom` (the kernel's random
//! source, see `random`). They are not in the file system (which has no
//! device nodes); `fd::open` recognises their paths.

use eremite_interface::errno::Errno;
use eremite_interface::fs::{FileStat, OpenFlags, S_IFCHR};

use super::FileObject;
use crate::random;

/// Which device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Device {
    Null,
    Zero,
    Random,
}

impl Device {
    /// The device at `path` (absolute), if it is one.
    pub(super) fn at(path: &[u8]) -> Option<Self> {
        match path {
            b"/dev/null" => Some(Self::Null),
            b"/dev/zero" => Some(Self::Zero),
            b"/dev/random" | b"/dev/urandom" => Some(Self::Random),
            _ => None,
        }
    }
}

impl FileObject for Device {
    /// Always ready: Linux's `epoll` refuses it (`EPERM`).
    fn can_epoll(&self) -> bool {
        false
    }

    fn read(&self, buf: &mut [u8], _status: OpenFlags) -> Result<usize, Errno> {
        match self {
            Self::Null => Ok(0),
            Self::Zero => {
                buf.fill(0);
                Ok(buf.len())
            }
            Self::Random => {
                random::fill(buf);
                Ok(buf.len())
            }
        }
    }

    fn write(&self, buf: &[u8], _status: OpenFlags) -> Result<usize, Errno> {
        Ok(buf.len())
    }

    fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<usize, Errno> {
        self.read(buf, OpenFlags::empty())
    }

    fn pwrite(&self, buf: &[u8], _offset: u64, _status: OpenFlags) -> Result<usize, Errno> {
        Ok(buf.len())
    }

    fn seek(&self, _offset: i64, _whence: super::Whence) -> Result<u64, Errno> {
        Ok(0)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(FileStat {
            mode: S_IFCHR | 0o666,
            nlink: 1,
            ..FileStat::default()
        })
    }
}
