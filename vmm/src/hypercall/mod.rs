//! Guest → host calls: decode, validate, act.
//!
//! A hypercall is a 32-bit `out` to one of the ports in
//! [`eremite_interface::hypercall::Port`]; the value is the guest-physical
//! address of the request struct, shifted right by three
//! ([`hypercall::decode_request_addr`]). The guest is hostile, so handling is
//! "parse, then act": [`decode`] copies the request out of guest memory
//! (bounds-checked), turns it into a validated [`Request`] and only then
//! does [`handle`] act on it. A request whose address is bad
//! cannot be answered and is counted and ignored; a request with bad
//! fields gets an error code in its `result` field where it has one.
//! Nothing the guest writes can make the VMM panic.
//!
//! `HostFs` requests are decoded and served in [`host_fs`], on top of the
//! mount sandbox in [`crate::sandbox`].
#![deny(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod host_fs;
mod start_cpu;

// Guest lengths (`u64`) become host sizes (`usize`) without loss: the VMM
// is built for 64-bit hosts only (KVM on x86_64).
const _: () = assert!(usize::BITS == u64::BITS);

/// A guest length as a host size (lossless, see above). Callers bound the
/// length before they allocate for it.
#[allow(clippy::cast_possible_truncation)]
const fn host_size(len: u64) -> usize {
    len as usize
}

use std::io::Write;
use std::sync::Mutex;

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::{self, ConsoleWrite, ExitKind, Port, Stream};

use crate::lock;
use crate::memory::GuestRam;
use crate::sandbox::{self, PathError};
pub(crate) use host_fs::HostFsRequest;
pub(crate) use start_cpu::{CpuStart, CpuStarter, StartRegs};

/// Largest console write served in one call; the guest loops on short
/// writes, and the VMM never allocates what the guest asks for unbounded.
pub(crate) const CONSOLE_CHUNK_BYTES: u64 = 64 << 10;

/// What the guest got wrong. Each message says it was the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The port was written with another width than 32 bits.
    #[error("guest wrote {0} bytes to a hypercall port instead of 4")]
    BadWidth(usize),
    /// Request struct not inside guest RAM.
    #[error("guest gave a request address {0:#x} outside its memory")]
    OutsideRam(u64),
    /// Unknown console stream.
    #[error("guest named an unknown console stream {0}")]
    UnknownStream(u32),
    /// Unknown exit kind.
    #[error("guest named an unknown exit kind {0}")]
    UnknownExitKind(u32),
    /// Unknown `HostFs` operation.
    #[error("guest named an unknown host file operation {0}")]
    UnknownHostFsOp(u32),
    /// A path that is not inside guest RAM.
    #[error("guest gave a path at {0:#x} outside its memory")]
    PathOutsideRam(u64),
    /// A malformed path.
    #[error(transparent)]
    BadPath(PathError),
    /// A data buffer that is not inside guest RAM.
    #[error("guest gave a buffer at {0:#x} outside its memory")]
    BufferOutsideRam(u64),
    /// A buffer too small for the record the call writes.
    #[error("guest gave a buffer of {0} bytes, too small for the reply")]
    BufferTooSmall(u64),
    /// Unknown or contradictory flags.
    #[error("guest gave bad flags {0:#x}")]
    BadFlags(u32),
    /// A range that is not page-aligned, empty or too long.
    #[error("guest gave a bad range of {1:#x} bytes at {0:#x}")]
    BadRange(u64, u64),
}

impl GuestError {
    /// The errno answered through the request's `result` field.
    fn errno(self) -> Errno {
        match self {
            GuestError::PathOutsideRam(_) | GuestError::BufferOutsideRam(_) => errno::EFAULT,
            GuestError::BadPath(e) => e.errno(),
            _ => errno::EINVAL,
        }
    }
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Write `len` bytes at guest address `buf` to a host stream.
    ConsoleWrite { stream: Stream, buf: u64, len: u64 },
    /// Stop the VM.
    Exit { kind: ExitKind, code: i32 },
    /// A file operation in a mounted host directory.
    HostFs(HostFsRequest),
    /// Start an application processor.
    StartCpu { cpu: u32, regs: StartRegs },
    /// Back `[addr, addr + len)` (checked: page-aligned, inside one RAM
    /// range, at most `Populate::MAX_LEN`) with host memory now.
    Populate { addr: u64, len: u64 },
    /// Snapshot the VM, then go on or stop.
    Snapshot { stop: bool },
}

