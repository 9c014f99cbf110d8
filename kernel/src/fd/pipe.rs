//! Pipes: a 64 KiB byte queue between a read end and a write end, as
//! Linux's `pipe(2)`. Reading an empty pipe waits (or `EAGAIN`) while a
//! write end is open and is end of file after; writing waits for room
//! (writes of up to `PIPE_BUF` bytes go in whole, larger ones may be
//! split) and fails with `EPIPE` once no read end is open (the ABI adds
//! `SIGPIPE`). A blocked end waits for a change (`events`).

use alloc::collections::VecDeque;
use alloc::sync::Arc;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{FileStat, OpenFlags, S_IFIFO};

use super::{FileObject, blocking};
use crate::events;
use crate::net::Readiness;
use crate::sync::Lock;

/// Linux's default pipe capacity.
const CAPACITY: usize = 64 * 1024;
/// Writes up to this size are atomic (POSIX `PIPE_BUF`).
const PIPE_BUF: usize = 4096;
struct State {
    queue: VecDeque<u8>,
    readers: usize,
    writers: usize,
    /// Bytes ever written and read: the ends' progress.
    moved: u64,
}

/// The queue both ends share.
struct Pipe(Lock<State>);

/// One end of a pipe.
pub(super) struct PipeEnd {
    pipe: Arc<Pipe>,
    is_write: bool,
}

/// One end of a connected pair of stream sockets (`socketpair(AF_UNIX,
/// SOCK_STREAM)`): a pipe in each direction. Closing one end is end of
/// file for the other's reads and `EPIPE` for its writes.
pub(super) struct PairEnd {
    rx: PipeEnd,
    tx: PipeEnd,
}

/// A new connected pair.
pub(super) fn new_pair() -> (PairEnd, PairEnd) {
    let (a_rx, b_tx) = new();
    let (b_rx, a_tx) = new();
    (
        PairEnd { rx: a_rx, tx: a_tx },
        PairEnd { rx: b_rx, tx: b_tx },
    )
}

impl FileObject for PairEnd {
    fn read(&self, buf: &mut [u8], status: OpenFlags) -> Result<usize, Errno> {
        self.rx.read(buf, status)
    }

    fn write(&self, buf: &[u8], status: OpenFlags) -> Result<usize, Errno> {
        self.tx.write(buf, status)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(super::socket::socket_stat())
    }

    fn readiness(&self) -> Readiness {
        let (rx, tx) = (self.rx.readiness(), self.tx.readiness());
        Readiness {
            is_readable: rx.is_readable,
            has_hangup: rx.has_hangup && tx.has_error,
            is_writable: tx.is_writable,
            has_error: false,
        }
    }

    fn available(&self) -> Result<usize, Errno> {
        self.rx.available()
    }

    fn progress(&self) -> u64 {
        self.rx.progress() + self.tx.progress()
    }

    fn is_socket_pair(&self) -> bool {
        true
    }
}

/// A new pipe's read and write ends.
pub(super) fn new() -> (PipeEnd, PipeEnd) {
    let pipe = Arc::new(Pipe(Lock::new(State {
        queue: VecDeque::new(),
        readers: 1,
        writers: 1,
        moved: 0,
    })));
    (
        PipeEnd {
            pipe: Arc::clone(&pipe),
            is_write: false,
        },
        PipeEnd {
            pipe,
            is_write: true,
        },
    )
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut state = self.pipe.0.lock();
        if self.is_write {
            state.writers -= 1;
        } else {
            state.readers -= 1;
        }
        drop(state);
        // A reader now sees end of file, a writer EPIPE.
        events::changed();
    }
}

impl PipeEnd {
    /// Take up to `buf.len()` bytes: `None` while empty with a writer.
    fn take(&self, buf: &mut [u8]) -> Option<usize> {
        let mut state = self.pipe.0.lock();
        if state.queue.is_empty() {
            return (state.writers == 0).then_some(0);
        }
        let n = buf.len().min(state.queue.len());
        for (to, from) in buf.iter_mut().zip(state.queue.drain(..n)) {
            *to = from;
        }
        state.moved += n as u64;
        Some(n)
    }

    /// Put what fits of `data` (all or nothing for up to `PIPE_BUF`
    /// bytes): `None` while it must wait for room.
    fn put(&self, data: &[u8]) -> Option<Result<usize, Errno>> {
        let mut state = self.pipe.0.lock();
        if state.readers == 0 {
            return Some(Err(errno::EPIPE));
        }
        let room = CAPACITY - state.queue.len();
        if room == 0 || (data.len() <= PIPE_BUF && room < data.len()) {
            return None;
        }
        let n = data.len().min(room);
        state.queue.extend(&data[..n]);
        state.moved += n as u64;
        Some(Ok(n))
    }
}

impl FileObject for PipeEnd {
    fn read(&self, buf: &mut [u8], status: OpenFlags) -> Result<usize, Errno> {
        if self.is_write {
            return Err(errno::EBADF);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = blocking(status).deadline_ns();
        let n = events::wait_until(deadline, || self.take(buf))?.ok_or(errno::EAGAIN)?;
        events::changed();
        Ok(n)
    }

    /// A blocking write returns when all of `buf` is in (or the readers
    /// are gone, after some of it); a non-blocking one takes what fits.
    fn write(&self, buf: &[u8], status: OpenFlags) -> Result<usize, Errno> {
        if !self.is_write {
            return Err(errno::EBADF);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = blocking(status).deadline_ns();
        let mut written = 0;
        while written < buf.len() {
            match events::wait_until(deadline, || self.put(&buf[written..])) {
                Ok(Some(Ok(n))) => {
                    written += n;
                    events::changed();
                }
                Ok(Some(Err(e))) | Err(e) if written == 0 => return Err(e),
                Ok(None) if written == 0 => return Err(errno::EAGAIN),
                Ok(Some(Err(_)) | None) | Err(_) => break,
            }
            if deadline == Some(0) {
                break;
            }
        }
        Ok(written)
    }

    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(FileStat {
            mode: S_IFIFO | 0o600,
            nlink: 1,
            ..FileStat::default()
        })
    }

    /// The read end: readable with data or no writer (then hung up too).
    /// The write end: writable with `PIPE_BUF` bytes of room, an error
    /// once no reader is left.
    fn readiness(&self) -> Readiness {
        let state = self.pipe.0.lock();
        if self.is_write {
            Readiness {
                is_writable: state.readers == 0 || CAPACITY - state.queue.len() >= PIPE_BUF,
                has_error: state.readers == 0,
                ..Readiness::default()
            }
        } else {
            Readiness {
                is_readable: !state.queue.is_empty() || state.writers == 0,
                has_hangup: state.writers == 0,
                ..Readiness::default()
            }
        }
    }

    /// What the pipe holds (0 at the write end, as Linux).
    fn available(&self) -> Result<usize, Errno> {
        Ok(if self.is_write {
            0
        } else {
            self.pipe.0.lock().queue.len()
        })
    }

    fn progress(&self) -> u64 {
        let state = self.pipe.0.lock();
        state.moved + u64::from(state.readers == 0) + u64::from(state.writers == 0)
    }
}
