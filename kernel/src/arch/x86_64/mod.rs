//! Everything x86_64: the only assembly, port I/O, TSC, RDRAND, FS base,
//! the IDT and the CPL0 supervisor.
//!
//! # Global assumptions (stated once, relied on everywhere)
//! - The library OS and the application run together at **CPL3** in one
//!   identity-mapped address space prepared by the VMM (or the PVH entry):
//!   long mode, paging, GDT/TSS/IDT memory, CR0/CR4/EFER and XCR0 are set
//!   before our first instruction. The kernel never executes `mov cr*`,
//!   `lgdt`, `xsetbv` or any other privileged instruction at CPL3.
//! - Only the supervisor (`supervisor.rs`) runs at CPL0: integer-only entry
//!   stubs, free of SSE, `xsave*`, `xgetbv`, `rdtscp`, `int3`, because on
//!   PVM hosts CPL0 code is emulated and those instructions kill the VM.
//! - Every IDT vector uses an IST stack, so an event never runs on the
//!   interrupted stack and the application's red zone survives.
//! - The kernel is built without SSE (`x86_64-unknown-none`), so CPL0 entry
//!   never needs to save FP state; the application's FP state is untouched
//!   by the kernel.
#![allow(unsafe_code)]

mod apic;
mod entry;
mod functrace;
pub(crate) mod ioapic;
mod linux;
mod paging;
mod preempt;
pub(crate) mod pvh;
mod supervisor;
mod switch;

pub(crate) use apic::{eoi, send_init, send_ipi, send_startup, timer_arm, timer_init};
pub(crate) use entry::ap_entry;
pub(crate) use functrace::{is_tracing, trace_functions};
pub(crate) use linux::{
    RESUME_RIP_BELOW, SyscallFrame, UserRegs, enter_program, resume, resume_from_exception,
};
pub(crate) use paging::{
    EditError, FLUSH_PAGES_MAX, PageRights, back_window_entry, ensure_writable,
    entry as paging_entry, flush_tlb, is_accessible, is_spurious_fault, leaf as paging_leaf,
    merge_block, set_rights, set_window_entry, unlink_empty_window_tables, window_entry,
    window_rights,
};
pub(crate) use preempt::{
    FpArea, fp_frame_bytes, fp_restore, fp_restore_from, fp_save, fp_save_to, init as preempt_init,
    set_kernel_text,
};
pub(crate) use supervisor::{ExceptionFrame, install_idt, install_irq_gates};
pub(crate) use switch::{new_thread_stack, switch};

use core::arch::asm;
use eremite_interface::hypercall::{self, Port};

/// Make a hypercall: one `out` of the request's guest-physical address
/// (shifted right by three, see `encode_request_addr`) to the call's port. The VMM reads the request and writes results back into
/// it before the guest resumes.
pub(crate) fn hypercall<T>(port: Port, request: &mut T) {
    let addr = request as *mut T as u64;
    let Some(value) = hypercall::encode_request_addr(addr) else {
        // Every request lives in identity-mapped RAM (all of it below
        // MAX_REQUEST_END) and is 8-byte aligned by its type; anything
        // else is a kernel bug.
        panic!("hypercall request at {addr:#x} cannot be encoded");
    };
    // SAFETY: `out` to a hypercall port only transfers control to the VMM,
    // which reads and writes `request` (a live, exclusively borrowed value)
    // and nothing else of ours. The default asm memory clobber makes the
    // compiler write `request` before and re-read it after.
    unsafe {
        asm!("out dx, eax", in("dx") port as u16, in("eax") value, options(nostack, preserves_flags));
    }
}

