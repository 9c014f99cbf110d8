//! The PVH entry: how the image boots on QEMU `-M microvm` (and any other
//! hypervisor that speaks the Xen PVH boot protocol) without our VMM.
//!
//! QEMU loads the `PT_LOAD` segments at their physical addresses (the
//! image is linked at [`layout::IMAGE_BASE`] with its relocations applied,
//! see `eremite/src/lib.rs`) and starts the boot CPU at the address in the
//! `Xen` ELF note of type `XEN_ELFNOTE_PHYS32_ENTRY` (18), in 32-bit
//! protected mode with paging off, flat segments, and `ebx` = the guest-
//! physical address of the `hvm_start_info` (Xen's
//! `include/public/arch-x86/hvm/start_info.h`).
//!
//! `eremite_pvh_start32` (below, at CPL0) does what our VMM does through
//! KVM ioctls, with integer instructions only (on PVM hosts this code is
//! emulated and SSE, `xgetbv` or `xsetbv` would kill the VM):
//! 1. mask the 8259s and the local APIC's LINT pins, so that nothing
//!    interrupts before the kernel installs its gates;
//! 2. find the top of the RAM range that holds the image in the start
//!    info's memory map (at most [`layout::LOW_RAM_END`], whole 2 MiB pages);
//! 3. build the page tables in the shape the VMM builds them
//!    (`vmm/src/arch/x86_64`; the kernel's `paging` edits them later), the
//!    GDT, every CPU's TSS with its CPL0 stacks and an I/O bitmap that
//!    opens the ports of [`eremite_interface::pvh`] and the PIT's;
//! 4. CR4 (PAE, OSFXSR, OSXMMEXCPT, FSGSBASE, and OSXSAVE when the CPU
//!    has XSAVE), EFER (SCE, LME, NXE), CR3, CR0: long mode; XCR0 is set
//!    to x87|SSE|AVX (as far as CPUID offers them) unless the hypervisor
//!    is KVM, where it stays as QEMU left it (on PVM hosts `xsetbv` at CPL0
//!    kills the VM, and CPL3 code runs with the host's XCR0 anyway);
//! 5. in 64-bit mode: TR, an empty IDT, and `iretq` to CPL3 at
//!    [`crate::pvh::pvh_start`] on the boot stack with `rdi` = start info,
//!    `rsi` = the RAM top, interrupts on, as the VMM starts `_start`.
//!
//! The rest (boot info, command line, TSC frequency) is Rust at CPL3.
//!
//! Application processors start in real mode at the trampoline that
//! [`prepare_ap_start`] copies to [`layout::AP_TRAMPOLINE_ADDR`] (the
//! kernel sends INIT and start-up IPIs, `hypervisor::start_cpu`): a
//! temporary GDT, protected mode, then `eremite_pvh_ap32` in the image
//! runs step 4 as above, loads the GDT, its TSS and the IDT, and `iretq`s
//! to CPL3 with the entry, stack and argument from the mailbox in the
//! trampoline page (see `docs/qemu.md`).
//! The port I/O the kernel does on this platform (serial ports, debug
//! exit, PIT) is here too.

use core::arch::{asm, global_asm};

use eremite_interface::layout::{self, gdt};
use eremite_interface::pvh;

/// `XEN_HVM_START_MAGIC_VALUE`, the first field of the start info.
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// `XEN_ELFNOTE_PHYS32_ENTRY`.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// The 8254 PIT's channel 0 data port and its mode/command port.
const PIT_CHANNEL0: u16 = 0x40;
const PIT_COMMAND: u16 = 0x43;

/// Page-table layout, as the VMM's (`vmm/src/arch/x86_64`).
const PML4: u64 = layout::PAGE_TABLES_ADDR;
const PDPT: u64 = PML4 + layout::PAGE_SIZE;
const FIRST_PT: u64 = PML4 + 2 * layout::PAGE_SIZE;
const FIRST_PD: u64 = PML4 + 3 * layout::PAGE_SIZE;
const APIC_PD: u64 = FIRST_PD + 3 * layout::PAGE_SIZE;
const TABLE_PAGES: u64 = 7;
const GIB: u64 = 1 << 30;
/// Present, writable, user.
const TABLE_FLAGS: u64 = 0x7;
/// Present, writable, user, 2 MiB.
const LARGE_FLAGS: u64 = 0x87;
/// Present, writable, user, write-through, cache-disable, 2 MiB.
const UNCACHED_LARGE_FLAGS: u64 = 0x9F;
const _: () = assert!(APIC_PD + layout::PAGE_SIZE <= layout::PAGE_TABLES_END);
const _: () = assert!(layout::LOW_RAM_END <= 3 * GIB && layout::LAPIC_ADDR >= 3 * GIB);
// QEMU microvm's device windows share the local APIC's page directory.
const _: () = assert!(pvh::VIRTIO_MMIO_ADDR >= 3 * GIB && pvh::IOAPIC_ADDR >= 3 * GIB);

