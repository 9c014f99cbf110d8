//! What the VMM tells the kernel at entry, and what the kernel reports back.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A byte range in guest memory holding `count` NUL-terminated strings laid
/// end to end (args, environment `KEY=VALUE` pairs). `len` counts every byte
/// including the NULs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct StringList {
    /// Guest address of the first byte.
    pub addr: u64,
    /// Total length in bytes.
    pub len: u64,
    /// Number of strings.
    pub count: u64,
}

/// The image's thread-local-storage template (its `PT_TLS` segment), as
/// loaded: the kernel copies `file_size` bytes from `addr` and zeroes the
/// rest up to `mem_size` for every thread.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TlsTemplate {
    /// Guest address of the initialised part (0 when the image has no TLS).
    pub addr: u64,
    /// Bytes of initialised data.
    pub file_size: u64,
    /// Total size of the block, including zero-initialised data.
    pub mem_size: u64,
    /// Required alignment (a power of two, at least 1).
    pub align: u64,
}

/// A range of guest-physical RAM: `[addr, addr + len)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MemRange {
    /// First byte (2 MiB aligned).
    pub addr: u64,
    /// Length in bytes (a multiple of 2 MiB).
    pub len: u64,
}

impl MemRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.len)
    }
}

/// Number of entries of [`BootInfo::ram`].
pub const MAX_RAM_RANGES: usize = 4;

/// Number of CPL0 entry counters: one per exception/interrupt vector that
/// the supervisor distinguishes (vectors 0..=31), then
/// [`CPL0_COUNTER_OTHER_IRQ`], [`CPL0_COUNTER_GATE`] and
/// [`CPL0_COUNTER_TLB_FLUSH`].
pub const CPL0_COUNTERS: usize = 35;
/// Counter index for interrupts with vectors 32..=255.
pub const CPL0_COUNTER_OTHER_IRQ: usize = 32;
/// Counter index for entries through the privileged-operation gate.
pub const CPL0_COUNTER_GATE: usize = 33;
/// Counter index for entries through the TLB-invalidation gate.
pub const CPL0_COUNTER_TLB_FLUSH: usize = 34;

/// Filled in by the kernel while it runs; the VMM reads it after the guest
/// has exited (no exit is spent on it). The VMM never trusts these values
/// for anything but display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KernelReport {
    /// Nanoseconds from the kernel's first instruction to the call of the
    /// application's runtime entry (std's `runtime_entry`, then `main`).
    pub init_ns: u64,
    /// The TSC when the kernel called the application's runtime entry; the
    /// VMM compares it with [`BootInfo::boot_tsc`] for "time to main".
    pub main_tsc: u64,
    /// Entries into CPL0 code, by kind (see [`CPL0_COUNTERS`]).
    pub cpl0_entries: [u64; CPL0_COUNTERS],
    /// A Linux program's system calls that came by the trap path (from
    /// `syscall` sites left in place).
    pub linux_traps: u64,
    /// `syscall` sites the kernel rewrote, and left, in code mapped
    /// executable after start (shared libraries, `mprotect(PROT_EXEC)`).
    pub linux_sites_rewritten_later: u64,
    pub linux_sites_left_later: u64,
    /// Signals sent to the VMM process that it forwards to the guest
    /// (`SIGINT`, `SIGTERM`): bit `n - 1` for signal `n`. The VMM sets
    /// bits (atomically, while the guest runs) and raises
    /// [`crate::layout::HOST_SIGNAL_VECTOR`]; the kernel takes them.
    pub host_signals: u64,
    /// A Linux program's system calls that got `ENOSYS`, by number, in
    /// the order they were first asked for; unused slots have count 0.
    /// Numbers beyond the slots are not recorded here (`--verbose` lists
    /// them all).
    pub linux_unknown: [UnknownCall; LINUX_UNKNOWN_SLOTS],
    /// Guest address of the function tracer's [`crate::trace::TraceBuffer`]s,
    /// one per vCPU (`cpu_count`); 0 when tracing is off.
    pub trace_buffers: u64,
    /// Guest address of the kernel's [`crate::trap::ThreadTable`] (for
    /// `--gdb`); 0 until the kernel has published it.
    pub debug_threads: u64,
    /// The size in bytes of the last request for memory the kernel could
    /// not meet, for lack of free RAM (0: none); the VMM names `--memory`
    /// when a run that had one fails.
    pub failed_alloc_bytes: u64,
    /// Where the program was when it died of a CPU exception or aborted
    /// (a panic): the instruction and the stack pointer (0: it did not).
    /// The eremite VMM unwinds the stack from there and prints the
    /// backtrace (the kernel prints none unless it booted through PVH).
    pub crash_rip: u64,
    pub crash_rsp: u64,
}