/// A decoded call: where its struct lives and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) addr: u64,
    pub(crate) port: Port,
    pub(crate) request: Result<Request, GuestError>,
}

/// Decode the value the guest wrote to `port`. `Err` means the request
/// struct itself cannot be read (so cannot be answered); an `Ok(Call)` may
/// still carry a field error, answered through the struct.
pub(crate) fn decode(port: Port, data: &[u8], ram: &GuestRam) -> Result<Call, GuestError> {
    let value: [u8; 4] = data
        .try_into()
        .map_err(|_| GuestError::BadWidth(data.len()))?;
    let addr = hypercall::decode_request_addr(u32::from_le_bytes(value));
    ram.check(addr, port.request_size() as u64)
        .map_err(|_| GuestError::OutsideRam(addr))?;
    let read_error = |_| GuestError::OutsideRam(addr);
    let request = match port {
        Port::ConsoleWrite => {
            let raw: ConsoleWrite = ram.read_obj(addr).map_err(read_error)?;
            Stream::try_from(raw.stream)
                .map(|stream| Request::ConsoleWrite {
                    stream,
                    buf: raw.buf,
                    len: raw.len,
                })
                .map_err(GuestError::UnknownStream)
        }
        Port::Exit => {
            let raw: hypercall::Exit = ram.read_obj(addr).map_err(read_error)?;
            ExitKind::try_from(raw.kind)
                .map(|kind| Request::Exit {
                    kind,
                    code: raw.code,
                })
                .map_err(GuestError::UnknownExitKind)
        }
        Port::HostFs => {
            let raw: hypercall::HostFs = ram.read_obj(addr).map_err(read_error)?;
            host_fs::decode(&raw, ram).map(Request::HostFs)
        }
        Port::StartCpu => {
            let raw: hypercall::StartCpu = ram.read_obj(addr).map_err(read_error)?;
            Ok(Request::StartCpu {
                cpu: raw.cpu,
                regs: StartRegs {
                    rip: raw.rip,
                    rsp: raw.rsp,
                    arg: raw.arg,
                },
            })
        }
        Port::Populate => {
            let raw: hypercall::Populate = ram.read_obj(addr).map_err(read_error)?;
            decode_populate(&raw, ram)
        }
        Port::Snapshot => {
            let raw: hypercall::Snapshot = ram.read_obj(addr).map_err(read_error)?;
            Ok(Request::Snapshot {
                stop: raw.stop != 0,
            })
        }
    };
    Ok(Call {
        addr,
        port,
        request,
    })
}

fn decode_populate(raw: &hypercall::Populate, ram: &GuestRam) -> Result<Request, GuestError> {
    let page = eremite_interface::layout::PAGE_SIZE;
    if !raw.addr.is_multiple_of(page)
        || !raw.len.is_multiple_of(page)
        || raw.len == 0
        || raw.len > hypercall::Populate::MAX_LEN
    {
        return Err(GuestError::BadRange(raw.addr, raw.len));
    }
    ram.check(raw.addr, raw.len)
        .map_err(|_| GuestError::BufferOutsideRam(raw.addr))?;
    Ok(Request::Populate {
        addr: raw.addr,
        len: raw.len,
    })
}

/// What the vCPU loop does after a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Resume,
    Stop { kind: ExitKind, code: i32 },
}

/// Where console output goes: the host's stdout and stderr, or buffers in
/// tests.
pub struct Console {
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
    /// Show the kernel's log stream (`--verbose`).
    pub show_kernel_log: bool,
}

impl Console {
    /// The process's own stdout and stderr.
    pub fn host(show_kernel_log: bool) -> Self {
        Self {
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
            show_kernel_log,
        }
    }

    /// Any pair of writers (tests).
    pub fn new(
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
        show_kernel_log: bool,
    ) -> Self {
        Self {
            stdout,
            stderr,
            show_kernel_log,
        }
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        let out = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
            Stream::KernelLog if self.show_kernel_log => &mut self.stderr,
            Stream::KernelLog => return Ok(()),
        };
        out.write_all(bytes)?;
        out.flush()
    }
}

/// What hypercalls act on besides guest memory, shared by the vCPU
/// threads.
pub(crate) struct Services<'a> {
    /// Where `ConsoleWrite` goes.
    pub(crate) console: Mutex<&'a mut Console>,
    /// The mounts and open files of `HostFs`.
    pub(crate) host_fs: Mutex<sandbox::HostFs>,
    /// Which application processors wait to be started.
    pub(crate) cpus: CpuStarter,
    /// Where the guest's `Snapshot` calls go (`--snapshot-to`).
    pub(crate) snapshots: Option<&'a dyn SnapshotRequests>,
}

