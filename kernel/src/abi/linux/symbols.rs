//! The function symbols of an ELF file part of which is being mapped
//! executable (a shared library `ld.so` maps), in the addresses the
//! mapping gives them: what lets the site rewriter judge each `syscall` by
//! its own function instead of by what it can see around it
//! (`eremite-sites`). Read with `pread` from the file: the ELF header, the
//! program headers (to place the mapping's file offset), the section
//! headers, and `.symtab` or, in a stripped library, `.dynsym`.
//!
//! The file is the program's, so every field is checked; anything
//! unexpected gives no symbols, never an error.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::fd;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const PT_LOAD: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;
const PHDR_LEN: usize = 56;
const SHDR_LEN: usize = 64;
const SYM_LEN: usize = 24;
/// Tables larger than this are not read (libc's `.dynsym` is ~70 KiB).
const MAX_TABLE_BYTES: usize = 16 << 20;

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// `len` bytes of file `fd` from `offset`, or `None` if it is shorter.
fn read(fd: i32, offset: u64, len: usize) -> Option<Vec<u8>> {
    if len > MAX_TABLE_BYTES {
        return None;
    }
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match fd::pread(fd, &mut buf[done..], offset.checked_add(done as u64)?) {
            Ok(0) | Err(_) => return None,
            Ok(n) => done += n,
        }
    }
    Some(buf)
}

/// The functions of file `fd`, whose bytes from `offset` are mapped at
/// `addr`, in the mapping's addresses, sorted (empty when the file is not
/// a 64-bit ELF file or has no function symbols).
pub(super) fn functions(fd: i32, offset: u64, addr: u64) -> Vec<Range<u64>> {
    read_functions(fd, offset, addr).unwrap_or_default()
}

fn read_functions(fd: i32, offset: u64, addr: u64) -> Option<Vec<Range<u64>>> {
    let header = read(fd, 0, 64)?;
    if &header[..4] != ELF_MAGIC || header[4] != ELFCLASS64 {
        return None;
    }
    let (phoff, shoff) = (u64_at(&header, 32), u64_at(&header, 40));
    let (phnum, shnum) = (
        usize::from(u16_at(&header, 56)),
        usize::from(u16_at(&header, 60)),
    );
    // Where the mapping's first byte is in the file's addresses: in the
    // loadable segment that holds its offset.
    let phdrs = read(fd, phoff, phnum.checked_mul(PHDR_LEN)?)?;
    let vaddr = phdrs.as_chunks::<PHDR_LEN>().0.iter().find_map(|p| {
        let (p_offset, p_vaddr, p_filesz) = (u64_at(p, 8), u64_at(p, 16), u64_at(p, 32));
        (u32_at(p, 0) == PT_LOAD && (p_offset..p_offset.saturating_add(p_filesz)).contains(&offset))
            .then(|| p_vaddr.wrapping_add(offset - p_offset))
    })?;
    let bias = addr.wrapping_sub(vaddr);
    let shdrs = read(fd, shoff, shnum.checked_mul(SHDR_LEN)?)?;
    let table = |kind: u32| {
        shdrs
            .as_chunks::<SHDR_LEN>()
            .0
            .iter()
            .find(|s| u32_at(s.as_slice(), 4) == kind)
    };
    let section = table(SHT_SYMTAB).or_else(|| table(SHT_DYNSYM))?;
    let (sym_offset, sym_size) = (u64_at(section, 24), u64_at(section, 32));
    let symbols = read(fd, sym_offset, usize::try_from(sym_size).ok()?)?;
    let functions = symbols
        .as_chunks::<SYM_LEN>()
        .0
        .iter()
        .filter(|s| s[4] & 0xf == STT_FUNC)
        .filter_map(|s| {
            let value = u64_at(s, 8);
            (value != 0).then(|| (value.wrapping_add(bias), u64_at(s, 16)))
        })
        .collect();
    Some(eremite_sites::functions(functions))
}
