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
//! child) and the few that may deliver a signal on their way out the
//! callee-saved slots stay unset, since the dispatcher keeps
//! those registers itself, and the exit returns with `ret` from the
//! program's stack (see the comment there). Through the full frame, the
//! exit restores the frame's registers, puts the result in RAX and jumps
//! to the frame's RIP with the frame's RSP. RFLAGS is not kept, as compilers assume of `syscall`
//! sites; neither are RCX and R11. When a signal from outside the program
//! is pending (`abi::linux::SIGNALS_PENDING`), every exit, fast or not,
//! fills in the full frame and offers the signal to the thread
//! (`abi::linux::deliver_pending`) before it returns.
//!
//! A `syscall` the VMM did not rewrite traps to LSTAR, which the VMM
//! points at `eremite_linux_trap_entry`; it builds the same frame and
//! calls `abi::linux::dispatch_trap`.

use core::arch::global_asm;

/// The system calls whose frame must hold every register, Linux x86_64's
/// numbers: `clone` (a thread starts from it) and the calls that may
/// deliver a signal to the calling thread on their way out (the handler
/// gets the whole interrupted context): `rt_sigprocmask`, `kill`,
/// `tkill`, `tgkill`. Every other call leaves the frame's callee-saved
/// slots unset and must not change its RIP or RSP.
const FULL_FRAME_CALLS: [u32; 5] = [56, 14, 62, 200, 234];

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
    ".global eremite_linux_call_window_end",
    "eremite_linux_call_window_end:",
    "    lea r11, [rcx + 8]",
    "    push r11",
    "    push qword ptr [rcx]",
    "    cmp eax, {full0}",
    "    je 1f",
    "    cmp eax, {full1}",
    "    je 1f",
    "    cmp eax, {full2}",
    "    je 1f",
    "    cmp eax, {full3}",
    "    je 1f",
    "    cmp eax, {full4}",
    "    je 1f",
    // The fast path: the callee-saved slots stay unset (only the calls
    // above need them), and the return is a `ret` from the program's stack,
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
    "    add rsp, 8",
    "    cmp qword ptr [rip + {pending}], 0",
    "    jne 3f",
    "    add rsp, 8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop r10",
    "    pop r8",
    "    pop r9",
    "    mov rsp, [rsp + 56]",
    ".global eremite_linux_fast_window",
    "eremite_linux_fast_window:",
    "    sub rsp, 8",
    "    ret",
    ".global eremite_linux_fast_window_end",
    "eremite_linux_fast_window_end:",
    // A signal may be due: fill in the callee-saved slots (the
    // dispatcher gave the program's values back in the registers) and
    // leave through the full frame.
    "3:",
    "    mov [rsp + 56], rbx",
    "    mov [rsp + 64], rbp",
    "    mov [rsp + 72], r12",
    "    mov [rsp + 80], r13",
    "    mov [rsp + 88], r14",
    "    mov [rsp + 96], r15",
    "    jmp eremite_linux_exit_full",
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
    // Leaving through a full frame (at RSP, the result in RAX): first any
    // signal sent to the program from outside that this thread takes.
    "eremite_linux_exit_full:",
    "    cmp qword ptr [rip + {pending}], 0",
    "    je 6f",
    "    mov rdi, rsp",
    "    mov rsi, rax",
    "    sub rsp, 8",
    "    call {deliver}",
    "    add rsp, 8",
    "6:",
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
    ".global eremite_linux_full_window",
    "eremite_linux_full_window:",
    "    jmp rcx",
    ".global eremite_linux_full_window_end",
    "eremite_linux_full_window_end:",
    ".size eremite_linux_return, . - eremite_linux_return",
    "",
    // The trap path: a `syscall` the VMM left in place. RCX holds the
    // return address and R11 RFLAGS (which, as compilers assume, need not
    // be kept), and the program's stack must not be written.
    ".global eremite_linux_trap_entry",
    "eremite_linux_trap_entry:",
    "    mov r11, qword ptr gs:[{stack}]",
    "    xchg rsp, r11",
    ".global eremite_linux_trap_window_end",
    "eremite_linux_trap_window_end:",
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
    "    jmp eremite_linux_exit_full",
    stack = const super::PER_CPU_SYSCALL_STACK,
    dispatch = sym crate::abi::linux::dispatch,
    pending = sym crate::abi::linux::SIGNALS_PENDING,
    deliver = sym crate::abi::linux::deliver_pending,
    full0 = const FULL_FRAME_CALLS[0],
    full1 = const FULL_FRAME_CALLS[1],
    full2 = const FULL_FRAME_CALLS[2],
    full3 = const FULL_FRAME_CALLS[3],
    full4 = const FULL_FRAME_CALLS[4],
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

