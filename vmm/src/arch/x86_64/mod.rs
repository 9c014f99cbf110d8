//! The x86_64 machine state the VMM prepares before the first instruction.
//!
//! The kernel never runs privileged setup code on our VMM (DESIGN.md,
//! "Privilege"): we build, in guest RAM, the identity-mapped page tables,
//! the GDT, the TSS with its I/O permission bitmap and an empty IDT, and we
//! compute the control and segment registers that start the vCPU in
//! 64-bit mode at CPL3. Everything here is pure computation on plain data,
//! so it is unit-tested without KVM; `kvm/` applies it with ioctls.
//!
//! References: Intel SDM vol. 3A, 3.4.5 (segment descriptors), 4.5
//! (4-level paging), 7.2.3 (TSS descriptor in 64-bit mode), 7.7 (64-bit
//! TSS); vol. 1, 19.5.2 (I/O permission bitmap).

pub(crate) mod cpu_state;
pub(crate) mod gdb;
pub(crate) mod registers;

use std::collections::BTreeMap;

use eremite_interface::hypercall::Port;
use eremite_interface::layout::{
    self, BOOT_STACK_ADDR, BOOT_STACK_SIZE, CPL0_STACK_COUNT, CPL0_STACK_SIZE, CPL0_STACKS_ADDR,
    GDT_ADDR, IDT_ADDR, IDT_ENTRIES, LARGE_PAGE_SIZE, MAX_CPUS, PAGE_SIZE, PAGE_TABLES_ADDR,
    PAGE_TABLES_END, TSS_ADDR, TSS_IOMAP_ADDR, TSS_IOMAP_SIZE, TSS_SIZE, TSS_STRIDE, gdt, pte,
};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use crate::loader::{LoadedImage, PageAccess, PageZero};
use crate::memory::{GuestRam, OutOfRange, RamLayout};

const GIB: u64 = 1 << 30;
/// The PML4, which CR3 names; the other tables follow it.
const PML4_ADDR: u64 = PAGE_TABLES_ADDR;
/// Entries per table.
const ENTRIES: u64 = pte::ENTRIES as u64;

const _: () =
    assert!(layout::LAPIC_ADDR.is_multiple_of(LARGE_PAGE_SIZE) && layout::LAPIC_ADDR >= 3 * GIB);
const _: () = assert!(
    layout::VIRTIO_MMIO_ADDR.is_multiple_of(LARGE_PAGE_SIZE)
        && layout::VIRTIO_MMIO_ADDR >= 3 * GIB
        && layout::VIRTIO_MMIO_ADDR < 4 * GIB
);
const _: () = assert!(
    layout::HIGH_RAM_START + layout::MAX_MEMORY - layout::LOW_RAM_END <= ENTRIES * GIB,
    "one page-directory-pointer table maps all RAM"
);
const _: () = assert!(layout::IMAGE_BASE.is_multiple_of(LARGE_PAGE_SIZE));

/// One 4 KiB page table: its guest address and its 512 entries.
pub(crate) struct PageTable {
    pub(crate) addr: u64,
    pub(crate) entries: Box<[u64; pte::ENTRIES]>,
}

impl PageTable {
    fn new(addr: u64) -> Self {
        Self {
            addr,
            entries: Box::new([0; pte::ENTRIES]),
        }
    }
}

/// The page tables do not fit into their area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the page tables for {memory_mib} MiB of guest memory and a {image_kib} KiB image need {needed_kib} KiB, more than the {room_kib} KiB of the page-table area at {PAGE_TABLES_ADDR:#x}..{PAGE_TABLES_END:#x}; use less --memory or a smaller image"
)]
pub struct PageTableError {
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Size of the image in KiB.
    pub image_kib: u64,
    /// What the tables need, in KiB.
    pub needed_kib: u64,
    /// The page-table area, in KiB.
    pub room_kib: u64,
}

/// Upper-level entries (PML4, PDPT and page-directory entries that name a
/// table) allow everything; the leaf entries decide.
const TABLE: u64 = pte::PRESENT | pte::WRITABLE | pte::USER;
/// RAM the CPL3 kernel uses: writable, execute-disable.
const DATA: u64 = pte::PRESENT | pte::WRITABLE | pte::USER | pte::NO_EXECUTE;
/// RAM only CPL0 uses (GDT, TSSes, CPL0 stacks).
const SUPERVISOR: u64 = pte::PRESENT | pte::WRITABLE | pte::NO_EXECUTE;
/// Device registers: as [`DATA`], uncached, in a 2 MiB page.
const MMIO_LARGE: u64 = DATA | pte::CACHE_DISABLE | pte::WRITE_THROUGH | pte::LARGE;

/// The leaf flags of the 4 KiB page at `addr` in the first 2 MiB.
fn low_page_flags(addr: u64) -> u64 {
    let in_range = |start: u64, end: u64| addr >= (start & !(PAGE_SIZE - 1)) && addr < end;
    let cpl0_stacks_end =
        CPL0_STACKS_ADDR + u64::from(MAX_CPUS) * CPL0_STACK_COUNT * CPL0_STACK_SIZE;
    if addr < PAGE_SIZE {
        0 // the null-pointer guard
    } else if in_range(GDT_ADDR, GDT_ADDR + PAGE_SIZE)
        || in_range(TSS_ADDR, TSS_IOMAP_ADDR + TSS_IOMAP_SIZE)
        || in_range(CPL0_STACKS_ADDR, cpl0_stacks_end)
    {
        SUPERVISOR
    } else {
        // The IDT (written by the kernel at CPL3 when it installs its
        // stubs), boot info, boot stack and data, the page tables.
        DATA
    }
}

