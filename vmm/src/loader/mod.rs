//! Loads an eremite image (an ELF file) into guest RAM.
//!
//! An eremite image is what `cargo build --target x86_64-unknown-hermit`
//! makes of an application that links the `eremite` crate: a static-PIE
//! ELF64 for x86_64 (`ET_DYN`, no interpreter) carrying the `EREMITE` note
//! with the interface version it was built against. The loader:
//! 1. parses and checks the headers (class, machine, type, note, version);
//! 2. places the lowest `PT_LOAD` segment at [`layout::IMAGE_BASE`], the
//!    others at the same offsets from it (one load bias), copying each
//!    segment's file bytes (fresh guest RAM is zero, which is the `.bss`);
//! 3. applies the dynamic relocations, which in a static PIE are all
//!    `R_X86_64_RELATIVE` (anything else is refused, never ignored);
//! 4. reports the entry point, the image's extent, its TLS template and
//!    the access each of its pages gets ([`PageAccess`]): W^X, from the
//!    `PT_LOAD` segments' flags, with the `PT_GNU_RELRO` range read-only
//!    now that it is relocated. A page that would have to be writable and
//!    executable (a segment with both flags, or two segments sharing a
//!    page) is refused.
//!
//! Every offset, size and address comes from the file and is checked
//! before use: a truncated or hostile file gets an error, not a panic.

#[cfg(test)]
pub(crate) mod test_image;

use eremite_interface::layout::{self, PAGE_SIZE};
use eremite_interface::note::{ImageNote, NOTE_NAME, NOTE_TYPE};
use eremite_interface::{INTERFACE_VERSION, TlsTemplate};
use goblin::elf::{Elf, header, program_header, reloc};
use zerocopy::FromBytes;

use crate::memory::{GuestRam, OutOfRange};

/// Why an image cannot be loaded. The messages name the file's problem;
/// the caller adds the path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not an ELF file at all.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF file whose headers do not parse.
    #[error("malformed ELF file: {0}")]
    Malformed(String),
    /// A valid ELF file that is not an eremite image.
    #[error("not an eremite image: {0}")]
    NotEremite(&'static str),
    /// An eremite image built against another interface version.
    #[error(
        "image was built for eremite interface version {image}, this VMM speaks version {vmm}; rebuild the image"
    )]
    VersionMismatch {
        /// Version in the image's note.
        image: u32,
        /// Version this VMM implements.
        vmm: u32,
    },
    /// A relocation the loader does not implement.
    #[error("unsupported relocation type {r_type} at offset {offset:#x}")]
    UnsupportedRelocation {
        /// `r_type` of the relocation.
        r_type: u32,
        /// `r_offset` of the relocation.
        offset: u64,
    },
    /// The image does not fit into guest memory as configured.
    #[error(
        "image needs memory up to {end:#x} but the guest has RAM only up to {mem_size:#x} there"
    )]
    TooLarge {
        /// End of the loaded image (guest-physical, exclusive).
        end: u64,
        /// End of the guest RAM below 4 GiB.
        mem_size: u64,
    },
    /// A segment or relocation points outside the image or the file.
    #[error("{0} lies outside the image")]
    OutOfImage(&'static str),
    /// A page the image needs both writable and executable.
    #[error(
        "the page at image offset {offset:#x} would have to be writable and executable (a segment with both permissions, or a writable and an executable segment sharing a page); eremite maps images W^X"
    )]
    WritableAndExecutable {
        /// Offset of the page from the image's start.
        offset: u64,
    },
    /// Writing into guest RAM failed (a bounds error).
    #[error(transparent)]
    Memory(#[from] OutOfRange),
}

/// How a page of the image may be accessed (x86 has no execute-only or
/// write-only pages: every present page is readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAccess {
    /// No segment covers the page: not mapped.
    Unmapped,
    /// Read-only data (and the `PT_GNU_RELRO` pages): read-only, no execute.
    ReadOnly,
    /// Data and `.bss`: writable, no execute.
    ReadWrite,
    /// Code: read-only and executable.
    ReadExecute,
}

/// Where the image ended up in guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Guest address of the first instruction (`_start`).
    pub entry: u64,
    /// Guest address of the image's first byte ([`layout::IMAGE_BASE`]).
    pub start: u64,
    /// End of the image's last segment, rounded up to a page.
    pub end: u64,
    /// The TLS template (`PT_TLS`), zero when the image has none.
    pub tls: TlsTemplate,
    /// The access of each 4 KiB page from `start` to `end`, in order.
    pub pages: Vec<PageAccess>,
    /// What page 0 is.
    pub page_zero: PageZero,
}