/// Slots for unimplemented Linux system calls in [`KernelReport`].
pub const LINUX_UNKNOWN_SLOTS: usize = 16;

/// A Linux system call the kernel does not implement, and how often the
/// program asked for it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct UnknownCall {
    pub number: u32,
    pub count: u32,
}

impl Default for KernelReport {
    fn default() -> Self {
        Self {
            init_ns: 0,
            main_tsc: 0,
            cpl0_entries: [0; CPL0_COUNTERS],
            linux_traps: 0,
            linux_sites_rewritten_later: 0,
            linux_sites_left_later: 0,
            host_signals: 0,
            linux_unknown: [UnknownCall::default(); LINUX_UNKNOWN_SLOTS],
            trace_buffers: 0,
            debug_threads: 0,
            failed_alloc_bytes: 0,
            crash_rip: 0,
            crash_rsp: 0,
        }
    }
}

/// Boot information at [`crate::layout::BOOT_INFO_ADDR`]; the boot vCPU
/// starts at the image's entry point with its address in `rdi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`crate::MAGIC`].
    pub magic: u64,
    /// [`crate::INTERFACE_VERSION`].
    pub version: u32,
    /// Number of vCPUs.
    pub cpu_count: u32,
    /// End of the RAM below 4 GiB: `[0, mem_size)` is RAM (the first
    /// entry of `ram`), at most [`crate::layout::LOW_RAM_END`]. The image,
    /// `free_start` and the initrd all lie below it.
    pub mem_size: u64,
    /// Number of valid entries in `ram` (1 or 2 today).
    pub ram_count: u64,
    /// All guest RAM, in ascending order, disjoint, each range identity-
    /// mapped: `ram[0]` is `[0, mem_size)` (with the VMM's structures, the
    /// image and the initrd in it, as described by the other fields); any
    /// further entry (`ram[1]` = `[4 GiB, 4 GiB + total - mem_size)` when
    /// the guest has more than 3 GiB) is free RAM that nothing uses yet,
    /// mapped writable and execute-disable in 2 MiB pages. Entries from
    /// `ram_count` on are zero.
    pub ram: [MemRange; MAX_RAM_RANGES],
    /// End (exclusive) of the page tables the VMM built, from
    /// [`crate::layout::PAGE_TABLES_ADDR`]; the rest of the page-table area
    /// up to [`crate::layout::PAGE_TABLES_END`] is zero and unused.
    pub page_tables_end: u64,
    /// Lowest address of the loaded image.
    pub image_start: u64,
    /// One past the highest address of the loaded image.
    pub image_end: u64,
    /// First address of RAM the kernel may allocate from (page aligned);
    /// everything from here to `mem_size` is free (but for the initrd).
    pub free_start: u64,
    /// Thread-local storage template of the image.
    pub tls: TlsTemplate,
    /// Time-stamp counter frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: u64,
    /// Host wall-clock time just before the guest starts (read together
    /// with `boot_tsc`), in ns since the Unix epoch.
    pub boot_wall_ns: u64,
    /// Guest time-stamp counter value corresponding to `boot_wall_ns` (the
    /// guest TSC read just before the first instruction runs).
    pub boot_tsc: u64,
    /// Program arguments; the first is the program name.
    pub args: StringList,
    /// Environment, `KEY=VALUE` strings.
    pub env: StringList,
    /// Kernel command line, one token per string: the user's `--cmdline`
    /// split at white space, then the VMM's parameters (the virtio-MMIO
    /// devices, the network address; see [`crate::cmdline`]).
    pub cmdline: StringList,
    /// Bit flags, see [`boot_flags`].
    pub flags: u64,
    /// Guest address of the initial ramdisk (a cpio archive in the "newc"
    /// format), or 0. The kernel unpacks it into `/` before `main`, then
    /// reuses its memory. It lies in `[free_start, mem_size)`, page aligned.
    pub initrd_addr: u64,
    /// Length of the initial ramdisk in bytes.
    pub initrd_len: u64,
    /// Host directories mounted with `--mount`: one absolute guest path per
    /// mount; the index is [`crate::hypercall::HostFs::mount`].
    pub mounts: StringList,
    /// Bit `i` set: mount `i` is read-only.
    pub read_only_mounts: u64,
    /// Filled in by the kernel.
    pub report: KernelReport,
    /// The Linux program the VMM loaded beside the kernel (flag
    /// [`boot_flags::LINUX`]); zero for a hermit image.
    pub linux: LinuxProgram,
    /// TSC ticks the VM has spent stopped by a debugger (`--gdb`), which
    /// the guest's clocks leave out. The VMM updates it while the guest
    /// runs, so the kernel reads it here, at
    /// [`BootInfo::STOPPED_TICKS_OFFSET`], not in its copy of the boot info.
    pub stopped_ticks: u64,
    /// Non-zero while GDB is attached (`--gdb`), 2 while it has
    /// watchpoints; the VMM updates it while the guest runs (so it is read
    /// here, at [`BootInfo::DEBUGGER_OFFSET`]). Then every CPU exception,
    /// not only #DB and #BP, is offered to the debugger first, an abort
    /// stops at an `int3` before the VM ends, and interrupt upcalls run
    /// without RFLAGS.TF (with watchpoints, the interrupted context steps
    /// from then on).
    pub debugger_attached: u64,
    /// Nanoseconds (two's complement) the guest's wall clock adds to
    /// boot time plus monotonic time: the VMM sets it when a paused or
    /// restored VM runs again (`eremite vm ... resume`, `eremite restore`),
    /// so the wall clock is the host's again after time the monotonic clock
    /// left out. Read live, at [`BootInfo::WALL_OFFSET_OFFSET`].
    pub wall_offset_ns: u64,
}