/// The leaf flags of an image page.
fn image_page_flags(access: PageAccess) -> u64 {
    let present = pte::PRESENT | pte::USER;
    match access {
        PageAccess::Unmapped => 0,
        PageAccess::ReadOnly => present | pte::NO_EXECUTE,
        PageAccess::ReadWrite => present | pte::WRITABLE | pte::NO_EXECUTE,
        PageAccess::ReadExecute => present,
    }
}

/// Hands out the tables of the page-table area in order, the PML4 first.
struct Tables {
    tables: Vec<PageTable>,
}

impl Tables {
    fn add(&mut self) -> usize {
        let addr = PML4_ADDR + self.tables.len() as u64 * PAGE_SIZE;
        self.tables.push(PageTable::new(addr));
        self.tables.len() - 1
    }
}

/// The page tables for `ram` with `image` loaded (see the layout in
/// `eremite_interface::layout`): all RAM identity-mapped,
/// - the first 2 MiB in 4 KiB pages, page 0 not mapped, the GDT, the TSSes
///   with their I/O bitmap and the CPL0 stacks CPL0-only, the rest
///   CPL3-accessible, all writable and execute-disable;
/// - the image's 2 MiB regions in 4 KiB pages with the access of their
///   image page ([`PageAccess`], W^X), free RAM after the image's end
///   writable and execute-disable;
/// - all other RAM, below and above the 3–4 GiB hole, in 2 MiB pages,
///   writable and execute-disable;
/// - in the hole only the local APIC's registers at [`layout::LAPIC_ADDR`]
///   (so the kernel arms its timer and signals EOI with plain MMIO writes)
///   and the 2 MiB of virtio-MMIO windows at [`layout::VIRTIO_MMIO_ADDR`]
///   (each access exits to the VMM's device model or, for a `QueueNotify`
///   write, signals an ioeventfd inside KVM): uncached, CPL3-accessible,
///   writable, execute-disable.
///
/// The tables lie from [`PAGE_TABLES_ADDR`] on, in this order: PML4, the
/// page-directory-pointer table, one page directory per GiB that holds
/// anything, then the 4 KiB tables. RAM's size must be a multiple of 2 MiB
/// (checked by `VmConfig`) and the image must lie below the hole (checked
/// by the loader).
pub(crate) fn page_tables(
    ram: RamLayout,
    image: &LoadedImage,
) -> Result<Vec<PageTable>, PageTableError> {
    assert!(ram.total_bytes().is_multiple_of(LARGE_PAGE_SIZE) && ram.total_bytes() > 0);
    assert!(image.start == layout::IMAGE_BASE && image.end <= ram.low_end());
    assert_eq!(
        image.pages.len() as u64,
        (image.end - image.start) / PAGE_SIZE
    );

    // Every 2 MiB page to map, by address, with its flags (for RAM) or the
    // 4 KiB entries of its page table.
    let mut large_pages: BTreeMap<u64, Leaf> = BTreeMap::new();
    for range in ram.ranges() {
        for addr in (range.start..range.end).step_by(LARGE_PAGE_SIZE as usize) {
            large_pages.insert(addr, Leaf::Large(DATA));
        }
    }
    for addr in [layout::LAPIC_ADDR, layout::VIRTIO_MMIO_ADDR] {
        large_pages.insert(addr, Leaf::Large(MMIO_LARGE));
    }
    let small = |flags: &dyn Fn(u64) -> u64, base: u64| {
        let mut entries = Box::new([0u64; pte::ENTRIES]);
        for (i, entry) in entries.iter_mut().enumerate() {
            let addr = base + i as u64 * PAGE_SIZE;
            let flags = flags(addr);
            if flags != 0 {
                *entry = addr | flags;
            }
        }
        Leaf::Small(entries)
    };
    let low_pages = |addr: u64| match image.page_zero {
        PageZero::Trampoline if addr < PAGE_SIZE => image_page_flags(PageAccess::ReadExecute),
        _ => low_page_flags(addr),
    };
    large_pages.insert(0, small(&low_pages, 0));
    let image_page = |addr: u64| {
        if addr >= image.end {
            return DATA;
        }
        let index = usize::try_from((addr - image.start) / PAGE_SIZE).expect("small");
        image_page_flags(image.pages[index])
    };
    for base in (image.start..image.end).step_by(LARGE_PAGE_SIZE as usize) {
        large_pages.insert(base, small(&image_page, base));
    }

    let directories: std::collections::BTreeSet<u64> =
        large_pages.keys().map(|addr| addr / GIB).collect();
    let small_tables = large_pages
        .values()
        .filter(|leaf| matches!(leaf, Leaf::Small(_)))
        .count() as u64;
    let needed = 2 + directories.len() as u64 + small_tables;
    let room = (PAGE_TABLES_END - PAGE_TABLES_ADDR) / PAGE_SIZE;
    if needed > room {
        return Err(PageTableError {
            memory_mib: ram.total_bytes() >> 20,
            image_kib: (image.end - image.start) >> 10,
            needed_kib: (needed * PAGE_SIZE) >> 10,
            room_kib: (room * PAGE_SIZE) >> 10,
        });
    }

    let mut tables = Tables { tables: Vec::new() };
    let pml4 = tables.add();
    let pdpt = tables.add();
    tables.tables[pml4].entries[0] = tables.tables[pdpt].addr | TABLE;
    let mut directory_of = BTreeMap::new();
    for gib in directories {
        let pd = tables.add();
        tables.tables[pdpt].entries[gib as usize] = tables.tables[pd].addr | TABLE;
        directory_of.insert(gib, pd);
    }
    for (addr, leaf) in large_pages {
        let entry = match leaf {
            Leaf::Large(flags) => addr | flags | pte::LARGE,
            Leaf::Small(entries) => {
                let pt = tables.add();
                tables.tables[pt].entries = entries;
                tables.tables[pt].addr | TABLE
            }
        };
        let pd = directory_of[&(addr / GIB)];
        tables.tables[pd].entries[((addr % GIB) / LARGE_PAGE_SIZE) as usize] = entry;
    }
    debug_assert_eq!(tables.tables.len() as u64, needed);
    Ok(tables.tables)
}