/// A word of the boot info that the VMM updates while the guest runs
/// (`offset`: one of `BootInfo`'s live-word offsets, 8-aligned), as the
/// VMM last wrote it.
fn live_boot_word(offset: usize) -> u64 {
    use eremite_interface::layout::{BOOT_INFO_ADDR, PAGE_SIZE};
    debug_assert!(offset.is_multiple_of(8) && offset < PAGE_SIZE as usize);
    let addr = BOOT_INFO_ADDR + offset as u64;
    // SAFETY: the boot info page is identity-mapped RAM for the whole run
    // (the layout reserves it); the word is 8-aligned and inside it (the
    // offsets are `BootInfo`'s, whose fields are u64), and only the VMM
    // writes it after boot: an atomic load sees its last value, never a
    // torn one.
    let word = unsafe { &*(addr as *const core::sync::atomic::AtomicU64) };
    word.load(core::sync::atomic::Ordering::Relaxed)
}

/// The TSC ticks the VM has spent stopped by a debugger
/// ([`eremite_interface::BootInfo::stopped_ticks`]).
pub(crate) fn stopped_ticks() -> u64 {
    live_boot_word(eremite_interface::BootInfo::STOPPED_TICKS_OFFSET)
}

/// Nanoseconds the wall clock adds, set by the VMM after a pause or a
/// restore ([`eremite_interface::BootInfo::wall_offset_ns`]).
pub(crate) fn wall_offset_ns() -> u64 {
    live_boot_word(eremite_interface::BootInfo::WALL_OFFSET_OFFSET)
}

/// Whether GDB is attached now
/// ([`eremite_interface::BootInfo::debugger_attached`]).
pub(crate) fn is_debugger_attached() -> bool {
    live_boot_word(eremite_interface::BootInfo::DEBUGGER_OFFSET) != 0
}

/// Stop in the debugger, if one is attached, as a compiled-in breakpoint:
/// an `int3` at CPL3, which the #BP stub offers to it.
pub(crate) fn debugger_break() {
    if is_debugger_attached() {
        // SAFETY: `int3` touches no memory and no register; with GDB
        // attached the VMM resumes after it (without, it is never run).
        unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
    }
}

