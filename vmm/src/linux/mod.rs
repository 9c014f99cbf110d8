//! Unmodified static Linux x86_64 programs (`docs/linux.md`).
//!
//! `eremite run` recognises an ELF file without the `EREMITE` note as a
//! Linux program. It boots the kernel built for that (the CLI carries it,
//! see `cli/build.rs`) with the program loaded beside it
//! ([`program`]), its `syscall` sites rewritten ([`rewrite`]) and the
//! trampoline they call in page 0 ([`trampoline`]); the kernel's Linux
//! ABI layer (`kernel/src/abi/linux`) starts it.

pub(crate) mod program;
pub(crate) mod rewrite;
pub(crate) mod trampoline;

pub use program::ProgramError;

use eremite_interface::LinuxProgram;
use eremite_interface::layout::PAGE_SIZE;

use crate::loader::{self, LoadError, LoadedImage, PageAccess, PageZero};
use crate::memory::{GuestRam, OutOfRange};

/// The kernel's entry for rewritten system calls (`kernel/src/arch`).
const CALL_ENTRY_SYMBOL: &str = "eremite_linux_call_entry";
/// Its entry for `syscall`s left in place (every vCPU's LSTAR).
const TRAP_ENTRY_SYMBOL: &str = "eremite_linux_trap_entry";

/// A Linux program loaded with its kernel.
pub(crate) struct Booted {
    /// The kernel and the program as one image.
    pub(crate) image: LoadedImage,
    /// What the kernel is told of the program.
    pub(crate) program: LinuxProgram,
    /// Where each vCPU's `syscall` goes.
    pub(crate) trap_entries: Vec<u64>,
}

/// Why a Linux program cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    /// This build of eremite carries no Linux-ABI kernel.
    #[error("this eremite was built without its Linux kernel; rebuild it with cargo build")]
    NoKernel,
    /// The kernel eremite carries does not load (a build problem).
    #[error("the Linux kernel eremite carries: {0}")]
    Kernel(#[from] LoadError),
    /// The kernel lacks its system-call entry (a build problem).
    #[error("the Linux kernel eremite carries has no {CALL_ENTRY_SYMBOL} within reach of page 0")]
    NoEntry,
    /// The program cannot be loaded.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// Writing into guest RAM failed (a bounds error).
    #[error(transparent)]
    Memory(#[from] OutOfRange),
}

/// Load `kernel` (the Linux-ABI kernel image) and `program` into `ram`:
/// one image from the kernel's start to the end of the program's pages,
/// with the trampoline in page 0, and what the kernel needs to know of
/// the program.
pub(crate) fn load(
    kernel: &[u8],
    program: &[u8],
    ram: &GuestRam,
    cpus: u32,
) -> Result<Booted, LinuxError> {
    let mut image = loader::load(kernel, ram)?;
    let loaded = program::load(program, ram, image.end)?;
    let entry = loader::symbol(kernel, &image, CALL_ENTRY_SYMBOL).ok_or(LinuxError::NoEntry)?;
    let page = trampoline::page(entry).ok_or(LinuxError::NoEntry)?;
    let trap_entry =
        loader::symbol(kernel, &image, TRAP_ENTRY_SYMBOL).ok_or(LinuxError::NoEntry)?;
    let trap_entries = vec![trap_entry; usize::try_from(cpus).unwrap_or(1)];
    ram.write(0, &page)?;
    let gap = (loaded.info.start - image.end) / PAGE_SIZE;
    image.pages.extend((0..gap).map(|_| PageAccess::Unmapped));
    image.pages.extend(loaded.pages);
    image.end = loaded.end;
    image.page_zero = PageZero::Trampoline;
    Ok(Booted {
        image,
        program: loaded.info,
        trap_entries,
    })
}