/// Segment descriptors (SDM vol. 3A, 3.4.5), the VMM's.
const fn descriptor(access: u64, flags: u64) -> u64 {
    0xffff | (access << 40) | (0xf << 48) | (flags << 52)
}
const KERNEL_CODE: u64 = descriptor(0x9b, 0xa);
const KERNEL_DATA: u64 = descriptor(0x93, 0xc);
const USER_DATA: u64 = descriptor(0xf3, 0xc);
const USER_CODE: u64 = descriptor(0xfb, 0xa);
/// The last byte of the I/O bitmap, which ends every TSS segment (each
/// TSS's limit reaches it). The TSS descriptors are built in a loop that
/// assumes every TSS base and limit fits 16 bits.
const TSS_AREA_LAST: u64 = layout::TSS_IOMAP_ADDR + layout::TSS_IOMAP_SIZE - 1;
const _: () = assert!(TSS_AREA_LAST < 0x1_0000);
/// A 64-bit TSS descriptor's high dword for such a TSS: available
/// 64-bit TSS (type 9), present, DPL 0 (SDM vol. 3A, 7.2.3).
const TSS_DESCRIPTOR_HIGH: u64 = 0x89 << 8;
/// CPL0 stack bytes per CPU (RSP0 and the IST stacks).
const CPL0_STACKS_PER_CPU: u64 = layout::CPL0_STACK_COUNT * layout::CPL0_STACK_SIZE;
/// Where the GDTR and IDTR images go: after the GDT's slots, in its page.
const GDTR: u64 = layout::GDT_ADDR + gdt::SLOTS * 8;
const IDTR: u64 = GDTR + 16;
const _: () = assert!(IDTR + 16 <= layout::GDT_ADDR + layout::PAGE_SIZE);

/// The temporary GDT of the AP trampoline: flat data at 0x10 and flat
/// 32-bit code at 0x18 (granularity 4 KiB, limit 4 GiB).
const FLAT_DATA: u64 = descriptor(0x93, 0xc);
const FLAT_CODE32: u64 = descriptor(0x9b, 0xc);
const AP_DATA: u64 = 0x10;
/// The selector of `FLAT_CODE32` in the trampoline's GDT.
const AP_CODE32: u16 = 0x18;

/// The mailbox in the trampoline page through which the boot CPU hands an
/// application processor its parameters and learns that it started: the
/// far pointer to `eremite_pvh_ap32` (offset, then selector), the CPU's
/// index (its TSS and CPL0 stacks; u32), the started flag (u32), and the
/// CPL3 start: `rdi`, `rsp`, `rip`.
const MAILBOX: u64 = layout::AP_TRAMPOLINE_ADDR + 0x200;
const MAILBOX_FAR_POINTER: u64 = MAILBOX;
const MAILBOX_CPU: u64 = MAILBOX + 8;
const MAILBOX_STARTED: u64 = MAILBOX + 12;
const MAILBOX_ARG: u64 = MAILBOX + 16;
const MAILBOX_RSP: u64 = MAILBOX + 24;
const MAILBOX_RIP: u64 = MAILBOX + 32;
const _: () = assert!(MAILBOX_RIP + 8 <= layout::AP_TRAMPOLINE_ADDR + layout::PAGE_SIZE);

const fn cpl0_stack_top(slot: u64) -> u64 {
    layout::CPL0_STACKS_ADDR + (slot + 1) * layout::CPL0_STACK_SIZE
}

/// The I/O bitmap byte and the bits to clear in it (clear = allowed) for
/// `count` ports from `port`, all in one byte.
const fn io_byte(port: u16) -> u64 {
    layout::TSS_IOMAP_ADDR + (port / 8) as u64
}
const fn io_keep(port: u16, count: u16) -> u64 {
    assert!(port % 8 + count <= 8);
    !((((1u16 << count) - 1) << (port % 8)) as u64) & 0xff
}

/// Control registers (SDM vol. 3A, 2.5).
const CR0: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18) | (1 << 31);
const CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10) | (1 << 16);
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_MSR: u32 = 0xC000_0080;
const EFER: u64 = 1 | (1 << 8) | (1 << 11);
/// "KVMK", the start of KVM's CPUID signature (leaf 0x4000_0000, EBX).
const KVM_SIGNATURE_EBX: u32 = u32::from_le_bytes(*b"KVMK");

