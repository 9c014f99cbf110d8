//! The machine side of Linux system calls: how a rewritten `syscall`
//! (`call *%rax`, via the trampoline in page 0) reaches the Linux ABI's
//! dispatcher, and how a Linux thread first enters its program.
//!
//! On entry the program's stack holds the site's return address and
//! nothing may be written below it (the program's red zone). RCX and R11
//! are free, as a `syscall` clobbers them; RAX holds the number. The
//! entry reads the running thread's system-call stack through GS (this
//! CPU's `PerCpu`, see `mod.rs`), switches to it and pushes
//! a [`SyscallFrame`]: every register the kernel must give back, and where
//! to return. For every call but `clone` (which needs them all for its
//! child) the callee-saved slots stay unset, since the dispatcher keeps
//! those registers itself, and the exit returns with `ret` from the
//! program's stack (see the comment there). Through the full frame, the
//! exit restores the frame's registers, puts the result in RAX and jumps
//! to the frame's RIP with the frame's RSP. RFLAGS is not kept, as compilers assume of `syscall`
//! sites; neither are RCX and R11.
//!
//! A `syscall` the VMM did not rewrite traps to LSTAR, which the VMM
//! points at `eremite_linux_trap_entry`; it builds the same frame and
//! calls `abi::linux::dispatch_trap`.

use core::arch::global_asm;

/// The one system call whose frame must hold every register (a thread
/// starts from it); Linux x86_64's `clone`. Every other call leaves the
/// frame's callee-saved slots unset and must not change its RIP or RSP.
const CLONE: u32 = 56;

/// A Linux thread's registers at a system call, as the entry saves them
/// on its system-call stack (lowest address first).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct SyscallFrame {
    /// RAX: the number.
    pub(crate) nr: u64,
    /// RDI, RSI, RDX, R10, R8, R9: the arguments.
    pub(crate) args: [u64; 6],
    /// The registers the System V ABI calls callee-saved, which a
    /// `clone`'s child must start with too.
    pub(crate) rbx: u64,
    pub(crate) rbp: u64,
    pub(crate) r12: u64,
    pub(crate) r13: u64,
    pub(crate) r14: u64,
    pub(crate) r15: u64,
    /// Where the program goes on: after the site.
    pub(crate) rip: u64,
    /// The program's stack pointer there.
    pub(crate) rsp: u64,
}

global_asm!(
    ".section .text.eremite_linux,\"ax\",@progbits",
    ".global eremite_linux_call_entry",
    ".type eremite_linux_call_entry,@function",
    "eremite_linux_call_entry:",
    "    mov r11, qword ptr gs:[{stack}]",
    "    mov rcx, rsp",
    "    mov rsp, r11",
    "    lea r11, [rcx + 8]",
    "    push r11",
    "    push qword ptr [rcx]",
    "    cmp eax, {clone}",
    "    je 1f",
    // The fast path: the callee-saved slots stay unset (only `clone`
    // needs them), and the return is a `ret` from the program's stack,
    // which pops the return-stack-buffer entry of the site's `call`
    // (a `jmp` back would leave it, and the program's next `ret` would
    // be mispredicted).
    "    sub rsp, 48",
    "    push r9",
    "    push r8",
    "    push r10",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rax",
    "    mov rdi, rsp",
    "    sub rsp, 8",
    "    cld",
    "    call {dispatch}",
    "    add rsp, 16",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop r10",
    "    pop r8",
    "    pop r9",
    "    mov rsp, [rsp + 56]",
    "    sub rsp, 8",
    "    ret",
    // The full frame.
    "1:",
    "    push r15",
    "    push r14",
    "    push r13",
    "    push r12",
    "    push rbp",
    "    push rbx",
    "    push r9",
    "    push r8",
    "    push r10",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rax",
    "    cld",
    "    mov rdi, rsp",
    "    call {dispatch}",
    "    mov rdi, rsp",
    "    mov rsi, rax",
    "    jmp eremite_linux_return",
    ".size eremite_linux_call_entry, . - eremite_linux_call_entry",
    "",
    // eremite_linux_return(frame [rdi], result [rsi]): restore the frame's
    // registers and continue the program.
    ".global eremite_linux_return",
    ".type eremite_linux_return,@function",
    "eremite_linux_return:",
    "    mov rax, rsi",
    "    mov rsp, rdi",
    "    add rsp, 8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop r10",
    "    pop r8",
    "    pop r9",
    "    pop rbx",
    "    pop rbp",
    "    pop r12",
    "    pop r13",
    "    pop r14",
    "    pop r15",
    "    pop rcx",
    "    pop r11",
    "    mov rsp, r11",
    "    jmp rcx",
    ".size eremite_linux_return, . - eremite_linux_return",
    "",
    // The trap path: a `syscall` the VMM left in place. RCX holds the
    // return address and R11 RFLAGS (which, as compilers assume, need not
    // be kept), and the program's stack must not be written.
    ".global eremite_linux_trap_entry",
    "eremite_linux_trap_entry:",
    "    mov r11, qword ptr gs:[{stack}]",
    "    xchg rsp, r11",
    "    push r11",
    "    push rcx",
    "eremite_linux_trap_common:",
    "    push r15",
    "    push r14",
    "    push r13",
    "    push r12",
    "    push rbp",
    "    push rbx",
    "    push r9",
    "    push r8",
    "    push r10",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rax",
    // Under PVM `syscall` stays at CPL3. With hardware virtualisation it
    // enters CPL0: continue at CPL3 on the same stack.
    "    mov ecx, cs",
    "    test ecx, 3",
    "    jnz 2f",
    "    mov rcx, rsp",
    "    push {user_data}",
    "    push rcx",
    "    push 0x202",
    "    push {user_code}",
    "    lea rcx, [rip + 2f]",
    "    push rcx",
    "    iretq",
    "2:",
    "    cld",
    "    mov rdi, rsp",
    "    call {dispatch_trap}",
    "    mov rdi, rsp",
    "    mov rsi, rax",
    "    jmp eremite_linux_return",
    stack = const super::PER_CPU_SYSCALL_STACK,
    dispatch = sym crate::abi::linux::dispatch,
    clone = const CLONE,
    dispatch_trap = sym crate::abi::linux::dispatch_trap,
    user_data = const eremite_interface::layout::gdt::USER_DATA,
    user_code = const eremite_interface::layout::gdt::USER_CODE,
);

unsafe extern "C" {
    fn eremite_linux_return(frame: *const SyscallFrame, result: u64) -> !;
}

/// Continue (or start) the program as `frame` says, with `result` in RAX,
/// abandoning the current stack.
///
/// # Safety
/// `frame` must describe code and a stack of the program that this thread
/// may run (its RIP executable, its RSP the thread's own), and the caller
/// must hold nothing on the current stack that is needed later: the stack
/// is left for good (it is the thread's system-call stack, used again
/// from its top at the next system call).
pub(crate) unsafe fn enter_program(frame: &SyscallFrame, result: u64) -> ! {
    // The frame is copied to the stack by the call below; the assembly
    // reads it before it moves RSP away.
    let frame = *frame;
    // SAFETY: the caller's contract; the assembly only reads the frame.
    unsafe { eremite_linux_return(&raw const frame, result) }
}
