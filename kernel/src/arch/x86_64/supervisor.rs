//! The CPL0 supervisor: exception entry stubs and the IDT that points at
//! them.
//!
//! This is the only code that runs at CPL0, where every instruction is
//! emulated on PVM hosts (about 0.5 µs each) and SSE, `xsave*`, `xgetbv`,
//! `rdtscp` and `int3` kill the VM: it is integer-only and short.
//!
//! Flow for vectors 0..=31 (SDM vol. 3A, 6.12): the CPU switches to the
//! gate's IST stack and pushes SS, RSP, RFLAGS, CS, RIP (and an error code
//! for some vectors). The stub pushes a dummy error code where the CPU did
//! not, the vector, all general registers and CR2, counts the entry in the
//! kernel report, copies the [`ExceptionFrame`] to a dedicated CPL3 stack
//! and `iretq`s to [`exception_upcall`] at CPL3, which reports the fault.
//! Every exception is fatal for now. A second exception while one is being
//! reported, or one before the upcall can run, exits straight from CPL0
//! through the `Exit` hypercall.

use core::arch::global_asm;
use core::mem::size_of;

use eremite_interface::hypercall::{Exit, ExitKind, Port};
use eremite_interface::layout::{self, gdt};
use eremite_interface::{BootInfo, KernelReport};

/// The interrupted context, as the CPL0 stub saved it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExceptionFrame {
    pub cr2: u64,
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const FRAME_WORDS: usize = size_of::<ExceptionFrame>() / 8;
const VECTOR_INDEX: usize = 16;
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, vector) == VECTOR_INDEX * 8);

/// Address of `cpl0_entries[0]` in the kernel report.
const COUNTERS_ADDR: u64 = layout::BOOT_INFO_ADDR
    + BootInfo::REPORT_OFFSET as u64
    + core::mem::offset_of!(KernelReport, cpl0_entries) as u64;

/// Distance between two vector stubs.
const STUB_STRIDE: u64 = 16;

const UPCALL_STACK_SIZE: usize = 64 * 1024;

/// The CPL3 stack the fault report runs on (the faulting stack may be the
/// cause of the fault).
#[repr(C, align(16))]
struct UpcallStack([u8; UPCALL_STACK_SIZE]);
static mut UPCALL_STACK: UpcallStack = UpcallStack([0; UPCALL_STACK_SIZE]);

/// Set (bit 0) by the first exception; a second one exits from CPL0.
static mut IN_FATAL: u64 = 0;

/// Request used by the CPL0 exit path.
static mut EARLY_EXIT: Exit = Exit {
    code: 0,
    kind: ExitKind::Exception as u32,
};

global_asm!(
    ".section .text.eremite_supervisor,\"ax\",@progbits",
    ".p2align 4",
    ".global eremite_vectors",
    "eremite_vectors:",
    ".set vec, 0",
    ".rept 32",
    "  .p2align 4",
    // Vectors for which the CPU pushes an error code (SDM vol. 3A, 6.15).
    "  .if vec == 8 || vec == 10 || vec == 11 || vec == 12 || vec == 13 || vec == 14 || vec == 17 || vec == 21 || vec == 29 || vec == 30",
    "  .else",
    "    pushq $0",
    "  .endif",
    "    pushq $vec",
    "    jmp 2f",
    "  .set vec, vec + 1",
    ".endr",
    "",
    "2:",
    "    pushq %rax; pushq %rbx; pushq %rcx; pushq %rdx",
    "    pushq %rsi; pushq %rdi; pushq %rbp",
    "    pushq %r8; pushq %r9; pushq %r10; pushq %r11",
    "    pushq %r12; pushq %r13; pushq %r14; pushq %r15",
    "    movq %cr2, %rax",
    "    pushq %rax",
    "    movq {vec_off}(%rsp), %rax",
    "    lock incq {counters}(,%rax,8)",
    "    lock btsq $0, {in_fatal}(%rip)",
    "    jc 4f",
    // Copy the frame to the top of the upcall stack.
    "    leaq {stack}(%rip), %rdi",
    "    addq ${stack_size} - {frame_bytes}, %rdi",
    "    andq $-16, %rdi",
    "    xorl %ecx, %ecx",
    "3:  movq (%rsp,%rcx,8), %rax",
    "    movq %rax, (%rdi,%rcx,8)",
    "    incl %ecx",
    "    cmpl ${frame_words}, %ecx",
    "    jne 3b",
    // A zero return address ends backtraces; rsp+8 is then 16-aligned, as
    // on entry to any function.
    "    leaq -8(%rdi), %rax",
    "    movq $0, (%rax)",
    "    pushq ${user_data}",
    "    pushq %rax",
    "    pushq $2",
    "    pushq ${user_code}",
    "    leaq {upcall}(%rip), %rax",
    "    pushq %rax",
    "    iretq",
    // Fatal path without the upcall: report the vector to the VMM.
    "4:  movq {vec_off}(%rsp), %rax",
    "    movl %eax, {early_exit}(%rip)",
    "    leaq {early_exit}(%rip), %rax",
    "    movw ${exit_port}, %dx",
    "    outl %eax, %dx",
    "5:  hlt",
    "    jmp 5b",
    vec_off = const VECTOR_INDEX * 8,
    counters = const COUNTERS_ADDR,
    in_fatal = sym IN_FATAL,
    stack = sym UPCALL_STACK,
    stack_size = const UPCALL_STACK_SIZE,
    frame_bytes = const FRAME_WORDS * 8,
    frame_words = const FRAME_WORDS,
    user_data = const gdt::USER_DATA,
    user_code = const gdt::USER_CODE,
    upcall = sym exception_upcall,
    early_exit = sym EARLY_EXIT,
    exit_port = const Port::Exit as u16,
    options(att_syntax),
);