global_asm!(
    // The note QEMU looks for. Its 8-byte descriptor is the 32-bit entry's
    // physical address (QEMU reads a 64-bit value from 64-bit images).
    ".section .note.Xen,\"aw\",@note",
    ".p2align 2",
    "    .long 4",
    "    .long 8",
    "    .long {note_type}",
    "    .asciz \"Xen\"",
    "    .quad eremite_pvh_start32",
    "",
    ".section .text.eremite_pvh,\"ax\",@progbits",
    ".code32",
    ".global eremite_pvh_start32",
    ".type eremite_pvh_start32,@function",
    "eremite_pvh_start32:",
    "    cli",
    "    cld",
    "    movl ${stack0}, %esp",
    "    movl %ebx, %esi",
    // 1. Nothing may interrupt until the kernel has its gates.
    "    movb $0xff, %al",
    "    outb %al, $0x21",
    "    outb %al, $0xa1",
    "    movl $0x10000, {lapic} + 0x350",
    "    movl $0x10000, {lapic} + 0x360",
    // 2. RAM top in EBP: the end of the RAM entry (type 1) below 4 GiB
    // that holds IMAGE_BASE.
    "    cmpl ${magic}, (%esi)",
    "    jne 90f",
    "    cmpl $1, 4(%esi)",
    "    jb 90f",
    "    movl 40(%esi), %ebx",
    "    movl 48(%esi), %ecx",
    "    xorl %ebp, %ebp",
    "    testl %ecx, %ecx",
    "    jz 90f",
    "10: cmpl $1, 16(%ebx)",
    "    jne 13f",
    "    cmpl $0, 4(%ebx)",
    "    jne 13f",
    "    movl (%ebx), %eax",
    "    cmpl ${image_base}, %eax",
    "    ja 13f",
    "    cmpl $0, 12(%ebx)",
    "    jne 11f",
    "    addl 8(%ebx), %eax",
    "    jc 11f",
    "    cmpl ${max_memory}, %eax",
    "    jbe 12f",
    "11: movl ${max_memory}, %eax",
    "12: cmpl ${image_base}, %eax",
    "    jbe 13f",
    "    movl %eax, %ebp",
    "13: addl $24, %ebx",
    "    decl %ecx",
    "    jnz 10b",
    "    andl $-{large}, %ebp",
    "    cmpl ${min_memory}, %ebp",
    "    jb 90f",
    // 3. Page tables, as the VMM builds them.
    "    movl ${pml4}, %edi",
    "    movl ${table_dwords}, %ecx",
    "    xorl %eax, %eax",
    "    rep stosl",
    "    movl ${pdpt_entry}, {pml4}",
    "    movl ${first_pt} + 8, %edi",
    "    movl ${page} + {table_flags}, %eax",
    "20: movl %eax, (%edi)",
    "    addl $8, %edi",
    "    addl ${page}, %eax",
    "    cmpl ${large}, %eax",
    "    jb 20b",
    "    movl ${first_pt_entry}, {first_pd}",
    "    movl ${first_pd} + 8, %edi",
    "    movl ${large} + {large_flags}, %eax",
    "21: cmpl %ebp, %eax",
    "    jae 22f",
    "    movl %eax, (%edi)",
    "    addl $8, %edi",
    "    addl ${large}, %eax",
    "    jmp 21b",
    "22: movl ${first_pd} + {table_flags}, {pdpt}",
    "    movl ${first_pd} + {page} + {table_flags}, {pdpt} + 8",
    "    movl ${first_pd} + 2 * {page} + {table_flags}, {pdpt} + 16",
    "    movl ${apic_pd} + {table_flags}, {pdpt} + 24",
    "    movl ${lapic} + {uncached}, {apic_pd} + {lapic_slot} * 8",
    "    movl ${virtio} + {uncached}, {apic_pd} + {virtio_slot} * 8",
    // QEMU microvm's virtio-MMIO windows and its I/O APIC.
    "    movl ${microvm_virtio} + {uncached}, {apic_pd} + {microvm_virtio_slot} * 8",
    "    movl ${ioapic} + {uncached}, {apic_pd} + {ioapic_slot} * 8",
    // The GDT: the VMM's segments, and the TSS descriptors below.
    "    movl ${gdt}, %edi",
    "    movl ${gdt_dwords}, %ecx",
    "    xorl %eax, %eax",
    "    rep stosl",
    "    movl ${kc_lo}, {gdt} + 8",
    "    movl ${kc_hi}, {gdt} + 12",
    "    movl ${kd_lo}, {gdt} + 16",
    "    movl ${kd_hi}, {gdt} + 20",
    "    movl ${ud_lo}, {gdt} + 24",
    "    movl ${ud_hi}, {gdt} + 28",
    "    movl ${uc_lo}, {gdt} + 32",
    "    movl ${uc_hi}, {gdt} + 36",
    "    movw ${gdt_limit}, {gdtr}",
    "    movl ${gdt}, {gdtr} + 2",
    "    lgdt {gdtr}",
    // Every CPU's TSS (as the VMM's): RSP0 and IST1..3 on its own CPL0
    // stacks, the shared I/O bitmap; and its GDT descriptor. EDI = the
    // TSS, EBX = the descriptor, EAX = the CPU's first CPL0 stack.
    "    movl ${tss}, %edi",
    "    movl ${tss_area_dwords}, %ecx",
    "    xorl %eax, %eax",
    "    rep stosl",
    "    movl ${tss}, %edi",
    "    movl ${gdt} + {tss_sel}, %ebx",
    "    movl ${cpl0_stacks}, %eax",
    "25: leal {cpl0_stack_size}(%eax), %edx",
    "    movl %edx, 4(%edi)",
    "    addl ${cpl0_stack_size}, %edx",
    "    movl %edx, 36(%edi)",
    "    addl ${cpl0_stack_size}, %edx",
    "    movl %edx, 44(%edi)",
    "    addl ${cpl0_stack_size}, %edx",
    "    movl %edx, 52(%edi)",
    "    movl ${iomap}, %edx",
    "    subl %edi, %edx",
    "    movw %dx, 102(%edi)",
    "    movl ${tss_area_last}, %edx",
    "    subl %edi, %edx",
    "    movl %edi, %ecx",
    "    shll $16, %ecx",
    "    orl %edx, %ecx",
    "    movl %ecx, (%ebx)",
    "    movl ${tss_high}, 4(%ebx)",
    "    addl $16, %ebx",
    "    addl ${cpl0_stacks_per_cpu}, %eax",
    "    addl ${tss_stride}, %edi",
    "    cmpl ${iomap}, %edi",
    "    jb 25b",
    // The I/O bitmap: all ports denied but ours.
    "    movl ${iomap}, %edi",
    "    movl ${iomap_dwords}, %ecx",
    "    movl $-1, %eax",
    "    rep stosl",
    "    movb $0xff, (%edi)",
    "    andb ${com1_keep}, {com1_byte}",
    "    andb ${com2_keep}, {com2_byte}",
    "    andb ${exit_keep}, {exit_byte}",
    "    andb ${debugcon_keep}, {debugcon_byte}",
    "    andb ${pit_keep}, {pit_byte}",
    // 4. Control registers.
    "    call 80f",
    // Into 64-bit mode at 40f, found position-independently.
    "    call 32f",
    "32: popl %eax",
    "    addl $40f - 32b, %eax",
    "    pushl ${kernel_code}",
    "    pushl %eax",
    "    lret",
    // 4., shared with the application processors (below): CR4 (in
    // EDI), XCR0, EFER, CR3, CR0, which turns paging on in compatibility
    // mode. Uses EAX, EBX, ECX, EDX and EDI, and the stack for the return.
    "80: movl ${cr4}, %edi",
    "    movl $1, %eax",
    "    cpuid",
    "    btl $26, %ecx",
    "    jnc 30f",
    "    orl ${osxsave}, %edi",
    "30: movl %edi, %cr4",
    "    testl ${osxsave}, %edi",
    "    jz 31f",
    "    movl $0x40000000, %eax",
    "    cpuid",
    "    cmpl ${kvm_ebx}, %ebx",
    "    je 31f",
    "    movl $0xd, %eax",
    "    xorl %ecx, %ecx",
    "    cpuid",
    "    andl $7, %eax",
    "    orl $3, %eax",
    "    xorl %edx, %edx",
    "    xorl %ecx, %ecx",
    "    xsetbv",
    "31: movl ${efer_msr}, %ecx",
    "    rdmsr",
    "    orl ${efer}, %eax",
    "    wrmsr",
    "    movl ${pml4}, %eax",
    "    movl %eax, %cr3",
    "    movl ${cr0}, %eax",
    "    movl %eax, %cr0",
    "    ret",
    // No usable start info: tell QEMU (a kernel panic) and stop.
    "90: movb ${panic_value}, %al",
    "    outb %al, ${exit_port}",
    "91: hlt",
    "    jmp 91b",
    "",
    ".code64",
    // 5. 64-bit mode at CPL0.
    "40: movl ${kernel_data}, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    "    xorl %eax, %eax",
    "    movl %eax, %fs",
    "    movl %eax, %gs",
    "    movl ${tss_sel}, %eax",
    "    ltr %ax",
    "    movl ${idt}, %edi",
    "    movl $512, %ecx",
    "    xorl %eax, %eax",
    "    rep stosq",
    "    movw ${idt_limit}, {idtr}",
    "    movq ${idt}, %rax",
    "    movq %rax, {idtr} + 2",
    "    lidt {idtr}",
    // The CPL3 frame: boot stack with a zero return address.
    "    movl ${boot_stack_top} - 8, %eax",
    "    movq $0, (%rax)",
    "    pushq ${user_data}",
    "    pushq %rax",
    "    pushq $0x202",
    "    pushq ${user_code}",
    "    leaq {pvh_start}(%rip), %rax",
    "    pushq %rax",
    "    movl %esi, %edi",
    "    movl %ebp, %esi",
    "    xorl %eax, %eax",
    "    xorl %ebx, %ebx",
    "    xorl %ecx, %ecx",
    "    xorl %edx, %edx",
    "    xorl %ebp, %ebp",
    "    iretq",
    ".size eremite_pvh_start32, . - eremite_pvh_start32",
    "",
    // An application processor, from the trampoline (below) in 32-bit
    // protected mode with its temporary GDT and paging off: the same steps
    // for this CPU, with the boot CPU's page tables, GDT and IDT.
    ".code32",
    ".global eremite_pvh_ap32",
    ".type eremite_pvh_ap32,@function",
    "eremite_pvh_ap32:",
    "    movl ${ap_data}, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    // Its RSP0 stack, idle until it first enters CPL0 from CPL3.
    "    movl {mailbox_cpu}, %eax",
    "    imull ${cpl0_stacks_per_cpu}, %eax",
    "    leal {stack0}(%eax), %esp",
    "    lgdt {gdtr}",
    "    call 80b",
    "    call 33f",
    "33: popl %eax",
    "    addl $60f - 33b, %eax",
    "    pushl ${kernel_code}",
    "    pushl %eax",
    "    lret",
    ".code64",
    "60: movl ${kernel_data}, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    "    xorl %eax, %eax",
    "    movl %eax, %fs",
    "    movl %eax, %gs",
    "    movl {mailbox_cpu}, %eax",
    "    shll $4, %eax",
    "    addl ${tss_sel}, %eax",
    "    ltr %ax",
    "    lidt {idtr}",
    // The CPL3 frame from the mailbox, then tell the boot CPU, which may
    // reuse the mailbox from then on.
    "    pushq ${user_data}",
    "    pushq {mailbox_rsp}",
    "    pushq $0x202",
    "    pushq ${user_code}",
    "    pushq {mailbox_rip}",
    "    movq {mailbox_arg}, %rdi",
    "    movl $1, {mailbox_started}",
    "    xorl %eax, %eax",
    "    xorl %ebx, %ebx",
    "    xorl %ecx, %ecx",
    "    xorl %edx, %edx",
    "    xorl %esi, %esi",
    "    xorl %ebp, %ebp",
    "    iretq",
    ".size eremite_pvh_ap32, . - eremite_pvh_ap32",
    "",
    // The real-mode start of an application processor, copied to
    // AP_TRAMPOLINE_ADDR by `prepare_ap_start`; a start-up IPI with that
    // page's number starts the CPU here with CS = its paragraph and IP = 0
    // (SDM vol. 3A, 9.4.4.1). It loads a temporary GDT (the layout's GDT
    // has no 32-bit code segment), turns protection on and jumps to
    // `eremite_pvh_ap32` through the far pointer in the mailbox.
    ".section .rodata.eremite_pvh_trampoline,\"a\",@progbits",
    ".p2align 4",
    ".global eremite_pvh_trampoline",
    "eremite_pvh_trampoline:",
    ".code16",
    "    cli",
    "    cld",
    "    movw %cs, %ax",
    "    movw %ax, %ds",
    "    lgdtl 72f - eremite_pvh_trampoline",
    "    movl %cr0, %eax",
    "    orl $1, %eax",
    "    movl %eax, %cr0",
    "    ljmpl *{far_offset}",
    ".p2align 3",
    "71: .quad 0",
    "    .quad 0",
    "    .quad {flat_data}",
    "    .quad {flat_code32}",
    "72: .word 4 * 8 - 1",
    "    .long {trampoline} + 71b - eremite_pvh_trampoline",
    ".global eremite_pvh_trampoline_end",
    "eremite_pvh_trampoline_end:",
    ".code64",
    ".text",
    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
    ap_data = const AP_DATA,
    flat_data = const FLAT_DATA,
    flat_code32 = const FLAT_CODE32,
    trampoline = const layout::AP_TRAMPOLINE_ADDR,
    far_offset = const MAILBOX_FAR_POINTER - layout::AP_TRAMPOLINE_ADDR,
    mailbox_cpu = const MAILBOX_CPU,
    mailbox_started = const MAILBOX_STARTED,
    mailbox_arg = const MAILBOX_ARG,
    mailbox_rsp = const MAILBOX_RSP,
    mailbox_rip = const MAILBOX_RIP,
    tss_area_dwords = const (layout::TSS_IOMAP_ADDR - layout::TSS_ADDR) / 4,
    tss_area_last = const TSS_AREA_LAST,
    tss_high = const TSS_DESCRIPTOR_HIGH,
    tss_stride = const layout::TSS_STRIDE,
    cpl0_stacks = const layout::CPL0_STACKS_ADDR,
    cpl0_stack_size = const layout::CPL0_STACK_SIZE,
    cpl0_stacks_per_cpu = const CPL0_STACKS_PER_CPU,
    stack0 = const cpl0_stack_top(0),
    lapic = const layout::LAPIC_ADDR,
    magic = const START_INFO_MAGIC,
    image_base = const layout::IMAGE_BASE,
    max_memory = const layout::LOW_RAM_END,
    min_memory = const layout::MIN_MEMORY,
    large = const layout::LARGE_PAGE_SIZE,
    page = const layout::PAGE_SIZE,
    pml4 = const PML4,
    pdpt = const PDPT,
    first_pt = const FIRST_PT,
    first_pd = const FIRST_PD,
    apic_pd = const APIC_PD,
    table_dwords = const TABLE_PAGES * layout::PAGE_SIZE / 4,
    pdpt_entry = const PDPT | TABLE_FLAGS,
    first_pt_entry = const FIRST_PT | TABLE_FLAGS,
    table_flags = const TABLE_FLAGS,
    large_flags = const LARGE_FLAGS,
    uncached = const UNCACHED_LARGE_FLAGS,
    lapic_slot = const (layout::LAPIC_ADDR % GIB) / layout::LARGE_PAGE_SIZE,
    virtio = const layout::VIRTIO_MMIO_ADDR,
    virtio_slot = const (layout::VIRTIO_MMIO_ADDR % GIB) / layout::LARGE_PAGE_SIZE,
    microvm_virtio = const pvh::VIRTIO_MMIO_ADDR & !(layout::LARGE_PAGE_SIZE - 1),
    microvm_virtio_slot = const (pvh::VIRTIO_MMIO_ADDR % GIB) / layout::LARGE_PAGE_SIZE,
    ioapic = const pvh::IOAPIC_ADDR & !(layout::LARGE_PAGE_SIZE - 1),
    ioapic_slot = const (pvh::IOAPIC_ADDR % GIB) / layout::LARGE_PAGE_SIZE,
    gdt = const layout::GDT_ADDR,
    gdt_dwords = const gdt::SLOTS * 2,
    gdt_limit = const gdt::SLOTS * 8 - 1,
    gdtr = const GDTR,
    kc_lo = const KERNEL_CODE & 0xffff_ffff,
    kc_hi = const KERNEL_CODE >> 32,
    kd_lo = const KERNEL_DATA & 0xffff_ffff,
    kd_hi = const KERNEL_DATA >> 32,
    ud_lo = const USER_DATA & 0xffff_ffff,
    ud_hi = const USER_DATA >> 32,
    uc_lo = const USER_CODE & 0xffff_ffff,
    uc_hi = const USER_CODE >> 32,
    tss_sel = const gdt::TSS,
    tss = const layout::TSS_ADDR,
    iomap = const layout::TSS_IOMAP_ADDR,
    iomap_dwords = const (layout::TSS_IOMAP_SIZE - 1) / 4,
    com1_byte = const io_byte(pvh::COM1),
    com1_keep = const io_keep(pvh::COM1, pvh::UART_PORTS),
    com2_byte = const io_byte(pvh::COM2),
    com2_keep = const io_keep(pvh::COM2, pvh::UART_PORTS),
    exit_byte = const io_byte(pvh::DEBUG_EXIT_PORT),
    exit_keep = const io_keep(pvh::DEBUG_EXIT_PORT, 4),
    debugcon_byte = const io_byte(pvh::DEBUGCON_PORT),
    debugcon_keep = const io_keep(pvh::DEBUGCON_PORT, 1),
    pit_byte = const io_byte(PIT_CHANNEL0),
    pit_keep = const io_keep(PIT_CHANNEL0, 4),
    cr4 = const CR4,
    osxsave = const CR4_OSXSAVE,
    kvm_ebx = const KVM_SIGNATURE_EBX,
    efer_msr = const EFER_MSR,
    efer = const EFER,
    cr0 = const CR0,
    kernel_code = const gdt::KERNEL_CODE,
    kernel_data = const gdt::KERNEL_DATA,
    panic_value = const pvh::debug_exit_value(
        eremite_interface::hypercall::ExitKind::KernelPanic, 0),
    exit_port = const pvh::DEBUG_EXIT_PORT,
    idt = const layout::IDT_ADDR,
    idt_limit = const layout::IDT_ENTRIES * 16 - 1,
    idtr = const IDTR,
    boot_stack_top = const layout::BOOT_STACK_ADDR + layout::BOOT_STACK_SIZE,
    user_data = const gdt::USER_DATA,
    user_code = const gdt::USER_CODE,
    pvh_start = sym crate::pvh::pvh_start,
    options(att_syntax),
);