/// Page 0 of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageZero {
    /// Not mapped: a null pointer faults.
    #[default]
    Guard,
    /// The system-call trampoline of a Linux program (read and execute;
    /// see `linux::trampoline`): a null read reads it, a null write or a
    /// call through a null pointer (caught by the dispatcher) still fault.
    Trampoline,
}

/// `EI_OSABI` of what rustc builds for `x86_64-unknown-hermit`
/// (`ELFOSABI_STANDALONE`, as LLVM marks HermitCore objects).
const OSABI_HERMIT: u8 = 0xFF;

/// Whether `bytes` are an ELF file without the `EREMITE` note that was
/// not built for the hermit target either: a program built for Linux,
/// not an eremite image (a hermit program without the note is an eremite
/// image that forgot to link eremite: [`check_note`] says so).
/// Whether the file at `path` is a Linux program (not an eremite image).
pub fn is_linux_program(path: &std::path::Path) -> bool {
    crate::memory::ImageFile::open(path).is_ok_and(|file| is_foreign_elf(file.bytes()))
}

/// Whether the image at `path` is a libtest harness (what `cargo test`
/// builds: it has std's test runner, `test::test_main_static`, among its
/// symbols). Asked on every `eremite run`, so it reads only the section
/// headers and the symbol names, not the whole ELF file (a full parse of
/// a 10 MB image costs about 0.3 ms).
pub fn is_test_harness(path: &std::path::Path) -> bool {
    crate::memory::ImageFile::open(path)
        .is_ok_and(|file| has_symbol_text(file.bytes(), b"test_main_static"))
}

/// Whether the symbol names (`.strtab`) of the ELF file `bytes` contain
/// `text`.
fn has_symbol_text(bytes: &[u8], text: &[u8]) -> bool {
    use goblin::container::{Container, Ctx, Endian};
    use goblin::elf::{Elf, SectionHeader};
    let Ok(header) = Elf::parse_header(bytes) else {
        return false;
    };
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let Ok(sections) = SectionHeader::parse(
        bytes,
        usize::try_from(header.e_shoff).unwrap_or(usize::MAX),
        usize::from(header.e_shnum),
        ctx,
    ) else {
        return false;
    };
    let contents = |section: &SectionHeader| {
        let start = usize::try_from(section.sh_offset).ok()?;
        let end = start.checked_add(usize::try_from(section.sh_size).ok()?)?;
        bytes.get(start..end)
    };
    let Some(names) = sections
        .get(usize::from(header.e_shstrndx))
        .and_then(contents)
    else {
        return false;
    };
    let name_of = |section: &SectionHeader| {
        let rest = names.get(section.sh_name..)?;
        rest.split(|&b| b == 0).next()
    };
    sections
        .iter()
        .filter(|section| name_of(section) == Some(b".strtab".as_slice()))
        .filter_map(contents)
        .any(|strtab| memchr::memmem::find(strtab, text).is_some())
}

pub(crate) fn is_foreign_elf(bytes: &[u8]) -> bool {
    // The header alone settles it for a hermit image (asked on every run:
    // a full parse of a 10 MB image costs about 0.2 ms).
    match Elf::parse_header(bytes) {
        Ok(header) if header.e_ident[header::EI_OSABI] != OSABI_HERMIT => {}
        _ => return false,
    }
    let Ok(elf) = Elf::parse(bytes) else {
        return false;
    };
    let name = core::str::from_utf8(NOTE_NAME)
        .unwrap_or_default()
        .trim_end_matches('\0');
    let has_note = elf.iter_note_headers(bytes).is_some_and(|notes| {
        notes
            .flatten()
            .any(|n| n.n_type == NOTE_TYPE && n.name.trim_end_matches('\0') == name)
    });
    !has_note
}

/// The guest address of the image's symbol `name`, once it is loaded as
/// `image` describes.
pub(crate) fn symbol(bytes: &[u8], image: &LoadedImage, name: &str) -> Option<u64> {
    let elf = Elf::parse(bytes).ok()?;
    let bias = load_bias(&elf, image)?;
    elf.syms
        .iter()
        .find(|s| elf.strtab.get_at(s.st_name) == Some(name))
        .map(|s| s.st_value.wrapping_add(bias))
}

