//! Guest → host calls.
//!
//! A hypercall is one 32-bit port write (`out dx, eax`): the port names the
//! call ([`Port`]), the value is the guest-physical address of its request
//! struct (8-byte aligned, entirely inside guest RAM). The VMM copies the
//! request out of guest memory, validates every field, acts, and writes the
//! result field back. A request the VMM cannot read is counted and ignored;
//! a request with a bad field gets a negative errno in its result field.
//!
//! Each call costs a VM exit (tens of microseconds on the machines we test
//! on), so the kernel batches: console output is buffered, and information
//! the VMM only needs at the end is left in [`crate::KernelReport`].
//! One page per call in `docs/hypercalls/`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// First hypercall port.
pub const PORT_BASE: u16 = 0x500;

/// The hypercalls, by port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Port {
    /// [`ConsoleWrite`]: write guest bytes to the host's stdout or stderr.
    ConsoleWrite = PORT_BASE,
    /// [`Exit`]: the guest is done; the VMM stops every vCPU.
    Exit = PORT_BASE + 1,
    /// [`Sleep`]: block this vCPU on the host for a while.
    Sleep = PORT_BASE + 2,
}

impl Port {
    /// Every hypercall port, for building the TSS I/O permission bitmap.
    pub const ALL: [Port; 3] = [Port::ConsoleWrite, Port::Exit, Port::Sleep];

    /// The port for a port number, if it is a hypercall.
    pub fn from_port(port: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u16 == port)
    }

    /// Size of the request struct this call reads.
    pub fn request_size(self) -> usize {
        match self {
            Port::ConsoleWrite => size_of::<ConsoleWrite>(),
            Port::Exit => size_of::<Exit>(),
            Port::Sleep => size_of::<Sleep>(),
        }
    }
}

/// Required alignment of every request struct.
pub const REQUEST_ALIGN: u64 = 8;

/// The 32-bit port value for a request at `gpa`, or `None` when the address
/// does not fit (the VMM keeps all RAM below 4 GiB, see
/// [`crate::layout::MAX_MEMORY`]) or is misaligned.
pub fn encode_request_addr(gpa: u64) -> Option<u32> {
    if !gpa.is_multiple_of(REQUEST_ALIGN) {
        return None;
    }
    u32::try_from(gpa).ok()
}

/// Output stream of a [`ConsoleWrite`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    /// The application's standard output.
    Stdout = 1,
    /// The application's standard error.
    Stderr = 2,
    /// The kernel's log, shown on the host's stderr with `--verbose`.
    KernelLog = 3,
}

impl TryFrom<u32> for Stream {
    type Error = u32;

    fn try_from(raw: u32) -> Result<Self, u32> {
        match raw {
            1 => Ok(Stream::Stdout),
            2 => Ok(Stream::Stderr),
            3 => Ok(Stream::KernelLog),
            other => Err(other),
        }
    }
}

/// Write `len` bytes at guest address `buf` to `stream`.
/// `result`: bytes written, or a negative errno (`EFAULT` when the buffer
/// is not inside guest RAM, `EINVAL` for an unknown stream, `EIO` when the
/// host write failed).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct ConsoleWrite {
    /// A [`Stream`] value.
    pub stream: u32,
    /// Zero.
    pub reserved: u32,
    /// Guest address of the bytes.
    pub buf: u64,
    /// Number of bytes.
    pub len: u64,
    /// Written by the VMM.
    pub result: i64,
}

impl ConsoleWrite {
    /// Offset of `result`, which the VMM writes back.
    pub const RESULT_OFFSET: u64 = core::mem::offset_of!(ConsoleWrite, result) as u64;
}

/// Why the guest stopped, in an [`Exit`] request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitKind {
    /// The application called `exit(code)` or returned from `main`.
    Exit = 0,
    /// The application called `abort()` (Rust: a panic, or an allocation
    /// failure).
    Abort = 1,
    /// An unhandled CPU exception; `code` is the vector. The kernel has
    /// already printed vector, RIP, CR2 and a backtrace.
    Exception = 2,
    /// The kernel itself failed (its message is already printed).
    KernelPanic = 3,
    /// Every thread is blocked and nothing can wake one.
    Deadlock = 4,
}

impl TryFrom<u32> for ExitKind {
    type Error = u32;

    fn try_from(raw: u32) -> Result<Self, u32> {
        match raw {
            0 => Ok(ExitKind::Exit),
            1 => Ok(ExitKind::Abort),
            2 => Ok(ExitKind::Exception),
            3 => Ok(ExitKind::KernelPanic),
            4 => Ok(ExitKind::Deadlock),
            other => Err(other),
        }
    }
}

/// Stop the VM. Never returns to the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct Exit {
    /// Exit status (for [`ExitKind::Exit`]) or vector (for
    /// [`ExitKind::Exception`]).
    pub code: i32,
    /// An [`ExitKind`] value.
    pub kind: u32,
}

/// Block the calling vCPU for `duration_ns` (at most [`Sleep::MAX_NS`]).
/// Used while the kernel has nothing else to run.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct Sleep {
    /// How long to sleep.
    pub duration_ns: u64,
}

impl Sleep {
    /// Longest single sleep the VMM performs; it refuses longer requests
    /// (without sleeping), so the kernel asks for at most this and repeats.
    pub const MAX_NS: u64 = 1_000_000_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_round_trip() {
        for p in Port::ALL {
            assert_eq!(Port::from_port(p as u16), Some(p));
        }
        assert_eq!(Port::from_port(PORT_BASE + 100), None);
    }

    #[test]
    fn request_addresses_must_fit_and_align() {
        assert_eq!(encode_request_addr(0x1000), Some(0x1000));
        assert_eq!(encode_request_addr(0x1004), None);
        assert_eq!(encode_request_addr(1 << 32), None);
    }

    #[test]
    fn unknown_enum_values_are_rejected() {
        assert_eq!(Stream::try_from(0), Err(0));
        assert_eq!(Stream::try_from(2), Ok(Stream::Stderr));
        assert_eq!(ExitKind::try_from(9), Err(9));
    }
}
