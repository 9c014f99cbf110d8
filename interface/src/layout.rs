//! Guest physical memory layout on the eremite VMM.
//!
//! Guest RAM starts at physical address 0 and is identity-mapped, so every
//! address here is both physical and virtual. The first 2 MiB hold the
//! structures the VMM prepares before the first instruction; the image is
//! loaded at [`IMAGE_BASE`]; RAM above the image belongs to the kernel.
//! Guest RAM of `n` bytes lies at `[0, min(n, LOW_RAM_END))` and, when `n`
//! is larger than [`LOW_RAM_END`], the rest at `[HIGH_RAM_START,
//! HIGH_RAM_START + n - LOW_RAM_END)`: the hole between holds the device
//! windows (the boot info's `ram` lists both ranges).
//!
//! ```text
//! 0x0000_0000  page 0: never mapped (null-pointer guard)
//! 0x0000_1000  GDT (segments, then one TSS descriptor per CPU)    CPL0 only
//! 0x0000_2000  IDT (256 gates, filled in by the kernel at boot)
//! 0x0000_3000  one TSS per CPU (128 bytes apart)                  CPL0 only
//! 0x0000_3800  the I/O permission bitmap every TSS shares         CPL0 only
//! 0x0000_6000  boot info (one page)
//! 0x0000_7000  application processors' real-mode trampoline (PVH only)
//! 0x0002_0000  initial CPL3 stack of the boot CPU
//! 0x0003_0000  boot data: args, environment, command line (strings)
//! 0x0008_0000  page tables (the PML4 first)
//! 0x0010_0000  CPL0 stacks: per CPU, RSP0, then one per IST slot  CPL0 only
//! 0x0020_0000  the image (ELF segments, relocated), then free RAM
//! 0xC000_0000  end of the RAM below 4 GiB (LOW_RAM_END)
//! 0xD000_0000  virtio-MMIO register windows (no RAM: each access exits)
//! 0xFEE0_0000  the local APIC (served by KVM)
//! 0x1_0000_0000  the rest of the RAM, if any (HIGH_RAM_START)
//! ```
//!
//! The VMM's page tables (4-level, SDM vol. 3A, 4.5) map all of it:
//! - every page CPL3-accessible (U/S = 1) except those marked "CPL0 only"
//!   above; page 0 and the hole (but for the device windows and the local
//!   APIC) are not mapped;
//! - the image in 4 KiB pages with the permissions of its `PT_LOAD`
//!   segments (code read-only and executable, read-only data read-only,
//!   data writable; all but code execute-disable), its `PT_GNU_RELRO` pages
//!   read-only once relocated, pages of its range that no segment covers
//!   not mapped;
//! - everything else (the IDT, boot info, boot stack and data, the page
//!   tables themselves, the CPL0 stacks, free RAM) writable and
//!   execute-disable (EFER.NXE is set): the first 2 MiB in 4 KiB pages, the
//!   rest in 2 MiB pages, the device windows and the local APIC uncached.
//!
//! The IDT page stays CPL3-writable because the kernel fills it in at CPL3
//! (`install_idt`). The page tables stay CPL3-accessible, writable and
//! execute-disable at [`PAGE_TABLES_ADDR`] (the PML4 there, which CR3
//! names): the CPL3 kernel walks and edits them itself (splitting 2 MiB
//! pages into 4 KiB tables for guard pages, unmapping, changing
//! protections; see [`pte`] for the entry bits), and invalidates the TLB
//! through the CPL0 gate. The VMM uses the area from its start; the boot
//! info's `page_tables_end` says how far.

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large page (a page-directory entry with PS set).
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// Global descriptor table: see [`gdt`] for the selectors.
pub const GDT_ADDR: u64 = 0x1000;
/// Interrupt descriptor table: 256 16-byte gates, zero (not present) until
/// the kernel installs its supervisor stubs.
pub const IDT_ADDR: u64 = 0x2000;
/// Number of IDT gates.
pub const IDT_ENTRIES: u64 = 256;
/// Most vCPUs a VM may have.
pub const MAX_CPUS: u32 = 16;
/// Task-state segment of CPU 0; CPU `n`'s is [`TSS_STRIDE`] × `n` further.
pub const TSS_ADDR: u64 = 0x3000;
/// Distance between two CPUs' TSSes.
pub const TSS_STRIDE: u64 = 128;
/// Size of the 64-bit TSS proper.
pub const TSS_SIZE: u64 = 104;
/// The I/O permission bitmap, shared by every TSS (each TSS's I/O map
/// base is the distance from itself to here).
pub const TSS_IOMAP_ADDR: u64 = TSS_ADDR + MAX_CPUS as u64 * TSS_STRIDE;
/// Size of the I/O permission bitmap: one bit per port for 65536 ports,
/// plus the terminating byte of ones the SDM requires (vol. 1, 19.5.2).
pub const TSS_IOMAP_SIZE: u64 = 8192 + 1;
/// Boot info page.
pub const BOOT_INFO_ADDR: u64 = 0x6000;
/// The page where, booted through PVH (QEMU), the kernel puts the
/// real-mode code that application processors start in after a start-up
/// IPI, and its mailbox (below 1 MiB and 4 KiB aligned, as start-up IPIs
/// require). Unused on the eremite VMM, which starts them in long mode.
pub const AP_TRAMPOLINE_ADDR: u64 = 0x7000;