/// What the image's addresses moved by when it was loaded as `image`
/// describes (its lowest segment at `image.start`).
pub(crate) fn bias(bytes: &[u8], image: &LoadedImage) -> Option<u64> {
    load_bias(&Elf::parse(bytes).ok()?, image)
}

fn load_bias(elf: &Elf<'_>, image: &LoadedImage) -> Option<u64> {
    let lowest = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
        .map(|p| p.p_vaddr & !(PAGE_SIZE - 1))
        .min()?;
    Some(image.start.wrapping_sub(lowest))
}

/// Check `bytes` and load them into `ram`.
pub(crate) fn load(bytes: &[u8], ram: &GuestRam) -> Result<LoadedImage, LoadError> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(LoadError::NotElf);
    }
    let elf = Elf::parse(bytes).map_err(|e| LoadError::Malformed(e.to_string()))?;
    check_header(&elf)?;
    check_note(&elf, bytes)?;

    let segments: Vec<&program_header::ProgramHeader> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
        .collect();
    let lowest = segments
        .iter()
        .map(|p| p.p_vaddr & !(PAGE_SIZE - 1))
        .min()
        .ok_or(LoadError::NotEremite("it has no loadable segment"))?;
    let mut highest = 0u64;
    for p in &segments {
        let end = p
            .p_vaddr
            .checked_add(p.p_memsz)
            .ok_or(LoadError::OutOfImage("a segment"))?;
        highest = highest.max(end);
    }
    // Guest address = file vaddr - lowest + IMAGE_BASE.
    let span = highest - lowest;
    let image_end = layout::IMAGE_BASE
        .checked_add(span)
        .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
        .ok_or(LoadError::OutOfImage("the last segment"))?;
    if image_end > ram.low_end() {
        return Err(LoadError::TooLarge {
            end: image_end,
            mem_size: ram.low_end(),
        });
    }
    let bias = layout::IMAGE_BASE.wrapping_sub(lowest);
    let image = Image {
        start: layout::IMAGE_BASE,
        end: image_end,
        bias,
    };

    for p in &segments {
        if p.p_filesz > p.p_memsz {
            return Err(LoadError::Malformed(
                "a segment's file size exceeds its memory size".into(),
            ));
        }
        let file_end = p.p_offset.checked_add(p.p_filesz);
        let data = file_end
            .and_then(|end| {
                bytes.get(usize::try_from(p.p_offset).ok()?..usize::try_from(end).ok()?)
            })
            .ok_or(LoadError::OutOfImage("a segment's file data"))?;
        ram.write(image.guest(p.p_vaddr, p.p_filesz, "a segment")?, data)?;
    }

    apply_relocations(&elf, &image, ram)?;

    let entry = image.guest(elf.entry, 1, "the entry point")?;
    let is_executable = segments.iter().any(|p| {
        p.p_flags & program_header::PF_X != 0
            && elf.entry >= p.p_vaddr
            && elf.entry - p.p_vaddr < p.p_memsz
    });
    if !is_executable {
        return Err(LoadError::OutOfImage(
            "the entry point (no executable segment holds it)",
        ));
    }

    let tls = match elf
        .program_headers
        .iter()
        .find(|p| p.p_type == program_header::PT_TLS)
    {
        None => TlsTemplate::default(),
        Some(p) => {
            if p.p_filesz > p.p_memsz || (p.p_align > 1 && !p.p_align.is_power_of_two()) {
                return Err(LoadError::Malformed("bad PT_TLS segment".into()));
            }
            TlsTemplate {
                addr: image.guest(p.p_vaddr, p.p_filesz, "the TLS template")?,
                file_size: p.p_filesz,
                mem_size: p.p_memsz,
                align: p.p_align.max(1),
            }
        }
    };
    let relro = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == program_header::PT_GNU_RELRO)
        .map(|p| {
            let start = image.guest(p.p_vaddr, p.p_memsz, "the PT_GNU_RELRO segment")?;
            Ok::<_, LoadError>(start..start + p.p_memsz)
        })
        .transpose()?;
    let ranges: Vec<SegmentRange> = segments
        .iter()
        .map(|p| {
            let start = image.guest(p.p_vaddr, p.p_memsz, "a segment")?;
            Ok(SegmentRange {
                range: start..start + p.p_memsz,
                flags: p.p_flags,
            })
        })
        .collect::<Result<_, LoadError>>()?;
    let pages = page_access(&image, &ranges, relro)?;
    Ok(LoadedImage {
        entry,
        start: image.start,
        end: image.end,
        tls,
        pages,
        page_zero: PageZero::Guard,
    })
}