unsafe extern "C" {
    /// The 32-bit entry of an application processor (see the assembly).
    static eremite_pvh_ap32: u8;
    /// The real-mode trampoline's code and data, to be copied.
    static eremite_pvh_trampoline: u8;
    static eremite_pvh_trampoline_end: u8;
}

/// The start-up IPI's vector: the trampoline's page number.
pub(crate) const AP_STARTUP_VECTOR: u8 = (layout::AP_TRAMPOLINE_ADDR >> 12) as u8;
const _: () = assert!(
    layout::AP_TRAMPOLINE_ADDR < 0x10_0000
        && layout::AP_TRAMPOLINE_ADDR.is_multiple_of(layout::PAGE_SIZE)
);

/// Write the real-mode trampoline into its page and the parameters of
/// application processor `cpu` into the mailbox there, with the started
/// flag clear: a start-up IPI then runs the CPU to CPL3 at `rip` with
/// `rsp` and `rdi = arg`, on `cpu`'s TSS and CPL0 stacks.
pub(crate) fn prepare_ap_start(cpu: u32, rip: u64, rsp: u64, arg: u64) {
    let start = &raw const eremite_pvh_trampoline;
    let len = (&raw const eremite_pvh_trampoline_end as usize) - (start as usize);
    assert!(
        (len as u64) <= MAILBOX - layout::AP_TRAMPOLINE_ADDR,
        "the AP trampoline overlaps its mailbox"
    );
    let entry = u32::try_from(&raw const eremite_pvh_ap32 as u64)
        .unwrap_or_else(|_| panic!("the AP entry lies above 4 GiB"));
    // SAFETY: 1. the source is the trampoline's `len` bytes in the image's
    // read-only data (between its two symbols); 2. the destination is the
    // trampoline page of the layout (`len` fits before the mailbox, checked
    // above), RAM that the PVH entry maps writable at CPL3 and that nothing
    // else uses; no Rust reference covers it; 3. they do not overlap (the
    // image is above 2 MiB).
    unsafe {
        core::ptr::copy_nonoverlapping(start, layout::AP_TRAMPOLINE_ADDR as *mut u8, len);
    }
    let far_pointer = u64::from(entry) | (u64::from(AP_CODE32) << 32);
    for (addr, value) in [
        (MAILBOX_FAR_POINTER, far_pointer),
        (MAILBOX_CPU, u64::from(cpu)),
        (MAILBOX_ARG, arg),
        (MAILBOX_RSP, rsp),
        (MAILBOX_RIP, rip),
    ] {
        // SAFETY: an 8-byte aligned word of the mailbox (the CPU index
        // and the started flag share one: the flag is cleared with it),
        // in the trampoline page as above; no application processor runs
        // from it now (the previous one said it started, or none was).
        unsafe { core::ptr::write_volatile(addr as *mut u64, value) };
    }
}

