//! Guest physical memory layout on the eremite VMM.
//!
//! Guest RAM starts at physical address 0 and is identity-mapped, so every
//! address here is both physical and virtual. The first 2 MiB hold the
//! structures the VMM prepares before the first instruction; the image is
//! loaded at [`IMAGE_BASE`]; RAM above the image belongs to the kernel.
//!
//! ```text
//! 0x0000_0000  page 0: never mapped (null-pointer guard)
//! 0x0000_1000  GDT (segments, then one TSS descriptor per CPU)
//! 0x0000_2000  IDT (256 gates, filled in by the kernel at boot)
//! 0x0000_3000  one TSS per CPU (128 bytes apart)
//! 0x0000_3800  the I/O permission bitmap every TSS shares
//! 0x0000_6000  boot info (one page)
//! 0x0002_0000  initial CPL3 stack of the boot CPU
//! 0x0003_0000  boot data: args, environment, command line (strings)
//! 0x0008_0000  page tables
//! 0x0010_0000  CPL0 stacks: per CPU, RSP0, then one per IST slot
//! 0x0020_0000  the image (ELF segments, relocated), then free RAM
//! 0xD000_0000  virtio-MMIO register windows (no RAM: each access exits)
//! 0xFEE0_0000  the local APIC (served by KVM)
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

/// Start of the page-table area.
pub const PAGE_TABLES_ADDR: u64 = 0x8_0000;
/// End (exclusive) of the page-table area.
pub const PAGE_TABLES_END: u64 = CPL0_STACKS_ADDR;

/// Where the image's lowest segment is loaded (2 MiB aligned).
pub const IMAGE_BASE: u64 = 0x20_0000;

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
    /// 64-bit TSS of CPU 0 (occupies two GDT slots); CPU `n`'s follows
    /// at `TSS + 16 * n`.
    pub const TSS: u16 = 0x28;
    /// Number of 8-byte GDT slots in use: five segments, then two per CPU.
    pub const SLOTS: u64 = 5 + 2 * super::MAX_CPUS as u64;
}

const _: () = assert!(
    VIRTIO_MMIO_ADDR >= MAX_MEMORY
        && VIRTIO_MMIO_ADDR.is_multiple_of(LARGE_PAGE_SIZE)
        && MAX_VIRTIO_DEVICES * VIRTIO_MMIO_STRIDE <= LARGE_PAGE_SIZE
        && VIRTIO_MMIO_ADDR + LARGE_PAGE_SIZE <= LAPIC_ADDR
);
const _: () = assert!((DEVICE_VECTOR as u64 + MAX_VIRTIO_DEVICES) < TIMER_VECTOR as u64 + 32);
const _: () = assert!(TSS_IOMAP_ADDR + TSS_IOMAP_SIZE <= BOOT_INFO_ADDR);
const _: () = assert!(gdt::SLOTS * 8 <= PAGE_SIZE);
const _: () =
    assert!(CPL0_STACKS_ADDR + MAX_CPUS as u64 * CPL0_STACK_COUNT * CPL0_STACK_SIZE <= IMAGE_BASE);
