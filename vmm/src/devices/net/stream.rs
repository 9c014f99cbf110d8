//! Frames over a stream socket, as QEMU's stream netdev carries them: a
//! 32-bit big-endian length, then the Ethernet frame. passt speaks it
//! (`passt`), and so does eremite's switch between VMs (`switch`).
//! Reads gather whatever the socket holds and hand out one frame at a
//! time; a write sends the length and the frame in one `writev` and
//! finishes a partial one before anything else (a frame is never cut, or
//! every later one would be misread).

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::{MAX_FRAME_BYTES, MIN_FRAME_BYTES};

/// Bytes of the length that comes before each frame.
pub(crate) const LENGTH_BYTES: usize = 4;
/// How much of the socket one read may gather: several full frames.
const RX_BUFFER_BYTES: usize = 256 << 10;
/// How long a frame may wait for room in the socket before it is dropped
/// (nothing of it written) or the link is declared dead (part written).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Append `frame` behind its length to `out`, as the stream carries it
/// (`frame` is at most [`MAX_FRAME_BYTES`]).
pub(crate) fn push_framed(out: &mut Vec<u8>, frame: &[u8]) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

/// Frames over a non-blocking stream socket, each behind its length.
#[derive(Debug)]
pub(crate) struct Framed {
    pub(crate) socket: UnixStream,
    /// Bytes read but not yet handed out: `rx[start..end]`.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Part of a frame went out and the rest could not: the stream can no
    /// longer be framed.
    is_broken: bool,
}

impl Framed {
    /// Frames over `socket`, which is made non-blocking.
    pub(crate) fn new(socket: UnixStream) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            rx: vec![0; RX_BUFFER_BYTES],
            rx_start: 0,
            rx_end: 0,
            is_broken: false,
        })
    }

    /// Write `frame` behind its length, waiting for room as needed.
    pub(crate) fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.is_broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the link to passt broke mid-frame",
            ));
        }
        let length = u32::try_from(frame.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?
            .to_be_bytes();
        let total = LENGTH_BYTES + frame.len();
        let mut sent = 0;
        let deadline = Instant::now() + WRITE_TIMEOUT;
        while sent < total {
            let slices = if sent < LENGTH_BYTES {
                [IoSlice::new(&length[sent..]), IoSlice::new(frame)]
            } else {
                [
                    IoSlice::new(&frame[sent - LENGTH_BYTES..]),
                    IoSlice::new(&[]),
                ]
            };
            match self.socket.write_vectored(&slices) {
                Ok(0) => return Err(self.broken(sent, io::ErrorKind::WriteZero.into())),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_for(&self.socket, PollFlags::OUT, left) {
                        return Err(self.broken(sent, io::ErrorKind::TimedOut.into()));
                    }
                }
                Err(e) => return Err(self.broken(sent, e)),
            }
        }
        Ok(())
    }

    /// A write failed after `sent` bytes of a frame: only a frame not
    /// begun can be given up on.
    fn broken(&mut self, sent: usize, error: io::Error) -> io::Error {
        if sent > 0 {
            self.is_broken = true;
        }
        error
    }

    /// The frame at the front of the buffer, if it is there whole.
    fn buffered_frame(&self) -> io::Result<Option<(usize, usize)>> {
        let held = &self.rx[self.rx_start..self.rx_end];
        let Some(length) = held.first_chunk::<LENGTH_BYTES>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*length)).unwrap_or(usize::MAX);
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the other end sent a frame of {len} bytes"),
            ));
        }
        let start = self.rx_start + LENGTH_BYTES;
        Ok((held.len() >= LENGTH_BYTES + len).then_some((start, len)))
    }

    /// The next frame into `buf` (cut to its size); `WouldBlock` when no
    /// whole frame has come, `UnexpectedEof` when the other end closed,
    /// `InvalidData` for a length no frame has.
    pub(crate) fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((start, len)) = self.buffered_frame()? {
                let frame = &self.rx[start..start + len];
                let copied = frame.len().min(buf.len());
                buf[..copied].copy_from_slice(&frame[..copied]);
                self.rx_start = start + len;
                return Ok(copied);
            }
            // Keep the partial frame, at the front.
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
            match self.socket.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.rx_end += n,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Wait until `fd` is ready for `flags` or `timeout` passes.
pub(crate) fn wait_for(fd: &impl AsFd, flags: PollFlags, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(fd, flags)];
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: 5,
        tv_nsec: 0,
    });
    matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A framed link and the raw other end of its socket.
    fn framed_pair() -> (Framed, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (Framed::new(ours).unwrap(), theirs)
    }

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut bytes = u32::try_from(frame.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(frame);
        bytes
    }

    #[test]
    fn frames_are_read_whole_however_the_stream_cuts_them() {
        let (mut link, mut other) = framed_pair();
        let a: Vec<u8> = (0..60u8).collect();
        let b = vec![7u8; 3000];
        let c = vec![9u8; MAX_FRAME_BYTES];
        let mut stream = framed(&a);
        stream.extend(framed(&b));
        stream.extend(framed(&c));
        let mut buf = vec![0u8; MAX_FRAME_BYTES];
        let would_block = |link: &mut Framed, buf: &mut [u8]| {
            link.read_frame(buf).unwrap_err().kind() == io::ErrorKind::WouldBlock
        };
        assert!(would_block(&mut link, &mut buf), "nothing sent yet");
        // Three bytes of the first length, then the rest in odd pieces.
        other.write_all(&stream[..3]).unwrap();
        assert!(would_block(&mut link, &mut buf));
        other.write_all(&stream[3..70]).unwrap();
        assert_eq!(link.read_frame(&mut buf).unwrap(), 60);
        assert_eq!(buf[..60], a[..]);
        assert!(would_block(&mut link, &mut buf), "the second is not whole");
        let writer = std::thread::spawn(move || {
            other.write_all(&stream[70..]).unwrap();
            other
        });
        let mut got = Vec::new();
        while got.len() < 2 {
            match link.read_frame(&mut buf) {
                Ok(len) => got.push(buf[..len].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for(&link.socket, PollFlags::IN, Duration::from_secs(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, [b, c]);
        drop(writer.join().unwrap());
        assert_eq!(
            link.read_frame(&mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_length_no_frame_has_breaks_the_link() {
        for len in [0u32, 13, 65_551, u32::MAX] {
            let (mut link, mut other) = framed_pair();
            other.write_all(&len.to_be_bytes()).unwrap();
            other.write_all(&[0; 64]).unwrap();
            let err = link.read_frame(&mut [0; 100]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{len}");
        }
    }

    #[test]
    fn sent_frames_carry_their_length_and_wait_for_room() {
        let (mut link, mut other) = framed_pair();
        // More than the socket holds: send waits while the reader drains.
        let frame = vec![0xa5u8; MAX_FRAME_BYTES];
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            other.read_to_end(&mut all).unwrap();
            all
        });
        for _ in 0..64 {
            link.send(&frame).unwrap();
        }
        drop(link);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), 64 * (LENGTH_BYTES + MAX_FRAME_BYTES));
        for chunk in all.chunks(LENGTH_BYTES + MAX_FRAME_BYTES) {
            assert_eq!(
                chunk[..4],
                u32::try_from(MAX_FRAME_BYTES).unwrap().to_be_bytes()
            );
            assert!(chunk[4..].iter().all(|&b| b == 0xa5));
        }
    }
}
