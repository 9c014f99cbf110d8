//! Files and directories in a host directory (`--mount`), reached through
//! `fs::HostHandle`, with the position and listing progress of their open
//! file description. Each operation is a hypercall; the position's lock is
//! held across it, so calls on one description stay in order.

use alloc::boxed::Box;

use eremite_interface::errno::Errno;
use eremite_interface::fs::{FileStat, OpenFlags};

use super::{FileObject, Position, Whence};
use crate::fs::{HostHandle, Listed};
use crate::sync::Lock;

pub(super) struct HostFile {
    handle: HostHandle,
    position: Lock<Position>,
    /// The absolute path it was opened by.
    path: Box<[u8]>,
}

impl HostFile {
    pub(super) fn new(handle: HostHandle, path: Box<[u8]>) -> Self {
        Self {
            handle,
            position: Lock::new(Position::default()),
            path,
        }
    }
}

impl FileObject for HostFile {
    /// Always ready: Linux's `epoll` refuses it (`EPERM`).
    fn can_epoll(&self) -> bool {
        false
    }

    fn read(&self, buf: &mut [u8], _status: OpenFlags) -> Result<usize, Errno> {
        let mut position = self.position.lock();
        let n = self.handle.read(position.offset, buf)?;
        position.offset += n as u64;
        Ok(n)
    }

    /// With `O_APPEND` at the end: the host writes there itself when the
    /// file was opened so; when `F_SETFL` added the flag later, the end is
    /// asked for first (a host process writing meanwhile could race it).
    fn write(&self, buf: &[u8], status: OpenFlags) -> Result<usize, Errno> {
        let mut position = self.position.lock();
        let is_append = status.contains(OpenFlags::APPEND);
        let at = if is_append {
            self.handle.stat()?.size
        } else {
            position.offset
        };
        let n = self.handle.write(at, buf)?;
        position.offset = if is_append {
            self.handle.stat()?.size
        } else {
            position.offset + n as u64
        };
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.handle.read(offset, buf)
    }

    /// As Linux: with `O_APPEND`, at the end whatever `offset` says.
    fn pwrite(&self, buf: &[u8], offset: u64, status: OpenFlags) -> Result<usize, Errno> {
        let at = if status.contains(OpenFlags::APPEND) {
            self.handle.stat()?.size
        } else {
            offset
        };
        self.handle.write(at, buf)
    }

    fn seek(&self, offset: i64, whence: Whence) -> Result<u64, Errno> {
        self.position
            .lock()
            .seek(offset, whence, || Ok(self.handle.stat()?.size))
    }

    fn path(&self) -> Option<&[u8]> {
        Some(&self.path)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        self.handle.stat()
    }

    fn set_len(&self, len_bytes: u64) -> Result<(), Errno> {
        self.handle.set_len(len_bytes)
    }

    fn sync(&self, data_only: bool) -> Result<(), Errno> {
        self.handle.sync(data_only)
    }

    fn read_dir(
        &self,
        max_bytes: usize,
        emit: &mut dyn FnMut(Listed<'_>) -> bool,
    ) -> Result<usize, Errno> {
        let mut position = self.position.lock();
        self.handle.read_dir(&mut position.dir, max_bytes, emit)
    }
}