/// Base of the CPL0 stacks: CPU `n` has [`CPL0_STACK_COUNT`] of them from
/// slot `n * CPL0_STACK_COUNT`; its slot 0 is RSP0, slots 1..=3 are
/// IST1..=IST3.
pub const CPL0_STACKS_ADDR: u64 = 0x10_0000;
/// Size of each CPL0 stack.
pub const CPL0_STACK_SIZE: u64 = 0x4000;
/// Number of CPL0 stacks per CPU (RSP0 plus three IST stacks).
pub const CPL0_STACK_COUNT: u64 = 4;
/// IST slot used by double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot used by NMIs and machine checks.
pub const IST_NMI: u8 = 2;
/// IST slot used by every other vector.
pub const IST_DEFAULT: u8 = 3;

/// Initial CPL3 stack of the boot CPU (the kernel moves to its own stacks).
pub const BOOT_STACK_ADDR: u64 = 0x2_0000;
/// Size of the initial CPL3 stack.
pub const BOOT_STACK_SIZE: u64 = 0x1_0000;

/// Start of the boot data area that [`crate::BootInfo`] points into.
pub const BOOT_DATA_ADDR: u64 = 0x3_0000;
/// End (exclusive) of the boot data area.
pub const BOOT_DATA_END: u64 = 0x8_0000;

/// Start of the page-table area; the PML4 (the table CR3 names) is here.
pub const PAGE_TABLES_ADDR: u64 = 0x8_0000;
/// End (exclusive) of the page-table area.
pub const PAGE_TABLES_END: u64 = CPL0_STACKS_ADDR;

/// Where the image's lowest segment is loaded (2 MiB aligned).
pub const IMAGE_BASE: u64 = 0x20_0000;

/// The kernel's virtual window (`kernel/src/mm/window.rs`): from here
/// (512 GiB, past any guest RAM) to [`VIRTUAL_WINDOW_END`], a Linux
/// program's memory may be mapped at addresses that are not its frames'.
/// Everything below is identity-mapped RAM; a buffer the VMM is given
/// must lie there (the kernel copies what lies in the window).
pub const VIRTUAL_WINDOW_START: u64 = 1 << 39;
/// One past the window's end: the top of the lower canonical half.
pub const VIRTUAL_WINDOW_END: u64 = 1 << 47;

/// Whether `[addr, addr + len)` reaches into the virtual window, where
/// addresses are not guest-physical ones.
pub const fn is_in_virtual_window(addr: u64, len: u64) -> bool {
    addr.saturating_add(len) > VIRTUAL_WINDOW_START
}

/// The local APIC's registers (xAPIC MMIO, SDM vol. 3A, 11.4.1), mapped
/// CPL3-accessible and uncached by the VMM's page tables.
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// The IDT vector of the local APIC timer (the kernel's time slice).
pub const TIMER_VECTOR: u8 = 0x20;
/// The IDT vector of a wake-up sent by another CPU (an IPI).
pub const WAKE_VECTOR: u8 = 0x21;
/// The IDT vector of the first virtio device's interrupt (an MSI the VMM
/// routes to CPU 0's local APIC); device `n` in
/// [`VIRTIO_MMIO_ADDR`] order uses `DEVICE_VECTOR + n`.
pub const DEVICE_VECTOR: u8 = 0x22;
/// The IDT vector the VMM raises on CPU 0 when it forwards a signal the
/// host sent it (see `KernelReport::host_signals`): an MSI, like a
/// device's.
pub const HOST_SIGNAL_VECTOR: u8 = 0x3E;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// Register window of the first virtio-MMIO device (virtio 1.2 §4.2);
/// device `n` is [`VIRTIO_MMIO_STRIDE`] × `n` further. The VMM maps the
/// 2 MiB from here CPL3-accessible and uncached, like the local APIC, and
/// announces each device on the kernel command line
/// (`virtio_mmio.device=4K@0xd0000000:34`, see `crate::cmdline`).
pub const VIRTIO_MMIO_ADDR: u64 = 0xD000_0000;
/// Size of one device's register window, and the distance between two.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// Most virtio-MMIO devices a VM may have.
pub const MAX_VIRTIO_DEVICES: u64 = 8;

