//! Calls to the hypervisor, as typed functions.
//!
//! On the eremite VMM each is a hypercall ([`arch::hypercall`]). When the
//! image booted through its PVH entry on QEMU ([`use_pvh_devices`], see
//! `crate::pvh`), standard devices stand in ([`eremite_interface::pvh`]):
//! the console is a serial port, the exit a write to `isa-debug-exit`
//! after an exit record on the debugcon port, and starting CPUs is not
//! supported yet.

use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::{ConsoleWrite, Exit, ExitKind, Port, StartCpu, Stream};
use eremite_interface::pvh;

use crate::arch;

/// Set once, before anything else runs, when the image booted through PVH.
static IS_PVH: AtomicBool = AtomicBool::new(false);
/// The serial port that stderr and the kernel log go to on PVH.
static STDERR_UART: AtomicU16 = AtomicU16::new(pvh::COM1);

/// Use the standard devices instead of hypercalls from now on.
pub(crate) fn use_pvh_devices() {
    if IS_PVH.swap(true, Ordering::Relaxed) {
        return;
    }
    if arch::pvh::uart_present(pvh::COM2) {
        STDERR_UART.store(pvh::COM2, Ordering::Relaxed);
    }
}

fn is_pvh() -> bool {
    IS_PVH.load(Ordering::Relaxed)
}

/// Write `bytes` to the host stream; returns bytes written.
pub(crate) fn console_write(stream: Stream, bytes: &[u8]) -> Result<usize, Errno> {
    if is_pvh() {
        let port = match stream {
            Stream::Stdout => pvh::COM1,
            _ => STDERR_UART.load(Ordering::Relaxed),
        };
        arch::pvh::port_write(port, bytes);
        return Ok(bytes.len());
    }
    let mut request = ConsoleWrite {
        stream: stream as u32,
        reserved: 0,
        buf: bytes.as_ptr() as u64,
        len: bytes.len() as u64,
        result: 0,
    };
    arch::hypercall(Port::ConsoleWrite, &mut request);
    if request.result < 0 {
        Err(Errno(
            i32::try_from(-request.result).unwrap_or(errno::EIO.0),
        ))
    } else {
        Ok(usize::try_from(request.result).unwrap_or(0))
    }
}

/// Stop the VM. The caller flushes the console first.
pub(crate) fn exit(kind: ExitKind, code: i32) -> ! {
    if is_pvh() {
        use core::fmt::Write as _;
        let mut record = RecordWriter;
        let _ = write!(record, "{}", pvh::ExitRecord { kind, code });
        arch::pvh::debug_exit(pvh::debug_exit_value(kind, code));
    }
    let mut request = Exit {
        code,
        kind: kind as u32,
    };
    loop {
        arch::hypercall(Port::Exit, &mut request);
    }
}

/// Ask the host to back `[addr, addr + len)` of never-used RAM with memory
/// now (page-aligned; split into calls of at most `Populate::MAX_LEN`).
/// A hint: on failure the pages are backed at first touch as before.
pub(crate) fn populate(addr: u64, len: u64) {
    if is_pvh() {
        // No such call on other hypervisors: pages are backed at first touch.
        return;
    }
    let mut start = addr;
    let end = addr.saturating_add(len);
    while start < end {
        let chunk = (end - start).min(eremite_interface::hypercall::Populate::MAX_LEN);
        let mut request = eremite_interface::hypercall::Populate {
            addr: start,
            len: chunk,
            result: 0,
        };
        arch::hypercall(Port::Populate, &mut request);
        start += chunk;
    }
}

/// Writes to the debugcon port.
struct RecordWriter;

impl core::fmt::Write for RecordWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        arch::pvh::port_write(pvh::DEBUGCON_PORT, s.as_bytes());
        Ok(())
    }
}

/// Start application processor `cpu` at `rip` with `rsp` and `arg`.
pub(crate) fn start_cpu(cpu: u32, rip: u64, rsp: u64, arg: u64) -> Result<(), Errno> {
    if is_pvh() {
        // Needs an INIT-SIPI trampoline; the PVH path reports one CPU.
        return Err(errno::ENOSYS);
    }
    let mut request = StartCpu {
        cpu,
        reserved: 0,
        rip,
        rsp,
        arg,
        result: 0,
    };
    arch::hypercall(Port::StartCpu, &mut request);
    match request.result {
        0 => Ok(()),
        e => Err(Errno(i32::try_from(-e).unwrap_or(errno::EIO.0))),
    }
}