/// A `PT_LOAD` segment in guest addresses, with its `p_flags`.
struct SegmentRange {
    range: core::ops::Range<u64>,
    flags: u32,
}

/// The access of every page of the image: the union of the segments that
/// touch it, writable only where a writable segment's bytes on the page
/// lie outside `relro`; never writable and executable together.
fn page_access(
    image: &Image,
    segments: &[SegmentRange],
    relro: Option<core::ops::Range<u64>>,
) -> Result<Vec<PageAccess>, LoadError> {
    let relro = relro.unwrap_or(0..0);
    let mut pages = Vec::new();
    for page in (image.start..image.end).step_by(PAGE_SIZE as usize) {
        let page_end = page + PAGE_SIZE;
        let (mut is_present, mut is_writable, mut is_executable) = (false, false, false);
        for segment in segments {
            let start = segment.range.start.max(page);
            let end = segment.range.end.min(page_end);
            if start >= end {
                continue;
            }
            is_present = true;
            is_executable |= segment.flags & program_header::PF_X != 0;
            if segment.flags & program_header::PF_W != 0 {
                // Bytes of this segment on the page that RELRO leaves
                // writable: before its start or after its end.
                is_writable |= start < end.min(relro.start) || start.max(relro.end) < end;
            }
        }
        pages.push(match (is_present, is_writable, is_executable) {
            (false, ..) => PageAccess::Unmapped,
            (true, true, true) => {
                return Err(LoadError::WritableAndExecutable {
                    offset: page - image.start,
                });
            }
            (true, true, false) => PageAccess::ReadWrite,
            (true, false, true) => PageAccess::ReadExecute,
            (true, false, false) => PageAccess::ReadOnly,
        });
    }
    Ok(pages)
}

fn check_header(elf: &Elf<'_>) -> Result<(), LoadError> {
    if !elf.is_64 || !elf.little_endian {
        return Err(LoadError::NotEremite(
            "it is not a 64-bit little-endian ELF file",
        ));
    }
    if elf.header.e_machine != header::EM_X86_64 {
        return Err(LoadError::NotEremite("it is not built for x86_64"));
    }
    if elf.interpreter.is_some() {
        return Err(LoadError::NotEremite(
            "it is dynamically linked (it has an interpreter)",
        ));
    }
    if elf.header.e_type != header::ET_DYN {
        return Err(LoadError::NotEremite(
            "it is not a static position-independent executable",
        ));
    }
    Ok(())
}

fn check_note(elf: &Elf<'_>, bytes: &[u8]) -> Result<(), LoadError> {
    let missing = LoadError::NotEremite(
        "built for x86_64-unknown-hermit without linking eremite (its EREMITE note is missing): \
         add `use eremite as _;` to the program",
    );
    let Some(notes) = elf.iter_note_headers(bytes) else {
        return Err(missing);
    };
    let name = core::str::from_utf8(NOTE_NAME)
        .unwrap_or_default()
        .trim_end_matches('\0');
    for note in notes {
        let Ok(note) = note else { continue };
        if note.n_type != NOTE_TYPE || note.name.trim_end_matches('\0') != name {
            continue;
        }
        let Ok((image_note, _)) = ImageNote::read_from_prefix(note.desc) else {
            return Err(LoadError::Malformed("the EREMITE note is too short".into()));
        };
        if image_note.version != INTERFACE_VERSION {
            return Err(LoadError::VersionMismatch {
                image: image_note.version,
                vmm: INTERFACE_VERSION,
            });
        }
        return Ok(());
    }
    Err(missing)
}

/// The image's placement: file virtual addresses plus `bias`.
struct Image {
    start: u64,
    end: u64,
    bias: u64,
}

impl Image {
    /// Guest address of the file's `vaddr`, checking that `len` bytes from
    /// there stay inside the image.
    fn guest(&self, vaddr: u64, len: u64, what: &'static str) -> Result<u64, LoadError> {
        let addr = vaddr.wrapping_add(self.bias);
        match addr.checked_add(len) {
            Some(end) if addr >= self.start && end <= self.end => Ok(addr),
            _ => Err(LoadError::OutOfImage(what)),
        }
    }
}

