//! The CPL3 half of an interrupt (the APIC timer, a wake-up IPI): the
//! upcall that may preempt the running thread.
//!
//! The CPL0 stub (`supervisor.rs`) does as little as it can, since CPL0 is
//! emulated here: it writes the interrupted RIP, RFLAGS and a bit mask of
//! the vectors taken onto the interrupted stack below its red zone
//! ([`RIP_BELOW`] and the two words under it) and `iretq`s to `eremite_irq_upcall` at CPL3,
//! changing only RIP in the frame, so the upcall starts on the interrupted
//! stack and steps below its red zone itself. The upcall saves everything
//! the interrupted code may have live (the caller-saved registers, and the
//! whole extended state with `xsave`), calls
//! `sched::interrupt_acknowledge(vectors)`, then `sched::interrupt_finish`
//! (which may switch to another thread and come back much later), restores
//! it all and returns with `popfq; ret 128`, which lands exactly on the
//! interrupted RIP and RSP. The code is shared by every CPU. When the
//! interrupted code is a Linux program (its RIP outside the kernel's
//! image), or one of the kernel's few instructions that run on the
//! program's stack (the labelled windows of `linux.rs`: entering and
//! leaving a system call, resuming the program), all but the stub's three
//! words and the saved registers goes on the thread's system-call stack
//! instead (a goroutine's stack is too small for the `xsave` area; an
//! upcall in a window once zeroed the neighbouring goroutine's stack).
//! Those three words and ten registers (232 bytes below the interrupted
//! RSP) still go on the program's stack: a goroutine whose stack pointer
//! is within that of its stack's end could have its neighbour's top
//! overwritten (not seen; moving them needs a stub that writes elsewhere). The stack the upcall runs on must be
//! chosen by where the code runs, not by where RSP points: while the
//! scheduler switches threads, the per-CPU system-call stack already
//! names the next thread's, whose frames are live.
//!
//! Interrupts are on throughout (at CPL3 they cannot be turned off), so
//! an upcall can be interrupted. While it acknowledges (the part that
//! sends EOIs and re-arms the timer, which cost VM exits), a second
//! upcall on the same CPU does not nest: it sees the per-CPU `in_upcall`
//! flag, adds its vectors to `deferred_vectors` and returns at once, and
//! the first acknowledges them too. Found under load, where exits take
//! long: each nested upcall took 4 KiB of stack for its `xsave` area, a
//! retry timer fired inside every one before it returned, and a thread's
//! 128 KiB system-call stack overflowed. `interrupt_finish` runs with the
//! flag clear, so a thread it switches to is preempted as usual.

use core::arch::global_asm;

/// How far below the interrupted RSP the stub writes the interrupted RIP;
/// RFLAGS goes 8 bytes further down and the vectors (bit `v - 0x20` for
/// vector `v`) 16: all below the 128-byte red zone.
pub(super) const RIP_BELOW: u64 = 136;

/// State components the upcall saves: x87, SSE, AVX and AVX-512 (bits 0,
/// 1, 2, 5, 6, 7), the ones the VMM enables in XCR0, limited by
/// [`init`] to those CPUID reports. The mask must be explicit: measured
/// here, `xsave` with an all-ones mask at CPL3 wrote past a 4 KiB area,
/// and so did an area sized by CPUID leaf 0xD's EBX, so the hardware
/// XCR0 under PVM enables more than the guest's (the host's AMX tile data
/// alone is 8 KiB).
const XSAVE_COMPONENTS: u64 = 0xE7;
#[unsafe(no_mangle)]
static mut XSAVE_MASK: u64 = 0x3;

/// Bytes the upcall reserves for `xsave`: the standard-format area of the
/// components above ends at 2,432 bytes (SDM vol. 1, 13.4).
const XSAVE_AREA_BYTES: u64 = 4096;