/// A static Linux x86_64 program that the VMM loaded into guest RAM next
/// to the Linux-ABI kernel image (`docs/linux.md`). Its `PT_LOAD` segments
/// are at their link addresses plus `bias`, mapped with their own rights;
/// its `syscall` instructions were rewritten to `call *%rax` where that is
/// safe (zpoline), and the VMM put the trampoline at address 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct LinuxProgram {
    /// Guest address of the program's entry point (`AT_ENTRY`).
    pub entry: u64,
    /// Guest address of its program headers (`AT_PHDR`), their number
    /// (`AT_PHNUM`) and size (`AT_PHENT`).
    pub phdr: u64,
    pub phnum: u64,
    pub phent: u64,
    /// What was added to the file's addresses: 0 for `ET_EXEC`, the load
    /// address of a static PIE.
    pub bias: u64,
    /// The program's extent in guest memory, page aligned; `end` is where
    /// its break (`brk`) starts.
    pub start: u64,
    pub end: u64,
    /// The executable bytes whose `syscall` sites may have been rewritten,
    /// and a bitmap of them: bit `i` (byte `i / 8`, bit `i % 8`) says
    /// whether the `call *%rax` ending at `text_start + i` is a rewritten
    /// `syscall` (the dispatcher's check of its return address).
    pub text_start: u64,
    pub text_end: u64,
    pub sites_bitmap: u64,
    /// `syscall` instructions rewritten, and left on the trap path, in the
    /// program and its interpreter.
    pub sites_rewritten: u64,
    pub sites_left: u64,
    /// A dynamic program's interpreter (`PT_INTERP`, glibc's `ld.so`),
    /// loaded by the VMM after the program: its load address (`AT_BASE`)
    /// and entry point, where the program starts. Zero for a static
    /// program.
    pub interp_base: u64,
    pub interp_entry: u64,
    /// The interpreter's code and bitmap of rewritten sites, as
    /// `text_start`, `text_end` and `sites_bitmap` are for the program.
    pub interp_text_start: u64,
    pub interp_text_end: u64,
    pub interp_sites_bitmap: u64,
    /// 1 when page 0 holds the system-call trampoline (the kernel may then
    /// rewrite code mapped later); 0 when page 0 is unmapped (a Go
    /// program, whose sites call stubs after it and whose later-mapped
    /// code takes the trap path).
    pub has_trampoline: u64,
}

