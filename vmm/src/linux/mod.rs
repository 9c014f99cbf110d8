//! Unmodified Linux x86_64 programs, static and dynamic (`docs/linux.md`).
//!
//! `eremite run` recognises an ELF file without the `EREMITE` note as a
//! Linux program. It boots the kernel built for that (the CLI carries it,
//! see `cli/build.rs`) with the program loaded beside it
//! ([`program`]), its `syscall` sites rewritten (`eremite-sites`) and the
//! trampoline they call in page 0 ([`trampoline`]); the kernel's Linux
//! ABI layer (`kernel/src/abi/linux`) starts it.

pub(crate) mod closure;
pub(crate) mod program;
pub(crate) mod trampoline;

pub use program::ProgramError;

use eremite_interface::LinuxProgram;
use eremite_interface::layout::PAGE_SIZE;

use std::path::Path;

use crate::initrd::GuestFile;
use crate::loader::{self, LoadError, LoadedImage, PageAccess, PageZero};
use crate::memory::{GuestRam, OutOfRange};
use program::SiteRewrite;

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

/// The host files a Linux program needs in the guest: none for a static
/// one, its libraries and the files glibc reads for a dynamic one
/// ([`closure`]).
pub(crate) fn guest_files(path: &Path, program: &[u8]) -> Result<Vec<GuestFile>, LinuxError> {
    match goblin::elf::Elf::parse(program) {
        Ok(elf) if elf.interpreter.is_some() => Ok(closure::needed(path, program)?),
        _ => Ok(Vec::new()),
    }
}

/// Load `kernel` (the Linux-ABI kernel image) and `program` into `ram`,
/// with its interpreter if it is dynamic: one image from the kernel's
/// start to the end of the last pages loaded, with the trampoline in page
/// 0, and what the kernel needs to know of the program.
pub(crate) fn load(
    kernel: &[u8],
    program: &[u8],
    ram: &GuestRam,
    cpus: u32,
) -> Result<Booted, LinuxError> {
    let mut image = loader::load(kernel, ram)?;
    let entry = loader::symbol(kernel, &image, CALL_ENTRY_SYMBOL).ok_or(LinuxError::NoEntry)?;
    // A Go program's nil checks need a read of page 0 to fault, which the
    // trampoline there would not: its sites become calls to stubs, and
    // what its interpreter (a cgo program's) maps takes the trap path.
    let is_go = program::is_go(program);
    let (sites, interpreter_sites) = if is_go {
        (SiteRewrite::ToStubs { entry }, SiteRewrite::None)
    } else {
        (SiteRewrite::ThroughPageZero, SiteRewrite::ThroughPageZero)
    };
    let mut loaded = program::load(program, ram, image.end, sites)?;
    if let Some(path) = loaded.interpreter.take() {
        load_interpreter(&mut loaded, &path, ram, interpreter_sites)?;
    }
    let trap_entry =
        loader::symbol(kernel, &image, TRAP_ENTRY_SYMBOL).ok_or(LinuxError::NoEntry)?;
    let trap_entries = vec![trap_entry; usize::try_from(cpus).unwrap_or(1)];
    if !is_go {
        let page = trampoline::page(entry).ok_or(LinuxError::NoEntry)?;
        ram.write(0, &page)?;
        image.page_zero = PageZero::Trampoline;
        loaded.info.has_trampoline = 1;
    }
    let gap = (loaded.info.start - image.end) / PAGE_SIZE;
    image.pages.extend((0..gap).map(|_| PageAccess::Unmapped));
    image.pages.extend(loaded.pages);
    image.end = loaded.end;
    Ok(Booted {
        image,
        program: loaded.info,
        trap_entries,
    })
}

/// Load a dynamic program's interpreter (`path` on the host, as the
/// program names it) after `program`, which then starts there, and
/// describe it in the program's [`LinuxProgram`].
fn load_interpreter(
    program: &mut program::Loaded,
    path: &str,
    ram: &GuestRam,
    sites: SiteRewrite,
) -> Result<(), ProgramError> {
    let bytes = std::fs::read(path).map_err(|source| ProgramError::Interpreter {
        path: path.to_owned(),
        source,
    })?;
    let interp = program::load(&bytes, ram, program.end, sites)?;
    if interp.interpreter.is_some() {
        return Err(ProgramError::InterpreterNotStatic(path.to_owned()));
    }
    let gap = (interp.info.start - program.end) / PAGE_SIZE;
    program.pages.extend((0..gap).map(|_| PageAccess::Unmapped));
    program.pages.extend(interp.pages);
    program.end = interp.end;
    let info = &mut program.info;
    info.interp_base = interp.info.start;
    info.interp_entry = interp.info.entry;
    info.interp_text_start = interp.info.text_start;
    info.interp_text_end = interp.info.text_end;
    info.interp_sites_bitmap = interp.info.sites_bitmap;
    info.sites_rewritten += interp.info.sites_rewritten;
    info.sites_left += interp.info.sites_left;
    Ok(())
}