/// Takes the guest's `Snapshot` calls: the snapshot is written by another
/// thread while every vCPU is parked, the caller's too, which parks as
/// soon as its call returns to the vCPU loop.
pub(crate) trait SnapshotRequests: Sync {
    /// The guest asks, in the request struct at `addr` (whose `result` the
    /// taker writes); `Err` when no snapshot can be taken now.
    fn request(&self, addr: u64, stop: bool) -> Result<(), Errno>;
}

impl<'a> Services<'a> {
    /// Services over `console` and the mounts of `host_fs`.
    pub(crate) fn new(console: &'a mut Console, host_fs: sandbox::HostFs) -> Self {
        Self {
            console: Mutex::new(console),
            host_fs: Mutex::new(host_fs),
            cpus: CpuStarter::default(),
            snapshots: None,
        }
    }
}

/// Carry out a decoded call.
pub(crate) fn handle(call: Call, ram: &GuestRam, services: &Services<'_>) -> Next {
    let request = match call.request {
        Ok(request) => request,
        Err(error) => {
            answer(ram, call.port, call.addr, Err(error.errno()));
            return Next::Resume;
        }
    };
    match request {
        Request::ConsoleWrite { stream, buf, len } => {
            let result = console_write(ram, &mut lock(&services.console), stream, buf, len);
            answer(ram, call.port, call.addr, result);
            Next::Resume
        }
        Request::Exit { kind, code } => Next::Stop { kind, code },
        Request::HostFs(request) => {
            let result = host_fs::serve(&request, ram, &mut lock(&services.host_fs));
            answer(ram, call.port, call.addr, result);
            Next::Resume
        }
        Request::StartCpu { cpu, regs } => {
            let result = services.cpus.start(cpu, regs).map(|()| 0);
            answer(ram, call.port, call.addr, result);
            Next::Resume
        }
        Request::Populate { addr, len } => {
            let result = ram
                .populate(addr, len)
                .map(|()| 0)
                .map_err(|_| errno::ENOMEM);
            answer(ram, call.port, call.addr, result);
            Next::Resume
        }
        Request::Snapshot { stop } => {
            // Until the taker answers (once written), the answer is a
            // failure: a pause that gives up leaves it so.
            answer(ram, call.port, call.addr, Err(errno::EIO));
            let taken = services
                .snapshots
                .ok_or(errno::EOPNOTSUPP)
                .and_then(|taker| taker.request(call.addr, stop));
            if let Err(error) = taken {
                answer(ram, call.port, call.addr, Err(error));
            }
            Next::Resume
        }
    }
}

fn console_write(
    ram: &GuestRam,
    console: &mut Console,
    stream: Stream,
    buf: u64,
    len: u64,
) -> Result<i64, Errno> {
    ram.check(buf, len).map_err(|_| errno::EFAULT)?;
    let chunk = len.min(CONSOLE_CHUNK_BYTES);
    let mut bytes = vec![0u8; chunk as usize];
    ram.read(buf, &mut bytes).map_err(|_| errno::EFAULT)?;
    console.write(stream, &bytes).map_err(|_| errno::EIO)?;
    Ok(chunk as i64)
}

/// Write a call's `result` field (value or negative errno), for the calls
/// that have one; the struct was checked to lie inside RAM when it was
/// decoded.
fn answer(ram: &GuestRam, port: Port, request_addr: u64, result: Result<i64, Errno>) {
    let offset = match port {
        Port::ConsoleWrite => ConsoleWrite::RESULT_OFFSET,
        Port::HostFs => hypercall::HostFs::RESULT_OFFSET,
        Port::StartCpu => core::mem::offset_of!(hypercall::StartCpu, result) as u64,
        Port::Populate => core::mem::offset_of!(hypercall::Populate, result) as u64,
        Port::Snapshot => core::mem::offset_of!(hypercall::Snapshot, result) as u64,
        Port::Exit => return,
    };
    let value = result.unwrap_or_else(|e| -i64::from(e.0));
    let _ = ram.write(request_addr + offset, &value.to_le_bytes());
}

