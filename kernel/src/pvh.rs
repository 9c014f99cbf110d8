//! Booting through the PVH entry (QEMU `-M microvm`): the CPL3 half.
//!
//! The CPL0 entry (`arch::x86_64::pvh`) has built the machine state our
//! VMM builds; [`pvh_start`] builds the rest of what the VMM hands over, a
//! [`BootInfo`] at [`layout::BOOT_INFO_ADDR`] with its strings in the boot
//! data area, from the PVH start info and the kernel command line, then
//! enters the common path ([`boot::kernel_start`]). From there on the only
//! difference is [`hypervisor`]: standard devices instead of hypercalls.
//!
//! - RAM: `[0, ram_top)` as the entry found it in the memory map (the
//!   kernel uses nothing below the image but its fixed structures, so the
//!   legacy hole under 1 MiB does not matter).
//! - The image's extent and TLS template: its own ELF program headers,
//!   which the first `PT_LOAD` segment maps at [`layout::IMAGE_BASE`].
//! - Arguments, environment, kernel parameters: the command line, as
//!   [`eremite_interface::pvh`] defines it.
//! - TSC frequency: CPUID leaf 0x4000_0010 when the hypervisor fills it
//!   in, otherwise measured against the PIT for 10 ms.
//! - Wall-clock time: `eremite.wall_ns=` on the command line (the CLI
//!   passes the host's time just before QEMU starts), else the epoch.
//! - CPUs: `eremite.cpus=` on the command line (the CLI passes QEMU's
//!   `-smp`), else one; `hypervisor::start_cpu` starts the others with
//!   INIT and start-up IPIs.
//! - Devices: QEMU appends `virtio_mmio.device=SIZE@ADDR:IRQ` tokens to
//!   the command line (after the arguments, which `eremite.argc=` counts).
//!   The first device's interrupt line is routed through the I/O APIC to
//!   [`DEVICE_VECTOR`] on CPU 0 (`arch::ioapic`), and the kernel's driver
//!   gets the token with that vector in place of the line, as on our VMM.
//!   Further devices are left out (the kernel drives one card).

use core::fmt::Write as _;

use eremite_interface::cmdline::{VIRTIO_MMIO_KEY, VirtioMmioLine};
use eremite_interface::layout::{self, BOOT_DATA_ADDR, BOOT_DATA_END, DEVICE_VECTOR, PAGE_SIZE};
use eremite_interface::{
    BootInfo, INTERFACE_VERSION, KernelReport, MAGIC, MAX_RAM_RANGES, MemRange, StringList,
    TlsTemplate, boot_flags, pvh,
};

use crate::arch::pvh as platform;
use crate::{arch, boot, hypervisor};

/// Longest command line read from the start info (bytes).
const CMDLINE_MAX: usize = 16 * 1024;
/// PIT ticks of the TSC calibration: 10 ms at 1.193182 MHz.
const CALIBRATION_PIT_TICKS: u16 = 11_932;
const PIT_HZ: u64 = 1_193_182;

/// Fields of `hvm_start_info` (Xen `start_info.h`), by byte offset.
const START_INFO_BYTES: usize = 56;
const CMDLINE_PADDR: usize = 24;

