//! Calls to the hypervisor, as typed functions.
//!
//! On the eremite VMM each is a hypercall ([`arch::hypercall`]). When the
//! image booted through its PVH entry on QEMU ([`use_pvh_devices`], see
//! `crate::pvh`), standard devices stand in ([`eremite_interface::pvh`]):
//! the console is a serial port, the exit a write to `isa-debug-exit`
//! after an exit record on the debugcon port, and a CPU is started with
//! INIT and start-up IPIs through a real-mode trampoline
//! ([`start_cpu`]).

use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::hypercall::{ConsoleWrite, Exit, ExitKind, HostFs, Port, StartCpu, Stream};
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

/// How a virtio device's interrupt reaches the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceInterrupt {
    /// An edge-triggered MSI (our VMM): only the local APIC's EOI.
    Message,
    /// A line into the I/O APIC (QEMU microvm), routed edge triggered:
    /// it stays high until the driver acknowledges `InterruptStatus`, so
    /// the driver does that before it asks for the next interrupt.
    Line,
}

/// Where the hypervisor puts virtio-MMIO register windows (which the page
/// tables map), and how their interrupts arrive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VirtioWindows {
    pub(crate) addr: u64,
    pub(crate) stride: u64,
    pub(crate) count: u64,
    pub(crate) interrupt: DeviceInterrupt,
}

/// The virtio-MMIO windows of this hypervisor: the layout's on our VMM,
/// QEMU microvm's on PVH.
pub(crate) fn virtio_windows() -> VirtioWindows {
    use eremite_interface::layout;
    if is_pvh() {
        VirtioWindows {
            addr: pvh::VIRTIO_MMIO_ADDR,
            stride: pvh::VIRTIO_MMIO_STRIDE,
            count: pvh::MAX_VIRTIO_DEVICES,
            interrupt: DeviceInterrupt::Line,
        }
    } else {
        VirtioWindows {
            addr: layout::VIRTIO_MMIO_ADDR,
            stride: layout::VIRTIO_MMIO_STRIDE,
            count: layout::MAX_VIRTIO_DEVICES,
            interrupt: DeviceInterrupt::Message,
        }
    }
}

/// Write `bytes` to the host stream; returns bytes written.
pub(crate) fn console_write(stream: Stream, bytes: &[u8]) -> Result<usize, Errno> {
    if eremite_interface::layout::is_in_virtual_window(bytes.as_ptr() as u64, bytes.len() as u64) {
        // Not a guest-physical address: through a copy of our own.
        let mut copy = [0u8; 512];
        for chunk in bytes.chunks(copy.len()) {
            copy[..chunk.len()].copy_from_slice(chunk);
            console_write(stream, &copy[..chunk.len()])?;
        }
        return Ok(bytes.len());
    }
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

/// A host-directory request (`--mount`): the hypercall fills in
/// `request.result`. There is no host file system on PVH (the CLI
/// refuses `--mount` there): `ENOSYS`.
pub(crate) fn host_fs(request: &mut HostFs) {
    if is_pvh() {
        request.result = -i64::from(errno::ENOSYS.0);
        return;
    }
    arch::hypercall(Port::HostFs, request);
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

/// Ask the VMM to snapshot the VM here (`eremite run --snapshot-to`), then
/// go on or (`stop`) end the VM: 0 once written, `Snapshot::RESTORED` in a
/// VM restored from it, a negative errno if none was written.
pub(crate) fn snapshot(stop: bool) -> i64 {
    if is_pvh() {
        return -i64::from(eremite_interface::errno::EOPNOTSUPP.0);
    }
    let mut request = eremite_interface::hypercall::Snapshot {
        stop: u64::from(stop),
        result: 0,
    };
    arch::hypercall(Port::Snapshot, &mut request);
    request.result
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
        return start_cpu_with_ipis(cpu, rip, rsp, arg);
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

/// Wait after INIT before the first start-up IPI. The SDM's 10 ms (vol. 3A,
/// 9.4.4.1) is for old hardware; QEMU's APIC and KVM's in-kernel APIC
/// handle an INIT before a start-up IPI sent after it, so a short pause
/// does.
const INIT_WAIT_NS: u64 = 100_000;
/// Wait after the first start-up IPI before a second one (SDM: 200 µs).
const STARTUP_WAIT_NS: u64 = 200_000;
/// How long a CPU may take from the start-up IPI to CPL3 (TCG translates
/// the trampoline first; the CPL0 steps are emulated on PVM hosts).
const START_TIMEOUT_NS: u64 = 2_000_000_000;

/// Start CPU `cpu` (its APIC ID: QEMU numbers them from 0 like our CPU
/// indexes) without our VMM: INIT, then start-up IPIs into the trampoline
/// (`arch::pvh`), which brings it to CPL3 at `rip` with `rsp` and `arg`.
/// `ETIMEDOUT` when it does not say it started.
fn start_cpu_with_ipis(cpu: u32, rip: u64, rsp: u64, arg: u64) -> Result<(), Errno> {
    arch::pvh::prepare_ap_start(cpu, rip, rsp, arg);
    arch::send_init(cpu);
    spin_until(INIT_WAIT_NS, || false);
    arch::send_startup(cpu, arch::pvh::AP_STARTUP_VECTOR);
    if spin_until(STARTUP_WAIT_NS, arch::pvh::ap_has_started) {
        return Ok(());
    }
    arch::send_startup(cpu, arch::pvh::AP_STARTUP_VECTOR);
    if spin_until(START_TIMEOUT_NS, arch::pvh::ap_has_started) {
        Ok(())
    } else {
        Err(errno::ETIMEDOUT)
    }
}

/// Spin for up to `ns` nanoseconds (TSC) until `is_done`; whether it was.
fn spin_until(ns: u64, is_done: impl Fn() -> bool) -> bool {
    let start = crate::time::monotonic_ns();
    loop {
        if is_done() {
            return true;
        }
        if crate::time::monotonic_ns().saturating_sub(start) >= ns {
            return false;
        }
        core::hint::spin_loop();
    }
}
