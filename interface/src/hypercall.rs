//! Guest → host calls.
//!
//! A hypercall is one 32-bit port write (`out dx, eax`): the port names the
//! call ([`Port`]), the value is the guest-physical address of its request
//! struct (8-byte aligned, entirely inside guest RAM) shifted right by
//! three ([`encode_request_addr`]), so requests anywhere in the first
//! 32 GiB can be named. The VMM copies the
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
    /// [`StartCpu`]: start an application processor.
    StartCpu = PORT_BASE + 2,
    /// [`HostFs`]: a file operation below a host directory mounted with
    /// `--mount`.
    HostFs = PORT_BASE + 3,
    /// [`Populate`]: back a range of guest RAM with host memory now.
    Populate = PORT_BASE + 4,
    /// [`Snapshot`]: snapshot the VM now (`eremite run --snapshot-to`).
    /// Past the debug port (`trap::DEBUG_PORT`, `PORT_BASE + 8`): a 32-bit
    /// `out` uses four ports, and the debug port must stay closed to CPL3.
    Snapshot = PORT_BASE + 9,
}

impl Port {
    /// Every hypercall port, for building the TSS I/O permission bitmap.
    pub const ALL: [Port; 6] = [
        Port::ConsoleWrite,
        Port::Exit,
        Port::StartCpu,
        Port::HostFs,
        Port::Populate,
        Port::Snapshot,
    ];

    /// The port for a port number, if it is a hypercall.
    pub fn from_port(port: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u16 == port)
    }

    /// Size of the request struct this call reads.
    pub fn request_size(self) -> usize {
        match self {
            Port::ConsoleWrite => size_of::<ConsoleWrite>(),
            Port::Exit => size_of::<Exit>(),
            Port::HostFs => size_of::<HostFs>(),
            Port::StartCpu => size_of::<StartCpu>(),
            Port::Populate => size_of::<Populate>(),
            Port::Snapshot => size_of::<Snapshot>(),
        }
    }
}

/// Required alignment of every request struct.
pub const REQUEST_ALIGN: u64 = 8;

/// How far a request's address is shifted right in the port value: the
/// alignment's low zero bits are not sent.
pub const REQUEST_ADDR_SHIFT: u32 = REQUEST_ALIGN.trailing_zeros();

/// One past the highest guest-physical address a request can lie at
/// (32 GiB): the VMM keeps all RAM below it (see
/// [`crate::layout::MAX_MEMORY`]).
pub const MAX_REQUEST_END: u64 = 1 << (32 + REQUEST_ADDR_SHIFT);

/// The 32-bit port value for a request at `gpa` (`gpa >> 3`), or `None`
/// when the address is misaligned or not below [`MAX_REQUEST_END`].
pub fn encode_request_addr(gpa: u64) -> Option<u32> {
    if !gpa.is_multiple_of(REQUEST_ALIGN) {
        return None;
    }
    u32::try_from(gpa >> REQUEST_ADDR_SHIFT).ok()
}

/// The request address a port value names (the inverse of
/// [`encode_request_addr`]; always aligned).
pub fn decode_request_addr(value: u32) -> u64 {
    u64::from(value) << REQUEST_ADDR_SHIFT
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

/// Start application processor `cpu` (1 ≤ `cpu` < the boot info's
/// `cpu_count`, each at most once) at CPL3 in 64-bit mode, in the same
/// machine state as the boot CPU but with its own TSS, at `rip` with `rsp`
/// and `rdi = arg`. `result`: 0, or `-EINVAL` for a CPU that does not
/// exist or already runs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct StartCpu {
    /// Which CPU (its index, which is also its local APIC ID).
    pub cpu: u32,
    /// Zero.
    pub reserved: u32,
    /// Where it starts.
    pub rip: u64,
    /// Its stack pointer at `rip`.
    pub rsp: u64,
    /// Its first argument (`rdi`).
    pub arg: u64,
    /// 0 or a negative errno, written by the VMM.
    pub result: i64,
}

/// Request of [`Port::Populate`]: the kernel is about to use
/// `[addr, addr + len)` of RAM it never used before; the host backs it
/// with memory now, in one exit, instead of one host page fault per page
/// at first touch. Page-aligned, inside one RAM range, at most
/// [`Populate::MAX_LEN`] bytes; `-EINVAL` otherwise. Only a hint: the
/// guest's memory reads the same with or without it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct Populate {
    /// First byte (page-aligned).
    pub addr: u64,
    /// Length in bytes (a page multiple).
    pub len: u64,
    /// 0 or a negative errno, written by the VMM.
    pub result: i64,
}