/// A Linux thread's general registers, RIP and RFLAGS, in the order of
/// Linux's `struct sigcontext` (so a signal frame holds them as is).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct UserRegs {
    pub(crate) r8: u64,
    pub(crate) r9: u64,
    pub(crate) r10: u64,
    pub(crate) r11: u64,
    pub(crate) r12: u64,
    pub(crate) r13: u64,
    pub(crate) r14: u64,
    pub(crate) r15: u64,
    pub(crate) rdi: u64,
    pub(crate) rsi: u64,
    pub(crate) rbp: u64,
    pub(crate) rbx: u64,
    pub(crate) rdx: u64,
    pub(crate) rax: u64,
    pub(crate) rcx: u64,
    pub(crate) rsp: u64,
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
}

/// RFLAGS bits a program may set by returning from a signal handler: the
/// arithmetic flags and DF (not TF, IOPL, ...). IF and bit 1 are always
/// set.
const USER_RFLAGS: u64 = 0x8d5 | 0x400;
const RFLAGS_FIXED: u64 = 0x202;

impl UserRegs {
    /// The registers at a CPU exception.
    pub(crate) fn of_exception(frame: &super::ExceptionFrame) -> Self {
        Self {
            r8: frame.r8,
            r9: frame.r9,
            r10: frame.r10,
            r11: frame.r11,
            r12: frame.r12,
            r13: frame.r13,
            r14: frame.r14,
            r15: frame.r15,
            rdi: frame.rdi,
            rsi: frame.rsi,
            rbp: frame.rbp,
            rbx: frame.rbx,
            rdx: frame.rdx,
            rax: frame.rax,
            rcx: frame.rcx,
            rsp: frame.rsp,
            rip: frame.rip,
            rflags: frame.rflags,
        }
    }

    /// The registers a system call with a full `frame` returns with,
    /// `result` in RAX. RCX and R11, which `syscall` clobbers, are 0, and
    /// RFLAGS (not kept by the entry) is the plain value.
    pub(crate) fn of_syscall(frame: &SyscallFrame, result: u64) -> Self {
        let [rdi, rsi, rdx, r10, r8, r9] = frame.args;
        Self {
            r8,
            r9,
            r10,
            r11: 0,
            r12: frame.r12,
            r13: frame.r13,
            r14: frame.r14,
            r15: frame.r15,
            rdi,
            rsi,
            rbp: frame.rbp,
            rbx: frame.rbx,
            rdx,
            rax: result,
            rcx: 0,
            rsp: frame.rsp,
            rip: frame.rip,
            rflags: RFLAGS_FIXED,
        }
    }

    /// Make `frame` return into these registers (a full frame: every
    /// register but RCX, R11 and RFLAGS is restored from it); the value
    /// for RAX, which the caller returns as the call's result.
    pub(crate) fn into_syscall(self, frame: &mut SyscallFrame) -> u64 {
        frame.args = [self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9];
        frame.rbx = self.rbx;
        frame.rbp = self.rbp;
        frame.r12 = self.r12;
        frame.r13 = self.r13;
        frame.r14 = self.r14;
        frame.r15 = self.r15;
        frame.rip = self.rip;
        frame.rsp = self.rsp;
        self.rax
    }

    /// RFLAGS as a program may have them (see [`USER_RFLAGS`]).
    pub(crate) fn sanitised_rflags(rflags: u64) -> u64 {
        (rflags & USER_RFLAGS) | RFLAGS_FIXED
    }
}

/// Where [`resume`] writes the RIP below the target RSP: under the
/// 128-byte red zone.
pub(crate) const RESUME_RIP_BELOW: u64 = 136;

