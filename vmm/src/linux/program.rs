//! Loading a Linux x86_64 program next to the Linux-ABI kernel, and a
//! dynamic program's interpreter after it.
//!
//! The program's `PT_LOAD` segments go to their link addresses (`ET_EXEC`,
//! usually from 0x400000) or, for a position-independent one (`ET_DYN`:
//! a static PIE, a dynamic program built as PIE, `ld.so` itself), to the
//! first 2 MiB boundary above what is loaded already; guest RAM is
//! identity-mapped, so that is where they are in guest-physical memory
//! too. Each page gets the rights of its segments (W^X: a page both
//! writable and executable is refused). Nothing is relocated here: a
//! static PIE relocates itself at start-up (musl's `rcrt1`, glibc's
//! `_dl_relocate_static_pie`), and `ld.so` relocates itself and the
//! program; `PT_GNU_RELRO` pages start writable and the program makes
//! them read-only with `mprotect` if it wants to. Executable segments have
//! their `syscall` sites rewritten (`eremite-sites`) before they are
//! copied, and a bitmap of the rewritten sites' return addresses goes in
//! the pages after the program, read-only, for the dispatcher's check.
//!
//! Every offset, size and address comes from the file and is checked
//! before use.

use core::ops::Range;

use eremite_interface::LinuxProgram;
use eremite_interface::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
use goblin::elf::{Elf, header, program_header, sym};

use crate::loader::PageAccess;
use crate::memory::{GuestRam, OutOfRange};

/// Why a Linux program cannot be run. The messages name the file's
/// problem; the caller adds the path.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// Headers that do not parse.
    #[error("malformed ELF file: {0}")]
    Malformed(String),
    /// Not a 64-bit x86 program.
    #[error("it is built for {0}; eremite runs x86_64 programs")]
    WrongMachine(&'static str),
    /// A library the program (or a library it needs) names, not found.
    #[error("it needs {name} (named by {needed_by}), which is not on this host")]
    Library {
        /// The library's name (`DT_NEEDED`).
        name: String,
        /// The object that needs it.
        needed_by: String,
    },
    /// A library or file it needs cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The host path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An interpreter that asks for an interpreter itself.
    #[error("its interpreter {0} is itself dynamically linked")]
    InterpreterNotStatic(String),
    /// The interpreter a dynamic program names cannot be read.
    #[error("cannot read its interpreter {path}: {source}")]
    Interpreter {
        /// The interpreter's path (`PT_INTERP`), on the host.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not an executable.
    #[error("it is not an executable (ELF type {0})")]
    NotExecutable(u16),
    /// An `ET_EXEC` program linked where the kernel is.
    #[error("it is linked at {0:#x}, below {1:#x} where programs may start")]
    TooLow(u64, u64),
    /// More than the guest's RAM below 4 GiB holds.
    #[error(
        "it needs memory up to {end:#x}, but the guest's RAM below 4 GiB ends at {mem_size:#x} (try a larger --memory)"
    )]
    TooLarge { end: u64, mem_size: u64 },
    /// A segment or table points outside the file.
    #[error("{0} lies outside the file")]
    OutOfFile(&'static str),
    /// A page that would be writable and executable.
    #[error(
        "the page at {0:#x} would have to be writable and executable; eremite maps programs W^X"
    )]
    WritableAndExecutable(u64),
    /// Writing into guest RAM failed (a bounds error).
    #[error(transparent)]
    Memory(#[from] OutOfRange),
}

/// A program in guest memory.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// What the kernel is told ([`LinuxProgram`]).
    pub(crate) info: LinuxProgram,
    /// The access of each page from `info.start` to `end`.
    pub(crate) pages: Vec<PageAccess>,
    /// End of everything loaded (the program, then the site bitmap).
    pub(crate) end: u64,
    /// The interpreter it names (`PT_INTERP`), for a dynamic program.
    pub(crate) interpreter: Option<String>,
}

fn page_down(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

fn page_up(addr: u64) -> Option<u64> {
    addr.checked_next_multiple_of(PAGE_SIZE)
}

/// The ELF machine name for an error message.
fn machine_name(machine: u16) -> &'static str {
    match machine {
        header::EM_386 => "32-bit x86",
        header::EM_AARCH64 => "AArch64",
        header::EM_ARM => "32-bit ARM",
        header::EM_RISCV => "RISC-V",
        _ => "another architecture",
    }
}

/// What becomes of a program's `syscall` sites as it is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SiteRewrite {
    /// `call *%rax` into the trampoline in page 0 (zpoline).
    ThroughPageZero,
    /// Calls to stubs in a page after the program, which jump to `entry`
    /// (a program whose page 0 must stay unmapped: Go).
    ToStubs { entry: u64 },
    /// None: every site traps.
    None,
}

