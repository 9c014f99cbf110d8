//! Console output, buffered in the guest.
//!
//! Every flush is a VM exit (tens of microseconds on PVM hosts), so output
//! is collected in a buffer and sent when a write contains a newline, when
//! the buffer is full, when the other stream is written (to keep the order
//! between stdout and stderr), and at exit. Writes larger than the buffer
//! go to the host straight from the caller's memory.
//!
//! The kernel's own log ([`klog!`]) is only produced with `--verbose`.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use eremite_interface::errno::Errno;
use eremite_interface::hypercall::Stream;

use crate::hypervisor;
use crate::sync::Lock;

const BUFFER_BYTES: usize = 4096;

struct Console {
    /// Which stream `buffer` holds bytes for.
    stream: Stream,
    buffer: [u8; BUFFER_BYTES],
    len: usize,
}

impl Console {
    fn flush(&mut self) -> Result<(), Errno> {
        let mut sent = 0;
        while sent < self.len {
            match hypervisor::console_write(self.stream, &self.buffer[sent..self.len]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) => {
                    self.len = 0;
                    return Err(e);
                }
            }
        }
        self.len = 0;
        Ok(())
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<usize, Errno> {
        if stream != self.stream {
            self.flush()?;
            self.stream = stream;
        }
        if bytes.len() > BUFFER_BYTES - self.len {
            self.flush()?;
            if bytes.len() >= BUFFER_BYTES {
                return hypervisor::console_write(stream, bytes);
            }
        }
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        if bytes.contains(&b'\n') {
            self.flush()?;
        }
        Ok(bytes.len())
    }
}

static CONSOLE: Lock<Console> = Lock::new(Console {
    stream: Stream::Stdout,
    buffer: [0; BUFFER_BYTES],
    len: 0,
});

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Enable the kernel log (`--verbose`).
pub(crate) fn set_verbose(is_verbose: bool) {
    VERBOSE.store(is_verbose, Ordering::Relaxed);
}

/// Whether the kernel log is on.
pub(crate) fn is_verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Write application output to stdout or stderr.
pub(crate) fn write(stream: Stream, bytes: &[u8]) -> Result<usize, Errno> {
    CONSOLE.lock().write(stream, bytes)
}

/// Send everything buffered. Used at exit and before fault reports; does
/// not wait for a console lock held by an interrupted writer.
pub(crate) fn flush() {
    for _ in 0..1000 {
        if let Some(mut console) = CONSOLE.try_lock() {
            let _ = console.flush();
            return;
        }
        crate::arch::pause();
    }
}

/// A `fmt::Write` sink for one stream.
pub(crate) struct Writer(pub(crate) Stream);

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(self.0, s.as_bytes())
            .map(|_| ())
            .map_err(|_| fmt::Error)
    }
}

/// A `fmt::Write` sink that bypasses the console buffer and its lock: for
/// fault and panic reports, which may interrupt a console writer. It
/// collects text on its own stack and sends it when dropped or full.
pub(crate) struct DirectWriter {
    stream: Stream,
    buffer: [u8; 1024],
    len: usize,
}

impl DirectWriter {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            buffer: [0; 1024],
            len: 0,
        }
    }

    fn send(&mut self) {
        let _ = hypervisor::console_write(self.stream, &self.buffer[..self.len]);
        self.len = 0;
    }
}

impl fmt::Write for DirectWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buffer.len()) {
            if chunk.len() > self.buffer.len() - self.len {
                self.send();
            }
            self.buffer[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        self.send();
    }
}

/// Log a line to the kernel log (shown by the VMM with `--verbose`).
macro_rules! klog {
    ($($arg:tt)*) => {
        if $crate::console::is_verbose() {
            use core::fmt::Write as _;
            let _ = writeln!(
                $crate::console::Writer(eremite_interface::hypercall::Stream::KernelLog),
                $($arg)*
            );
        }
    };
}
pub(crate) use klog;
