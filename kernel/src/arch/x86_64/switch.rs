//! Switching threads at CPL3, without entering CPL0.
//!
//! A switch happens only inside a call into the kernel (the scheduler runs
//! when a thread blocks, yields or exits), so the System V ABI says what
//! must survive it: the callee-saved registers (RBX, RBP, R12–R15, RSP),
//! the MXCSR control bits and the x87 control word. Everything else,
//! XMM/YMM registers included, is caller-saved and already spilled by the
//! compiler around the call. The FS base (TLS) is switched by the caller.

use core::arch::global_asm;

/// MXCSR at reset: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u64 = 0x1f80;
/// x87 control word at `fninit`: all exceptions masked, 64-bit precision.
const FCW_DEFAULT: u64 = 0x037f;

global_asm!(
    ".section .text.eremite_switch,\"ax\",@progbits",
    ".global eremite_switch",
    ".type eremite_switch,@function",
    // eremite_switch(save_rsp: *mut u64 [rdi], next_rsp: u64 [rsi])
    "eremite_switch:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    sub rsp, 8",
    "    stmxcsr [rsp]",
    "    fnstcw [rsp + 4]",
    "    mov [rdi], rsp",
    "    mov rsp, rsi",
    "    ldmxcsr [rsp]",
    "    fldcw [rsp + 4]",
    "    add rsp, 8",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    ".size eremite_switch, . - eremite_switch",
    "",
    // A new thread's first "return" lands here with its entry in r12 and
    // argument in r13 (see `new_thread_stack`).
    ".global eremite_thread_entry",
    ".type eremite_thread_entry,@function",
    "eremite_thread_entry:",
    "    xor ebp, ebp",
    "    mov rdi, r12",
    "    mov rsi, r13",
    "    call {start}",
    "    ud2",
    ".size eremite_thread_entry, . - eremite_thread_entry",
    start = sym crate::sched::thread_start,
);

unsafe extern "C" {
    fn eremite_switch(save_rsp: *mut u64, next_rsp: u64);
    fn eremite_thread_entry();
}

/// Save this thread's registers, storing its stack pointer at
/// `save_rsp`, and continue the thread whose saved stack pointer is
/// `next_rsp`. Returns when something switches back to this thread.
///
/// # Safety
/// `save_rsp` must be valid for a write; `next_rsp` must be a stack
/// pointer saved by this function or made by [`new_thread_stack`], of a
/// thread that is not running, whose stack is still allocated.
pub(crate) unsafe fn switch(save_rsp: *mut u64, next_rsp: u64) {
    // SAFETY: the caller's contract; the callee-saved state is saved and
    // restored by the assembly, as the ABI requires of a call.
    unsafe { eremite_switch(save_rsp, next_rsp) }
}

/// Prepare a fresh stack so that switching to it calls
/// `crate::sched::thread_start(entry, arg)` on it (`entry` is the address
/// of an `extern "C" fn(usize)`); returns the stack pointer to switch to.
///
/// # Safety
/// `[stack_top - 80, stack_top)` must be writable memory of a stack that
/// nothing else uses; `stack_top` must be 16-byte aligned.
pub(crate) unsafe fn new_thread_stack(stack_top: u64, entry: u64, arg: u64) -> u64 {
    // From the saved stack pointer up: MXCSR and FCW, r15, r14, r13, r12,
    // rbx, rbp, the return address (the entry stub), and two zero words,
    // so that the stub's `call` happens with RSP 16-byte aligned, as the
    // ABI requires.
    let frame: [u64; 10] = [
        MXCSR_DEFAULT | (FCW_DEFAULT << 32),
        0,
        0,
        arg,
        entry,
        0,
        0,
        eremite_thread_entry as *const () as u64,
        0,
        0,
    ];
    let rsp = stack_top - 80;
    // SAFETY: the caller guarantees the 80 bytes below `stack_top`; the
    // frame is plain integers, written with 8-byte alignment.
    unsafe { (rsp as *mut [u64; 10]).write(frame) };
    rsp
}