/// What maps one 2 MiB page: a large-page entry with these flags, or a
/// 4 KiB table with these entries.
enum Leaf {
    Large(u64),
    Small(Box<[u64; pte::ENTRIES]>),
}

/// Segment descriptors (SDM vol. 3A, 3.4.5): flat, with L=1 for code.
const fn descriptor(access: u64, flags: u64) -> u64 {
    0xffff | (access << 40) | (0xf << 48) | (flags << 52)
}
const KERNEL_CODE: u64 = descriptor(0x9b, 0xa); // P, DPL0, code exec/read accessed; G, L
const KERNEL_DATA: u64 = descriptor(0x93, 0xc); // P, DPL0, data r/w accessed; G, D/B
const USER_DATA: u64 = descriptor(0xf3, 0xc); // P, DPL3, data r/w accessed; G, D/B
const USER_CODE: u64 = descriptor(0xfb, 0xa); // P, DPL3, code exec/read accessed; G, L
/// Where CPU `cpu`'s TSS is.
fn tss_addr(cpu: u32) -> u64 {
    TSS_ADDR + u64::from(cpu) * TSS_STRIDE
}

/// Limit of CPU `cpu`'s TSS segment: up to the end of the shared I/O
/// permission bitmap, including its final byte.
fn tss_limit(cpu: u32) -> u64 {
    TSS_IOMAP_ADDR + TSS_IOMAP_SIZE - 1 - tss_addr(cpu)
}

/// The GDT, in selector order (see [`gdt`]): null, kernel code and data,
/// user data and code, then the two slots of each CPU's 64-bit TSS
/// descriptor (all [`MAX_CPUS`], so the layout does not depend on the VM).
pub(crate) fn gdt() -> [u64; gdt::SLOTS as usize] {
    let mut slots = [0; gdt::SLOTS as usize];
    slots[1..5].copy_from_slice(&[KERNEL_CODE, KERNEL_DATA, USER_DATA, USER_CODE]);
    for cpu in 0..MAX_CPUS {
        // 64-bit available TSS (type 9), present, DPL 0 (SDM vol. 3A, 7.2.3).
        let (base, limit) = (tss_addr(cpu), tss_limit(cpu));
        let low = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        let slot = 5 + 2 * cpu as usize;
        slots[slot] = low;
        slots[slot + 1] = base >> 32;
    }
    slots
}

/// Top of CPU `cpu`'s CPL0 stack slot `slot` (16-byte aligned).
fn cpl0_stack_top(cpu: u32, slot: u64) -> u64 {
    CPL0_STACKS_ADDR + (u64::from(cpu) * CPL0_STACK_COUNT + slot + 1) * CPL0_STACK_SIZE
}

/// CPU `cpu`'s TSS: RSP0 and IST1..IST3 point at its own CPL0 stacks,
/// and its I/O map base at the shared bitmap.
pub(crate) fn tss(cpu: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; TSS_SIZE as usize];
    let mut put = |offset: usize, value: u64| {
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    };
    put(4, cpl0_stack_top(cpu, 0)); // RSP0
    for ist in 1..CPL0_STACK_COUNT {
        put(36 + 8 * (ist as usize - 1), cpl0_stack_top(cpu, ist)); // IST1..
    }
    let iomap_base = TSS_IOMAP_ADDR - tss_addr(cpu);
    bytes[102..104].copy_from_slice(&(iomap_base as u16).to_le_bytes());
    bytes
}

/// The I/O permission bitmap: every port is denied to CPL3 except the
/// hypercall ports (a clear bit allows the port). A 32-bit `out` is
/// checked against the bits of all four ports it covers (SDM vol. 1,
/// 19.5.2), so each hypercall port opens `port..port + 4`.
pub(crate) fn io_bitmap() -> Vec<u8> {
    let mut bitmap = vec![0xffu8; TSS_IOMAP_SIZE as usize];
    for port in Port::ALL
        .iter()
        .flat_map(|&p| p as usize..p as usize + HYPERCALL_WIDTH)
    {
        bitmap[port / 8] &= !(1 << (port % 8));
    }
    bitmap
}

/// Bytes in one hypercall `out` (the request address).
const HYPERCALL_WIDTH: usize = 4;