/// Where the PVH entry lands at CPL3, on the boot stack, with the start
/// info's address and the top of RAM.
pub(crate) extern "C" fn pvh_start(start_info: u64, ram_top: u64) -> ! {
    let entry_tsc = arch::rdtsc();
    crate::cpu::enter(0);
    hypervisor::use_pvh_devices();

    // Read everything of the firmware's first: the boot info and the boot
    // data area may overlap where it put them.
    let mut start = [0u8; START_INFO_BYTES];
    if !platform::copy_from_ram(start_info, ram_top, &mut start) {
        fail("the PVH start info is not in RAM");
    }
    let word =
        |offset: usize| u64::from_le_bytes(start[offset..offset + 8].try_into().unwrap_or([0; 8]));
    let mut cmdline = [0u8; CMDLINE_MAX];
    let cmdline_len = match word(CMDLINE_PADDR) {
        0 => 0,
        addr => read_c_string(addr, ram_top, &mut cmdline),
    };

    let image = image_extent(ram_top).unwrap_or_else(|why| fail(why));
    let mut writer = BootData::new();
    let parsed = parse_cmdline(&cmdline[..cmdline_len], &mut writer);
    if let Some(line) = parsed.device_line {
        // The device is idle until its driver sets it up: nothing
        // interrupts before the kernel has its gates.
        arch::ioapic::route(line, DEVICE_VECTOR, 0);
    }

    let (tsc_khz, tsc_flag) = match platform::cpuid_tsc_khz() {
        Some(khz) => (khz, 0),
        None => (calibrate_tsc_khz(), boot_flags::TSC_MEASURED),
    };
    match platform::xcr0() {
        Some(xcr0) if xcr0 & 0b11 != 0b11 => {
            fail("XCR0 lacks the SSE state and cannot be set here (see docs/qemu.md)")
        }
        _ => {}
    }

    let info = BootInfo {
        magic: MAGIC,
        version: INTERFACE_VERSION,
        cpu_count: parsed.cpu_count,
        mem_size: ram_top,
        ram_count: 1,
        ram: {
            let mut ram = [MemRange::default(); MAX_RAM_RANGES];
            ram[0] = MemRange {
                addr: 0,
                len: ram_top,
            };
            ram
        },
        // The entry's tables may use the whole area.
        page_tables_end: layout::PAGE_TABLES_END,
        image_start: layout::IMAGE_BASE,
        image_end: image.end,
        free_start: image.end,
        tls: image.tls,
        tsc_khz,
        boot_wall_ns: parsed.wall_ns,
        boot_tsc: entry_tsc,
        args: parsed.args,
        env: parsed.env,
        cmdline: parsed.cmdline,
        flags: boot_flags::PVH
            | tsc_flag
            | if parsed.is_verbose {
                boot_flags::VERBOSE
            } else {
                0
            },
        initrd_addr: 0,
        initrd_len: 0,
        mounts: StringList::default(),
        read_only_mounts: 0,
        report: KernelReport::default(),
        linux: eremite_interface::LinuxProgram::default(),
        stopped_ticks: 0,
        debugger_attached: 0,
        wall_offset_ns: 0,
    };
    platform::write_boot_memory(layout::BOOT_INFO_ADDR, zerocopy::IntoBytes::as_bytes(&info));
    boot::kernel_start(layout::BOOT_INFO_ADDR)
}

/// Boot cannot go on: say why on the console and stop the VM.
fn fail(why: &str) -> ! {
    boot::fatal(why)
}

/// Copy the NUL-terminated string at `addr` into `out`; its length.
fn read_c_string(addr: u64, ram_top: u64, out: &mut [u8]) -> usize {
    let mut len = 0;
    while len < out.len() {
        let mut byte = [0u8];
        if !platform::copy_from_ram(addr + len as u64, ram_top, &mut byte) || byte[0] == 0 {
            break;
        }
        out[len] = byte[0];
        len += 1;
    }
    len
}

struct ImageExtent {
    end: u64,
    tls: TlsTemplate,
}

/// The image's end and TLS template from its ELF program headers, which
/// the first `PT_LOAD` segment (file offset 0) maps at `IMAGE_BASE`.
fn image_extent(ram_top: u64) -> Result<ImageExtent, &'static str> {
    const PT_LOAD: u32 = 1;
    const PT_TLS: u32 = 7;
    let mut header = [0u8; 64];
    if !platform::copy_from_ram(layout::IMAGE_BASE, ram_top, &mut header)
        || header[..4] != *b"\x7fELF"
    {
        return Err("no ELF header at the image base (was the image loaded there?)");
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(word)
    };
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u16_at(&header, 0x36),
        u16_at(&header, 0x38),
    );
    if phentsize != 56 || phnum > 64 {
        return Err("the image's program headers are not ELF64's");
    }
    let mut end = layout::IMAGE_BASE;
    let mut tls = TlsTemplate::default();
    for index in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        if !platform::copy_from_ram(layout::IMAGE_BASE + phoff + index * 56, ram_top, &mut ph) {
            return Err("the image's program headers are not in RAM");
        }
        let p_type = u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]);
        let (vaddr, filesz, memsz, align) = (
            u64_at(&ph, 16),
            u64_at(&ph, 32),
            u64_at(&ph, 40),
            u64_at(&ph, 48),
        );
        match p_type {
            PT_LOAD => end = end.max(vaddr.saturating_add(memsz)),
            PT_TLS => {
                tls = TlsTemplate {
                    addr: vaddr,
                    file_size: filesz,
                    mem_size: memsz,
                    align: align.max(1),
                }
            }
            _ => {}
        }
    }
    let end = end.next_multiple_of(PAGE_SIZE);
    if end >= ram_top {
        return Err("the image does not fit into RAM");
    }
    Ok(ImageExtent { end, tls })
}

/// Lays strings end to end in the boot data area, each NUL-terminated.
struct BootData {
    next: u64,
}

impl BootData {
    fn new() -> Self {
        Self {
            next: BOOT_DATA_ADDR,
        }
    }

    /// Start a list at the current position.
    fn list(&self) -> StringList {
        StringList {
            addr: self.next,
            len: 0,
            count: 0,
        }
    }