/// The body of the two resume functions below, the `$tail` lines (with
/// their operands) before the final `ret`: load every register from `regs` [rdi] and continue
/// there. RIP goes below the target's red zone, where `ret 128` takes it
/// from, landing on the target RSP exactly; RFLAGS is restored before the
/// loads, which leave the flags alone.
macro_rules! resume_asm {
    ($name:literal, [$($tail:literal),*] $($operands:tt)*) => {
        global_asm!(
            ".section .text.eremite_linux,\"ax\",@progbits",
            concat!(".global ", $name),
            concat!(".type ", $name, ",@function"),
            concat!($name, ":"),
            "    mov rax, [rdi + 120]",
            "    sub rax, {below}",
            "    mov rcx, [rdi + 128]",
            "    mov [rax], rcx",
            "    push qword ptr [rdi + 136]",
            "    popfq",
            "    mov rsp, rax",
            concat!(".global ", $name, "_window"),
            concat!($name, "_window:"),
            "    mov r8, [rdi]",
            "    mov r9, [rdi + 8]",
            "    mov r10, [rdi + 16]",
            "    mov r11, [rdi + 24]",
            "    mov r12, [rdi + 32]",
            "    mov r13, [rdi + 40]",
            "    mov r14, [rdi + 48]",
            "    mov r15, [rdi + 56]",
            "    mov rsi, [rdi + 72]",
            "    mov rbp, [rdi + 80]",
            "    mov rbx, [rdi + 88]",
            "    mov rdx, [rdi + 96]",
            "    mov rax, [rdi + 104]",
            "    mov rcx, [rdi + 112]",
            "    mov rdi, [rdi + 64]",
            concat!(".global ", $name, "_loaded"),
            concat!($name, "_loaded:"),
            $($tail,)*
            "    ret {rest}",
            concat!(".global ", $name, "_window_end"),
            concat!($name, "_window_end:"),
            concat!(".size ", $name, ", . - ", $name),
            below = const RESUME_RIP_BELOW,
            rest = const RESUME_RIP_BELOW - 8
            $($operands)*
        );
    };
}

resume_asm!("eremite_linux_resume", []);
// From the exception upcall: once every register is loaded, turn
// interrupts back on. The exception stub enters the upcall with them off
// (so nothing preempts it on its CPU's upcall stack), and at CPL3 only an
// `iretq` from CPL0 can set IF again: the interrupts-on gate
// (`supervisor.rs`), a `ud2` that changes no register. Without it the
// thread, and every thread this CPU switched to after it, ran with
// interrupts off: no timer, no preemption, no forwarded signal (a Go
// program hung in its first busy loop after a recovered nil dereference).
resume_asm!(
    "eremite_linux_resume_from_exception",
    [
        ".global eremite_interrupts_on_trap",
        "eremite_interrupts_on_trap:",
        "    ud2"
    ]
);

const _: () = {
    assert!(core::mem::offset_of!(UserRegs, rdi) == 64);
    assert!(core::mem::offset_of!(UserRegs, rsp) == 120);
    assert!(core::mem::offset_of!(UserRegs, rip) == 128);
    assert!(core::mem::offset_of!(UserRegs, rflags) == 136);
};

unsafe extern "C" {
    fn eremite_linux_resume(regs: *const UserRegs) -> !;
    fn eremite_linux_resume_from_exception(regs: *const UserRegs) -> !;
}

/// Continue the program with exactly `regs` (RFLAGS sanitised), leaving
/// the current stack for good. Writes `regs.rip` at
/// `regs.rsp - RESUME_RIP_BELOW`.
///
/// # Safety
/// `regs` must describe code and a stack of the program that this thread
/// may run, the 8 bytes at `regs.rsp - RESUME_RIP_BELOW` must be writable
/// program memory, and the caller must hold nothing on the current stack
/// that is needed later (no lock, no borrowed data).
pub(crate) unsafe fn resume(regs: &UserRegs) -> ! {
    let mut regs = *regs;
    regs.rflags = UserRegs::sanitised_rflags(regs.rflags);
    // SAFETY: the caller's contract; the assembly reads `regs` (a copy on
    // this stack) before it moves RSP away, and then only loads.
    unsafe { eremite_linux_resume(&raw const regs) }
}

/// [`resume`] from the exception upcall (a signal handler for a fault):
/// the upcall's stack, where `regs` lives, is handed back for the next
/// exception only after the last load from it.
///
/// # Safety
/// As for [`resume`]; and the caller runs on the exception upcall's
/// stack, in the upcall of the exception it recovers from.
pub(crate) unsafe fn resume_from_exception(regs: &UserRegs) -> ! {
    let mut regs = *regs;
    regs.rflags = UserRegs::sanitised_rflags(regs.rflags);
    // With interrupts off until the final gate, nothing else runs on this
    // CPU, so its upcall stack (which holds `regs`) is free for the next
    // exception here only after the last load from it.
    super::supervisor::leave_upcall();
    // SAFETY: as for `resume`.
    unsafe { eremite_linux_resume_from_exception(&raw const regs) }
}
