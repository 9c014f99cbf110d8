//! The machine side of Linux system calls: how a rewritten `syscall`
//! (`call *%rax`, via the trampoline in page 0) reaches the Linux ABI's
//! dispatcher, and how a Linux thread first enters its program.
//!
//! On entry the program's stack holds the site's return address and
//! nothing may be written below it (the program's red zone). RCX and R11
//! are free, as a `syscall` clobbers them; RAX holds the number. The
//! entry takes this CPU's index from the GS base, the running thread's
//! system-call stack from [`SYSCALL_STACKS`], switches to it and pushes
//! a [`SyscallFrame`]: every register the kernel must give back, and where
//! to return. The dispatcher (`abi::linux::dispatch`) may change the frame
//! (`clone`'s child, signal delivery); the exit restores the frame's
//! registers, puts the result in RAX and jumps to the frame's RIP with the
//! frame's RSP. RFLAGS is not kept, as compilers assume of `syscall`
//! sites; neither are RCX and R11.
//!
//! A `syscall` the VMM did not rewrite traps to LSTAR, which the VMM
//! points at one stub per CPU (`eremite_linux_trap_entry_N`); they build
//! the same frame and call `abi::linux::dispatch_trap`.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::layout::MAX_CPUS;

/// Per CPU: the top of the running thread's system-call stack (0 for a
/// thread that is not a Linux thread). The scheduler sets it on every
/// switch.
static SYSCALL_STACKS: [AtomicU64; MAX_CPUS as usize] =
    [const { AtomicU64::new(0) }; MAX_CPUS as usize];

/// Make `top` the system-call stack of the thread now running on CPU
/// `cpu`.
pub(crate) fn set_syscall_stack(cpu: usize, top: u64) {
    if let Some(slot) = SYSCALL_STACKS.get(cpu) {
        slot.store(top, Ordering::Relaxed);
    }
}

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
    "    rdgsbase rcx",
    "    lea r11, [rip + {stacks}]",
    "    mov r11, [r11 + rcx * 8]",
    "    mov rcx, rsp",
    "    mov rsp, r11",
    "    lea r11, [rcx + 8]",
    "    push r11",
    "    push qword ptr [rcx]",
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
    // The trap path: a `syscall` the VMM left in place. The VMM points
    // each vCPU's LSTAR at its own stub, which knows the CPU's slot in
    // SYSCALL_STACKS without a register: RCX holds the return address and
    // R11 RFLAGS (which, as compilers assume, need not be kept), and the
    // program's stack must not be written.
    ".irp cpu, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    ".global eremite_linux_trap_entry_\\cpu",
    "eremite_linux_trap_entry_\\cpu:",
    "    mov r11, qword ptr [rip + {stacks} + 8 * \\cpu]",
    "    xchg rsp, r11",
    "    push r11",
    "    push rcx",
    "    jmp eremite_linux_trap_common",
    ".endr",
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
    stacks = sym SYSCALL_STACKS,
    dispatch = sym crate::abi::linux::dispatch,
    dispatch_trap = sym crate::abi::linux::dispatch_trap,
    user_data = const eremite_interface::layout::gdt::USER_DATA,
    user_code = const eremite_interface::layout::gdt::USER_CODE,
);

const _: () = assert!(MAX_CPUS == 16, "one trap stub per CPU above");

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