/// Apply `.rela.dyn` (and any PLT relocations): only `R_X86_64_RELATIVE`
/// (and `R_X86_64_NONE`) occur in a static PIE.
fn apply_relocations(elf: &Elf<'_>, image: &Image, ram: &GuestRam) -> Result<(), LoadError> {
    if !elf.dynrels.is_empty() {
        return Err(LoadError::Malformed(
            "REL relocations (without addend) on x86_64".into(),
        ));
    }
    for rela in elf.dynrelas.iter().chain(elf.pltrelocs.iter()) {
        match rela.r_type {
            reloc::R_X86_64_NONE => {}
            reloc::R_X86_64_RELATIVE => {
                let target = image.guest(rela.r_offset, 8, "a relocation target")?;
                let addend = rela.r_addend.unwrap_or(0);
                let value = image.bias.wrapping_add_signed(addend);
                ram.write(target, &value.to_le_bytes())?;
            }
            r_type => {
                return Err(LoadError::UnsupportedRelocation {
                    r_type,
                    offset: rela.r_offset,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::test_image::TestImage;
    use super::*;

    #[test]
    fn a_test_harness_is_known_by_its_symbol_names() {
        // This very test binary is a libtest harness.
        let exe = std::env::current_exe().unwrap();
        assert!(is_test_harness(&exe));
        let bytes = std::fs::read(&exe).unwrap();
        assert!(!has_symbol_text(&bytes, b"no such symbol anywhere 8d1f0c"));
        assert!(!has_symbol_text(b"not an ELF file", b"test_main_static"));
    }

    fn ram() -> GuestRam {
        GuestRam::new(8 << 20).unwrap()
    }

    #[test]
    fn loads_segments_at_the_image_base_and_relocates() {
        let image = TestImage::new(&[0x90, 0xf4]);
        let ram = ram();
        let loaded = load(&image.bytes(), &ram).unwrap();
        assert_eq!(loaded.start, layout::IMAGE_BASE);
        assert_eq!(loaded.entry, layout::IMAGE_BASE + TestImage::CODE_OFFSET);
        assert_eq!(loaded.end % PAGE_SIZE, 0);
        let mut code = [0u8; 2];
        ram.read(loaded.entry, &mut code).unwrap();
        assert_eq!(code, [0x90, 0xf4]);
        // The relocated pointer now holds the loaded address of the code.
        let slot: u64 = ram
            .read_obj(layout::IMAGE_BASE + TestImage::SLOT_OFFSET)
            .unwrap();
        assert_eq!(slot, loaded.entry);
        assert_eq!(loaded.tls.mem_size, 16);
        assert_eq!(loaded.tls.file_size, 8);
    }

    #[test]
    fn refuses_what_is_not_an_eremite_image() {
        let ram = ram();
        assert!(matches!(
            load(b"#!/bin/sh\necho hi\n", &ram),
            Err(LoadError::NotElf)
        ));
        assert!(matches!(
            load(b"\x7fELF", &ram),
            Err(LoadError::Malformed(_))
        ));
        let mut no_note = TestImage::new(&[0xf4]);
        no_note.note_name = *b"NOTEREM\0";
        assert!(matches!(
            load(&no_note.bytes(), &ram),
            Err(LoadError::NotEremite(_))
        ));
        let mut executable = TestImage::new(&[0xf4]);
        executable.e_type = header::ET_EXEC;
        assert!(matches!(
            load(&executable.bytes(), &ram),
            Err(LoadError::NotEremite(_))
        ));
        let mut arm = TestImage::new(&[0xf4]);
        arm.machine = header::EM_AARCH64;
        assert!(matches!(
            load(&arm.bytes(), &ram),
            Err(LoadError::NotEremite(_))
        ));
    }

    #[test]
    fn refuses_another_interface_version() {
        let mut image = TestImage::new(&[0xf4]);
        image.version = INTERFACE_VERSION + 1;
        let err = load(&image.bytes(), &ram()).unwrap_err();
        assert!(matches!(err, LoadError::VersionMismatch { .. }), "{err}");
    }

    #[test]
    fn refuses_unknown_and_wild_relocations() {
        let mut glob_dat = TestImage::new(&[0xf4]);
        glob_dat.reloc_type = reloc::R_X86_64_GLOB_DAT;
        let err = load(&glob_dat.bytes(), &ram()).unwrap_err();
        assert!(
            matches!(err, LoadError::UnsupportedRelocation { r_type: 6, .. }),
            "{err}"
        );
        let mut wild = TestImage::new(&[0xf4]);
        wild.reloc_offset = 0x7fff_ffff_0000;
        assert!(matches!(
            load(&wild.bytes(), &ram()),
            Err(LoadError::OutOfImage(_))
        ));
    }

    #[test]
    fn the_test_image_is_read_only_and_executable_and_rwx_is_refused() {
        let loaded = load(&TestImage::new(&[0xf4]).bytes(), &ram()).unwrap();
        assert_eq!(
            loaded.pages.len() as u64,
            (loaded.end - loaded.start) / PAGE_SIZE
        );
        assert!(loaded.pages.iter().all(|&p| p == PageAccess::ReadExecute));
        let mut rwx = TestImage::new(&[0xf4]);
        rwx.load_flags |= program_header::PF_W;
        assert!(matches!(
            load(&rwx.bytes(), &ram()),
            Err(LoadError::WritableAndExecutable { offset: 0 })
        ));
    }

    fn segment(start: u64, end: u64, flags: u32) -> SegmentRange {
        SegmentRange {
            range: layout::IMAGE_BASE + start..layout::IMAGE_BASE + end,
            flags,
        }
    }

    fn image(pages: u64) -> Image {
        Image {
            start: layout::IMAGE_BASE,
            end: layout::IMAGE_BASE + pages * PAGE_SIZE,
            bias: layout::IMAGE_BASE,
        }
    }

    #[test]
    fn pages_get_their_segments_access_with_relro_read_only() {
        use PageAccess::*;
        use program_header::{PF_R, PF_W, PF_X};
        // As lld lays out a hermit image (see `readelf -lW` of hello):
        // rodata, code from an offset in a fresh page, RELRO data, data.
        let segments = [
            segment(0, 0x1df4, PF_R),
            segment(0x2e00, 0x4118, PF_R | PF_X),
            segment(0x5118, 0x7000, PF_R | PF_W),
            segment(0x71b8, 0x8100, PF_R | PF_W),
        ];
        let relro = layout::IMAGE_BASE + 0x5118..layout::IMAGE_BASE + 0x7000;
        let pages = page_access(&image(10), &segments, Some(relro)).unwrap();
        assert_eq!(
            pages,
            [
                ReadOnly,
                ReadOnly,
                ReadExecute,
                ReadExecute,
                ReadExecute,
                ReadOnly,
                ReadOnly,
                ReadWrite,
                ReadWrite,
                Unmapped
            ]
        );
        // Without RELRO, the data pages stay writable.
        let pages = page_access(&image(10), &segments, None).unwrap();
        assert_eq!(pages[5..9], [ReadWrite; 4]);
        // A RELRO range that ends inside a page leaves that page writable
        // when a writable segment has bytes after it there.
        let partial = layout::IMAGE_BASE + 0x5118..layout::IMAGE_BASE + 0x6800;
        let pages = page_access(&image(10), &segments, Some(partial)).unwrap();
        assert_eq!(pages[5..9], [ReadOnly, ReadWrite, ReadWrite, ReadWrite]);
    }

    #[test]
    fn a_page_shared_by_code_and_data_is_refused_and_otherwise_united() {
        use program_header::{PF_R, PF_W, PF_X};
        let shared = [
            segment(0, 0x1800, PF_R | PF_X),
            segment(0x1800, 0x3000, PF_R | PF_W),
        ];
        assert!(matches!(
            page_access(&image(3), &shared, None),
            Err(LoadError::WritableAndExecutable { offset: 0x1000 })
        ));
        let united = [
            segment(0, 0x1800, PF_R),
            segment(0x1800, 0x3000, PF_R | PF_W),
        ];
        assert_eq!(
            page_access(&image(3), &united, None).unwrap(),
            [
                PageAccess::ReadOnly,
                PageAccess::ReadWrite,
                PageAccess::ReadWrite
            ]
        );
    }

    #[test]
    fn refuses_truncated_files_and_oversized_images() {
        let bytes = TestImage::new(&[0xf4]).bytes();
        for len in [16, 64, 100, 300, bytes.len() - 1] {
            assert!(
                load(&bytes[..len], &ram()).is_err(),
                "truncated to {len} bytes"
            );
        }
        let mut huge = TestImage::new(&[0xf4]);
        huge.bss_bytes = 64 << 20;
        assert!(matches!(
            load(&huge.bytes(), &ram()),
            Err(LoadError::TooLarge { .. })
        ));
    }
}