/// Request of [`Port::Snapshot`]: the guest asks to be snapshotted into
/// the directory the VMM was given (`eremite run --snapshot-to DIR`), at
/// this point of its run, and then to go on or stop. The call returns
/// once the snapshot is written, in the VM that asked (`result` 0) and in
/// every VM restored from it (`result` [`Snapshot::RESTORED`]); with
/// `stop`, the VM that asked never returns. A negative errno when no
/// snapshot was written: `EOPNOTSUPP` without `--snapshot-to` (or with a
/// FIFO, socket or device open on a mount), `EBUSY` while another is being
/// taken, `EIO` when it could not be written.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct Snapshot {
    /// Non-zero: stop the VM once the snapshot is written.
    pub stop: u64,
    /// Written by the VMM (see above).
    pub result: i64,
}

impl Snapshot {
    /// `result` in a VM restored from the snapshot.
    pub const RESTORED: i64 = 1;
}

impl Populate {
    /// Most bytes one call may ask for (bounded work per exit).
    pub const MAX_LEN: u64 = 64 << 20;
}

/// The operations of a [`HostFs`] request.
///
/// Paths are relative to the mount's host directory: bytes without NUL,
/// components separated by `/`, no leading `/`; the empty path names the
/// directory itself. The VMM resolves them beneath that directory only
/// (`..`, absolute symbolic links and links that lead outside fail with
/// `EXDEV`/`ELOOP`/`EACCES`; nothing outside is ever touched). Handles are
/// the VMM's numbers for files it opened for this guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum HostFsOp {
    /// Open `path` with `flags` (`crate::fs::O_*`) and `mode`; result: a
    /// handle. When `buf_len` is not 0, the opened file's
    /// [`crate::fs::FileStat`] is written to `buf` as well (`buf_len` at
    /// least its size): one exit where open and `fstat` took two.
    Open = 1,
    /// Close `handle`.
    Close = 2,
    /// Read up to `buf_len` bytes at `offset` of `handle` into `buf`;
    /// result: bytes read (0 at end of file).
    Read = 3,
    /// Write `buf_len` bytes from `buf` at `offset` of `handle` (at the end
    /// when it was opened with `O_APPEND`); result: bytes written.
    Write = 4,
    /// Write the [`crate::fs::FileStat`] of `path` to `buf`; `flags` is
    /// [`HostFs::NOFOLLOW`] for `lstat`.
    Stat = 5,
    /// Write the [`crate::fs::FileStat`] of `handle` to `buf`.
    Fstat = 6,
    /// Create directory `path` with `mode`.
    Mkdir = 7,
    /// Remove the non-directory `path`.
    Unlink = 8,
    /// Remove the empty directory `path`.
    Rmdir = 9,
    /// Rename `path` to `path2` (both in this mount).
    Rename = 10,
    /// Create a symbolic link at `path` whose target is `path2`.
    Symlink = 11,
    /// Copy the target of the symbolic link `path` into `buf`; result: its
    /// length (the whole length even when `buf_len` is smaller).
    Readlink = 12,
    /// Set the length of `path` to `offset`.
    Truncate = 13,
    /// Set the length of `handle` to `offset`.
    Ftruncate = 14,
    /// Fill `buf` with [`crate::fs::DirRecord`]s of the directory `handle`,
    /// starting at cookie `offset` (0: the first entry); result: bytes
    /// written, 0 at the end.
    ReadDir = 15,
    /// Create a hard link at `path2` to the file at `path`.
    Link = 16,
    /// Set the permission bits of `path` to `mode`.
    Chmod = 17,
    /// Close every handle of the mount listed at `buf`: `buf_len / 8`
    /// little-endian `u64`s, at most [`HostFs::MAX_CLOSE_BATCH`] (the
    /// kernel gathers closes and sends them together). A handle that is
    /// not open is skipped; result: how many were closed.
    CloseMany = 18,
    /// Make `handle`'s data durable on the host: `fsync`, or `fdatasync`
    /// when `flags` is [`HostFs::DATA_ONLY`]. On a directory, its entries
    /// (so that a rename or a new file in it survives a host crash).
    Sync = 19,
}