/// Whether the application processor last prepared has left the
/// trampoline (it sets the mailbox's flag just before dropping to CPL3).
pub(crate) fn ap_has_started() -> bool {
    // SAFETY: the flag is an aligned u32 of the mailbox in the trampoline
    // page (see `prepare_ap_start`), written by the starting CPU.
    unsafe { core::ptr::read_volatile(MAILBOX_STARTED as *const u32) != 0 }
}

fn outb(port: u16, value: u8) {
    // SAFETY: only called for the ports this module's I/O bitmap opens
    // (a serial port, the debug-exit device, the PIT), whose writes have
    // no effect on memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as in `outb`: an opened port; reading it has no effect on
    // memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Send `bytes` to the byte-wide output port `port` (a UART's transmit
/// register, the debugcon port) with one `rep outsb`, which KVM serves in
/// one exit per page. QEMU's UART never makes a writer wait, so the line
/// status is not polled.
pub(crate) fn port_write(port: u16, bytes: &[u8]) {
    // SAFETY: `rep outsb` reads `bytes` (a live slice: RSI and RCX describe
    // exactly it) and writes them to an opened port; DF is clear (ABI).
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
             inout("rcx") bytes.len() => _, options(nostack, preserves_flags, readonly));
    }
}

/// Whether a UART answers at `base`: its scratch register keeps a value.
pub(crate) fn uart_present(base: u16) -> bool {
    outb(base + 7, 0x5A);
    inb(base + 7) == 0x5A
}