/// Check `bytes` (a Linux program, or a dynamic program's interpreter)
/// and load it into `ram` at or above `lowest` (the end of the kernel
/// image, or of the program before the interpreter), its sites rewritten
/// as `sites` says.
pub(crate) fn load(
    bytes: &[u8],
    ram: &GuestRam,
    lowest: u64,
    sites: SiteRewrite,
) -> Result<Loaded, ProgramError> {
    let elf = Elf::parse(bytes).map_err(|e| ProgramError::Malformed(e.to_string()))?;
    if !elf.is_64 {
        return Err(ProgramError::WrongMachine(
            if elf.header.e_machine == header::EM_386 {
                "32-bit x86"
            } else {
                "a 32-bit machine"
            },
        ));
    }
    if elf.header.e_machine != header::EM_X86_64 || !elf.little_endian {
        return Err(ProgramError::WrongMachine(machine_name(
            elf.header.e_machine,
        )));
    }
    let is_pie = match elf.header.e_type {
        header::ET_EXEC => false,
        header::ET_DYN => true,
        other => return Err(ProgramError::NotExecutable(other)),
    };
    let segments: Vec<&program_header::ProgramHeader> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
        .collect();
    let low = segments
        .iter()
        .map(|p| page_down(p.p_vaddr))
        .min()
        .ok_or(ProgramError::Malformed("no loadable segment".into()))?;
    let mut high = 0u64;
    for p in &segments {
        if p.p_filesz > p.p_memsz {
            return Err(ProgramError::Malformed(
                "a segment's file size exceeds its memory size".into(),
            ));
        }
        let end = p
            .p_vaddr
            .checked_add(p.p_memsz)
            .ok_or(ProgramError::OutOfFile("a segment"))?;
        high = high.max(end);
    }
    let bias = if is_pie {
        lowest
            .checked_next_multiple_of(LARGE_PAGE_SIZE)
            .and_then(|base| base.checked_sub(low))
            .ok_or(ProgramError::Malformed("no room for the program".into()))?
    } else {
        0
    };
    let start = low.wrapping_add(bias);
    if start < lowest {
        return Err(ProgramError::TooLow(low, lowest));
    }
    let program_end = high
        .checked_add(bias)
        .and_then(page_up)
        .ok_or(ProgramError::OutOfFile("the last segment"))?;

    let functions = function_ranges(&elf, bias);
    // The span of the executable segments (none yet).
    let mut text: Option<Range<u64>> = None;
    // Return addresses of the rewritten sites, and how many were left.
    let mut return_addresses = Vec::new();
    let mut left = 0usize;
    // Code that must keep page 0 unmapped (Go): its sites become calls to
    // stubs in the page after the program (`eremite_sites::call_stubs`).
    let stubs_at = program_end;
    let mut stubs_page: Option<Vec<u8>> = None;
    let mut ranges = Vec::new();
    for p in &segments {
        let file_end = p.p_offset.checked_add(p.p_filesz);
        let data = file_end
            .and_then(|end| {
                bytes.get(usize::try_from(p.p_offset).ok()?..usize::try_from(end).ok()?)
            })
            .ok_or(ProgramError::OutOfFile("a segment's file data"))?;
        let addr = p.p_vaddr.wrapping_add(bias);
        let range = addr..addr + p.p_memsz;
        if p.p_flags & program_header::PF_X != 0 {
            let mut code = data.to_vec();
            match sites {
                SiteRewrite::ThroughPageZero => {
                    let found = eremite_sites::rewrite(&mut code, addr, &functions);
                    return_addresses.extend(found.return_addresses());
                    left += found.left.len();
                }
                // One page of stubs, for the first executable segment (a
                // Go program has one); any other keeps its `syscall`s.
                SiteRewrite::ToStubs { entry } if stubs_page.is_none() => {
                    let room =
                        usize::try_from(PAGE_SIZE / eremite_sites::STUB_BYTES - 1).unwrap_or(0);
                    let stubs = eremite_sites::call_stubs(
                        &mut code, addr, &functions, stubs_at, entry, room,
                    );
                    stubs_page = Some(stubs.code);
                    return_addresses.extend(stubs.return_addresses);
                    left += stubs.left.len();
                }
                SiteRewrite::ToStubs { .. } | SiteRewrite::None => {}
            }
            text = Some(match text {
                Some(t) => t.start.min(addr)..t.end.max(addr + p.p_filesz),
                None => addr..addr + p.p_filesz,
            });
            ram.write(addr, &code)?;
        } else {
            ram.write(addr, data)?;
        }
        ranges.push((range, p.p_flags));
    }
    let text = text.unwrap_or(start..start);

    // The stubs' page, executable and read-only, after the program.
    let program_end = match stubs_page {
        Some(page) => {
            ram.write(stubs_at, &page)?;
            ranges.push((
                stubs_at..stubs_at + PAGE_SIZE,
                program_header::PF_R | program_header::PF_X,
            ));
            stubs_at + PAGE_SIZE
        }
        None => program_end,
    };
    // One bit per byte of code: the return address of a rewritten site.
    let bitmap_addr = program_end;
    let bitmap_len = (text.end - text.start).div_ceil(8);
    let end = bitmap_addr
        .checked_add(bitmap_len)
        .and_then(page_up)
        .ok_or(ProgramError::OutOfFile("the site bitmap"))?;
    if end > ram.low_end() {
        return Err(ProgramError::TooLarge {
            end,
            mem_size: ram.low_end(),
        });
    }
    let bitmap = eremite_sites::bitmap(&text, &return_addresses);
    ram.write(bitmap_addr, &bitmap)?;

    let mut pages = page_access(start, program_end, &ranges)?;
    pages.extend(
        (program_end..end)
            .step_by(PAGE_SIZE as usize)
            .map(|_| PageAccess::ReadOnly),
    );
    let phdr = program_headers(&elf, bias).ok_or(ProgramError::OutOfFile("the program headers"))?;
    let entry = elf.entry.wrapping_add(bias);
    if !ranges
        .iter()
        .any(|(r, flags)| r.contains(&entry) && flags & program_header::PF_X != 0)
    {
        return Err(ProgramError::OutOfFile(
            "the entry point (no executable segment holds it)",
        ));
    }
    Ok(Loaded {
        info: LinuxProgram {
            entry,
            phdr,
            phnum: u64::from(elf.header.e_phnum),
            phent: u64::from(elf.header.e_phentsize),
            bias,
            start,
            end: program_end,
            text_start: text.start,
            text_end: text.end,
            sites_bitmap: bitmap_addr,
            sites_rewritten: return_addresses.len() as u64,
            sites_left: left as u64,
            ..LinuxProgram::default()
        },
        pages,
        end,
        interpreter: elf.interpreter.map(str::to_owned),
    })
}