impl TryFrom<u32> for HostFsOp {
    type Error = u32;

    fn try_from(raw: u32) -> Result<Self, u32> {
        use HostFsOp::*;
        const ALL: [HostFsOp; 19] = [
            Open, Close, Read, Write, Stat, Fstat, Mkdir, Unlink, Rmdir, Rename, Symlink, Readlink,
            Truncate, Ftruncate, ReadDir, Link, Chmod, CloseMany, Sync,
        ];
        ALL.into_iter().find(|op| *op as u32 == raw).ok_or(raw)
    }
}

/// One file operation in a mounted host directory (`--mount`); which
/// fields matter depends on `op` ([`HostFsOp`]). `result`: the value the
/// operation documents, or a negative errno.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, align(8))]
pub struct HostFs {
    /// A [`HostFsOp`] value.
    pub op: u32,
    /// Index of the mount in [`crate::BootInfo::mounts`].
    pub mount: u32,
    /// A handle from [`HostFsOp::Open`].
    pub handle: u64,
    /// Guest address of the path.
    pub path: u64,
    /// Length of the path in bytes.
    pub path_len: u64,
    /// Guest address of the second path (rename target, link target).
    pub path2: u64,
    /// Length of the second path.
    pub path2_len: u64,
    /// Guest address of the data buffer.
    pub buf: u64,
    /// Length of the data buffer.
    pub buf_len: u64,
    /// File offset, new length, or directory cookie.
    pub offset: u64,
    /// Open flags, or [`HostFs::NOFOLLOW`] for `Stat`.
    pub flags: u32,
    /// Mode for `Open` with `O_CREAT`, `Mkdir` and `Chmod`.
    pub mode: u32,
    /// Written by the VMM.
    pub result: i64,
}

impl HostFs {
    /// Offset of `result`, which the VMM writes back.
    pub const RESULT_OFFSET: u64 = core::mem::offset_of!(HostFs, result) as u64;
    /// `Stat` flag: do not follow a symbolic link in the last component.
    pub const NOFOLLOW: u32 = 1;
    /// `Sync` flag: the data only (`fdatasync`).
    pub const DATA_ONLY: u32 = 1;
    /// Largest read or write served in one call; the kernel loops.
    pub const MAX_IO_BYTES: u64 = 1 << 20;
    /// Most handles one [`HostFsOp::CloseMany`] closes.
    pub const MAX_CLOSE_BATCH: u64 = 64;
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
        assert_eq!(encode_request_addr(0x1000), Some(0x200));
        assert_eq!(encode_request_addr(0x1004), None);
        assert_eq!(encode_request_addr(1 << 32), Some(1 << 29));
        assert_eq!(encode_request_addr(MAX_REQUEST_END - 8), Some(u32::MAX));
        assert_eq!(encode_request_addr(MAX_REQUEST_END), None);
        assert_eq!(encode_request_addr(u64::MAX - 7), None);
    }

    #[test]
    fn request_addresses_round_trip_up_to_the_top_of_ram() {
        let top =
            crate::layout::HIGH_RAM_START + crate::layout::MAX_MEMORY - crate::layout::LOW_RAM_END;
        assert!(top <= MAX_REQUEST_END);
        for gpa in [0, 8, 0x6000, 0xbfff_fff8, 1 << 32, 0x4_2345_6788, top - 8] {
            let value = encode_request_addr(gpa).expect("encodable");
            assert_eq!(decode_request_addr(value), gpa, "{gpa:#x}");
        }
        assert_eq!(decode_request_addr(u32::MAX), MAX_REQUEST_END - 8);
    }

    #[test]
    fn unknown_enum_values_are_rejected() {
        assert_eq!(Stream::try_from(0), Err(0));
        assert_eq!(Stream::try_from(2), Ok(Stream::Stderr));
        assert_eq!(ExitKind::try_from(9), Err(9));
        assert_eq!(HostFsOp::try_from(0), Err(0));
        assert_eq!(HostFsOp::try_from(20), Err(20));
        for raw in 1..=19 {
            assert_eq!(HostFsOp::try_from(raw).map(|op| op as u32), Ok(raw));
        }
    }
}
