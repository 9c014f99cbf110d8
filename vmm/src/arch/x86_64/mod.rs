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

use eremite_interface::hypercall::Port;
use eremite_interface::layout::{
    self, BOOT_STACK_ADDR, BOOT_STACK_SIZE, CPL0_STACK_COUNT, CPL0_STACK_SIZE, CPL0_STACKS_ADDR,
    GDT_ADDR, IDT_ADDR, IDT_ENTRIES, LARGE_PAGE_SIZE, MAX_CPUS, PAGE_SIZE, PAGE_TABLES_ADDR,
    PAGE_TABLES_END, TSS_ADDR, TSS_IOMAP_ADDR, TSS_IOMAP_SIZE, TSS_SIZE, TSS_STRIDE, gdt,
};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use crate::memory::{GuestRam, OutOfRange};

/// Page-table entry bits (SDM vol. 3A, table 4-15 to 4-20).
mod pte {
    pub(super) const PRESENT: u64 = 1 << 0;
    pub(super) const WRITABLE: u64 = 1 << 1;
    pub(super) const USER: u64 = 1 << 2;
    pub(super) const WRITE_THROUGH: u64 = 1 << 3;
    pub(super) const CACHE_DISABLE: u64 = 1 << 4;
    pub(super) const LARGE: u64 = 1 << 7;
}

const GIB: u64 = 1 << 30;
/// The PML4, then the PDPT, then the 4 KiB table for the first 2 MiB, then
/// one page directory per GiB of RAM.
const PML4_ADDR: u64 = PAGE_TABLES_ADDR;
const PDPT_ADDR: u64 = PAGE_TABLES_ADDR + PAGE_SIZE;
const FIRST_PT_ADDR: u64 = PAGE_TABLES_ADDR + 2 * PAGE_SIZE;
const FIRST_PD_ADDR: u64 = PAGE_TABLES_ADDR + 3 * PAGE_SIZE;

/// The page directory of the fourth GiB, for the local APIC's page and
/// the virtio-MMIO windows.
const APIC_PD_ADDR: u64 = FIRST_PD_ADDR + 3 * PAGE_SIZE;

const _: () = assert!(APIC_PD_ADDR + PAGE_SIZE <= PAGE_TABLES_END);
const _: () =
    assert!(layout::LAPIC_ADDR.is_multiple_of(LARGE_PAGE_SIZE) && layout::LAPIC_ADDR >= 3 * GIB);
const _: () = assert!(
    layout::VIRTIO_MMIO_ADDR.is_multiple_of(LARGE_PAGE_SIZE)
        && layout::VIRTIO_MMIO_ADDR >= 3 * GIB
        && layout::VIRTIO_MMIO_ADDR < 4 * GIB
);
const _: () = assert!(
    layout::MAX_MEMORY <= 3 * GIB,
    "one page directory per GiB below"
);

/// One 4 KiB page table: its guest address and its 512 entries.
pub(crate) struct PageTable {
    pub(crate) addr: u64,
    pub(crate) entries: Box<[u64; 512]>,
}

impl PageTable {
    fn new(addr: u64) -> Self {
        Self {
            addr,
            entries: Box::new([0; 512]),
        }
    }
}

