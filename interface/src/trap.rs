//! A CPU exception's saved context, and how a debugger reaches it.
//!
//! The CPL0 stub of each exception vector (`kernel/src/arch/x86_64/
//! supervisor.rs`) pushes a [`TrapFrame`] on its IST stack. For the two
//! vectors a debugger owns, #DB (1: a single step finished) and #BP (3: an
//! `int3` ran), the stub first hands the frame's address to the VMM on
//! [`DEBUG_PORT`] (shifted as hypercall requests are). A VMM with a
//! debugger attached keeps the vCPU there until the debugger resumes it,
//! writes the registers back into the frame (a step sets RFLAGS.TF) and
//! sets `vector` to [`RESUMED`]: the stub then returns to the frame's
//! context. Otherwise the frame is left alone and the exception is
//! reported as fatal, as every other one is.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::MAX_CPUS;

/// The port a CPL0 stub writes a [`TrapFrame`]'s address to. It is not
/// in the TSS I/O bitmap: only CPL0 code uses it.
pub const DEBUG_PORT: u16 = crate::hypercall::PORT_BASE + 8;

/// Written into [`TrapFrame::vector`] by the VMM: return to the context.
pub const RESUMED: u64 = 0x100;

/// #DB: a single step (RFLAGS.TF) finished.
pub const VECTOR_DEBUG: u64 = 1;
/// #BP: an `int3` ran (RIP is the byte after it).
pub const VECTOR_BREAKPOINT: u64 = 3;

/// The interrupted context, as a CPL0 exception stub saved it (general
/// registers in the reverse order of their pushes, then the vector, the
/// error code and the CPU's own frame: SDM vol. 3A, 6.14.2).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TrapFrame {
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

/// Threads a debugger can list: at most this many are in [`ThreadTable`].
pub const THREAD_SLOTS: usize = 1024;

/// One thread in the [`ThreadTable`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ThreadSlot {
    /// The thread's id; 0: a free slot.
    pub tid: u64,
    /// Guest address of the word where the scheduler keeps the thread's
    /// stack pointer while it is switched away. At that stack pointer:
    /// MXCSR (low half) and the x87 control word, then R15, R14, R13,
    /// R12, RBX, RBP and the address the switch returns to
    /// (`kernel/src/arch/x86_64/switch.rs`).
    pub saved_rsp_at: u64,
    /// Guest address of the word where the scheduler keeps the thread's
    /// FS base (its TLS) while it is switched away.
    pub fs_base_at: u64,
    /// Guest address of the thread's name: [`THREAD_NAME_BYTES`] bytes,
    /// NUL-padded (Linux's `comm`).
    pub name_at: u64,
}

/// The length of a thread's name at [`ThreadSlot::name_at`], with its NUL.
pub const THREAD_NAME_BYTES: usize = 16;

/// The kernel's list of threads for a debugger, kept while one is
/// attached (`BootInfo::debugger_attached` set when the thread started);
/// the kernel report's `debug_threads` gives its address. Written by the
/// scheduler under its lock; read by the VMM while every vCPU is stopped,
/// so a vCPU stopped in the middle of an update can leave one slot stale.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ThreadTable {
    /// The thread each CPU runs (its current thread while it idles too);
    /// 0 before the CPU has started one.
    pub current: [u64; MAX_CPUS as usize],
    pub slots: [ThreadSlot; THREAD_SLOTS],
}