/// Bits of [`BootInfo::flags`].
pub mod boot_flags {
    /// The user asked for `--verbose`: the kernel sends its log.
    pub const VERBOSE: u64 = 1 << 0;
    /// The image booted through its PVH entry on another hypervisor (QEMU),
    /// which built this boot info itself: no hypercalls, the devices of
    /// [`crate::pvh`] instead. The eremite VMM never sets it.
    pub const PVH: u64 = 1 << 1;
    /// `tsc_khz` was measured by the kernel (against the PIT, on the PVH
    /// path), not reported by the hypervisor. Shown in the verbose log.
    pub const TSC_MEASURED: u64 = 1 << 2;
    /// The image is the Linux-ABI kernel and [`crate::BootInfo::linux`]
    /// describes the program to start (instead of a hermit application
    /// linked into the image).
    pub const LINUX: u64 = 1 << 3;
    /// The VMM's device threads run on the same host CPUs as the vCPUs
    /// (the process may use no more host CPUs than it has vCPUs): an idle
    /// CPU halts at once instead of spinning first, since its spin would
    /// only keep the device thread that brings its work off the CPU.
    pub const HALT_WHEN_IDLE: u64 = 1 << 4;
}

impl BootInfo {
    /// Whether magic and version match this build of the interface.
    pub fn is_compatible(&self) -> bool {
        self.magic == crate::MAGIC && self.version == crate::INTERFACE_VERSION
    }

    /// Byte offset of the report within the boot info, so that the VMM can
    /// read back just that part.
    pub const REPORT_OFFSET: usize = core::mem::offset_of!(BootInfo, report);

    /// Byte offset of `stopped_ticks`, which the VMM writes while the
    /// guest runs.
    pub const STOPPED_TICKS_OFFSET: usize = core::mem::offset_of!(BootInfo, stopped_ticks);

    /// Byte offset of `debugger_attached`, which the VMM writes while the
    /// guest runs.
    pub const DEBUGGER_OFFSET: usize = core::mem::offset_of!(BootInfo, debugger_attached);

    /// Byte offset of `wall_offset_ns`, which the VMM writes while the
    /// guest is stopped.
    pub const WALL_OFFSET_OFFSET: usize = core::mem::offset_of!(BootInfo, wall_offset_ns);
}

const _: () = assert!(core::mem::size_of::<BootInfo>() <= crate::layout::PAGE_SIZE as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn boot_info_round_trips_through_bytes() {
        let mut info = BootInfo::new_zeroed();
        info.magic = crate::MAGIC;
        info.version = crate::INTERFACE_VERSION;
        info.report.cpl0_entries[3] = 7;
        let bytes = info.as_bytes().to_vec();
        let back = BootInfo::read_from_bytes(&bytes).expect("sized");
        assert!(back.is_compatible());
        assert_eq!(back.report.cpl0_entries[3], 7);
    }

    #[test]
    fn the_documented_offsets_hold() {
        // docs/boot-protocol.md, "Boot info".
        assert_eq!(core::mem::offset_of!(BootInfo, ram), 32);
        assert_eq!(core::mem::offset_of!(BootInfo, image_start), 104);
        assert_eq!(BootInfo::REPORT_OFFSET, 312);
    }

    #[test]
    fn other_version_is_incompatible() {
        let mut info = BootInfo::new_zeroed();
        info.magic = crate::MAGIC;
        info.version = crate::INTERFACE_VERSION + 1;
        assert!(!info.is_compatible());
    }
}