/// The machine tables could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The page tables do not fit.
    #[error(transparent)]
    PageTables(#[from] PageTableError),
    /// A table lies outside RAM (cannot happen with the minimum RAM size).
    #[error(transparent)]
    Memory(#[from] OutOfRange),
}

/// Write the page tables, GDT and TSS into guest RAM, and return the end
/// of the page tables. The IDT page is left as fresh guest RAM is: zero,
/// every gate not present, until the kernel installs its stubs.
pub(crate) fn write_machine_tables(
    ram: &GuestRam,
    image: &LoadedImage,
) -> Result<u64, MachineError> {
    let tables = page_tables(ram.layout(), image)?;
    let end = tables
        .iter()
        .map(|t| t.addr + PAGE_SIZE)
        .max()
        .unwrap_or(PAGE_TABLES_ADDR);
    for table in tables {
        let bytes: Vec<u8> = table.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        ram.write(table.addr, &bytes)?;
    }
    let gdt: Vec<u8> = gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    ram.write(GDT_ADDR, &gdt)?;
    for cpu in 0..MAX_CPUS {
        ram.write(tss_addr(cpu), &tss(cpu))?;
    }
    ram.write(TSS_IOMAP_ADDR, &io_bitmap())?;
    Ok(end)
}

/// Control-register bits (SDM vol. 3A, 2.5).
mod cr {
    pub(super) const CR0_PE: u64 = 1 << 0;
    pub(super) const CR0_MP: u64 = 1 << 1;
    pub(super) const CR0_ET: u64 = 1 << 4;
    pub(super) const CR0_NE: u64 = 1 << 5;
    pub(super) const CR0_WP: u64 = 1 << 16;
    pub(super) const CR0_AM: u64 = 1 << 18;
    pub(super) const CR0_PG: u64 = 1 << 31;
    pub(super) const CR4_PAE: u64 = 1 << 5;
    pub(super) const CR4_OSFXSR: u64 = 1 << 9;
    pub(super) const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub(super) const CR4_FSGSBASE: u64 = 1 << 16;
    pub(super) const CR4_OSXSAVE: u64 = 1 << 18;
    pub(super) const EFER_SCE: u64 = 1 << 0;
    pub(super) const EFER_LME: u64 = 1 << 8;
    pub(super) const EFER_LMA: u64 = 1 << 10;
    pub(super) const EFER_NXE: u64 = 1 << 11;
}

/// Set up `sregs` (as read from a fresh vCPU) for 64-bit mode at CPL3 on
/// CPU `cpu` (which selects its TSS). `has_xsave`: whether the CPU offers
/// XSAVE, so CR4.OSXSAVE may be set.
pub(crate) fn long_mode_sregs(mut sregs: kvm_sregs, cpu: u32, has_xsave: bool) -> kvm_sregs {
    use cr::*;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_FSGSBASE;
    if has_xsave {
        sregs.cr4 |= CR4_OSXSAVE;
    }
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (gdt::SLOTS * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = (IDT_ENTRIES * 16 - 1) as u16;
    let flat = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        present: 1,
        s: 1,
        g: 1,
        ..Default::default()
    };
    sregs.cs = kvm_segment {
        selector: gdt::USER_CODE,
        type_: 0xb,
        dpl: 3,
        l: 1,
        ..flat
    };
    let data = kvm_segment {
        selector: gdt::USER_DATA,
        type_: 0x3,
        dpl: 3,
        db: 1,
        ..flat
    };
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        base: tss_addr(cpu),
        limit: tss_limit(cpu) as u32,
        selector: gdt::TSS + 16 * cpu as u16,
        type_: 0xb, // busy 64-bit TSS
        present: 1,
        ..Default::default()
    };
    sregs
}

/// General registers at entry: `rip` = the image's entry, `rdi` = the boot
/// info, the stack at the top of the boot stack (minus 8, as after a call).
pub(crate) fn entry_regs(entry: u64) -> kvm_regs {
    start_regs(
        entry,
        BOOT_STACK_ADDR + BOOT_STACK_SIZE - 8,
        layout::BOOT_INFO_ADDR,
    )
}

/// General registers of a CPU that starts at `rip` with `rsp` and
/// `rdi = arg`.
pub(crate) fn start_regs(rip: u64, rsp: u64, arg: u64) -> kvm_regs {
    kvm_regs {
        rip,
        rsp,
        rdi: arg,
        // IF set: the local APIC timer may interrupt (the kernel arms it).
        rflags: 0x202,
        ..Default::default()
    }
}

/// The MSRs that send a Linux program's `syscall` to `lstar` (SDM vol.
/// 3B, 5.8.8): STAR (the CPL0 code selector, and the base sysret would
/// use), LSTAR, and FMASK, which clears TF, DF and AC on entry but never
/// IF (the entry runs at CPL3 under PVM and cannot set it again).
pub(crate) fn syscall_msrs(lstar: u64) -> [(u32, u64); 3] {
    const IA32_STAR: u32 = 0xC000_0081;
    const IA32_LSTAR: u32 = 0xC000_0082;
    const IA32_FMASK: u32 = 0xC000_0084;
    const TF: u64 = 1 << 8;
    const DF: u64 = 1 << 10;
    const AC: u64 = 1 << 18;
    let sysret_base = u64::from(gdt::USER_DATA & !3) - 8;
    let star = (sysret_base << 48) | (u64::from(gdt::KERNEL_CODE) << 32);
    [
        (IA32_STAR, star),
        (IA32_LSTAR, lstar),
        (IA32_FMASK, TF | DF | AC),
    ]
}

/// XCR0 to give the guest: x87, SSE and AVX state, plus the AVX-512 state
/// components when offered. Components that need permission from the host
/// kernel (AMX) are left off. `supported` is CPUID.(EAX=0DH,ECX=0):EDX:EAX.
pub(crate) fn xcr0(supported: u64) -> u64 {
    const X87_SSE_AVX: u64 = 0b111;
    const AVX512: u64 = 0b1110_0000;
    supported & (X87_SSE_AVX | AVX512) | 0b1
}