/// Choose the components to save from CPUID leaf 0xD (SDM vol. 1, 13.2).
/// CPUID traps at CPL3 here (a few µs), so this runs once.
pub(crate) fn init() {
    let cpuid = core::arch::x86_64::__cpuid_count(0xD, 0);
    let mask = (u64::from(cpuid.eax) & XSAVE_COMPONENTS) | 0x3;
    // SAFETY: written once by the boot CPU during boot, before any
    // interrupt that makes the upcall read it is enabled and before the
    // other CPUs start.
    unsafe { XSAVE_MASK = mask };
}

/// Room for one thread's saved extended state ([`fp_save`]).
#[repr(C, align(64))]
pub(crate) struct FpArea([u8; XSAVE_AREA_BYTES as usize]);

impl FpArea {
    /// An area whose XSAVE header is zero, as `xrstor` requires.
    pub(crate) const fn new() -> Self {
        Self([0; XSAVE_AREA_BYTES as usize])
    }
}

/// Save this CPU's x87, SSE and AVX state (the upcall's components) into
/// `area`: for a thread whose program does not expect a switch to clobber
/// them (a Linux thread blocked in a system call).
pub(crate) fn fp_save(area: &mut FpArea) {
    // SAFETY: `area` is a live, exclusively borrowed, 64-byte aligned
    // area of 4 KiB, which holds the standard-format XSAVE area of the
    // components in XSAVE_MASK (at most 2,432 bytes); CR4.OSXSAVE is set
    // by the VMM, so `xsave64` runs at CPL3.
    unsafe {
        core::arch::asm!(
            "xsave64 [{area}]",
            area = in(reg) area.0.as_mut_ptr(),
            in("eax") XSAVE_MASK as u32, in("edx") 0,
            options(nostack, preserves_flags),
        );
    }
}

/// Load the state [`fp_save`] saved in `area`.
pub(crate) fn fp_restore(area: &FpArea) {
    // SAFETY: as for `fp_save`; the area was written by `fp_save` (or is
    // zero: XSTATE_BV 0 initialises every component), so its header is
    // valid for `xrstor64`.
    unsafe {
        core::arch::asm!(
            "xrstor64 [{area}]",
            area = in(reg) area.0.as_ptr(),
            in("eax") XSAVE_MASK as u32, in("edx") 0,
            options(nostack, preserves_flags, readonly),
        );
    }
}

/// Bytes of the standard-format XSAVE area that the saved components
/// take (SDM vol. 1, 13.4 and 13.5): the legacy region and header, AVX's
/// upper halves, AVX-512's opmasks and upper ZMM registers.
pub(crate) fn fp_frame_bytes() -> usize {
    // SAFETY: written once at boot, before anything can call this.
    let mask = unsafe { XSAVE_MASK };
    if mask & 0xE0 != 0 {
        2688
    } else if mask & 0x4 != 0 {
        832
    } else {
        576
    }
}

/// The XSAVE header's offset in the area.
const XSAVE_HEADER: usize = 512;

/// Save this CPU's extended state into `area` (in program memory, for a
/// signal frame): `false`, with nothing written, unless `area` is 64-byte
/// aligned and [`fp_frame_bytes`] long.
pub(crate) fn fp_save_to(area: &mut [u8]) -> bool {
    if area.len() < fp_frame_bytes() || !(area.as_ptr() as usize).is_multiple_of(64) {
        return false;
    }
    // XSAVE leaves the header's XCOMP_BV and reserved bytes as they are;
    // XRSTOR wants them zero.
    area[XSAVE_HEADER..XSAVE_HEADER + 64].fill(0);
    // SAFETY: `area` is exclusively borrowed, aligned and large enough
    // for the components in XSAVE_MASK (checked above).
    unsafe {
        core::arch::asm!(
            "xsave64 [{area}]",
            area = in(reg) area.as_mut_ptr(),
            in("eax") XSAVE_MASK as u32, in("edx") 0,
            options(nostack, preserves_flags),
        );
    }
    true
}

