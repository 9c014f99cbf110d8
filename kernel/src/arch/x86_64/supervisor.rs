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
//! Every exception is fatal, but #DB and #BP under a debugger: their stub
//! first offers the frame to the VMM (`eremite_interface::trap`), and
//! returns to it if a debugger held it. A second exception while one is being
//! reported, or one before the upcall can run, exits straight from CPL0
//! through the `Exit` hypercall. Each CPU has its own upcall stack, so
//! CPUs take exceptions independently (page faults that the memory
//! manager resolves are frequent: first touches of window memory).

use core::arch::global_asm;
use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::hypercall::{self, Exit, ExitKind, Port};
use eremite_interface::layout::{self, gdt};
use eremite_interface::trap;
use eremite_interface::{BootInfo, KernelReport};

/// The interrupted context, as the CPL0 stub saved it.
pub(crate) use eremite_interface::trap::TrapFrame as ExceptionFrame;

const FRAME_WORDS: usize = size_of::<ExceptionFrame>() / 8;
const VECTOR_INDEX: usize = 16;
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, vector) == VECTOR_INDEX * 8);

/// Address of `cpl0_entries[0]` in the kernel report.
const COUNTERS_ADDR: u64 = layout::BOOT_INFO_ADDR
    + BootInfo::REPORT_OFFSET as u64
    + core::mem::offset_of!(KernelReport, cpl0_entries) as u64;

/// Distance between two vector stubs.
const STUB_STRIDE: u64 = 16;

/// Each CPU's exception upcall stack: 64 KiB (a power of two, so the
/// stub finds a CPU's with a shift).
const UPCALL_STACK_SHIFT: u32 = 16;
const UPCALL_STACK_SIZE: usize = 1 << UPCALL_STACK_SHIFT;

/// A CPU's CPL0 stacks are this far apart (`layout`: `CPL0_STACK_COUNT`
/// stacks of `CPL0_STACK_SIZE` each), so a stub finds the index of the
/// CPU it runs on from its stack pointer.
const CPL0_STACKS_PER_CPU_SHIFT: u32 = 16;
const _: () =
    assert!(layout::CPL0_STACK_COUNT * layout::CPL0_STACK_SIZE == 1 << CPL0_STACKS_PER_CPU_SHIFT);

/// The CPL3 stacks exception upcalls run on, one per CPU (the faulting
/// stack may be the cause of the fault, and two CPUs may take page
/// faults at once: the memory manager resolves most of them).
#[repr(C, align(16))]
struct UpcallStacks([[u8; UPCALL_STACK_SIZE]; layout::MAX_CPUS as usize]);
static mut UPCALL_STACKS: UpcallStacks =
    UpcallStacks([[0; UPCALL_STACK_SIZE]; layout::MAX_CPUS as usize]);

/// Bit `i` is set by an exception on CPU `i` while its upcall runs; a
/// second one there then exits from CPL0. Cleared when the upcall resumes
/// the interrupted context ([`leave_upcall`]).
static IN_FATAL: AtomicU64 = AtomicU64::new(0);

/// Let the next exception on this CPU use its upcall stack again: called
/// on that stack, by the upcall, just before it resumes the interrupted
/// context (with interrupts still off, nothing else runs on this CPU
/// until then; the stack is only read from here on).
pub(super) fn leave_upcall() {
    let base = (&raw const UPCALL_STACKS) as u64;
    let cpu = (super::stack_pointer() - base) >> UPCALL_STACK_SHIFT;
    debug_assert!(cpu < u64::from(layout::MAX_CPUS));
    IN_FATAL.fetch_and(!(1 << cpu), Ordering::SeqCst);
}

