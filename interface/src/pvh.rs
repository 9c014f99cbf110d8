//! The contract between the kernel and the eremite CLI when the image boots
//! on another hypervisor (QEMU `-M microvm`) through the PVH boot protocol
//! instead of on the eremite VMM (see `docs/qemu.md`).
//!
//! There are no hypercalls there, only standard devices:
//! - the console is the first serial port ([`COM1`]; stderr goes to
//!   [`COM2`] when one answers, else to COM1 too);
//! - the exit is a write to QEMU's `isa-debug-exit` device at
//!   [`DEBUG_EXIT_PORT`] (QEMU then exits with `(value << 1) | 1`), just
//!   after an exact [`ExitRecord`] line on the `isa-debugcon` port
//!   [`DEBUGCON_PORT`], which the CLI reads;
//! - arguments, environment and the kernel's own parameters travel on the
//!   kernel command line, each token escaped with [`Escaped`] and decoded
//!   with [`unescape`]:
//!
//! ```text
//! [TOKEN]... [eremite.env=KEY=VALUE]... [eremite.verbose] [eremite.cpus=N] [eremite.wall_ns=N] [eremite.argc=N] -- ARGV0 [ARG]... [TOKEN]...
//! ```
//!
//! Tokens before `--` that are not ours are kernel command-line tokens
//! ([`crate::BootInfo::cmdline`]). After it come the arguments: `N` of
//! them with `eremite.argc=N` (then the tokens after them are kernel
//! tokens again: QEMU `-M microvm` appends its `virtio_mmio.device=`
//! tokens to the end of the line), else every token.
//!
//! Devices: QEMU `-M microvm` places its virtio-MMIO windows from
//! [`VIRTIO_MMIO_ADDR`], [`VIRTIO_MMIO_STRIDE`] bytes apart, and raises
//! their interrupts on pins of the I/O APIC at [`IOAPIC_ADDR`]; the PVH
//! entry maps both CPL3-accessible and uncached.

use core::fmt;

use crate::hypercall::ExitKind;

/// Base port of the first serial port (a 16550 UART): stdout.
pub const COM1: u16 = 0x3F8;
/// Base port of the second serial port: stderr, when present.
pub const COM2: u16 = 0x2F8;
/// Ports a UART occupies from its base.
pub const UART_PORTS: u16 = 8;
/// QEMU's `isa-debug-exit` device, as the CLI configures it
/// (`iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// QEMU's `isa-debugcon` device (its default port): the exit record.
pub const DEBUGCON_PORT: u16 = 0x402;

/// Command-line key of one environment variable (`KEY=VALUE`, escaped).
pub const ENV_KEY: &str = "eremite.env=";
/// Command-line token that turns the kernel log on (`--verbose`).
pub const VERBOSE_TOKEN: &str = "eremite.verbose";
/// Command-line key of the number of CPUs (QEMU's `-smp`); one without it.
pub const CPUS_KEY: &str = "eremite.cpus=";
/// Command-line key of the host's wall-clock time in ns since the Unix
/// epoch, taken just before QEMU starts.
pub const WALL_NS_KEY: &str = "eremite.wall_ns=";
/// Command-line key of the number of arguments after [`ARGS_SEPARATOR`]
/// (argv\[0\] included).
pub const ARGC_KEY: &str = "eremite.argc=";
/// The token after which the arguments come.
pub const ARGS_SEPARATOR: &str = "--";

/// QEMU `-M microvm`'s first virtio-MMIO register window
/// (`hw/i386/microvm.h`, `VIRTIO_MMIO_BASE`).
pub const VIRTIO_MMIO_ADDR: u64 = 0xFEB0_0000;
/// The distance between two of its windows, and each one's size.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x200;
/// How many windows it may have: one per pin of its second I/O APIC, the
/// most it creates.
pub const MAX_VIRTIO_DEVICES: u64 = 24;
/// The I/O APIC's registers (the PC's default address, QEMU's
/// `IO_APIC_DEFAULT_ADDRESS`; 82093AA data sheet, 3.0).
pub const IOAPIC_ADDR: u64 = 0xFEC0_0000;
/// Its pins (QEMU's `IOAPIC_NUM_PINS`): interrupt lines 0 to 23.
pub const IOAPIC_PINS: u32 = 24;

const _: () = assert!(
    VIRTIO_MMIO_ADDR / crate::layout::LARGE_PAGE_SIZE
        == (VIRTIO_MMIO_ADDR + MAX_VIRTIO_DEVICES * VIRTIO_MMIO_STRIDE - 1)
            / crate::layout::LARGE_PAGE_SIZE
        && VIRTIO_MMIO_ADDR / crate::layout::LARGE_PAGE_SIZE
            != IOAPIC_ADDR / crate::layout::LARGE_PAGE_SIZE
        && IOAPIC_ADDR / crate::layout::LARGE_PAGE_SIZE
            != crate::layout::LAPIC_ADDR / crate::layout::LARGE_PAGE_SIZE
);

