//! The standard streams: descriptors 0, 1 and 2. Output goes to the
//! host's stdout and stderr through the console buffer; no standard input
//! is connected yet, so reading it is the end of file.

use eremite_interface::errno::Errno;
use eremite_interface::fs::{FileStat, OpenFlags, S_IFCHR};
use eremite_interface::hypercall::Stream;

use super::FileObject;
use crate::console;

fn character_device() -> FileStat {
    FileStat {
        mode: S_IFCHR | 0o620,
        nlink: 1,
        ..FileStat::default()
    }
}

/// Standard input.
pub(super) struct Stdin;

impl FileObject for Stdin {
    fn read(&self, _buf: &mut [u8], _status: OpenFlags) -> Result<usize, Errno> {
        Ok(0)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(character_device())
    }
}

/// Standard output or error.
pub(super) struct Output(pub(super) Stream);

impl FileObject for Output {
    fn write(&self, buf: &[u8], _status: OpenFlags) -> Result<usize, Errno> {
        console::write(self.0, buf)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(character_device())
    }
}