/// The virtual window starts at `1 << WINDOW_SHIFT`.
const WINDOW_SHIFT: u32 = layout::VIRTUAL_WINDOW_START.trailing_zeros();
const _: () = assert!(layout::VIRTUAL_WINDOW_START == 1 << WINDOW_SHIFT);
const _: () = assert!(layout::VIRTUAL_WINDOW_END.is_multiple_of(layout::VIRTUAL_WINDOW_START));

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
    // #DB and #BP, and any exception while GDB is attached: offer the
    // frame to the debugger, through the VMM. If it resumes the context,
    // the VMM marks the frame resumed (its registers maybe changed):
    // return to it. Otherwise (no debugger; QEMU, where the port is
    // nobody's; GDB passing the exception on) the exception goes on as
    // any other.
    "    cmpq ${vector_debug}, %rax",
    "    je 10f",
    "    cmpq ${vector_breakpoint}, %rax",
    "    je 10f",
    // A not-present fault in the virtual window is most likely a first
    // touch, which the memory manager backs: not the debugger's business.
    "    cmpq $14, %rax",
    "    jne 11f",
    "    testq $1, {vec_off} + 8(%rsp)",
    "    jnz 11f",
    "    movq (%rsp), %rcx",
    "    shrq ${window_shift}, %rcx",
    "    jz 11f",
    "    cmpq ${window_end_shifted}, %rcx",
    "    jb 12f",
    "11: cmpq $0, {debugger_attached}",
    "    je 12f",
    "10: movq %rsp, %rax",
    "    shrq ${addr_shift}, %rax",
    "    movw ${debug_port}, %dx",
    "    outl %eax, %dx",
    "    cmpq ${resumed}, {vec_off}(%rsp)",
    "    jne 12f",
    "    addq $8, %rsp",
    "    popq %r15; popq %r14; popq %r13; popq %r12",
    "    popq %r11; popq %r10; popq %r9; popq %r8",
    "    popq %rbp; popq %rdi; popq %rsi",
    "    popq %rdx; popq %rcx; popq %rbx; popq %rax",
    "    addq $16, %rsp",
    "    iretq",
    // This CPU's index, from its CPL0 stack.
    "12: movq %rsp, %rcx",
    "    subq ${cpl0_stacks}, %rcx",
    "    shrq ${cpl0_shift}, %rcx",
    "    lock btsq %rcx, {in_fatal}(%rip)",
    "    jc 4f",
    // Copy the frame to the top of this CPU's upcall stack.
    "    movq %rcx, %rdi",
    "    shlq ${stack_shift}, %rdi",
    "    leaq {stack}(%rip), %rax",
    "    addq %rax, %rdi",
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
    "    shrq ${addr_shift}, %rax",
    "    movw ${exit_port}, %dx",
    "    outl %eax, %dx",
    // On QEMU (PVH) the port above is nobody's: isa-debug-exit instead.
    "    movb ${pvh_exception}, %al",
    "    outb %al, ${pvh_exit_port}",
    "5:  hlt",
    "    jmp 5b",
    vec_off = const VECTOR_INDEX * 8,
    counters = const COUNTERS_ADDR,
    in_fatal = sym IN_FATAL,
    stack = sym UPCALL_STACKS,
    stack_size = const UPCALL_STACK_SIZE,
    stack_shift = const UPCALL_STACK_SHIFT,
    cpl0_stacks = const layout::CPL0_STACKS_ADDR,
    cpl0_shift = const CPL0_STACKS_PER_CPU_SHIFT,
    window_shift = const WINDOW_SHIFT,
    window_end_shifted = const layout::VIRTUAL_WINDOW_END >> WINDOW_SHIFT,
    frame_bytes = const FRAME_WORDS * 8,
    frame_words = const FRAME_WORDS,
    user_data = const gdt::USER_DATA,
    user_code = const gdt::USER_CODE,
    upcall = sym exception_upcall,
    early_exit = sym EARLY_EXIT,
    exit_port = const Port::Exit as u16,
    addr_shift = const hypercall::REQUEST_ADDR_SHIFT,
    pvh_exception = const eremite_interface::pvh::debug_exit_value(ExitKind::Exception, 0),
    vector_debug = const trap::VECTOR_DEBUG,
    vector_breakpoint = const trap::VECTOR_BREAKPOINT,
    debug_port = const trap::DEBUG_PORT,
    resumed = const trap::RESUMED,
    debugger_attached = const layout::BOOT_INFO_ADDR + BootInfo::DEBUGGER_OFFSET as u64,
    pvh_exit_port = const eremite_interface::pvh::DEBUG_EXIT_PORT,
    options(att_syntax),
);