// The local APIC timer (vector 32): hand the interrupt to the CPL3
// scheduler. The interrupted RIP and RFLAGS go onto the interrupted CPL3
// stack below its red zone, and `iretq` resumes at the preemption upcall
// on that stack (see `preempt.rs`). Only CPL3 code can be interrupted:
// CPL0 code runs with interrupts off.
global_asm!(
    ".section .text.eremite_supervisor,\"ax\",@progbits",
    ".p2align 4",
    ".global eremite_timer_stub",
    "eremite_timer_stub:",
    "    lock incq {irq_counter}",
    "    pushq %rax",
    // Above the saved register: RIP, CS, RFLAGS, RSP, SS. Only RIP is
    // changed (PVM keeps the interrupted RSP); the interrupted RIP and
    // RFLAGS wait in memory for the upcall, which cannot be interrupted
    // by the timer again before it has read them (no EOI yet).
    "    movq 8(%rsp), %rax",
    "    movq %rax, {saved_rip}(%rip)",
    "    movq 24(%rsp), %rax",
    "    movq %rax, {saved_rflags}(%rip)",
    "    leaq {upcall}(%rip), %rax",
    "    movq %rax, 8(%rsp)",
    "    popq %rax",
    "    iretq",
    "",
    // Spurious APIC interrupts need no EOI: just return.
    ".p2align 4",
    ".global eremite_spurious_stub",
    "eremite_spurious_stub:",
    "    iretq",
    irq_counter = const COUNTERS_ADDR + eremite_interface::CPL0_COUNTER_OTHER_IRQ as u64 * 8,
    upcall = sym eremite_preempt_upcall,
    saved_rip = sym super::preempt::INTERRUPTED_RIP,
    saved_rflags = sym super::preempt::INTERRUPTED_RFLAGS,
    options(att_syntax),
);

unsafe extern "C" {
    /// First vector stub; stub `v` is at `eremite_vectors + v * 16`.
    static eremite_vectors: u8;
    /// The timer's CPL0 stub.
    static eremite_timer_stub: u8;
    /// The spurious-interrupt stub.
    static eremite_spurious_stub: u8;
    /// The CPL3 preemption upcall (`preempt.rs`).
    fn eremite_preempt_upcall();
}

/// Runs at CPL3 on the upcall stack, with `frame` the saved context.
extern "C" fn exception_upcall(frame: &ExceptionFrame) -> ! {
    crate::fault::report_exception(frame)
}

/// Fill in IDT gates 0..=31 with the supervisor stubs. The IDT page is
/// RAM that the VMM pointed IDTR at; it is written at CPL3 during boot.
pub(crate) fn install_idt() {
    let stubs = &raw const eremite_vectors as u64;
    for vector in 0..32u64 {
        let ist = match vector {
            8 => layout::IST_DOUBLE_FAULT,
            2 | 18 => layout::IST_NMI,
            _ => layout::IST_DEFAULT,
        };
        let (low, high) = interrupt_gate(stubs + vector * STUB_STRIDE, ist);
        let slot = layout::IDT_ADDR + vector * 16;
        // SAFETY: the IDT page [IDT_ADDR, IDT_ADDR + 4096) is RAM reserved
        // for exactly this by the layout; no Rust reference covers it, and
        // slot + 16 stays inside it for vector < 32.
        unsafe {
            core::ptr::write_volatile(slot as *mut u64, low);
            core::ptr::write_volatile((slot + 8) as *mut u64, high);
        }
    }
}

/// Fill in the gates of the APIC timer and spurious vectors.
pub(crate) fn install_timer_gates() {
    for (vector, stub) in [
        (layout::TIMER_VECTOR, &raw const eremite_timer_stub as u64),
        (
            layout::SPURIOUS_VECTOR,
            &raw const eremite_spurious_stub as u64,
        ),
    ] {
        let (low, high) = interrupt_gate(stub, layout::IST_DEFAULT);
        let slot = layout::IDT_ADDR + u64::from(vector) * 16;
        // SAFETY: as in `install_idt`: slot + 16 stays inside the IDT page
        // for any u8 vector (256 gates of 16 bytes).
        unsafe {
            core::ptr::write_volatile(slot as *mut u64, low);
            core::ptr::write_volatile((slot + 8) as *mut u64, high);
        }
    }
}

/// A 64-bit interrupt gate (SDM vol. 3A, 6.14.1): DPL 0, present, type 0xE.
fn interrupt_gate(handler: u64, ist: u8) -> (u64, u64) {
    let low = (handler & 0xffff)
        | (u64::from(gdt::KERNEL_CODE) << 16)
        | (u64::from(ist & 7) << 32)
        | (0x8e << 40)
        | (((handler >> 16) & 0xffff) << 48);
    (low, handler >> 32)
}