/// The guest-physical address that `virt` maps to under the 4-level page
/// tables at `cr3` (Intel SDM vol. 3A, 4.5), as the guest's CPU would
/// find it: `None` when an entry on the walk is not present or a table
/// lies outside guest RAM. Only reads guest memory (a hostile guest's
/// tables give a wrong answer, never a VMM fault); used to follow a
/// guest's stack for the profiler.
pub(crate) fn translate(ram: &GuestRam, cr3: u64, virt: u64) -> Option<u64> {
    let mut table = cr3 & pte::ADDR_MASK;
    // Shifts of the PML4, PDPT, PD and PT indices.
    for (level, shift) in [39u32, 30, 21, 12].into_iter().enumerate() {
        let index = (virt >> shift) & (ENTRIES - 1);
        let entry: u64 = ram.read_obj(table + index * 8).ok()?;
        if entry & pte::PRESENT == 0 {
            return None;
        }
        let base = entry & pte::ADDR_MASK;
        // A 1 GiB (PDPT) or 2 MiB (PD) page ends the walk.
        if shift == 12 || ((level == 1 || level == 2) && entry & pte::LARGE != 0) {
            let offset_mask = (1u64 << shift) - 1;
            return Some((base & !offset_mask) | (virt & offset_mask));
        }
        table = base;
    }
    None
}

/// Copy guest memory at virtual address `virt` (on the page tables at
/// `cr3`) into `buf`, page by page, as far as it is mapped; the bytes
/// copied.
pub(crate) fn read_virtual(ram: &GuestRam, cr3: u64, virt: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let at = virt.wrapping_add(done as u64);
        let in_page = (PAGE_SIZE - at % PAGE_SIZE).min((buf.len() - done) as u64);
        let Some(phys) = translate(ram, cr3, at) else {
            break;
        };
        let chunk = &mut buf[done..done + in_page as usize];
        if ram.read(phys, chunk).is_err() {
            break;
        }
        done += chunk.len();
    }
    done
}

/// Write `bytes` to guest memory at virtual address `virt`, page by page;
/// `false` if part of it is not mapped (the part before it is written).
/// Page protections are the guest's: a read-only page is written too.
pub(crate) fn write_virtual(ram: &GuestRam, cr3: u64, virt: u64, bytes: &[u8]) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        let at = virt.wrapping_add(done as u64);
        let in_page = (PAGE_SIZE - at % PAGE_SIZE).min((bytes.len() - done) as u64);
        let Some(phys) = translate(ram, cr3, at) else {
            return false;
        };
        let chunk = &bytes[done..done + in_page as usize];
        if ram.write(phys, chunk).is_err() {
            return false;
        }
        done += chunk.len();
    }
    true
}