// Interrupts from the local APIC (the timer and the wake-up IPI): hand
// them to the CPL3 kernel. When they interrupt CPL3 code, the stub writes
// a bit for the vector, the interrupted RFLAGS and RIP onto the
// interrupted CPL3 stack, below its red zone, and `iretq`s to the upcall
// on that stack (see `preempt.rs`), changing only RIP in the frame (PVM
// keeps the interrupted RSP). The upcall's first instruction is the one
// place where those slots are live but the stack has not moved past them:
// measured, a second interrupt can arrive exactly there, so the stub then
// only adds its bit and lets the upcall start again. The only CPL0 code that runs with interrupts on is the idle gate
// around its `hlt`: then the stub returns to the gate's exit with
// interrupts off and the vector in EAX, which the gate hands back to the
// CPL3 kernel. No EOI is
// sent here either way: the CPL3 kernel sends it.
macro_rules! irq_stub {
    ($name:literal, $vector:expr) => {
        global_asm!(
            ".section .text.eremite_supervisor,\"ax\",@progbits",
            ".p2align 4",
            concat!(".global ", $name),
            concat!($name, ":"),
            "    lock incq {irq_counter}",
            "    pushq %rax",
            // Above the saved RAX: RIP, CS, RFLAGS, RSP, SS.
            "    testb $3, 16(%rsp)",
            "    jz 1f",
            "    pushq %rbx",
            "    movq 40(%rsp), %rbx",
            // Interrupted at the upcall's first instruction (the previous
            // interrupt's stub just returned there): its slots are
            // already written; add this vector and let it start again.
            "    leaq {upcall}(%rip), %rax",
            "    cmpq %rax, 16(%rsp)",
            "    je 3f",
            "    movq 16(%rsp), %rax",
            "    movq %rax, -{rip_below}(%rbx)",
            "    movq 32(%rsp), %rax",
            "    cmpq $0, {debugger_attached}",
            "    jne 6f",
            "7:  movq %rax, -{rflags_below}(%rbx)",
            "    movq ${bit}, -{vectors_below}(%rbx)",
            "    leaq {upcall}(%rip), %rax",
            "    movq %rax, 16(%rsp)",
            "    jmp 4f",
            // Under GDB: the upcall runs without RFLAGS.TF (a single
            // step), and its `popfq; ret` gives the saved flags back, so a
            // step ends on the interrupted instruction as if no interrupt
            // had come. While watchpoints are set (the word is 2) every
            // interrupted context steps from then on, whichever thread.
            "6:  andq $~0x100, 32(%rsp)",
            "    cmpq $2, {debugger_attached}",
            "    jne 7b",
            "    orq $0x100, %rax",
            "    jmp 7b",
            "3:  orq ${bit}, -{vectors_below}(%rbx)",
            "4:  popq %rbx",
            "    popq %rax",
            "    iretq",
            "1:  addq $8, %rsp",
            "    andq $~0x200, 16(%rsp)",
            "    leaq eremite_idle_done(%rip), %rax",
            "    movq %rax, (%rsp)",
            "    movl ${vector}, %eax",
            "    iretq",
            irq_counter = const COUNTERS_ADDR + eremite_interface::CPL0_COUNTER_OTHER_IRQ as u64 * 8,
            debugger_attached = const layout::BOOT_INFO_ADDR + BootInfo::DEBUGGER_OFFSET as u64,
            upcall = sym eremite_irq_upcall,
            vector = const $vector,
            bit = const 1u64 << ($vector - layout::TIMER_VECTOR),
            rip_below = const super::preempt::RIP_BELOW,
            rflags_below = const super::preempt::RIP_BELOW + 8,
            vectors_below = const super::preempt::RIP_BELOW + 16,
            options(att_syntax),
        );
    };
}
irq_stub!("eremite_timer_stub", layout::TIMER_VECTOR);
irq_stub!("eremite_wake_stub", layout::WAKE_VECTOR);
irq_stub!("eremite_device_stub", layout::DEVICE_VECTOR);
irq_stub!("eremite_host_signal_stub", layout::HOST_SIGNAL_VECTOR);