/// Load the extended state a signal frame holds, which the program may
/// have changed: `false`, with nothing loaded, if `area` is not a
/// standard-format XSAVE area of the saved components that `xrstor`
/// would take (short, misaligned, other components, a compacted or
/// dirty header, reserved MXCSR bits set).
pub(crate) fn fp_restore_from(area: &[u8]) -> bool {
    let word = |at: usize| {
        area.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(u64::MAX, u64::from_le_bytes)
    };
    // SAFETY: written once at boot.
    let mask = unsafe { XSAVE_MASK };
    let mxcsr = word(24) & 0xffff_ffff;
    let is_valid = area.len() >= fp_frame_bytes()
        && (area.as_ptr() as usize).is_multiple_of(64)
        && word(XSAVE_HEADER) & !mask == 0
        && (1..8).all(|i| word(XSAVE_HEADER + 8 * i) == 0)
        && mxcsr & !0xffff == 0;
    if !is_valid {
        return false;
    }
    // SAFETY: `area` is aligned, large enough and holds a header that
    // `xrstor64` accepts for the components in XSAVE_MASK (checked
    // above), and MXCSR's reserved bits are clear.
    unsafe {
        core::arch::asm!(
            "xrstor64 [{area}]",
            area = in(reg) area.as_ptr(),
            in("eax") XSAVE_MASK as u32, in("edx") 0,
            options(nostack, preserves_flags, readonly),
        );
    }
    true
}

/// The interrupted RIP (in RCX) in `[start, end)`: go to local label
/// `to` (forward); else fall through past local label `next`.
macro_rules! window {
    ($start:literal, $end:literal, $to:literal, $next:literal) => {
        concat!(
            "    lea rax, [rip + ",
            $start,
            "]\n",
            "    cmp rcx, rax\n",
            "    jb ",
            $next,
            "f\n",
            "    lea rax, [rip + ",
            $end,
            "]\n",
            "    cmp rcx, rax\n",
            "    jb ",
            $to,
            "f\n",
            $next,
            ":"
        )
    };
}