/// Smallest guest memory the VMM accepts.
pub const MIN_MEMORY: u64 = 8 << 20;
/// End (exclusive) of the RAM below 4 GiB: the 3 GiB from 0.
pub const LOW_RAM_END: u64 = 0xC000_0000;
/// Where the RAM beyond the first [`LOW_RAM_END`] bytes continues, above
/// the hole that holds the device windows and the local APIC.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;
/// Largest guest memory the VMM accepts: 31 GiB, so that the highest RAM
/// address (32 GiB with the 1 GiB hole) still fits the 32-bit encoding of
/// hypercall request addresses (see
/// [`crate::hypercall::encode_request_addr`]).
pub const MAX_MEMORY: u64 = crate::hypercall::MAX_REQUEST_END - (HIGH_RAM_START - LOW_RAM_END);

/// Page-table entry bits (SDM vol. 3A, 4.5, tables 4-15 to 4-20), the same
/// at every level unless said otherwise. The CPU combines the levels: a
/// page is writable only if every entry on the walk has [`WRITABLE`],
/// CPL3-accessible only if every one has [`USER`], and execute-disable if
/// any has [`NO_EXECUTE`] (with EFER.NXE set).
pub mod pte {
    /// The entry maps something.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes allowed (CR0.WP makes this apply at CPL0 too).
    pub const WRITABLE: u64 = 1 << 1;
    /// CPL3 accesses allowed (U/S).
    pub const USER: u64 = 1 << 2;
    /// Write-through caching (PWT).
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// Caching disabled (PCD).
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// Set by the CPU on any access through the entry.
    pub const ACCESSED: u64 = 1 << 5;
    /// Set by the CPU on a write through a leaf entry.
    pub const DIRTY: u64 = 1 << 6;
    /// In a page-directory entry (or PDPT entry): maps a large page (PS)
    /// instead of naming a table.
    pub const LARGE: u64 = 1 << 7;
    /// Instruction fetches not allowed (XD).
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The physical address an entry names: of the next table, or of the
    /// page (4 KiB aligned; a large page's is aligned to its size).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Entries in one table (of any level).
    pub const ENTRIES: usize = 512;
}

/// GDT selectors. The order of the CPL3 data and code descriptors follows
/// what `STAR` needs for `sysret` (SDM vol. 2B, SYSRET).
pub mod gdt {
    /// 64-bit code, DPL 0.
    pub const KERNEL_CODE: u16 = 0x08;
    /// Data, DPL 0.
    pub const KERNEL_DATA: u16 = 0x10;
    /// Data, DPL 3 (selector with RPL 3).
    pub const USER_DATA: u16 = 0x18 | 3;
    /// 64-bit code, DPL 3 (selector with RPL 3).
    pub const USER_CODE: u16 = 0x20 | 3;
    /// 64-bit TSS of CPU 0 (occupies two GDT slots); CPU `n`'s follows
    /// at `TSS + 16 * n`.
    pub const TSS: u16 = 0x28;
    /// Number of 8-byte GDT slots in use: five segments, then two per CPU.
    pub const SLOTS: u64 = 5 + 2 * super::MAX_CPUS as u64;
}

const _: () = assert!(
    VIRTIO_MMIO_ADDR >= LOW_RAM_END
        && VIRTIO_MMIO_ADDR.is_multiple_of(LARGE_PAGE_SIZE)
        && MAX_VIRTIO_DEVICES * VIRTIO_MMIO_STRIDE <= LARGE_PAGE_SIZE
        && VIRTIO_MMIO_ADDR + LARGE_PAGE_SIZE <= LAPIC_ADDR
);
const _: () = assert!((DEVICE_VECTOR as u64 + MAX_VIRTIO_DEVICES) < HOST_SIGNAL_VECTOR as u64);
const _: () = assert!(HOST_SIGNAL_VECTOR < TIMER_VECTOR + 32);
const _: () = assert!(TSS_IOMAP_ADDR + TSS_IOMAP_SIZE <= BOOT_INFO_ADDR);
const _: () = assert!(gdt::SLOTS * 8 <= PAGE_SIZE);
const _: () = assert!(
    AP_TRAMPOLINE_ADDR >= BOOT_INFO_ADDR + PAGE_SIZE
        && AP_TRAMPOLINE_ADDR + PAGE_SIZE <= BOOT_STACK_ADDR
);
const _: () =
    assert!(CPL0_STACKS_ADDR + MAX_CPUS as u64 * CPL0_STACK_COUNT * CPL0_STACK_SIZE <= IMAGE_BASE);
const _: () = assert!(
    LOW_RAM_END.is_multiple_of(1 << 30)
        && HIGH_RAM_START.is_multiple_of(1 << 30)
        && LAPIC_ADDR + LARGE_PAGE_SIZE <= HIGH_RAM_START
        && MAX_MEMORY.is_multiple_of(LARGE_PAGE_SIZE)
);