/// Identity-map `[0, mem_size)`: CPL3-accessible and writable (the library
/// OS runs at CPL3), 2 MiB pages except for the first 2 MiB, whose page 0
/// stays unmapped so a null pointer faults. The local APIC's registers at
/// [`layout::LAPIC_ADDR`] are mapped too, uncached and CPL3-accessible, so
/// the kernel arms its timer and signals EOI with plain MMIO writes; and so
/// are the 2 MiB of virtio-MMIO windows at [`layout::VIRTIO_MMIO_ADDR`],
/// where no memory lies: each access exits to the VMM's device model (or,
/// for a `QueueNotify` write, signals an ioeventfd inside KVM).
///
/// `mem_size` must be a non-zero multiple of 2 MiB up to
/// [`layout::MAX_MEMORY`] (checked by `VmConfig`).
pub(crate) fn page_tables(mem_size: u64) -> Vec<PageTable> {
    assert!(
        mem_size.is_multiple_of(LARGE_PAGE_SIZE) && mem_size > 0 && mem_size <= layout::MAX_MEMORY
    );
    let flags = pte::PRESENT | pte::WRITABLE | pte::USER;
    let mut pml4 = PageTable::new(PML4_ADDR);
    pml4.entries[0] = PDPT_ADDR | flags;
    let mut pdpt = PageTable::new(PDPT_ADDR);
    let mut first = PageTable::new(FIRST_PT_ADDR);
    for (i, entry) in first.entries.iter_mut().enumerate().skip(1) {
        *entry = (i as u64 * PAGE_SIZE) | flags;
    }
    let mut tables = Vec::new();
    for gib in 0..mem_size.div_ceil(GIB) {
        let mut pd = PageTable::new(FIRST_PD_ADDR + gib * PAGE_SIZE);
        pdpt.entries[gib as usize] = pd.addr | flags;
        for (i, entry) in pd.entries.iter_mut().enumerate() {
            let addr = gib * GIB + i as u64 * LARGE_PAGE_SIZE;
            if addr >= mem_size {
                break;
            }
            *entry = if addr == 0 {
                FIRST_PT_ADDR | flags
            } else {
                addr | flags | pte::LARGE
            };
        }
        tables.push(pd);
    }
    let mut apic = PageTable::new(APIC_PD_ADDR);
    let uncached_large = flags | pte::LARGE | pte::CACHE_DISABLE | pte::WRITE_THROUGH;
    for addr in [layout::LAPIC_ADDR, layout::VIRTIO_MMIO_ADDR] {
        apic.entries[((addr % GIB) / LARGE_PAGE_SIZE) as usize] = addr | uncached_large;
    }
    pdpt.entries[3] = APIC_PD_ADDR | flags;
    tables.extend([pml4, pdpt, first, apic]);
    tables
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

/// Write the page tables, GDT and TSS into guest RAM. The IDT page is
/// left as fresh guest RAM is: zero, every gate not present, until the
/// kernel installs its stubs.
pub(crate) fn write_machine_tables(ram: &GuestRam) -> Result<(), OutOfRange> {
    for table in page_tables(ram.size_bytes()) {
        let bytes: Vec<u8> = table.entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        ram.write(table.addr, &bytes)?;
    }
    let gdt: Vec<u8> = gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    ram.write(GDT_ADDR, &gdt)?;
    for cpu in 0..MAX_CPUS {
        ram.write(tss_addr(cpu), &tss(cpu))?;
    }
    ram.write(TSS_IOMAP_ADDR, &io_bitmap())
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

/// XCR0 to give the guest: x87, SSE and AVX state, plus the AVX-512 state
/// components when offered. Components that need permission from the host
/// kernel (AMX) are left off. `supported` is CPUID.(EAX=0DH,ECX=0):EDX:EAX.
pub(crate) fn xcr0(supported: u64) -> u64 {
    const X87_SSE_AVX: u64 = 0b111;
    const AVX512: u64 = 0b1110_0000;
    supported & (X87_SSE_AVX | AVX512) | 0b1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(tables: &[PageTable], addr: u64) -> Option<u64> {
        let table = |a: u64| tables.iter().find(|t| t.addr == a).expect("table exists");
        let index = |level: u32| ((addr >> (12 + 9 * level)) & 0x1ff) as usize;
        let mut entry = table(PML4_ADDR).entries[index(3)];
        for level in [2, 1, 0] {
            if entry & pte::PRESENT == 0 {
                return None;
            }
            assert_ne!(entry & pte::USER, 0);
            let next = entry & 0x000f_ffff_ffff_f000;
            if level < 2 && entry & pte::LARGE != 0 {
                return Some(next + (addr & (LARGE_PAGE_SIZE - 1)));
            }
            entry = table(next).entries[index(level)];
        }
        (entry & pte::PRESENT != 0).then(|| (entry & 0x000f_ffff_ffff_f000) + (addr & 0xfff))
    }

    #[test]
    fn page_tables_identity_map_ram_except_page_zero() {
        for mem in [8u64 << 20, 64 << 20, 1 << 30, 3 << 30] {
            let tables = page_tables(mem);
            assert_eq!(lookup(&tables, 0), None);
            assert_eq!(lookup(&tables, 0xfff), None);
            for addr in [0x1000, 0x6008, 0x1f_ffff, 0x20_0000, 0x12_3456, mem - 1] {
                assert_eq!(
                    lookup(&tables, addr),
                    Some(addr),
                    "mem {mem:#x} addr {addr:#x}"
                );
            }
            assert_eq!(lookup(&tables, mem), None, "nothing past the end of RAM");
            assert!(
                tables
                    .iter()
                    .all(|t| t.addr >= PAGE_TABLES_ADDR && t.addr < PAGE_TABLES_END)
            );
        }
    }

    /// The leaf entry that maps `addr` (a 2 MiB page in the fourth GiB).
    fn large_entry_above_ram(tables: &[PageTable], addr: u64) -> u64 {
        let pd = tables.iter().find(|t| t.addr == APIC_PD_ADDR).unwrap();
        pd.entries[((addr % GIB) / LARGE_PAGE_SIZE) as usize]
    }

    #[test]
    fn the_local_apic_and_the_virtio_windows_are_mapped_uncached() {
        for mem in [8u64 << 20, 3 << 30] {
            let tables = page_tables(mem);
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
                assert_eq!(lookup(&tables, addr), Some(addr), "{addr:#x}");
                let entry = large_entry_above_ram(&tables, addr);
                let uncached = pte::CACHE_DISABLE | pte::WRITE_THROUGH;
                assert_eq!(entry & uncached, uncached, "{addr:#x}");
                assert_ne!(entry & pte::WRITABLE, 0, "{addr:#x}");
            }
            // Nothing else between the end of RAM and the local APIC.
            for addr in [
                layout::VIRTIO_MMIO_ADDR - 1,
                layout::VIRTIO_MMIO_ADDR + LARGE_PAGE_SIZE,
                layout::LAPIC_ADDR - 1,
                layout::LAPIC_ADDR + LARGE_PAGE_SIZE,
            ] {
                assert_eq!(lookup(&tables, addr), None, "{addr:#x}");
            }
        }
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
        let first = Port::ALL[0] as usize;
        let last = Port::ALL[Port::ALL.len() - 1] as usize;
        assert_eq!(open, (first..last + HYPERCALL_WIDTH).collect::<Vec<_>>());
        // Spelled out: four ports from 0x500, each opening four bits.
        assert_eq!(Port::ALL.len(), 4);
        assert_eq!(open, (0x500..=0x506).collect::<Vec<_>>());
        assert_eq!(*bitmap.last().unwrap(), 0xff, "terminating byte");
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