/// The value written to `isa-debug-exit` for each way the guest ends; QEMU
/// exits with `(value << 1) | 1`, which keeps only 7 bits of it, so the
/// exact code travels in the [`ExitRecord`] and this is the summary a user
/// of plain QEMU sees. None is 0: QEMU's own failures exit with 1.
pub const fn debug_exit_value(kind: ExitKind, code: i32) -> u8 {
    match kind {
        ExitKind::Exit if code == 0 => 1,
        ExitKind::Exit => 2,
        ExitKind::Abort => 3,
        ExitKind::Exception => 4,
        ExitKind::KernelPanic => 5,
        ExitKind::Deadlock => 6,
    }
}

/// The QEMU process status for a [`debug_exit_value`].
pub const fn qemu_status(value: u8) -> i32 {
    ((value as i32) << 1) | 1
}

/// The exact end of the run, one line on the debugcon port:
/// `eremite-exit KIND CODE\n`, `KIND` being [`ExitKind`]'s number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// How the guest ended.
    pub kind: ExitKind,
    /// The exit code (for [`ExitKind::Exit`]) or the exception vector.
    pub code: i32,
}

const RECORD_PREFIX: &str = "eremite-exit ";

impl fmt::Display for ExitRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{RECORD_PREFIX}{} {}", self.kind as u32, self.code)
    }
}

impl ExitRecord {
    /// The last record in `text` (what the debugcon port received), if any
    /// line is one.
    pub fn parse_last(text: &str) -> Option<Self> {
        text.lines().rev().find_map(|line| {
            let rest = line.strip_prefix(RECORD_PREFIX)?;
            let (kind, code) = rest.split_once(' ')?;
            Some(Self {
                kind: ExitKind::try_from(kind.parse::<u32>().ok()?).ok()?,
                code: code.parse().ok()?,
            })
        })
    }
}

/// Whether `byte` must be escaped in a command-line token: white space
/// (which separates tokens), control bytes, non-ASCII bytes, quotes and
/// `%` itself.
fn needs_escape(byte: u8) -> bool {
    byte <= b' ' || byte >= 0x7F || matches!(byte, b'%' | b'"' | b'\'' | b'\\')
}

/// A byte string written as one command-line token: bytes that
/// [`needs_escape`] become `%XX` (two upper-case hex digits), the rest stay.
/// An empty string is written as `%` alone, so that it stays a token.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("%");
        }
        for &byte in self.0 {
            if needs_escape(byte) {
                write!(f, "%{byte:02X}")?;
            } else {
                fmt::Write::write_char(f, char::from(byte))?;
            }
        }
        Ok(())
    }
}

/// Decode a token written by [`Escaped`] into `out` (at least as long as
/// `token`); returns the decoded length. A `%` not followed by two hex
/// digits stays as it is (a lone `%` is the empty string).
pub fn unescape(token: &[u8], out: &mut [u8]) -> usize {
    if token == b"%" {
        return 0;
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    let (mut i, mut len) = (0, 0);
    while i < token.len() && len < out.len() {
        let escaped = match token.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        if let Some(byte) = escaped {
            out[len] = byte;
            i += 3;
        } else {
            out[len] = token[i];
            i += 1;
        }
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;
    use std::vec;

    fn round_trip(bytes: &[u8]) -> std::vec::Vec<u8> {
        let token = Escaped(bytes).to_string();
        assert!(!token.is_empty() && !token.contains(' '), "{token}");
        let mut out = vec![0; token.len()];
        let len = unescape(token.as_bytes(), &mut out);
        out.truncate(len);
        out
    }

    #[test]
    fn escaping_round_trips() {
        for case in [
            &b""[..],
            b"plain",
            b"beta gamma",
            b"100%",
            b"%41",
            b"\"q\" 'x' \\",
            b"\x00\x01\xff\n\t",
            "ünï".as_bytes(),
            b"--",
        ] {
            assert_eq!(round_trip(case), case);
        }
    }

    #[test]
    fn bad_escapes_stay_literal() {
        let mut out = [0; 8];
        let len = unescape(b"a%zz%4", &mut out);
        assert_eq!(&out[..len], b"a%zz%4");
    }

    #[test]
    fn exit_records_parse_back() {
        let record = ExitRecord {
            kind: ExitKind::Exception,
            code: 14,
        };
        let text = std::format!("noise\n{record}");
        assert_eq!(ExitRecord::parse_last(&text), Some(record));
        assert_eq!(ExitRecord::parse_last("eremite-exit 9 1\n"), None);
        assert_eq!(ExitRecord::parse_last(""), None);
    }

    #[test]
    fn debug_exit_values_are_distinct_and_never_zero() {
        let kinds = [
            (ExitKind::Exit, 0),
            (ExitKind::Exit, 3),
            (ExitKind::Abort, 0),
            (ExitKind::Exception, 14),
            (ExitKind::KernelPanic, 0),
            (ExitKind::Deadlock, 0),
        ];
        let values: std::collections::BTreeSet<u8> =
            kinds.iter().map(|&(k, c)| debug_exit_value(k, c)).collect();
        assert_eq!(values.len(), kinds.len());
        assert!(values.iter().all(|&v| v != 0 && v < 0x80));
    }
}