// Spurious APIC interrupts need no EOI: just return.
global_asm!(
    ".section .text.eremite_supervisor,\"ax\",@progbits",
    ".p2align 4",
    ".global eremite_spurious_stub",
    "eremite_spurious_stub:",
    "    iretq",
    options(att_syntax),
);

// The idle gate: the CPL3 kernel executes the `ud2` at `eremite_idle_trap`
// (in `eremite_idle`, below) to halt. Under PVM, `syscall` does not reach
// CPL0 (measured: it runs the LSTAR target with the user CS, where `sti`
// raises #GP) and `int n` raises #UD, so an exception is the way in. The
// #UD gate has no IST stack: from CPL3 it runs on RSP0, so the interrupt
// that ends the halt (on the IST stack) cannot overwrite its frame. The
// same stub serves the TLB gate and the interrupts-on gate; any other #UD
// goes on to the fatal path.
global_asm!(
    ".section .text.eremite_supervisor,\"ax\",@progbits",
    ".p2align 4",
    ".global eremite_ud_stub",
    "eremite_ud_stub:",
    "    pushq %rax",
    "    leaq eremite_idle_trap(%rip), %rax",
    "    cmpq %rax, 8(%rsp)",
    "    je 1f",
    "    leaq eremite_flush_trap(%rip), %rax",
    "    cmpq %rax, 8(%rsp)",
    "    je 6f",
    "    leaq eremite_interrupts_on_trap(%rip), %rax",
    "    cmpq %rax, 8(%rsp)",
    "    je 9f",
    "    popq %rax",
    "    jmp {generic_ud} + 6 * {stride}",
    // The interrupts-on gate: continue after the `ud2` with IF set (see
    // `eremite_linux_resume_from_exception` in `linux.rs`).
    "9:  popq %rax",
    "    lock incq {gate_counter}",
    "    addq $2, (%rsp)",
    "    orq $0x200, 16(%rsp)",
    "    iretq",
    // The TLB gate: invalidate RSI pages from RDI, or everything (a CR3
    // reload; no global pages are used) when RSI is 0 or above the limit.
    "6:  popq %rax",
    "    lock incq {flush_counter}",
    "    addq $2, (%rsp)",
    "    testq %rsi, %rsi",
    "    jz 8f",
    "    cmpq ${flush_max}, %rsi",
    "    ja 8f",
    "7:  invlpg (%rdi)",
    "    addq $4096, %rdi",
    "    decq %rsi",
    "    jnz 7b",
    "    iretq",
    "8:  movq %cr3, %rax",
    "    movq %rax, %cr3",
    "    iretq",
    "1:  popq %rax",
    // Unwind information for a debugger that stops a CPU here (halted,
    // while its thread waits): the frame is the `ud2`'s, and the caller
    // is the thread's code at CPL3, at the saved RIP and RSP.
    "    .cfi_startproc simple",
    "    .cfi_signal_frame",
    "    .cfi_def_cfa rsp, 40",
    "    .cfi_offset rip, -40",
    "    .cfi_offset rsp, -16",
    "    lock incq {gate_counter}",
    "    addq $2, (%rsp)",
    "    xorl %eax, %eax",
    // With interrupts on, check the wake word, then halt. An interrupt
    // taken anywhere from here to the HLT (or ending it) returns to
    // `eremite_idle_done` with its vector in EAX (see the interrupt stubs),
    // so it is never followed by a halt that nothing ends.
    "    sti",
    "    cmpl $0, (%rdi)",
    "    jne eremite_idle_done",
    "    hlt",
    ".global eremite_idle_done",
    "eremite_idle_done:",
    "    cli",
    "    iretq",
    "    .cfi_endproc",
    "",
    // eremite_idle(wake: *const u32 [rdi]) -> vector [eax]; only RAX
    // changes.
    ".section .text.eremite_idle,\"ax\",@progbits",
    ".global eremite_idle",
    ".type eremite_idle,@function",
    "eremite_idle:",
    "    .cfi_startproc",
    "eremite_idle_trap:",
    "    ud2",
    "    ret",
    "    .cfi_endproc",
    ".size eremite_idle, . - eremite_idle",
    // eremite_flush(start: u64 [rdi], pages: u64 [rsi]); clobbers RAX,
    // RDI, RSI.
    ".global eremite_flush",
    ".type eremite_flush,@function",
    "eremite_flush:",
    "eremite_flush_trap:",
    "    ud2",
    "    ret",
    ".size eremite_flush, . - eremite_flush",
    generic_ud = sym eremite_vectors,
    stride = const STUB_STRIDE,
    gate_counter = const COUNTERS_ADDR + eremite_interface::CPL0_COUNTER_GATE as u64 * 8,
    flush_counter = const COUNTERS_ADDR + eremite_interface::CPL0_COUNTER_TLB_FLUSH as u64 * 8,
    flush_max = const super::paging::FLUSH_PAGES_MAX,
    options(att_syntax),
);