    /// Append `bytes` (escaped as on the command line) to `list`, which
    /// must be the last list started.
    fn push_escaped(&mut self, list: &mut StringList, token: &[u8]) {
        let mut decoded = [0u8; 4096];
        let len = pvh::unescape(token, &mut decoded);
        let bytes = &decoded[..len];
        if self.next + len as u64 + 1 > BOOT_DATA_END {
            fail("the command line does not fit into the boot data area");
        }
        platform::write_boot_memory(self.next, bytes);
        platform::write_boot_memory(self.next + len as u64, &[0]);
        self.next += len as u64 + 1;
        list.len += len as u64 + 1;
        list.count += 1;
    }
}

struct Cmdline {
    args: StringList,
    env: StringList,
    cmdline: StringList,
    is_verbose: bool,
    wall_ns: u64,
    cpu_count: u32,
    /// The interrupt line of the virtio device the kernel will drive.
    device_line: Option<u32>,
}

/// Split the command line into the boot info's three lists (written in
/// three passes, as each list must be contiguous) and our own parameters.
fn parse_cmdline(text: &[u8], writer: &mut BootData) -> Cmdline {
    let tokens = || {
        text.split(|&b| b == b' ' || b == b'\n')
            .filter(|t| !t.is_empty())
    };
    let separator = pvh::ARGS_SEPARATOR.as_bytes();
    let before = || tokens().take_while(|&t| t != separator);
    // With `eremite.argc=N` exactly N arguments follow the separator, and
    // the tokens after them (QEMU's devices) are kernel tokens again.
    let argc = before()
        .find_map(|t| t.strip_prefix(pvh::ARGC_KEY.as_bytes()))
        .and_then(|value| core::str::from_utf8(value).ok()?.parse::<usize>().ok());
    let after = || tokens().skip_while(|&t| t != separator).skip(1);
    let args = || after().take(argc.unwrap_or(usize::MAX));
    let appended = || after().skip(argc.unwrap_or(usize::MAX));
    let mut out = Cmdline {
        args: StringList::default(),
        env: StringList::default(),
        cmdline: StringList::default(),
        is_verbose: false,
        wall_ns: 0,
        cpu_count: 1,
        device_line: None,
    };
    out.args = writer.list();
    for token in args() {
        writer.push_escaped(&mut out.args, token);
    }
    if out.args.count == 0 {
        writer.push_escaped(&mut out.args, b"eremite");
    }
    out.env = writer.list();
    for token in before() {
        if let Some(pair) = token.strip_prefix(pvh::ENV_KEY.as_bytes()) {
            writer.push_escaped(&mut out.env, pair);
        }
    }
    out.cmdline = writer.list();
    for token in before().chain(appended()) {
        if token.starts_with(pvh::ENV_KEY.as_bytes()) || token.starts_with(pvh::ARGC_KEY.as_bytes())
        {
            continue;
        }
        if token == pvh::VERBOSE_TOKEN.as_bytes() {
            out.is_verbose = true;
        } else if let Some(value) = token.strip_prefix(pvh::CPUS_KEY.as_bytes()) {
            // Zero or garbage is one CPU; too many is refused at boot.
            out.cpu_count = core::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .max(1);
        } else if let Some(value) = token.strip_prefix(pvh::WALL_NS_KEY.as_bytes()) {
            out.wall_ns = core::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if let Some(value) = token
            .strip_prefix(VIRTIO_MMIO_KEY.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
        {
            // The first usable device, on its vector; others are left out.
            let device = core::str::from_utf8(value)
                .ok()
                .and_then(|v| VirtioMmioLine::parse(v).ok())
                .filter(|d| d.line < pvh::IOAPIC_PINS);
            if let (Some(device), None) = (device, out.device_line) {
                let mut text = TokenText::default();
                let _ = write!(text, "{}", device.with_vector(DEVICE_VECTOR));
                writer.push_escaped(&mut out.cmdline, text.as_bytes());
                out.device_line = Some(device.line);
            }
        } else {
            writer.push_escaped(&mut out.cmdline, token);
        }
    }
    out
}

/// A short token written with `write!` (a device's: about 40 bytes).
struct TokenText {
    bytes: [u8; 64],
    len: usize,
}

impl Default for TokenText {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl TokenText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl core::fmt::Write for TokenText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The TSC frequency measured against the PIT.
fn calibrate_tsc_khz() -> u64 {
    match platform::tsc_ticks_per_pit(CALIBRATION_PIT_TICKS) {
        Some((tsc_ticks, pit_ticks)) => tsc_ticks * PIT_HZ / pit_ticks.max(1) / 1000,
        None => fail("no TSC frequency from CPUID and no PIT to measure it against"),
    }
}
