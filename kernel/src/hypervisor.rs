//! Calls to the VMM, as typed functions over [`arch::hypercall`].

use eremite_interface::errno::Errno;
use eremite_interface::hypercall::{ConsoleWrite, Exit, ExitKind, Port, StartCpu, Stream};

use crate::arch;

/// Write `bytes` to the host stream; returns bytes written.
pub(crate) fn console_write(stream: Stream, bytes: &[u8]) -> Result<usize, Errno> {
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
            i32::try_from(-request.result).unwrap_or(eremite_interface::errno::EIO.0),
        ))
    } else {
        Ok(usize::try_from(request.result).unwrap_or(0))
    }
}

/// Stop the VM. The caller flushes the console first.
pub(crate) fn exit(kind: ExitKind, code: i32) -> ! {
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

/// Start application processor `cpu` at `rip` with `rsp` and `arg`.
pub(crate) fn start_cpu(cpu: u32, rip: u64, rsp: u64, arg: u64) -> Result<(), Errno> {
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
        e => Err(Errno(
            i32::try_from(-e).unwrap_or(eremite_interface::errno::EIO.0),
        )),
    }
}
