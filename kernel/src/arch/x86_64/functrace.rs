//! The function tracer's entry points (`crate::functrace` records): an
//! application built with `-Zinstrument-mcount` (and frame pointers)
//! calls `mcount` right after each function's prologue. While tracing is
//! off, `mcount` returns at once. While it is on, it hands
//! `crate::functrace::enter` the call site (inside the traced function)
//! and the function's return address, found at `[rbp + 8]` (the
//! prologue has just pushed `rbp` and set it to `rsp`); if the tracer
//! kept that address on the thread's return stack, `mcount` replaces it
//! with `eremite_trace_return`, so the function's `ret` lands there, which
//! records the exit (`crate::functrace::exit`) and jumps to the kept
//! address. A function inlined into a traced one keeps its `mcount` call
//! but shares the outer one's frame, so it is not traced. While the
//! tracer runs on a CPU (a per-CPU flag, through GS), `mcount` returns at
//! once: with the kernel instrumented too (the `eremite` crate's
//! `trace-kernel` feature), the tracer's own calls are not traced, and it
//! cannot recurse. Both save every
//! register a caller may expect unchanged: the
//! traced function's arguments (rdi, rsi, rdx, rcx, r8, r9, and rax for
//! variadic calls) at entry, its return values (rax, rdx) at exit. The
//! kernel has no SSE, so XMM arguments and results are never touched.

use core::sync::atomic::{AtomicBool, Ordering};

/// Whether `mcount` records (set once, at boot, by `crate::functrace`).
static IS_ON: AtomicBool = AtomicBool::new(false);

/// Make `mcount` record from now on.
pub(crate) fn trace_functions() {
    IS_ON.store(true, Ordering::SeqCst);
}

/// Whether the tracer is recording on this CPU now (the timer upcall
/// then does not switch threads, which would leave the flag set for the
/// next thread).
pub(crate) fn is_tracing() -> bool {
    let value: u64;
    // SAFETY: GS base points at this CPU's `PerCpu` once the CPU started
    // (the only time a timer upcall runs); one 8-byte load of its field.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[{offset}]", out(reg) value,
             offset = const super::PER_CPU_IN_TRACE,
             options(nostack, preserves_flags, readonly));
    }
    value != 0
}

// On entry to `mcount` the stack is 8 bytes off 16-byte alignment (a
// call from aligned code); nine pushes make it aligned for the call into
// Rust. At `eremite_trace_return` it is aligned (the traced function's
// `ret` popped the slot its caller's call pushed); two pushes keep it so.
core::arch::global_asm!(
    ".globl mcount",
    ".type mcount, @function",
    "mcount:",
    "    cmp byte ptr [rip + {is_on}], 0",
    "    je 2f",
    "    push rax",
    // Not yet a CPU (GS base unset, early in a CPU's start), or the
    // tracer already runs on this one (its own calls, in an instrumented
    // kernel): not traced.
    "    rdgsbase rax",
    "    test rax, rax",
    "    jz 3f",
    "    cmp qword ptr gs:[{in_trace}], 0",
    "    jne 3f",
    // A function inlined into a traced one calls `mcount` too, from the
    // same frame: its return slot already holds the trampoline, and its
    // own end cannot be seen. Only the outer call is traced.
    "    lea rax, [rip + eremite_trace_return]",
    "    cmp [rbp + 8], rax",
    "    je 3f",
    "    pop rax",
    "    mov qword ptr gs:[{in_trace}], 1",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    mov rdi, [rsp + 72]",
    "    mov rsi, [rbp + 8]",
    "    call {enter}",
    "    test rax, rax",
    "    jz 1f",
    "    lea rax, [rip + eremite_trace_return]",
    "    mov [rbp + 8], rax",
    "1:  pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    mov qword ptr gs:[{in_trace}], 0",
    "    ret",
    "3:  pop rax",
    "2:  ret",
    ".size mcount, . - mcount",
    "",
    ".type eremite_trace_return, @function",
    "eremite_trace_return:",
    "    push rax",
    "    push rdx",
    "    mov qword ptr gs:[{in_trace}], 1",
    "    call {exit}",
    "    mov qword ptr gs:[{in_trace}], 0",
    "    mov r11, rax",
    "    pop rdx",
    "    pop rax",
    "    jmp r11",
    ".size eremite_trace_return, . - eremite_trace_return",
    is_on = sym IS_ON,
    in_trace = const super::PER_CPU_IN_TRACE,
    enter = sym crate::functrace::enter,
    exit = sym crate::functrace::exit,
);
