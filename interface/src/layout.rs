//! Guest physical memory layout on the eremite VMM.
//!
//! Guest RAM starts at physical address 0 and is identity-mapped, so every
//! address here is both physical and virtual. The first 2 MiB hold the
//! structures the VMM prepares before the first instruction; the image is
//! loaded at [`IMAGE_BASE`]; RAM above the image belongs to the kernel.
//!
//! ```text
//! 0x0000_0000  page 0: never mapped (null-pointer guard)
//! 0x0000_1000  GDT
//! 0x0000_2000  IDT (256 gates, filled in by the kernel at boot)
//! 0x0000_3000  TSS + I/O permission bitmap
//! 0x0000_6000  boot info (one page)
//! 0x0001_0000  CPL0 stacks: RSP0, then one per IST slot
//! 0x0002_0000  initial CPL3 stack of the boot CPU
//! 0x0003_0000  boot data: args, environment, command line (strings)
//! 0x0008_0000  page tables
//! 0x0020_0000  the image (ELF segments, relocated), then free RAM
//! ```

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
/// Task-state segment; the I/O permission bitmap follows it at
/// [`TSS_IOMAP_OFFSET`].
pub const TSS_ADDR: u64 = 0x3000;
/// Size of the 64-bit TSS proper.
pub const TSS_SIZE: u64 = 104;
/// Offset of the I/O permission bitmap from the start of the TSS.
pub const TSS_IOMAP_OFFSET: u64 = TSS_SIZE;
/// Size of the I/O permission bitmap: one bit per port for 65536 ports,
/// plus the terminating byte of ones the SDM requires (vol. 1, 19.5.2).
pub const TSS_IOMAP_SIZE: u64 = 8192 + 1;
/// Boot info page.
pub const BOOT_INFO_ADDR: u64 = 0x6000;

/// Base of the CPL0 stacks: slot 0 is RSP0, slots 1..=3 are IST1..=IST3.
pub const CPL0_STACKS_ADDR: u64 = 0x1_0000;
/// Size of each CPL0 stack.
pub const CPL0_STACK_SIZE: u64 = 0x4000;
/// Number of CPL0 stacks (RSP0 plus three IST stacks).
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

/// Start of the page-table area.
pub const PAGE_TABLES_ADDR: u64 = 0x8_0000;
/// End (exclusive) of the page-table area.
pub const PAGE_TABLES_END: u64 = IMAGE_BASE;

/// Where the image's lowest segment is loaded (2 MiB aligned).
pub const IMAGE_BASE: u64 = 0x20_0000;

/// The local APIC's registers (xAPIC MMIO, SDM vol. 3A, 11.4.1), mapped
/// CPL3-accessible and uncached by the VMM's page tables.
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// The IDT vector of the local APIC timer (the kernel's time slice).
pub const TIMER_VECTOR: u8 = 0x20;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// Smallest guest memory the VMM accepts.
pub const MIN_MEMORY: u64 = 8 << 20;
/// Largest guest memory the VMM accepts for now: everything must sit below
/// the local APIC window at 0xFEE0_0000 and hypercall addresses are
/// encoded in 32 bits (see [`crate::hypercall::encode_request_addr`]).
pub const MAX_MEMORY: u64 = 0xC000_0000;

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
    /// 64-bit TSS (occupies two GDT slots).
    pub const TSS: u16 = 0x28;
    /// Number of 8-byte GDT slots in use.
    pub const SLOTS: u64 = 7;
}
