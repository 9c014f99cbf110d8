//! The backtrace of a guest thread that died of a CPU exception or
//! aborted (a panic), found by reading its stack after the VM stopped.
//!
//! Programs are usually built without frame pointers, and for the hermit
//! target without unwind tables (panic=abort), so neither chain exists.
//! This scans the stack instead, as crash reporters do when they have
//! nothing better (Breakpad's "stack scanning"): from the stack pointer
//! up, a word is a return address when it points into a known function
//! just after a `call` instruction. To skip stale words, a direct call
//! (`E8 rel32`) must call the function the frame below is in; an indirect
//! call (`FF /2`: through a register or memory, whose target cannot be
//! checked) is taken as it is; when nothing matches, the first word after
//! any call is taken (the frame below was reached by a tail call).
//!
//! Reads go through a closure (the VMM's checked reads of guest memory by
//! virtual address), so this is host-tested with a made-up stack.
//! [`Lines`] then names each frame's file and line, inlined calls
//! included, from the ELF file's DWARF where it has some (`addr2line`).

use addr2line::gimli;
use goblin::elf::Elf;

use crate::profile::Symbols;

/// Source places from an ELF file's DWARF.
pub(crate) struct Lines<'a> {
    context: addr2line::Context<gimli::EndianSlice<'a, gimli::LittleEndian>>,
}

/// One function at an address: the innermost of those inlined there
/// first, each with its file and line when known.
pub(crate) type Place = (Option<String>, Option<(String, u32)>);

impl<'a> Lines<'a> {
    /// The DWARF of the ELF file `bytes`; `None` when it has none.
    pub(crate) fn new(bytes: &'a [u8]) -> Option<Self> {
        let elf = Elf::parse(bytes).ok()?;
        let section = |name: &str| {
            elf.section_headers
                .iter()
                .find(|h| elf.shdr_strtab.get_at(h.sh_name) == Some(name))
                .and_then(|h| {
                    let start = usize::try_from(h.sh_offset).ok()?;
                    let end = start.checked_add(usize::try_from(h.sh_size).ok()?)?;
                    bytes.get(start..end)
                })
                .unwrap_or(&[])
        };
        if section(".debug_info").is_empty() {
            return None;
        }
        let dwarf = gimli::Dwarf::load(|id| {
            Ok::<_, gimli::Error>(gimli::EndianSlice::new(
                section(id.name()),
                gimli::LittleEndian,
            ))
        })
        .ok()?;
        addr2line::Context::from_dwarf(dwarf)
            .ok()
            .map(|context| Self { context })
    }

    /// The functions at `probe` (an address of the file), innermost
    /// first.
    pub(crate) fn places(&self, probe: u64) -> Vec<Place> {
        let mut places = Vec::new();
        let Ok(mut frames) = self.context.find_frames(probe).skip_all_loads() else {
            return places;
        };
        while let Ok(Some(frame)) = frames.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok())
                .map(|name| crate::profile::demangle(&name));
            let location = frame
                .location
                .and_then(|l| Some((l.file?.to_owned(), l.line?)));
            places.push((function, location));
        }
        places
    }
}

/// Frames at most, the crashing one included.
pub(crate) const MAX_FRAMES: usize = 64;
/// How far above the stack pointer to look.
const SCAN_BYTES: usize = 256 << 10;

/// Reads guest bytes at a virtual address; returns how many it could.
pub(crate) type Read<'a> = &'a dyn Fn(u64, &mut [u8]) -> usize;

/// The call just before return address `ret`: `Some(Some(target))` for a
/// direct call, `Some(None)` for an indirect one, `None` if the bytes
/// there end no call.
fn call_before(read: Read<'_>, ret: u64) -> Option<Option<u64>> {
    let mut code = [0u8; 8];
    let start = ret.checked_sub(8)?;
    if read(start, &mut code) != code.len() {
        return None;
    }
    // `E8 rel32`.
    if code[3] == 0xe8 {
        let rel = i32::from_le_bytes([code[4], code[5], code[6], code[7]]);
        return Some(Some(ret.wrapping_add_signed(i64::from(rel))));
    }
    // `[REX] FF /2 ModRM [SIB] [disp]`, ending at `ret`.
    for len in 2..=8 {
        let at = 8 - len;
        let (has_rex, op) = match code[at] {
            0x40..=0x4f if len >= 3 => (true, at + 1),
            _ => (false, at),
        };
        if code[op] != 0xff || op + 1 >= 8 {
            continue;
        }
        let modrm = code[op + 1];
        if (modrm >> 3) & 7 != 2 {
            continue;
        }
        let sib = code.get(op + 2).copied().unwrap_or(0);
        if usize::from(has_rex) + modrm_length(modrm, sib) == len {
            return Some(None);
        }
    }
    None
}

/// The length of `FF ModRM [SIB] [disp]` (SDM vol. 2A, 2.1.5).
fn modrm_length(modrm: u8, sib: u8) -> usize {
    let (mode, rm) = (modrm >> 6, modrm & 7);
    let has_sib = mode != 3 && rm == 4;
    let disp = match mode {
        1 => 1,
        2 => 4,
        0 if rm == 5 => 4,
        0 if has_sib && sib & 7 == 5 => 4,
        _ => 0,
    };
    2 + usize::from(has_sib) + disp
}

