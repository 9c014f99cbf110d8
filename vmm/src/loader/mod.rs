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
//! 4. reports the entry point, the image's extent and its TLS template.
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
    #[error("image needs memory up to {end:#x} but the guest has only {mem_size:#x} bytes")]
    TooLarge {
        /// End of the loaded image (guest-physical, exclusive).
        end: u64,
        /// Guest RAM size.
        mem_size: u64,
    },
    /// A segment or relocation points outside the image or the file.
    #[error("{0} lies outside the image")]
    OutOfImage(&'static str),
    /// Writing into guest RAM failed (a bounds error).
    #[error(transparent)]
    Memory(#[from] OutOfRange),
}

/// Where the image ended up in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedImage {
    /// Guest address of the first instruction (`_start`).
    pub entry: u64,
    /// Guest address of the image's first byte ([`layout::IMAGE_BASE`]).
    pub start: u64,
    /// End of the image's last segment, rounded up to a page.
    pub end: u64,
    /// The TLS template (`PT_TLS`), zero when the image has none.
    pub tls: TlsTemplate,
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
    if image_end > ram.size_bytes() {
        return Err(LoadError::TooLarge {
            end: image_end,
            mem_size: ram.size_bytes(),
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
    Ok(LoadedImage {
        entry,
        start: image.start,
        end: image.end,
        tls,
    })
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
    let missing =
        LoadError::NotEremite("it has no EREMITE note (does the application `use eremite as _;`?)");
    let notes = elf
        .iter_note_headers(bytes)
        .ok_or(LoadError::NotEremite("it has no notes"))?;
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