/// Where the program headers are in guest memory (`AT_PHDR`): `PT_PHDR`,
/// or the loaded bytes of the file offset `e_phoff`.
fn program_headers(elf: &Elf<'_>, bias: u64) -> Option<u64> {
    if let Some(p) = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == program_header::PT_PHDR)
    {
        return Some(p.p_vaddr.wrapping_add(bias));
    }
    let offset = elf.header.e_phoff;
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
        .find(|p| offset >= p.p_offset && offset - p.p_offset < p.p_filesz)
        .map(|p| p.p_vaddr + (offset - p.p_offset) + bias)
}

/// Whether the ELF file is a Go program (the Go linker's build-info
/// section or build-ID note). Go relies on a fault for every nil pointer
/// read (its nil checks are implicit for small offsets), which page 0
/// must then give: see `super::load`.
pub(crate) fn is_go(bytes: &[u8]) -> bool {
    Elf::parse(bytes).is_ok_and(|elf| {
        elf.section_headers.iter().any(|section| {
            matches!(
                elf.shdr_strtab.get_at(section.sh_name),
                Some(".go.buildinfo" | ".note.go.buildid")
            )
        })
    })
}

/// The program's functions, in guest addresses, sorted: its `STT_FUNC`
/// symbols, from `.symtab`, or `.dynsym` when it is stripped (a shared
/// object such as `ld.so` keeps its exported ones there).
fn function_ranges(elf: &Elf<'_>, bias: u64) -> Vec<Range<u64>> {
    let table = if elf.syms.is_empty() {
        &elf.dynsyms
    } else {
        &elf.syms
    };
    eremite_sites::functions(
        table
            .iter()
            .filter(|s| s.st_type() == sym::STT_FUNC && s.st_value != 0)
            .filter_map(|s| Some((s.st_value.checked_add(bias)?, s.st_size)))
            .collect(),
    )
}

/// The access of every page in `[start, end)`: the union of the segments
/// that touch it, never writable and executable together.
fn page_access(
    start: u64,
    end: u64,
    segments: &[(Range<u64>, u32)],
) -> Result<Vec<PageAccess>, ProgramError> {
    (start..end)
        .step_by(PAGE_SIZE as usize)
        .map(|page| {
            let touching = segments
                .iter()
                .filter(|(r, _)| r.start < page + PAGE_SIZE && r.end > page);
            let (mut is_present, mut is_writable, mut is_executable) = (false, false, false);
            for (_, flags) in touching {
                is_present = true;
                is_writable |= flags & program_header::PF_W != 0;
                is_executable |= flags & program_header::PF_X != 0;
            }
            Ok(match (is_present, is_writable, is_executable) {
                (false, ..) => PageAccess::Unmapped,
                (true, true, true) => return Err(ProgramError::WritableAndExecutable(page)),
                (true, true, false) => PageAccess::ReadWrite,
                (true, false, true) => PageAccess::ReadExecute,
                (true, false, false) => PageAccess::ReadOnly,
            })
        })
        .collect()
}