/// The crashed thread's frames: `rip`, then the return addresses found
/// above `rsp`, innermost first.
pub(crate) fn scan(read: Read<'_>, symbols: &Symbols, rip: u64, rsp: u64) -> Vec<u64> {
    let mut frames = vec![rip];
    let base = rsp & !7;
    let mut stack = vec![0u8; SCAN_BYTES];
    let got = read(base, &mut stack) & !7;
    let words: Vec<u64> = stack[..got]
        .as_chunks::<8>()
        .0
        .iter()
        .map(|w| u64::from_le_bytes(*w))
        .collect();
    let mut callee = symbols.function(rip).map(|(start, _)| start);
    let mut next = 0;
    while frames.len() < MAX_FRAMES && next < words.len() {
        // (slot, return address) of the first plausible call, and of the
        // first that calls `callee` or calls indirectly.
        let mut any = None;
        let mut checked = None;
        for (slot, &word) in words.iter().enumerate().skip(next) {
            let Some((start, _)) = symbols.function(word.wrapping_sub(1)) else {
                continue;
            };
            let Some(target) = call_before(read, word) else {
                continue;
            };
            any.get_or_insert((slot, word, start));
            if target.is_none() || target == callee {
                checked = Some((slot, word, start));
                break;
            }
        }
        let Some((slot, word, start)) = checked.or(any) else {
            break;
        };
        frames.push(word);
        callee = Some(start);
        next = slot + 1;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Guest memory made of byte runs at addresses.
    struct Memory(BTreeMap<u64, Vec<u8>>);

    impl Memory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
            for (&start, bytes) in &self.0 {
                let end = start + bytes.len() as u64;
                if (start..end).contains(&addr) {
                    let from = (addr - start) as usize;
                    let n = buf.len().min(bytes.len() - from);
                    buf[..n].copy_from_slice(&bytes[from..from + n]);
                    return n;
                }
            }
            0
        }
    }

    /// Code at 0x1000: `main` (0x1000..0x1100) calls `work` (0x1100..
    /// 0x1200) directly at 0x1010; `work` calls `crash` (0x1200..) through
    /// a register (`call rax`) at 0x1120. `other` (0x1300..) calls `crash`
    /// at 0x1310, but no frame of it is live.
    fn program() -> (Memory, Symbols) {
        let mut code = vec![0x90u8; 0x400];
        let mut call = |at: usize, target: u64| {
            let rel = (target as i64 - (0x1000 + at as i64 + 5)) as i32;
            code[at] = 0xe8;
            code[at + 1..at + 5].copy_from_slice(&rel.to_le_bytes());
        };
        call(0x10, 0x1100);
        call(0x310, 0x1200);
        code[0x120] = 0xff;
        code[0x121] = 0xd0;
        let mut symbols = Symbols::default();
        symbols.add_function(0x1000, 0x1100, "main");
        symbols.add_function(0x1100, 0x1200, "work");
        symbols.add_function(0x1200, 0x1300, "crash");
        symbols.add_function(0x1300, 0x1400, "other");
        let mut memory = BTreeMap::new();
        memory.insert(0x1000, code);
        (Memory(memory), symbols)
    }

    fn stack(memory: &mut Memory, words: &[u64]) {
        let bytes = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        memory.0.insert(0x8000, bytes);
    }

    #[test]
    fn return_addresses_after_calls_make_the_frames() {
        let (mut memory, symbols) = program();
        // Locals, the return into work (after `call rax`), a stale return
        // into other, the return into main.
        stack(
            &mut memory,
            &[7, 0x1234_5678, 0x1122, 0x1315, 42, 0x1015, 0],
        );
        let read = |addr: u64, buf: &mut [u8]| memory.read(addr, buf);
        let frames = scan(&read, &symbols, 0x1250, 0x8000);
        assert_eq!(frames, [0x1250, 0x1122, 0x1015]);
    }

    #[test]
    fn a_tail_call_falls_back_to_any_call() {
        let (mut memory, symbols) = program();
        // The crash is in `crash`, which main did not call: the first
        // return after a call is taken.
        stack(&mut memory, &[0x1015]);
        let read = |addr: u64, buf: &mut [u8]| memory.read(addr, buf);
        assert_eq!(scan(&read, &symbols, 0x1250, 0x8000), [0x1250, 0x1015]);
    }

    #[test]
    fn an_unreadable_stack_gives_the_crashing_frame_only() {
        let (memory, symbols) = program();
        let read = |addr: u64, buf: &mut [u8]| memory.read(addr, buf);
        assert_eq!(scan(&read, &symbols, 0x1250, 0xdead_0000), [0x1250]);
    }

    #[test]
    fn indirect_calls_of_every_form_are_recognised() {
        // call rax; call r11; call [rax]; call [rip+x]; call [rsp+8];
        // call [rax+rbx*8+0x100].
        let cases: [&[u8]; 6] = [
            &[0xff, 0xd0],
            &[0x41, 0xff, 0xd3],
            &[0xff, 0x10],
            &[0xff, 0x15, 1, 2, 3, 4],
            &[0xff, 0x54, 0x24, 0x08],
            &[0xff, 0x94, 0xd8, 0, 1, 0, 0],
        ];
        for case in cases {
            let mut code = vec![0x90u8; 16];
            code[16 - case.len()..].copy_from_slice(case);
            let memory = Memory(BTreeMap::from([(0x1000, code)]));
            let read = |addr: u64, buf: &mut [u8]| memory.read(addr, buf);
            assert_eq!(call_before(&read, 0x1010), Some(None), "{case:02x?}");
        }
        let memory = Memory(BTreeMap::from([(0x1000, vec![0x90u8; 16])]));
        let read = |addr: u64, buf: &mut [u8]| memory.read(addr, buf);
        assert_eq!(call_before(&read, 0x1010), None);
    }
}