/// Stop the VM through QEMU's `isa-debug-exit`.
pub(crate) fn debug_exit(value: u8) -> ! {
    loop {
        outb(pvh::DEBUG_EXIT_PORT, value);
    }
}

/// The PIT's channel 0 count, latched (8254 data sheet, "counter latch
/// command").
fn pit_count() -> u16 {
    outb(PIT_COMMAND, 0x00);
    let low = inb(PIT_CHANNEL0);
    let high = inb(PIT_CHANNEL0);
    u16::from_le_bytes([low, high])
}

/// One read of the PIT's count, timed by the TSC reads around it.
#[derive(Clone, Copy)]
struct PitStamp {
    count: u16,
    /// The midpoint of the two TSC reads.
    tsc: u64,
    /// How many TSC ticks the read took.
    spread: u64,
}

fn pit_stamp() -> PitStamp {
    let before = super::rdtsc();
    let count = pit_count();
    let after = super::rdtsc();
    PitStamp {
        count,
        tsc: before + (after - before) / 2,
        spread: after - before,
    }
}

/// PIT ticks after which a measurement starts over: the count wraps at
/// 65536, and a later wrap could not be told from no wrap.
const PIT_WRAP_GUARD: u16 = 50_000;

/// Measure the TSC against the 8254 PIT (1.193182 MHz): start channel 0
/// counting down from 65536 (mode 2), and count TSC ticks while at least
/// `pit_ticks` (less than 50,000) of its ticks pass. Returns the TSC ticks
/// and the PIT ticks that passed, or `None` when no PIT counts (the count
/// stays the same for about a second of TSC ticks).
///
/// Each end is the midpoint of the TSC reads around a read of the count.
/// A read during which the vCPU was descheduled (a busy host) takes far
/// longer than the others and its midpoint may be milliseconds off, so
/// only reads about as quick as the quickest of a few first ones may be
/// an end; measured here under TCG on a loaded host, using any read gave
/// 4.19 GHz for a 2.6 GHz TSC. If the host stays too busy for that, the
/// bound is relaxed step by step, so the measurement always ends.
pub(crate) fn tsc_ticks_per_pit(pit_ticks: u16) -> Option<(u64, u64)> {
    outb(PIT_COMMAND, 0x34);
    outb(PIT_CHANNEL0, 0);
    outb(PIT_CHANNEL0, 0);
    let quickest = (0..8).map(|_| pit_stamp().spread).min().unwrap_or(0);
    let mut limit = quickest.saturating_mul(3).max(1);
    loop {
        let mut start = pit_stamp();
        while start.spread > limit {
            start = pit_stamp();
        }
        loop {
            let end = pit_stamp();
            let elapsed = start.count.wrapping_sub(end.count);
            if elapsed >= pit_ticks && end.spread <= limit {
                return Some((end.tsc - start.tsc, u64::from(elapsed)));
            }
            if elapsed > PIT_WRAP_GUARD {
                break;
            }
            if end.count == start.count && end.tsc - start.tsc > 4_000_000_000 {
                return None;
            }
        }
        limit = limit.saturating_mul(2);
    }
}