/// The call chain of a guest stopped at `rip` with frame pointer `rbp`,
/// on the page tables at `cr3`, into `chain`: `rip`, then each caller's
/// return address, up to `max_depth` entries. Each frame holds the
/// caller's `rbp` at `[rbp]` and the return address at `[rbp + 8]` (the
/// System V ABI's frame layout); the walk stops at a null or misaligned
/// frame pointer, one that does not move up the stack, a return address
/// of 0, or memory it cannot read. Code built without frame pointers
/// leaves its callers out or names wrong ones; a hostile guest's stack
/// only gives a wrong chain.
pub(crate) fn call_chain(
    ram: &GuestRam,
    cr3: u64,
    rip: u64,
    rbp: u64,
    max_depth: usize,
    chain: &mut Vec<u64>,
) {
    let read = |virt: u64| {
        let phys = translate(ram, cr3, virt)?;
        ram.read_obj::<u64>(phys).ok()
    };
    chain.push(rip);
    let mut frame = rbp;
    while chain.len() < max_depth && frame != 0 && frame.is_multiple_of(8) {
        let (Some(caller_frame), Some(ret)) = (read(frame), frame.checked_add(8).and_then(read))
        else {
            break;
        };
        if ret == 0 {
            break;
        }
        chain.push(ret);
        if caller_frame <= frame {
            break;
        }
        frame = caller_frame;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CPU makes of `addr` through `tables` (SDM vol. 3A,
    /// 4.6): the physical address and the effective access, combining
    /// every level's W and U/S (all must allow) and XD (any forbids).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Mapping {
        phys: u64,
        is_user: bool,
        is_writable: bool,
        is_executable: bool,
        is_uncached: bool,
    }

    fn lookup(tables: &[PageTable], addr: u64) -> Option<Mapping> {
        let table = |a: u64| tables.iter().find(|t| t.addr == a).expect("table exists");
        let index = |level: u32| ((addr >> (12 + 9 * level)) & 0x1ff) as usize;
        let mut entry = table(PML4_ADDR).entries[index(3)];
        let (mut is_user, mut is_writable, mut is_executable) = (true, true, true);
        for level in [2, 1, 0, 99] {
            if entry & pte::PRESENT == 0 {
                return None;
            }
            is_user &= entry & pte::USER != 0;
            is_writable &= entry & pte::WRITABLE != 0;
            is_executable &= entry & pte::NO_EXECUTE == 0;
            let next = entry & pte::ADDR_MASK;
            let page_size = match level {
                99 => Some(PAGE_SIZE),
                0 if entry & pte::LARGE != 0 => Some(LARGE_PAGE_SIZE),
                _ => None,
            };
            if let Some(size) = page_size {
                return Some(Mapping {
                    phys: next + (addr & (size - 1)),
                    is_user,
                    is_writable,
                    is_executable,
                    is_uncached: entry & pte::CACHE_DISABLE != 0,
                });
            }
            assert_eq!(entry & pte::LARGE, 0, "no 1 GiB pages");
            entry = table(next).entries[index(level)];
        }
        unreachable!()
    }

    const USER_DATA: (bool, bool, bool) = (true, true, false);
    const SUPERVISOR_DATA: (bool, bool, bool) = (false, true, false);

    /// (user, writable, executable) of `addr`, checking it is identity-mapped.
    fn access(tables: &[PageTable], addr: u64) -> Option<(bool, bool, bool)> {
        lookup(tables, addr).map(|m| {
            assert_eq!(m.phys, addr, "identity map at {addr:#x}");
            (m.is_user, m.is_writable, m.is_executable)
        })
    }

    /// An image as lld lays out hello, with its pages' access: 11 pages
    /// rodata, 79 code, 3 RELRO, 1 unmapped, 17 data, then the end.
    fn image() -> LoadedImage {
        use PageAccess::*;
        let mut pages = vec![ReadOnly; 11];
        pages.extend([ReadExecute; 79]);
        pages.extend([ReadOnly; 3]);
        pages.push(Unmapped);
        pages.extend([ReadWrite; 17]);
        LoadedImage {
            entry: layout::IMAGE_BASE + 0xb000,
            start: layout::IMAGE_BASE,
            end: layout::IMAGE_BASE + pages.len() as u64 * PAGE_SIZE,
            tls: Default::default(),
            pages,
            page_zero: PageZero::Guard,
        }
    }

    fn tables(mem: u64) -> Vec<PageTable> {
        page_tables(RamLayout::new(mem), &image()).expect("fits")
    }

    const MEMORY_SIZES: [u64; 7] = [
        8 << 20,
        64 << 20,
        GIB,
        3 * GIB,
        4 * GIB,
        8 * GIB,
        layout::MAX_MEMORY,
    ];

    #[test]
    fn the_image_is_mapped_w_xor_x() {
        for mem in MEMORY_SIZES {
            let tables = tables(mem);
            let at = |page: u64| access(&tables, layout::IMAGE_BASE + page * PAGE_SIZE + 8);
            assert_eq!(at(0), Some((true, false, false)), "rodata");
            assert_eq!(at(10), Some((true, false, false)), "rodata");
            assert_eq!(at(11), Some((true, false, true)), "code");
            assert_eq!(at(89), Some((true, false, true)), "code");
            assert_eq!(at(90), Some((true, false, false)), "RELRO");
            assert_eq!(at(92), Some((true, false, false)), "RELRO");
            assert_eq!(at(93), None, "no segment");
            assert_eq!(at(94), Some(USER_DATA), "data");
            assert_eq!(at(110), Some(USER_DATA), "bss");
            assert_eq!(at(111), Some(USER_DATA), "heap after the image");
            assert_eq!(at(511), Some(USER_DATA), "heap after the image");
        }
    }

    #[test]
    fn all_other_ram_is_writable_and_execute_disable() {
        for mem in MEMORY_SIZES {
            let tables = tables(mem);
            let low_end = mem.min(layout::LOW_RAM_END);
            for addr in [
                IDT_ADDR,
                layout::BOOT_INFO_ADDR + 8,
                BOOT_STACK_ADDR,
                layout::BOOT_DATA_ADDR,
                PAGE_TABLES_ADDR,
                PAGE_TABLES_END - 8,
                0x7000,
                layout::IMAGE_BASE + LARGE_PAGE_SIZE,
                low_end - 8,
            ] {
                assert_eq!(
                    access(&tables, addr),
                    Some(USER_DATA),
                    "mem {mem:#x} {addr:#x}"
                );
            }
            assert_eq!(access(&tables, low_end), None, "past the low RAM");
        }
    }

    #[test]
    fn supervisor_structures_are_not_accessible_at_cpl3() {
        let tables = tables(64 << 20);
        for addr in [
            GDT_ADDR,
            GDT_ADDR + 0xff8,
            TSS_ADDR,
            TSS_IOMAP_ADDR,
            TSS_IOMAP_ADDR + TSS_IOMAP_SIZE - 1,
            CPL0_STACKS_ADDR,
            cpl0_stack_top(MAX_CPUS - 1, CPL0_STACK_COUNT - 1) - 8,
            layout::IMAGE_BASE - 1,
        ] {
            assert_eq!(access(&tables, addr), Some(SUPERVISOR_DATA), "{addr:#x}");
        }
        assert_eq!(access(&tables, 0), None, "page 0");
        assert_eq!(access(&tables, 0xfff), None, "page 0");
        assert_eq!(access(&tables, layout::BOOT_INFO_ADDR), Some(USER_DATA));
        assert_eq!(access(&tables, IDT_ADDR + 0xff8), Some(USER_DATA));
    }

    #[test]
    fn ram_above_4_gib_is_mapped_and_the_hole_holds_only_the_devices() {
        for mem in [4 * GIB, 8 * GIB, layout::MAX_MEMORY] {
            let tables = tables(mem);
            let high_end = layout::HIGH_RAM_START + mem - layout::LOW_RAM_END;
            for addr in [
                layout::HIGH_RAM_START,
                layout::HIGH_RAM_START + 0x12_3458,
                high_end - LARGE_PAGE_SIZE,
                high_end - 8,
            ] {
                assert_eq!(
                    access(&tables, addr),
                    Some(USER_DATA),
                    "mem {mem:#x} {addr:#x}"
                );
            }
            assert_eq!(access(&tables, high_end), None, "mem {mem:#x}");
            for addr in [
                layout::LOW_RAM_END,
                layout::VIRTIO_MMIO_ADDR - 1,
                layout::VIRTIO_MMIO_ADDR + LARGE_PAGE_SIZE,
                layout::LAPIC_ADDR - 1,
                layout::LAPIC_ADDR + LARGE_PAGE_SIZE,
                layout::HIGH_RAM_START - 1,
            ] {
                assert_eq!(access(&tables, addr), None, "mem {mem:#x} {addr:#x}");
            }
        }
        assert_eq!(access(&tables(3 * GIB), layout::HIGH_RAM_START), None);
    }

    #[test]
    fn the_local_apic_and_the_virtio_windows_are_mapped_uncached() {
        for mem in [8u64 << 20, 3 * GIB, 8 * GIB] {
            let tables = tables(mem);
            let windows = layout::VIRTIO_MMIO_ADDR
                ..layout::VIRTIO_MMIO_ADDR
                    + layout::MAX_VIRTIO_DEVICES * layout::VIRTIO_MMIO_STRIDE;
            for addr in [
                layout::LAPIC_ADDR,
                layout::LAPIC_ADDR + 0xb0,
                windows.start,
                windows.start + 0x50,
                windows.end - 4,
                layout::VIRTIO_MMIO_ADDR + LARGE_PAGE_SIZE - 1,
            ] {
                let mapping = lookup(&tables, addr).expect("mapped");
                assert_eq!(mapping.phys, addr);
                assert!(mapping.is_uncached, "{addr:#x}");
                assert!(mapping.is_user && mapping.is_writable && !mapping.is_executable);
            }
        }
    }

    #[test]
    fn the_tables_stay_in_their_area_and_say_when_they_do_not_fit() {
        for mem in MEMORY_SIZES {
            let tables = tables(mem);
            assert_eq!(tables[0].addr, PAGE_TABLES_ADDR, "the PML4 first");
            let mut addrs: Vec<u64> = tables.iter().map(|t| t.addr).collect();
            addrs.sort_unstable();
            addrs.dedup();
            assert_eq!(addrs.len(), tables.len(), "each table at its own page");
            assert!(
                tables
                    .iter()
                    .all(|t| t.addr >= PAGE_TABLES_ADDR && t.addr + PAGE_SIZE <= PAGE_TABLES_END)
            );
        }
        // At the largest memory: 2 + 32 directories + 1 table for the first
        // 2 MiB leave 93 tables, 186 MiB, for the image.
        let with_image_mib = |mib: u64| {
            let mut image = image();
            image.pages.resize(
                (mib << 20) as usize / PAGE_SIZE as usize,
                PageAccess::ReadWrite,
            );
            image.end = image.start + (mib << 20);
            page_tables(RamLayout::new(layout::MAX_MEMORY), &image)
        };
        assert!(with_image_mib(186).is_ok());
        let error = with_image_mib(188).err().expect("too large");
        assert_eq!((error.needed_kib, error.room_kib), (516, 512));
        assert!(
            error
                .to_string()
                .contains("page-table area at 0x80000..0x100000"),
            "{error}"
        );
    }

    #[test]
    fn gdt_has_the_selectors_the_interface_names() {
        let gdt = gdt();
        let dpl = |d: u64| (d >> 45) & 3;
        let is_long_code = |d: u64| (d >> 53) & 1 == 1 && (d >> 43) & 1 == 1;
        assert!(is_long_code(gdt[usize::from(gdt::KERNEL_CODE >> 3)]));
        assert_eq!(dpl(gdt[usize::from(gdt::KERNEL_CODE >> 3)]), 0);
        assert!(is_long_code(gdt[usize::from(gdt::USER_CODE >> 3)]));
        assert_eq!(dpl(gdt[usize::from(gdt::USER_CODE >> 3)]), 3);
        assert_eq!(dpl(gdt[usize::from(gdt::USER_DATA >> 3)]), 3);
        for cpu in [0, 1, MAX_CPUS - 1] {
            let slot = usize::from((gdt::TSS + 16 * cpu as u16) >> 3);
            let tss = gdt[slot];
            assert_eq!((tss >> 40) & 0xff, 0x89);
            let base = (tss >> 16) & 0xff_ffff | ((tss >> 56) << 24) | (gdt[slot + 1] << 32);
            assert_eq!(base, tss_addr(cpu));
            let limit = tss & 0xffff | ((tss >> 48) & 0xf) << 16;
            assert_eq!(base + limit + 1, TSS_IOMAP_ADDR + TSS_IOMAP_SIZE);
        }
    }

    #[test]
    fn each_cpu_has_its_own_cpl0_stacks_and_the_shared_io_bitmap() {
        let word = |tss: &[u8], o: usize| u64::from_le_bytes(tss[o..o + 8].try_into().unwrap());
        let mut tops = std::collections::BTreeSet::new();
        for cpu in 0..MAX_CPUS {
            let tss = tss(cpu);
            for offset in [4, 36, 44, 52] {
                let top = word(&tss, offset);
                assert!(top > CPL0_STACKS_ADDR && top <= layout::IMAGE_BASE);
                assert!(tops.insert(top), "stack top {top:#x} used twice");
            }
            let iomap_base = u64::from(u16::from_le_bytes([tss[102], tss[103]]));
            assert_eq!(tss_addr(cpu) + iomap_base, TSS_IOMAP_ADDR);
        }
        assert_eq!(word(&tss(0), 4), CPL0_STACKS_ADDR + CPL0_STACK_SIZE);
        assert_eq!(word(&tss(1), 52), CPL0_STACKS_ADDR + 8 * CPL0_STACK_SIZE);
    }

    #[test]
    fn io_bitmap_allows_only_the_hypercall_ports() {
        let bitmap = io_bitmap();
        let allowed = |port: usize| bitmap[port / 8] & (1 << (port % 8)) == 0;
        let open: Vec<usize> = (0..65536).filter(|&p| allowed(p)).collect();
        let mut wanted: Vec<usize> = Port::ALL
            .iter()
            .flat_map(|&p| p as usize..p as usize + HYPERCALL_WIDTH)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        assert_eq!(open, wanted);
        // Spelled out: five ports from 0x500 and one at 0x509, each opening
        // four bits; the debug port between them stays closed.
        assert_eq!(Port::ALL.len(), 6);
        assert_eq!(
            open,
            (0x500..=0x507).chain(0x509..=0x50c).collect::<Vec<_>>()
        );
        assert!(!allowed(usize::from(eremite_interface::trap::DEBUG_PORT)));
        assert_eq!(*bitmap.last().unwrap(), 0xff, "terminating byte");
    }

    #[test]
    fn translation_follows_the_tables_in_guest_ram() {
        let ram = GuestRam::new(64 << 20).unwrap();
        write_machine_tables(&ram, &image()).unwrap();
        let image = image();
        // 4 KiB pages (the image), 2 MiB pages (RAM above it), offsets kept.
        for addr in [image.start + 0xb123, image.end + 8, (32 << 20) + 0x1_2345] {
            assert_eq!(translate(&ram, PML4_ADDR, addr), Some(addr), "{addr:#x}");
        }
        // Page 0 (the null guard), past RAM and non-canonical: no mapping.
        for addr in [0, 8, 64 << 30, 0xffff_8000_0000_0000] {
            assert_eq!(translate(&ram, PML4_ADDR, addr), None, "{addr:#x}");
        }
        // A CR3 outside guest RAM reads nothing.
        assert_eq!(translate(&ram, 1 << 40, image.start), None);
        // A table the guest rewrote: page `start` now maps frame 0x7000.
        map_page_to(&ram, image.start, 0x7000);
        assert_eq!(translate(&ram, PML4_ADDR, image.start + 5), Some(0x7005));
    }

    /// Rewrite the 4 KiB page-table entry of identity-mapped `page` to map
    /// `frame`, as a guest may.
    fn map_page_to(ram: &GuestRam, page: u64, frame: u64) {
        let pt_entry = (PAGE_TABLES_ADDR..PAGE_TABLES_END)
            .step_by(8)
            .find(|&a| ram.read_obj::<u64>(a).unwrap() & pte::ADDR_MASK == page)
            .unwrap();
        let flags = ram.read_obj::<u64>(pt_entry).unwrap() & !pte::ADDR_MASK;
        ram.write_obj(pt_entry, &(frame | flags)).unwrap();
    }

    #[test]
    fn virtual_copies_cross_pages_and_stop_where_the_mapping_does() {
        let ram = GuestRam::new(64 << 20).unwrap();
        let image = image();
        write_machine_tables(&ram, &image).unwrap();
        // Rewire the image's first page to frame 0x7000: a copy across the
        // boundary to the second page takes two frames.
        map_page_to(&ram, image.start, 0x7000);
        let at = image.start + PAGE_SIZE - 2;
        assert!(write_virtual(&ram, PML4_ADDR, at, &[1, 2, 3, 4]));
        assert_eq!(
            ram.read_obj::<[u8; 2]>(0x7000 + PAGE_SIZE - 2).unwrap(),
            [1, 2]
        );
        assert_eq!(
            ram.read_obj::<[u8; 2]>(image.start + PAGE_SIZE).unwrap(),
            [3, 4]
        );
        let mut back = [0u8; 4];
        assert_eq!(read_virtual(&ram, PML4_ADDR, at, &mut back), 4);
        assert_eq!(back, [1, 2, 3, 4]);
        // Page 0 is not mapped: a read that runs into it stops there, a
        // write fails.
        let mut buf = [0u8; 8];
        assert_eq!(read_virtual(&ram, PML4_ADDR, 0, &mut buf), 0);
        assert!(!write_virtual(&ram, PML4_ADDR, 0, &[0]));
    }

    #[test]
    fn a_call_chain_follows_frame_pointers_up_the_stack() {
        let ram = GuestRam::new(64 << 20).unwrap();
        write_machine_tables(&ram, &image()).unwrap();
        // Three frames at 0x30_0000, 0x30_0100, 0x30_0200; the last
        // one's saved rbp is 0 (the outermost frame).
        let frames = [
            (0x30_0000u64, 0x30_0100u64, 0x1111u64),
            (0x30_0100, 0x30_0200, 0x2222),
            (0x30_0200, 0, 0x3333),
        ];
        for (at, saved, ret) in frames {
            ram.write_obj(at, &saved).unwrap();
            ram.write_obj(at + 8, &ret).unwrap();
        }
        let walk = |rbp: u64, depth: usize| {
            let mut chain = Vec::new();
            call_chain(&ram, PML4_ADDR, 0xabc, rbp, depth, &mut chain);
            chain
        };
        assert_eq!(walk(0x30_0000, 128), [0xabc, 0x1111, 0x2222, 0x3333]);
        assert_eq!(walk(0x30_0000, 2), [0xabc, 0x1111]);
        // No frame pointer, a misaligned one, one outside memory.
        assert_eq!(walk(0, 128), [0xabc]);
        assert_eq!(walk(0x30_0004, 128), [0xabc]);
        assert_eq!(walk(1 << 40, 128), [0xabc]);
        // A frame that points at itself (a loop) ends the walk.
        ram.write_obj(0x30_0100u64, &0x30_0100u64).unwrap();
        assert_eq!(walk(0x30_0000, 128), [0xabc, 0x1111, 0x2222]);
    }

    #[test]
    fn registers_start_at_cpl3_in_long_mode() {
        let sregs = long_mode_sregs(kvm_sregs::default(), 0, true);
        assert_eq!(sregs.cs.dpl, 3);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.ss.dpl, 3);
        assert_eq!(sregs.cs.selector & 3, 3);
        assert_ne!(sregs.efer & cr::EFER_LMA, 0);
        assert_eq!(sregs.cr3, PML4_ADDR);
        assert_eq!(xcr0(0x2e7), 0xe7);
        assert_eq!(xcr0(0x60007), 0x7);
    }
}
