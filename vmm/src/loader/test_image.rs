//! A minimal eremite image built in memory, for loader tests and for the
//! in-process VMM tests that boot a few bytes of machine code.
//!
//! Layout (one `PT_LOAD` segment, read-only and executable unless a test
//! sets `load_flags`; file offset = virtual address):
//! ELF header, four program headers (LOAD, NOTE, DYNAMIC, TLS), the
//! EREMITE note, a dynamic section naming one RELA entry, that entry
//! (`*SLOT = CODE`), the pointer slot, the TLS template, then the code.

use eremite_interface::INTERFACE_VERSION;
use eremite_interface::note::NOTE_TYPE;
use goblin::elf::{header, program_header, reloc};

/// Knobs a test turns to make the image wrong in one particular way.
pub(crate) struct TestImage {
    pub(crate) code: Vec<u8>,
    pub(crate) e_type: u16,
    pub(crate) machine: u16,
    pub(crate) note_name: [u8; 8],
    pub(crate) version: u32,
    pub(crate) reloc_type: u32,
    pub(crate) reloc_offset: u64,
    pub(crate) bss_bytes: u64,
    pub(crate) load_flags: u32,
}

const PHDRS_OFFSET: u64 = 64;
const PHDR_COUNT: u64 = 4;
const NOTE_OFFSET: u64 = PHDRS_OFFSET + PHDR_COUNT * 56;
const DYNAMIC_OFFSET: u64 = 320;
const RELA_OFFSET: u64 = 384;
const TLS_OFFSET: u64 = 0x1c8;

impl TestImage {
    /// Offset (from the image base) of the pointer the relocation fills.
    pub(crate) const SLOT_OFFSET: u64 = 0x1c0;
    /// Offset (from the image base) of the code, which is the entry point.
    pub(crate) const CODE_OFFSET: u64 = 0x200;

    pub(crate) fn new(code: &[u8]) -> Self {
        Self {
            code: code.to_vec(),
            e_type: header::ET_DYN,
            machine: header::EM_X86_64,
            note_name: *b"EREMITE\0",
            version: INTERFACE_VERSION,
            reloc_type: reloc::R_X86_64_RELATIVE,
            reloc_offset: Self::SLOT_OFFSET,
            bss_bytes: 0x1000,
            load_flags: program_header::PF_R | program_header::PF_X,
        }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let file_len = Self::CODE_OFFSET + self.code.len() as u64;
        let mut out = Vec::new();
        // ELF header (System V gABI, ELF64).
        out.extend_from_slice(b"\x7fELF");
        out.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
        out.extend_from_slice(&[0; 8]);
        push16(&mut out, self.e_type);
        push16(&mut out, self.machine);
        push32(&mut out, 1);
        push64(&mut out, Self::CODE_OFFSET); // e_entry
        push64(&mut out, PHDRS_OFFSET); // e_phoff
        push64(&mut out, 0); // e_shoff
        push32(&mut out, 0); // e_flags
        push16(&mut out, 64); // e_ehsize
        push16(&mut out, 56); // e_phentsize
        push16(&mut out, PHDR_COUNT as u16);
        push16(&mut out, 64); // e_shentsize
        push16(&mut out, 0); // e_shnum
        push16(&mut out, 0); // e_shstrndx
        assert_eq!(out.len() as u64, PHDRS_OFFSET);

        let load_mem = file_len + self.bss_bytes;
        phdr(
            &mut out,
            program_header::PT_LOAD,
            self.load_flags,
            0,
            file_len,
            load_mem,
            0x1000,
        );
        phdr(
            &mut out,
            program_header::PT_NOTE,
            program_header::PF_R,
            NOTE_OFFSET,
            28,
            28,
            4,
        );
        phdr(
            &mut out,
            program_header::PT_DYNAMIC,
            program_header::PF_R,
            DYNAMIC_OFFSET,
            64,
            64,
            8,
        );
        phdr(
            &mut out,
            program_header::PT_TLS,
            program_header::PF_R,
            TLS_OFFSET,
            8,
            16,
            8,
        );
        assert_eq!(out.len() as u64, NOTE_OFFSET);

        push32(&mut out, 8); // namesz
        push32(&mut out, 8); // descsz
        push32(&mut out, NOTE_TYPE);
        out.extend_from_slice(&self.note_name);
        push32(&mut out, self.version);
        push32(&mut out, 0);
        out.resize(DYNAMIC_OFFSET as usize, 0);

        for (tag, value) in [(7u64, RELA_OFFSET), (8, 24), (9, 24), (0, 0)] {
            push64(&mut out, tag);
            push64(&mut out, value);
        }
        assert_eq!(out.len() as u64, RELA_OFFSET);
        push64(&mut out, self.reloc_offset);
        push64(&mut out, u64::from(self.reloc_type)); // r_info: symbol 0
        push64(&mut out, Self::CODE_OFFSET); // r_addend
        out.resize(TLS_OFFSET as usize, 0);
        push64(&mut out, 0x5a5a_5a5a_5a5a_5a5a);
        out.resize(Self::CODE_OFFSET as usize, 0);
        out.extend_from_slice(&self.code);
        out
    }
}

fn phdr(out: &mut Vec<u8>, kind: u32, flags: u32, offset: u64, file: u64, mem: u64, align: u64) {
    push32(out, kind);
    push32(out, flags);
    push64(out, offset);
    push64(out, offset); // p_vaddr
    push64(out, offset); // p_paddr
    push64(out, file);
    push64(out, mem);
    push64(out, align);
}

fn push16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn push32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn push64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