/// The time-stamp counter's frequency in kHz from CPUID, if the
/// hypervisor gives it: KVM's leaf 0x4000_0010 (EAX, in kHz), which QEMU
/// fills in with `-cpu host,+invtsc` and others; `None` otherwise.
pub(crate) fn cpuid_tsc_khz() -> Option<u64> {
    let max = core::arch::x86_64::__cpuid(0x4000_0000).eax;
    if max < 0x4000_0010 {
        return None;
    }
    let khz = core::arch::x86_64::__cpuid(0x4000_0010).eax;
    (khz != 0).then_some(u64::from(khz))
}

/// XCR0, when CR4.OSXSAVE is set (`xgetbv` runs at CPL3; it would raise
/// #UD without OSXSAVE).
pub(crate) fn xcr0() -> Option<u64> {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    if ecx & (1 << 27) == 0 {
        return None;
    }
    let (low, high): (u32, u32);
    // SAFETY: CPUID says OSXSAVE is set, so `xgetbv` with ECX = 0 is
    // defined at any privilege level; it only reads XCR0.
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags));
    }
    Some((u64::from(high) << 32) | u64::from(low))
}

/// Copy `out.len()` bytes of guest-physical memory from `addr`, which must
/// lie in `[PAGE_SIZE, ram_top)` (identity-mapped by the PVH entry);
/// `false` if it does not.
pub(crate) fn copy_from_ram(addr: u64, ram_top: u64, out: &mut [u8]) -> bool {
    let fits = addr >= layout::PAGE_SIZE
        && addr
            .checked_add(out.len() as u64)
            .is_some_and(|end| end <= ram_top);
    if fits {
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: the byte lies in RAM that the PVH entry mapped
            // readable at CPL3 (checked above); the firmware's data there
            // is not covered by any Rust reference.
            *byte = unsafe { core::ptr::read_volatile((addr + i as u64) as *const u8) };
        }
    }
    fits
}

/// Write `bytes` at `addr` in the boot data area or the boot info page,
/// which the PVH path fills before the kernel reads them.
pub(crate) fn write_boot_memory(addr: u64, bytes: &[u8]) {
    let end = addr + bytes.len() as u64;
    let in_data = addr >= layout::BOOT_DATA_ADDR && end <= layout::BOOT_DATA_END;
    let in_info =
        addr >= layout::BOOT_INFO_ADDR && end <= layout::BOOT_INFO_ADDR + layout::PAGE_SIZE;
    assert!(in_data || in_info, "boot memory write outside its areas");
    // SAFETY: the range lies in the boot data area or the boot info page
    // (checked above): RAM mapped writable at CPL3, reserved by the layout
    // for exactly this, and no Rust reference covers it yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}
