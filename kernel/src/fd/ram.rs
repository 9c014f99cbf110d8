//! Files and directories of the RAM file system (`fs::RamNode`), with the
//! position and listing progress of their open file description.

use alloc::boxed::Box;

use eremite_interface::errno::Errno;
use eremite_interface::fs::{FileStat, OpenFlags};

use super::{FileObject, Position, Whence};
use crate::fs::{Listed, RamNode};
use crate::sync::Lock;

pub(super) struct RamFile {
    node: RamNode,
    position: Lock<Position>,
    /// The absolute path it was opened by.
    path: Box<[u8]>,
}

impl RamFile {
    pub(super) fn new(node: RamNode, path: Box<[u8]>) -> Self {
        Self {
            node,
            position: Lock::new(Position::default()),
            path,
        }
    }
}

impl FileObject for RamFile {
    /// Always ready: Linux's `epoll` refuses it (`EPERM`).
    fn can_epoll(&self) -> bool {
        false
    }

    fn read(&self, buf: &mut [u8], _status: OpenFlags) -> Result<usize, Errno> {
        let mut position = self.position.lock();
        let n = self.node.read(position.offset, buf)?;
        position.offset += n as u64;
        Ok(n)
    }

    fn write(&self, buf: &[u8], status: OpenFlags) -> Result<usize, Errno> {
        let mut position = self.position.lock();
        let at = (!status.contains(OpenFlags::APPEND)).then_some(position.offset);
        let (n, offset) = self.node.write(at, buf)?;
        position.offset = offset + n as u64;
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.node.read(offset, buf)
    }

    fn pwrite(&self, buf: &[u8], offset: u64, status: OpenFlags) -> Result<usize, Errno> {
        // As on Linux, pwrite on an O_APPEND file appends too.
        let at = (!status.contains(OpenFlags::APPEND)).then_some(offset);
        self.node.write(at, buf).map(|(n, _)| n)
    }

    fn seek(&self, offset: i64, whence: Whence) -> Result<u64, Errno> {
        self.position
            .lock()
            .seek(offset, whence, || self.node.seek_end())
    }

    fn path(&self) -> Option<&[u8]> {
        Some(&self.path)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        self.node.stat()
    }

    fn set_len(&self, len_bytes: u64) -> Result<(), Errno> {
        self.node.set_len(len_bytes)
    }

    fn read_dir(
        &self,
        _max_bytes: usize,
        emit: &mut dyn FnMut(Listed<'_>) -> bool,
    ) -> Result<usize, Errno> {
        let mut position = self.position.lock();
        self.node.read_dir(&mut position.dir, emit)
    }
}