/// A console writer that keeps what it is given (tests).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const RAM: u64 = 1 << 20;

    /// The bytes the guest's `out` sends for a request at `addr`.
    pub(crate) fn value(addr: u64) -> [u8; 4] {
        hypercall::encode_request_addr(addr)
            .expect("an encodable address")
            .to_le_bytes()
    }
    const REQ: u64 = 0x1000;

    fn setup() -> (GuestRam, Console, Capture, Capture) {
        let (out, err) = (Capture::default(), Capture::default());
        let console = Console::new(Box::new(out.clone()), Box::new(err.clone()), false);
        (GuestRam::new(RAM).unwrap(), console, out, err)
    }

    fn console_request(ram: &GuestRam, stream: u32, buf: u64, len: u64) -> Call {
        let raw = ConsoleWrite {
            stream,
            reserved: 0,
            buf,
            len,
            result: 0,
        };
        ram.write_obj(REQ, &raw).unwrap();
        decode(Port::ConsoleWrite, &value(REQ), ram).unwrap()
    }

    /// Handle `call` with no mounts.
    fn serve(call: Call, ram: &GuestRam, console: &mut Console) -> Next {
        handle(call, ram, &Services::new(console, sandbox::HostFs::empty()))
    }

    fn result(ram: &GuestRam) -> i64 {
        ram.read_obj::<ConsoleWrite>(REQ).unwrap().result
    }

    #[test]
    fn console_write_copies_guest_bytes_to_the_stream() {
        let (ram, mut console, out, err) = setup();
        ram.write(0x2000, b"hello").unwrap();
        let call = console_request(&ram, Stream::Stderr as u32, 0x2000, 5);
        assert_eq!(serve(call, &ram, &mut console), Next::Resume);
        assert_eq!(result(&ram), 5);
        assert_eq!(&*err.0.lock().unwrap(), b"hello");
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn console_write_outside_ram_or_overflowing_is_efault() {
        let (ram, mut console, out, _) = setup();
        for (buf, len) in [
            (RAM - 2, 4),
            (u64::MAX - 1, 4),
            (0x2000, u64::MAX),
            (RAM, 1),
        ] {
            let call = console_request(&ram, Stream::Stdout as u32, buf, len);
            serve(call, &ram, &mut console);
            assert_eq!(
                result(&ram),
                -i64::from(errno::EFAULT.0),
                "buf {buf:#x} len {len:#x}"
            );
        }
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn huge_console_writes_are_served_in_chunks() {
        let (ram, mut console, out, _) = setup();
        let call = console_request(&ram, Stream::Stdout as u32, 0, RAM);
        serve(call, &ram, &mut console);
        assert_eq!(result(&ram), CONSOLE_CHUNK_BYTES as i64);
        assert_eq!(out.0.lock().unwrap().len() as u64, CONSOLE_CHUNK_BYTES);
    }

    #[test]
    fn unknown_stream_is_einval_and_kernel_log_is_hidden_unless_verbose() {
        let (ram, mut console, _, err) = setup();
        let call = console_request(&ram, 9, 0x2000, 1);
        assert_eq!(call.request, Err(GuestError::UnknownStream(9)));
        serve(call, &ram, &mut console);
        assert_eq!(result(&ram), -i64::from(errno::EINVAL.0));
        ram.write(0x2000, b"log").unwrap();
        serve(console_request(&ram, 3, 0x2000, 3), &ram, &mut console);
        assert_eq!(result(&ram), 3);
        assert!(err.0.lock().unwrap().is_empty());
        console.show_kernel_log = true;
        serve(console_request(&ram, 3, 0x2000, 3), &ram, &mut console);
        assert_eq!(&*err.0.lock().unwrap(), b"log");
    }

    #[test]
    fn bad_request_addresses_are_refused() {
        let ram = GuestRam::new(RAM).unwrap();
        let at = |addr: u64| decode(Port::Exit, &value(addr), &ram);
        assert_eq!(at(RAM), Err(GuestError::OutsideRam(RAM)));
        let top = hypercall::MAX_REQUEST_END - 8;
        assert_eq!(at(top), Err(GuestError::OutsideRam(top)));
        // The struct must fit entirely: 8 bytes of Exit at RAM - 8 fit, a
        // 32-byte ConsoleWrite there does not.
        assert!(at(RAM - 8).is_ok());
        let console = decode(Port::ConsoleWrite, &value(RAM - 8), &ram);
        assert_eq!(console, Err(GuestError::OutsideRam(RAM - 8)));
        assert_eq!(
            decode(Port::Exit, &[0, 0x10], &ram),
            Err(GuestError::BadWidth(2))
        );
    }

    #[test]
    fn requests_above_4_gib_are_served_and_the_hole_is_refused() {
        let gib = 1u64 << 30;
        let ram = GuestRam::new(4 * gib + (2 << 20)).unwrap();
        let high = 5 * gib + (2 << 20) - 8;
        ram.write_obj(
            high,
            &hypercall::Exit {
                code: 5,
                kind: ExitKind::Exit as u32,
            },
        )
        .unwrap();
        let call = decode(Port::Exit, &value(high), &ram).unwrap();
        assert_eq!(call.addr, high);
        assert_eq!(
            call.request,
            Ok(Request::Exit {
                kind: ExitKind::Exit,
                code: 5
            })
        );
        let hole = 3 * gib + 8;
        assert_eq!(
            decode(Port::Exit, &value(hole), &ram),
            Err(GuestError::OutsideRam(hole))
        );
    }

    #[test]
    fn exit_and_start_cpu_are_validated() {
        let ram = GuestRam::new(RAM).unwrap();
        ram.write_obj(
            REQ,
            &hypercall::Exit {
                code: 42,
                kind: ExitKind::Exit as u32,
            },
        )
        .unwrap();
        let call = decode(Port::Exit, &value(REQ), &ram).unwrap();
        assert_eq!(
            call.request,
            Ok(Request::Exit {
                kind: ExitKind::Exit,
                code: 42
            })
        );
        ram.write_obj(REQ, &hypercall::Exit { code: 1, kind: 77 })
            .unwrap();
        let call = decode(Port::Exit, &value(REQ), &ram).unwrap();
        assert_eq!(call.request, Err(GuestError::UnknownExitKind(77)));
        // StartCpu: any CPU number decodes; the VMM's CPU table (see
        // `start_cpu`) refuses the ones that do not exist or already run.
        let mut console = Console::new(
            Box::new(Capture::default()),
            Box::new(Capture::default()),
            false,
        );
        let services = Services::new(&mut console, sandbox::HostFs::empty());
        services.cpus.reset(2);
        for (cpu, result) in [(5, -22), (0, -22), (1, 0), (1, -22)] {
            ram.write_obj(
                REQ,
                &hypercall::StartCpu {
                    cpu,
                    rip: 0x20_0000,
                    rsp: 0x40_0000,
                    arg: 9,
                    ..Default::default()
                },
            )
            .unwrap();
            let call = decode(Port::StartCpu, &value(REQ), &ram).unwrap();
            assert_eq!(handle(call, &ram, &services), Next::Resume);
            let answer: hypercall::StartCpu = ram.read_obj(REQ).unwrap();
            assert_eq!(answer.result, result, "cpu {cpu}");
        }
        let started = services.cpus.wait_for_start(1).unwrap();
        assert_eq!(
            (started.rip, started.rsp, started.arg),
            (0x20_0000, 0x40_0000, 9)
        );
    }

    #[test]
    fn populate_backs_a_range_inside_ram_and_refuses_bad_ones() {
        let (ram, mut console, _, _) = setup();
        let ask = |addr: u64, len: u64, console: &mut Console| {
            ram.write_obj(
                REQ,
                &hypercall::Populate {
                    addr,
                    len,
                    result: 1,
                },
            )
            .unwrap();
            let call = decode(Port::Populate, &value(REQ), &ram).unwrap();
            assert_eq!(serve(call, &ram, console), Next::Resume);
            ram.read_obj::<hypercall::Populate>(REQ).unwrap().result
        };
        ram.write(0x4000, b"kept").unwrap();
        assert_eq!(ask(0x4000, 0x8000, &mut console), 0);
        let mut kept = [0u8; 4];
        ram.read(0x4000, &mut kept).unwrap();
        assert_eq!(&kept, b"kept", "populating changes no contents");
        let einval = -i64::from(errno::EINVAL.0);
        let efault = -i64::from(errno::EFAULT.0);
        for (addr, len, want) in [
            (0x4001, 0x1000, einval),
            (0x4000, 0x1001, einval),
            (0x4000, 0, einval),
            (0, hypercall::Populate::MAX_LEN + 0x1000, einval),
            (RAM - 0x1000, 0x2000, efault),
            (!0xfff, 0x1000, efault),
        ] {
            assert_eq!(ask(addr, len, &mut console), want, "{addr:#x} {len:#x}");
        }
    }
}