unsafe extern "C" {
    /// First vector stub; stub `v` is at `eremite_vectors + v * 16`.
    static eremite_vectors: u8;
    /// The timer's CPL0 stub.
    static eremite_timer_stub: u8;
    /// The wake-up IPI's CPL0 stub.
    static eremite_wake_stub: u8;
    /// The first virtio device's CPL0 stub.
    static eremite_device_stub: u8;
    /// The host-signal interrupt's CPL0 stub.
    static eremite_host_signal_stub: u8;
    /// The spurious-interrupt stub.
    static eremite_spurious_stub: u8;
    /// The CPL3 interrupt upcall (`preempt.rs`).
    fn eremite_irq_upcall();
    /// The #UD stub that also serves as the idle gate.
    static eremite_ud_stub: u8;
    /// Halt unless `*wake` is non-zero; the vector that ended the halt,
    /// or 0 (see the idle gate above).
    pub(super) fn eremite_idle(wake: *const u32) -> u32;
    /// Invalidate the TLB entries of `pages` pages from `start`, or all
    /// of them (see the TLB gate above).
    pub(super) fn eremite_flush(start: u64, pages: u64);
}

/// Runs at CPL3 on the upcall stack, with `frame` the saved context. A
/// page fault the memory manager resolves (a stale TLB entry, a page of
/// the virtual window backed on first touch) runs the faulting
/// instruction again; anything else is reported.
extern "C" fn exception_upcall(frame: &ExceptionFrame) -> ! {
    if crate::fault::is_resolved(frame) {
        let regs = super::UserRegs::of_exception(frame);
        // SAFETY: `regs` is the faulting context itself, which runs on
        // unchanged; its stack is the one it faulted on (the slot under
        // its red zone is its own), we hold nothing, and this is the
        // upcall of that exception, on the upcall stack.
        unsafe { super::resume_from_exception(&regs) }
    }
    crate::fault::report_exception(frame)
}

/// Fill in IDT gates 0..=31 with the supervisor stubs. The IDT page is
/// RAM that the VMM pointed IDTR at; it is written at CPL3 during boot.
pub(crate) fn install_idt() {
    let stubs = &raw const eremite_vectors as u64;
    for vector in 0..32u64 {
        let (stub, ist) = match vector {
            6 => (&raw const eremite_ud_stub as u64, 0),
            8 => (stubs + vector * STUB_STRIDE, layout::IST_DOUBLE_FAULT),
            2 | 18 => (stubs + vector * STUB_STRIDE, layout::IST_NMI),
            _ => (stubs + vector * STUB_STRIDE, layout::IST_DEFAULT),
        };
        let (low, high) = interrupt_gate(stub, ist);
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

/// Fill in the gates of the local APIC's vectors: timer, wake-up IPI, the
/// first virtio device's interrupt, the host's signals and spurious.
pub(crate) fn install_irq_gates() {
    for (vector, stub) in [
        (layout::TIMER_VECTOR, &raw const eremite_timer_stub as u64),
        (layout::WAKE_VECTOR, &raw const eremite_wake_stub as u64),
        (layout::DEVICE_VECTOR, &raw const eremite_device_stub as u64),
        (
            layout::HOST_SIGNAL_VECTOR,
            &raw const eremite_host_signal_stub as u64,
        ),
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