global_asm!(
    ".section .text.eremite_preempt,\"ax\",@progbits",
    ".global eremite_irq_upcall",
    ".type eremite_irq_upcall,@function",
    // On entry RSP is the interrupted RSP: step over its red zone (without
    // touching memory) to the vectors, RFLAGS and RIP the stub left there.
    "eremite_irq_upcall:",
    // Unwind information, for debuggers (a thread switched away inside
    // the upcall unwinds through it to the interrupted code): the frame
    // is a signal frame whose CFA is the interrupted RSP, with the
    // interrupted RIP in the stub's slot below it.
    "    .cfi_startproc simple",
    "    .cfi_signal_frame",
    "    .cfi_def_cfa rsp, 0",
    "    .cfi_offset rip, -{rip_below}",
    "    lea rsp, [rsp - {vector_below}]",
    "    .cfi_def_cfa_offset {vector_below}",
    // Nested in another upcall's acknowledgement on this CPU: leave the
    // vectors to it and return at once. (The flags are free: RFLAGS is
    // restored from the slot the stub wrote.)
    "    cmp qword ptr gs:[{in_upcall}], 0",
    "    jne 9f",
    "    mov qword ptr gs:[{in_upcall}], 1",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push rbp",
    "    .cfi_adjust_cfa_offset 80",
    "    .cfi_offset rbp, -({vector_below} + 80)",
    "    cld",
    "    mov rbp, rsp",
    "    .cfi_def_cfa_register rbp",
    // Interrupted in a Linux program (its RIP outside the kernel's image),
    // or in one of the kernel's few instructions that run on the
    // program's stack (entering and leaving a system call, resuming the
    // program): go on on the thread's system-call stack, idle then, not
    // the program's, which may be small (a goroutine's starts at 2 KiB,
    // and Go allows no writes below its limit: the `xsave` area below
    // would overwrite the neighbouring goroutine's stack); `mov rsp, rbp`
    // below comes back. Interrupted anywhere else in the kernel, or in a
    // hermit image (no range set): stay.
    "    mov rax, qword ptr [rip + {kernel_text} + 8]",
    "    test rax, rax",
    "    jz 4f",
    "    mov rcx, qword ptr [rbp + 96]",
    "    cmp rcx, rax",
    "    jae 5f",
    "    cmp rcx, qword ptr [rip + {kernel_text}]",
    "    jb 5f",
    window!("eremite_linux_call_entry", "eremite_linux_call_window_end", "5", "11"),
    window!("eremite_linux_fast_window", "eremite_linux_fast_window_end", "5", "12"),
    window!("eremite_linux_full_window", "eremite_linux_full_window_end", "5", "13"),
    window!("eremite_linux_trap_entry", "eremite_linux_trap_window_end", "5", "14"),
    window!("eremite_linux_resume_window", "eremite_linux_resume_loaded", "19", "15"),
    window!("eremite_linux_resume_loaded", "eremite_linux_resume_window_end", "5", "16"),
    window!("eremite_linux_resume_from_exception_window", "eremite_linux_resume_from_exception_loaded", "19", "17"),
    window!("eremite_linux_resume_from_exception_loaded", "eremite_linux_resume_from_exception_window_end", "5", "18"),
    "    jmp 4f",
    // Resuming, with registers still to load from the copy at RDI on the
    // kernel stack being left: go on below that copy.
    "19: mov rax, qword ptr [rbp + 40]",
    "    sub rax, 64",
    "    mov rsp, rax",
    "    jmp 4f",
    "5:  mov rax, qword ptr gs:[{syscall_stack}]",
    "    test rax, rax",
    "    jz 4f",
    "    mov rsp, rax",
    "4:  sub rsp, {area}",
    "    and rsp, -64",
    // XRSTOR requires the XSAVE header's reserved bytes to be zero.
    "    lea rdi, [rsp + 512]",
    "    xor eax, eax",
    "    mov ecx, 8",
    "    rep stosq",
    "    mov eax, dword ptr [rip + {mask}]",
    "    xor edx, edx",
    "    xsave64 [rsp]",
    "    mov edi, dword ptr [rbp + 80]",
    // Acknowledge these vectors and every one deferred meanwhile.
    "2:  call {acknowledge}",
    "    xor edi, edi",
    "    xchg qword ptr gs:[{deferred}], rdi",
    "    test edi, edi",
    "    jnz 2b",
    "    mov qword ptr gs:[{in_upcall}], 0",
    // One deferred between the look above and the store: take it too.
    "    cmp qword ptr gs:[{deferred}], 0",
    "    je 3f",
    "    mov qword ptr gs:[{in_upcall}], 1",
    "    xor edi, edi",
    "    jmp 2b",
    // Preempt, or arrange to (this may switch threads; interrupts that
    // come now are upcalls of their own).
    "3:  call {finish}",
    // A signal waits and the program was interrupted (not the kernel):
    // offer it to the thread now, with the interrupted registers.
    "    cmp qword ptr [rip + {pending}], 0",
    "    jne 7f",
    "8:  mov eax, dword ptr [rip + {mask}]",
    "    xor edx, edx",
    "    xrstor64 [rsp]",
    "    .cfi_remember_state",
    "    mov rsp, rbp",
    "    .cfi_def_cfa rsp, {vector_below} + 80",
    "    pop rbp",
    "    .cfi_same_value rbp",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    .cfi_def_cfa_offset {vector_below}",
    "    lea rsp, [rsp + 8]",
    "    .cfi_def_cfa_offset {vector_below} - 8",
    "    popfq",
    "    .cfi_def_cfa_offset {vector_below} - 16",
    "    ret 128",
    "    .cfi_restore_state",
    // The interrupted context as `UserRegs` (see `linux.rs`): the saved
    // caller-saved registers, the callee-saved ones (still the
    // program's), RSP, RIP and RFLAGS from the stub's slots. The call
    // returns only if there was nothing to deliver.
    "7:  mov rax, qword ptr [rip + {kernel_text} + 8]",
    "    test rax, rax",
    "    jz 8b",
    "    mov rcx, qword ptr [rbp + 96]",
    "    cmp rcx, rax",
    "    jae 10f",
    "    cmp rcx, qword ptr [rip + {kernel_text}]",
    "    jae 8b",
    "10: sub rsp, 144",
    "    mov rax, [rbp + 32]",
    "    mov [rsp], rax",
    "    mov rax, [rbp + 24]",
    "    mov [rsp + 8], rax",
    "    mov rax, [rbp + 16]",
    "    mov [rsp + 16], rax",
    "    mov rax, [rbp + 8]",
    "    mov [rsp + 24], rax",
    "    mov [rsp + 32], r12",
    "    mov [rsp + 40], r13",
    "    mov [rsp + 48], r14",
    "    mov [rsp + 56], r15",
    "    mov rax, [rbp + 40]",
    "    mov [rsp + 64], rax",
    "    mov rax, [rbp + 48]",
    "    mov [rsp + 72], rax",
    "    mov rax, [rbp]",
    "    mov [rsp + 80], rax",
    "    mov [rsp + 88], rbx",
    "    mov rax, [rbp + 56]",
    "    mov [rsp + 96], rax",
    "    mov rax, [rbp + 72]",
    "    mov [rsp + 104], rax",
    "    mov rax, [rbp + 64]",
    "    mov [rsp + 112], rax",
    "    lea rax, [rbp + 232]",
    "    mov [rsp + 120], rax",
    "    mov rax, [rbp + 96]",
    "    mov [rsp + 128], rax",
    "    mov rax, [rbp + 88]",
    "    mov [rsp + 136], rax",
    "    mov rdi, rsp",
    "    call {deliver}",
    "    add rsp, 144",
    "    jmp 8b",
    // (Reached from the top, before any push.)
    "    .cfi_def_cfa rsp, {vector_below}",
    "    .cfi_same_value rbp",
    "9:  push rax",
    "    .cfi_adjust_cfa_offset 8",
    "    mov rax, qword ptr [rsp + 8]",
    "    lock or qword ptr gs:[{deferred}], rax",
    "    pop rax",
    "    .cfi_adjust_cfa_offset -8",
    "    lea rsp, [rsp + 8]",
    "    .cfi_adjust_cfa_offset -8",
    "    popfq",
    "    .cfi_adjust_cfa_offset -8",
    "    ret 128",
    "    .cfi_endproc",
    ".size eremite_irq_upcall, . - eremite_irq_upcall",
    area = const XSAVE_AREA_BYTES,
    mask = sym XSAVE_MASK,
    vector_below = const RIP_BELOW + 16,
    rip_below = const RIP_BELOW,
    acknowledge = sym crate::sched::interrupt_acknowledge,
    finish = sym crate::sched::interrupt_finish,
    in_upcall = const super::PER_CPU_IN_UPCALL,
    deferred = const super::PER_CPU_DEFERRED_VECTORS,
    syscall_stack = const super::PER_CPU_SYSCALL_STACK,
    kernel_text = sym KERNEL_TEXT,
    pending = sym crate::abi::linux::SIGNALS_PENDING,
    deliver = sym crate::abi::linux::deliver_interrupted,
);

const _: () = {
    assert!(core::mem::size_of::<super::UserRegs>() == 144);
    assert!(core::mem::offset_of!(super::UserRegs, r12) == 32);
    assert!(core::mem::offset_of!(super::UserRegs, rbx) == 88);
    assert!(core::mem::offset_of!(super::UserRegs, rax) == 104);
    assert!(core::mem::offset_of!(super::UserRegs, rcx) == 112);
};

/// The kernel's image, `[start, end)`, when it runs a Linux program beside
/// it (set once at the program's start); zero for a hermit image, whose
/// application is linked into the kernel's image.
static KERNEL_TEXT: [core::sync::atomic::AtomicU64; 2] =
    [const { core::sync::atomic::AtomicU64::new(0) }; 2];

/// Tell the interrupt upcall where the kernel's image is (a Linux program
/// runs outside it, on stacks the upcall must not grow).
pub(crate) fn set_kernel_text(start: u64, end: u64) {
    KERNEL_TEXT[0].store(start, core::sync::atomic::Ordering::Relaxed);
    KERNEL_TEXT[1].store(end, core::sync::atomic::Ordering::Release);
}