/// The stack pointer where this is inlined (where a backtrace starts).
#[inline(always)]
pub(crate) fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: copies RSP into a register; touches no memory or flags.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// Read the time-stamp counter.
#[inline]
pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` is allowed at CPL3 (CR4.TSD is clear) and only reads.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Spin-wait hint.
#[inline]
pub(crate) fn pause() {
    core::hint::spin_loop();
}

/// Whether the CPU has RDRAND (CPUID leaf 1, ECX bit 30; SDM vol. 2B,
/// RDRAND). Asked once: CPUID traps at CPL3 here.
fn has_rdrand() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: no, 2: yes.
    static HAS_RDRAND: AtomicU8 = AtomicU8::new(0);
    match HAS_RDRAND.load(Ordering::Relaxed) {
        0 => {
            let has = core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0;
            HAS_RDRAND.store(if has { 2 } else { 1 }, Ordering::Relaxed);
            has
        }
        answer => answer == 2,
    }
}

/// One 64-bit random value from the CPU's DRNG, or `None` if the CPU has
/// none or it stayed busy for a few tries (Intel DRNG guide, 5.2.1: retry
/// up to 10 times). All ones counts as a failure: some AMD CPUs (families
/// 15h–17h with old microcode, after a suspend) return it with CF set, as
/// Linux's RDRAND sanity check knows; a genuine all-ones value has
/// probability 2^-64.
pub(crate) fn rdrand64() -> Option<u64> {
    if !has_rdrand() {
        return None;
    }
    for _ in 0..10 {
        let value: u64;
        let ok: u8;
        // SAFETY: the CPU has `rdrand` (CPUID, checked above); it only
        // writes its destination and CF and is available at CPL3.
        unsafe {
            asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                 options(nomem, nostack));
        }
        if ok != 0 && value != u64::MAX {
            return Some(value);
        }
    }
    None
}

/// The CPU's feature bits as Linux reports them in `AT_HWCAP` on x86_64
/// (CPUID leaf 1, EDX).
pub(crate) fn hwcap() -> u64 {
    u64::from(core::arch::x86_64::__cpuid(1).edx)
}

/// Set the FS base of this CPU (the thread pointer, for TLS).
pub(crate) fn set_fs_base(value: u64) {
    // SAFETY: CR4.FSGSBASE is set by the VMM, so `wrfsbase` works at CPL3;
    // FS is only used for the current thread's TLS, which the caller set up.
    unsafe { asm!("wrfsbase {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// The FS base of this CPU (the current thread pointer).
pub(crate) fn fs_base() -> u64 {
    let value: u64;
    // SAFETY: CR4.FSGSBASE is set by the VMM, so `rdfsbase` works at CPL3;
    // it only reads a register.
    unsafe { asm!("rdfsbase {}", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// What the machine code finds through GS, one per CPU: GS base points
/// at this CPU's, so one GS-relative load reads a field (no `rdgsbase`,
/// no index arithmetic). The Linux system-call entry reads the first
/// field (`linux.rs`); the rest of the kernel finds its `cpu::Cpu` record
/// by the index. Each in cache lines of its own (fetched in pairs), so
/// one CPU's writes do not slow another's reads.
#[repr(C, align(128))]
pub(crate) struct PerCpu {
    /// The top of the running thread's system-call stack (a Linux thread;
    /// 0 for others). The scheduler sets it on every switch.
    syscall_stack: core::sync::atomic::AtomicU64,
    /// The CPU's index.
    index: core::sync::atomic::AtomicU64,
    /// Non-zero while the interrupt upcall acknowledges interrupts
    /// (`preempt.rs`): an interrupt then only leaves its vectors in
    /// `deferred_vectors` for that upcall, instead of nesting.
    in_upcall: core::sync::atomic::AtomicU64,
    /// Vectors (bit `v - 0x20`) of interrupts deferred so.
    deferred_vectors: core::sync::atomic::AtomicU64,
    /// Non-zero while the function tracer records on this CPU
    /// (`functrace.rs`): calls made meanwhile (the tracer's own, in an
    /// instrumented kernel) are not traced, and no thread switch happens.
    in_trace: core::sync::atomic::AtomicU64,
}

static PER_CPU: [PerCpu; eremite_interface::layout::MAX_CPUS as usize] = [const {
    PerCpu {
        syscall_stack: core::sync::atomic::AtomicU64::new(0),
        index: core::sync::atomic::AtomicU64::new(0),
        in_upcall: core::sync::atomic::AtomicU64::new(0),
        deferred_vectors: core::sync::atomic::AtomicU64::new(0),
        in_trace: core::sync::atomic::AtomicU64::new(0),
    }
};
    eremite_interface::layout::MAX_CPUS as usize];

/// Offset of the system-call stack top in [`PerCpu`], for the assembly.
pub(crate) const PER_CPU_SYSCALL_STACK: usize = core::mem::offset_of!(PerCpu, syscall_stack);

/// Size of every Linux thread's system-call stack (its top is
/// [`PER_CPU_SYSCALL_STACK`] while it runs).
pub(crate) const LINUX_SYSCALL_STACK_BYTES: usize = 128 << 10;
/// Offsets of the interrupt upcall's two fields, for the assembly.
pub(crate) const PER_CPU_IN_UPCALL: usize = core::mem::offset_of!(PerCpu, in_upcall);
pub(crate) const PER_CPU_DEFERRED_VECTORS: usize = core::mem::offset_of!(PerCpu, deferred_vectors);
/// Offset of the tracer's flag, for the assembly.
pub(crate) const PER_CPU_IN_TRACE: usize = core::mem::offset_of!(PerCpu, in_trace);

/// Make the calling CPU CPU `index`: point its GS base at its
/// [`PerCpu`]. GS is used for nothing else (the application's TLS uses
/// FS). First thing on every CPU, before anything asks [`cpu_record`].
pub(crate) fn set_cpu_record(index: u64) {
    let Some(record) = usize::try_from(index).ok().and_then(|i| PER_CPU.get(i)) else {
        return;
    };
    record
        .index
        .store(index, core::sync::atomic::Ordering::Relaxed);
    let addr = record as *const PerCpu as u64;
    // SAFETY: CR4.FSGSBASE is set by the VMM, so `wrgsbase` works at CPL3;
    // GS-relative reads only come from `cpu_record` and the Linux entry,
    // which expect this record.
    unsafe { asm!("wrgsbase {}", in(reg) addr, options(nostack, preserves_flags)) };
}

/// This CPU's index, as [`set_cpu_record`] left it.
#[inline]
pub(crate) fn cpu_record() -> u64 {
    let value: u64;
    // SAFETY: GS base points at this CPU's `PerCpu` (set first thing on
    // every CPU), whose `index` field is read with one 8-byte load.
    unsafe {
        asm!("mov {}, qword ptr gs:[{index}]", out(reg) value,
             index = const core::mem::offset_of!(PerCpu, index),
             options(nostack, preserves_flags, readonly));
    }
    value
}

/// Make `top` the system-call stack of the thread now running on CPU
/// `cpu`.
pub(crate) fn set_syscall_stack(cpu: usize, top: u64) {
    if let Some(record) = PER_CPU.get(cpu) {
        record
            .syscall_stack
            .store(top, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Halt this CPU until an interrupt arrives, unless `*wake` is non-zero
/// already (checked at CPL0 with interrupts off, so a wake-up that sets
/// it and then sends an IPI cannot be lost). Returns the vector that ended
/// the halt, which the caller must acknowledge (EOI), or `None`.
pub(crate) fn idle(wake: &core::sync::atomic::AtomicU32) -> Option<u8> {
    // SAFETY: the idle gate only reads the word (a live atomic), halts and
    // returns with every register but RAX (the result) as it was.
    let vector = unsafe { supervisor::eremite_idle(wake.as_ptr()) };
    u8::try_from(vector).ok().filter(|&v| v != 0)
}

/// Switch to `stack_top` and call `entry(a0, a1, a2)` there; never returns.
/// The old stack is abandoned.
///
/// # Safety
/// `stack_top` must be the 16-byte aligned top of a writable stack that
/// nothing else uses, large enough for `entry`.
pub(crate) unsafe fn call_on_stack(
    stack_top: u64,
    entry: extern "C" fn(u64, u64, u64) -> !,
    args: [u64; 3],
) -> ! {
    // SAFETY: the caller guarantees the stack; `entry` never returns, so
    // nothing of the old frame is used again.
    unsafe {
        asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            top = in(reg) stack_top,
            entry = in(reg) entry,
            in("rdi") args[0], in("rsi") args[1], in("rdx") args[2],
            options(noreturn),
        )
    }
}

/// The boot info the VMM prepared.
///
/// # Safety
/// Call only with the address the entry point received, before anything
/// writes the boot info page.
pub(crate) unsafe fn read_boot_info(addr: u64) -> eremite_interface::BootInfo {
    // SAFETY: the VMM put a `BootInfo` at this identity-mapped, page-aligned
    // address (checked against the layout by the caller) and nothing writes
    // it concurrently during boot.
    unsafe { core::ptr::read_volatile(addr as *const eremite_interface::BootInfo) }
}

/// Write one 64-bit value of the kernel report (which the VMM reads after
/// the run) at `addr`.
/// Take the word at `addr` in the `KernelReport` (which the VMM sets
/// bits of while the guest runs), leaving zero.
pub(crate) fn take_report_word(addr: u64) -> u64 {
    debug_assert!(addr.is_multiple_of(8));
    // SAFETY: callers pass aligned addresses inside the `KernelReport` of
    // the boot info page, RAM the VMM gave us that no Rust reference
    // covers; the VMM changes it only with atomic operations.
    let word = unsafe { core::sync::atomic::AtomicU64::from_ptr(addr as *mut u64) };
    word.swap(0, core::sync::atomic::Ordering::SeqCst)
}

pub(crate) fn write_report_word(addr: u64, value: u64) {
    debug_assert!(addr.is_multiple_of(8));
    // SAFETY: callers pass addresses inside the `KernelReport` of the boot
    // info page, which is RAM the VMM gave us and no Rust reference covers.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}
