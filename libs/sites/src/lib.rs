//! Rewriting the `syscall` instructions (`0F 05`) of x86_64 Linux code
//! into `call *%rax` (`FF D0`), both two bytes, before the code is mapped
//! executable (zpoline, USENIX ATC 2023). The call lands in a trampoline
//! at address 0, which leads to the kernel's dispatcher: a function call
//! instead of a trap, nanoseconds instead of tens of microseconds on the
//! hosts eremite targets. The VMM rewrites a program and its interpreter
//! as it loads them; the kernel rewrites code that is mapped executable
//! later (libraries `ld.so` maps, `mprotect(PROT_EXEC)`).
//!
//! The one way this can break a program: `call` pushes its return address
//! at `[rsp - 8]`, inside the 128 bytes below the stack pointer that the
//! System V ABI lets a function keep data in (the red zone). Compilers use
//! the red zone only in leaf functions (no `call` in them), so a site is
//! rewritten when its function calls something, or, in a leaf, when
//! nothing in the function addresses memory below `rsp` or `rbp`. Sites
//! that fail the check stay `syscall` and take the trap path. A function
//! is the `STT_FUNC` symbol around the site when the code comes with
//! symbols; otherwise sites are judged on the instructions between the
//! nearest function boundaries the decoder can see (`ret`, `jmp`, `int3`,
//! `ud2`, `hlt`) and, to be safe, on the 64 instructions either side.
//!
//! Code is decoded linearly from the start of each executable range, as
//! zpoline does (compilers put no data in `.text` on x86_64); a `syscall`
//! found so is one the CPU would execute from that instruction stream.
//! The dispatcher tells a rewritten site's call from a call through a
//! null function pointer with a bitmap of the sites' return addresses
//! ([`bitmap`]).

#![no_std]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// What the rewriting did to one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sites {
    /// Addresses of the sites now `call *%rax`.
    pub rewritten: Vec<u64>,
    /// Addresses of the `syscall` instructions left as they are.
    pub left: Vec<u64>,
}

impl Sites {
    /// The return address of each rewritten site's `call *%rax`.
    pub fn return_addresses(&self) -> Vec<u64> {
        self.rewritten.iter().map(|site| site + 2).collect()
    }
}

/// What the red-zone check needs of one instruction: only instructions
/// with one of these properties are kept (an event), with their position
/// in the instruction stream, so that the memory needed stays a fraction
/// of the code's size (a 2.5 MiB library decodes to ~700,000
/// instructions).
#[derive(Clone, Copy)]
struct Event {
    ip: u64,
    /// Its position among all instructions decoded.
    index: u32,
    is_syscall: bool,
    is_call: bool,
    /// Ends what a stripped program's function can be seen to be.
    is_boundary: bool,
    /// Addresses memory below `rsp` or `rbp` (a negative displacement).
    is_below_frame: bool,
}

impl Event {
    fn of(instr: &Instruction, index: u32) -> Self {
        let flow = instr.flow_control();
        let is_below_frame = (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory)
            && matches!(instr.memory_base(), Register::RSP | Register::RBP)
            && (instr.memory_displacement64() as i64) < 0;
        // iced counts `syscall` as a call: a call here is one that pushes
        // a return address, which no compiler lets clobber live red-zone
        // data.
        let is_syscall = instr.mnemonic() == Mnemonic::Syscall;
        Self {
            ip: instr.ip(),
            index,
            is_syscall,
            is_call: matches!(flow, FlowControl::Call | FlowControl::IndirectCall) && !is_syscall,
            is_boundary: matches!(
                flow,
                FlowControl::Return
                    | FlowControl::UnconditionalBranch
                    | FlowControl::IndirectBranch
                    | FlowControl::Interrupt
                    | FlowControl::Exception
            ) || instr.mnemonic() == Mnemonic::Hlt,
            is_below_frame,
        }
    }

    fn matters(&self) -> bool {
        self.is_syscall || self.is_call || self.is_boundary || self.is_below_frame
    }
}

/// Whether the function whose events are `events` may have a site
/// rewritten: it calls something, or it addresses nothing below its frame.
fn is_safe(events: &[Event]) -> bool {
    events.iter().any(|e| e.is_call) || !events.iter().any(|e| e.is_below_frame)
}

/// The events of `code` (at `addr`), or `None` if memory for them ran out.
/// `visit` sees every instruction decoded, invalid ones included, so a
/// caller that needs more than the events (the stubs) decodes only once.
fn events(code: &[u8], addr: u64, mut visit: impl FnMut(&Instruction)) -> Option<Vec<Event>> {
    let mut events = Vec::new();
    events.try_reserve(code.len() / 16).ok()?;
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut index = 0u32;
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        visit(&instr);
        if instr.is_invalid() {
            continue;
        }
        let event = Event::of(&instr, index);
        index = index.saturating_add(1);
        if event.matters() {
            events.try_reserve(1).ok()?;
            events.push(event);
        }
    }
    Some(events)
}

/// The function in `functions` (sorted) that holds `ip`.
fn function_at(functions: &[Range<u64>], ip: u64) -> Option<&Range<u64>> {
    let after = functions.partition_point(|f| f.start <= ip);
    functions[..after]
        .iter()
        .rev()
        .take(8)
        .find(|f| f.contains(&ip))
}

/// Every `syscall` site among `events`, in order, and whether it is safe
/// to rewrite: its function cannot keep data in the red zone (see the
/// module's documentation). `functions` are the code's function symbols
/// as address ranges, sorted by start (empty when there are none). `None`
/// if memory for the analysis runs out.
fn judge(events: &[Event], functions: &[Range<u64>]) -> Option<Vec<(u64, bool)>> {
    let mut sites = Vec::new();
    for (at, site) in events.iter().enumerate().filter(|(_, e)| e.is_syscall) {
        let is_safe = match function_at(functions, site.ip) {
            Some(range) => {
                let first = events.partition_point(|e| e.ip < range.start);
                let end = events.partition_point(|e| e.ip < range.end);
                is_safe(&events[first..end])
            }
            None => {
                let seen_start = events[..at]
                    .iter()
                    .rposition(|e| e.is_boundary)
                    .map_or(0, |b| b + 1);
                let seen_end = events[at..]
                    .iter()
                    .position(|e| e.is_boundary)
                    .map_or(events.len(), |b| at + b + 1);
                let near = site.index.saturating_sub(64)..=site.index.saturating_add(64);
                let window_start = events.partition_point(|e| e.index < *near.start());
                let window_end = events.partition_point(|e| e.index <= *near.end());
                is_safe(&events[seen_start..seen_end])
                    && !events[window_start..window_end]
                        .iter()
                        .any(|e| e.is_below_frame)
            }
        };
        sites.try_reserve(1).ok()?;
        sites.push((site.ip, is_safe));
    }
    Some(sites)
}

/// Find the `syscall` sites in `code` (to run at address `addr`) and
/// rewrite the safe ones ([`judge`]) in place. If memory for the
/// analysis runs out, nothing is rewritten (and nothing is reported): the
/// sites keep working, on the trap path.
pub fn rewrite(code: &mut [u8], addr: u64, functions: &[Range<u64>]) -> Sites {
    let Some(judged) = events(code, addr, |_| {}).and_then(|e| judge(&e, functions)) else {
        return Sites::default();
    };
    let mut sites = Sites::default();
    for (site, is_safe) in judged {
        let offset = usize::try_from(site - addr).unwrap_or(usize::MAX);
        match code.get_mut(offset..offset + 2) {
            Some(bytes) if is_safe && bytes == [0x0F, 0x05] => {
                bytes.copy_from_slice(&[0xFF, 0xD0]);
                sites.rewritten.push(site);
            }
            _ => sites.left.push(site),
        }
    }
    sites
}

/// Bytes of one stub made by [`call_stubs`]; the first `STUB_BYTES` of
/// the stubs' page hold the entry's address instead.
pub const STUB_BYTES: u64 = 16;

/// What [`call_stubs`] did to one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stubs {
    /// The stubs' page, to be placed at the `stubs_at` given: the entry's
    /// address, then the stubs.
    pub code: Vec<u8>,
    /// The return address of each site rewritten (the byte after its
    /// `call`), for [`bitmap`].
    pub return_addresses: Vec<u64>,
    /// Addresses of the `syscall` instructions left as they are.
    pub left: Vec<u64>,
}

/// Whether `instr` can run from a stub, after a `call` pushed a return
/// address, with the same effect: it goes on to the next instruction, it
/// has no memory operand (none can be RIP-relative) and does not touch
/// the stack pointer, explicitly or as `push`/`pop` do, and it is 3 to 8
/// bytes long (with the site's 2, room for a 5-byte `call`; with the
/// stub's 6-byte `jmp`, within a stub).
fn can_move(instr: &Instruction) -> bool {
    let is_plain = (0..instr.op_count()).all(|i| match instr.op_kind(i) {
        OpKind::Register => instr.op_register(i).full_register() != Register::RSP,
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => true,
        _ => false,
    });
    !instr.is_invalid()
        && is_plain
        && instr.flow_control() == FlowControl::Next
        && instr.stack_pointer_increment() == 0
        && instr.mnemonic() != Mnemonic::Syscall
        && (3..=8).contains(&instr.len())
}

/// Rewrite the `syscall` sites of code that must keep page 0 unmapped
/// (a Go program: its nil checks rely on a read of page 0 faulting), so
/// that `call *%rax` into a trampoline there is out. A site becomes a
/// `call rel32` to a stub of its own, over the site and the instruction
/// before it, then `nop`s; the stub, at `stubs_at + STUB_BYTES * (i +
/// 1)`, is that instruction, moved, then `jmp *` through `entry`, which
/// the page's first 8 bytes hold. The entry sees the call's return
/// address, on the `nop`s just before what followed the `syscall`, as it
/// sees a rewritten site's. A site stays `syscall` when it fails the red
/// zone check of [`rewrite`] (the `call` pushes at `[rsp - 8]`), when the
/// instruction before it cannot move ([`can_move`]), when a direct branch
/// lands on the `syscall` itself (it would land inside the `call`), when
/// the stubs would be out of a `rel32`'s reach, and past `max_stubs`.
pub fn call_stubs(
    code: &mut [u8],
    addr: u64,
    functions: &[Range<u64>],
    stubs_at: u64,
    entry: u64,
    max_stubs: usize,
) -> Stubs {
    let mut stubs = Stubs {
        code: entry.to_le_bytes().to_vec(),
        ..Stubs::default()
    };
    stubs.code.resize(STUB_BYTES as usize, 0);
    // One decoding pass: the red-zone events, and for each `syscall` (in
    // the same order) the instruction before it if it can move; the
    // targets of every direct branch and call.
    let mut befores = Vec::new();
    let mut targets = Vec::new();
    let mut before = None;
    let events = events(code, addr, |instr| {
        if matches!(
            instr.op0_kind(),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        ) {
            targets.push(instr.near_branch_target());
        }
        if instr.mnemonic() == Mnemonic::Syscall {
            befores.push(before);
        }
        before = can_move(instr).then(|| (instr.ip(), instr.len()));
    });
    let Some(judged) = events.and_then(|e| judge(&e, functions)) else {
        return stubs;
    };
    targets.sort_unstable();
    for ((site, is_safe), before) in judged.into_iter().zip(befores) {
        let stub = stubs_at + STUB_BYTES * (stubs.return_addresses.len() as u64 + 1);
        let is_candidate = is_safe
            && targets.binary_search(&site).is_err()
            && stubs.return_addresses.len() < max_stubs;
        let made = before.filter(|_| is_candidate).and_then(|(start, len)| {
            Some((start, stub_for(code, addr, start, len, stub, stubs_at)?))
        });
        match made {
            Some((start, stub_code)) => {
                stubs.code.extend_from_slice(&stub_code);
                stubs.return_addresses.push(start + 5);
            }
            None => stubs.left.push(site),
        }
    }
    stubs
}

/// Write `call stub` and `nop`s over the instruction at `start` (`len`
/// bytes) and the `syscall` after it, and return the stub: that
/// instruction, then `jmp qword ptr [rip + d]` to the address at
/// `stubs_at`. `None`, with nothing written, when the bytes are not as
/// expected or a displacement does not fit.
fn stub_for(
    code: &mut [u8],
    addr: u64,
    start: u64,
    len: usize,
    stub: u64,
    stubs_at: u64,
) -> Option<[u8; STUB_BYTES as usize]> {
    let offset = usize::try_from(start.checked_sub(addr)?).ok()?;
    let bytes = code.get_mut(offset..offset + len + 2)?;
    if bytes[len..] != [0x0F, 0x05] {
        return None;
    }
    let rel32 = |to: u64, from: u64| i32::try_from(to.wrapping_sub(from).cast_signed()).ok();
    let call = rel32(stub, start + 5)?;
    let jmp = rel32(stubs_at, stub + len as u64 + 6)?;
    let mut stub_code = [0xCC; STUB_BYTES as usize];
    stub_code[..len].copy_from_slice(&bytes[..len]);
    stub_code[len..len + 2].copy_from_slice(&[0xFF, 0x25]);
    stub_code[len + 2..len + 6].copy_from_slice(&jmp.to_le_bytes());
    bytes[0] = 0xE8;
    bytes[1..5].copy_from_slice(&call.to_le_bytes());
    bytes[5..].fill(0x90);
    Some(stub_code)
}

/// Function ranges from symbols, `(address, size)` each (`STT_FUNC`, in
/// the addresses the code runs at), sorted and without duplicates: a
/// symbol without a size (hand-written assembly often has none, such as
/// musl's `__clone`) reaches the next function symbol.
pub fn functions(mut symbols: Vec<(u64, u64)>) -> Vec<Range<u64>> {
    symbols.retain(|&(start, _)| start != 0);
    symbols.sort_unstable();
    symbols.dedup_by_key(|s| s.0);
    let starts: Vec<u64> = symbols.iter().map(|s| s.0).collect();
    symbols
        .iter()
        .enumerate()
        .filter_map(|(i, &(start, size))| {
            let end = match size {
                0 => *starts.get(i + 1)?,
                size => start.checked_add(size)?,
            };
            (end > start).then_some(start..end)
        })
        .collect()
}

/// The bitmap of rewritten sites over `text` (one bit per byte of code,
/// set at each site's return address: [`Sites::return_addresses`],
/// [`Stubs::return_addresses`]), as the kernel's dispatcher reads it.
pub fn bitmap(text: &Range<u64>, return_addresses: &[u64]) -> Vec<u8> {
    let len = text.end.saturating_sub(text.start).div_ceil(8);
    let mut bits = vec![0u8; usize::try_from(len).unwrap_or(0)];
    for address in return_addresses {
        let Some(bit) = address
            .checked_sub(text.start)
            .and_then(|b| usize::try_from(b).ok())
        else {
            continue;
        };
        if let Some(byte) = bits.get_mut(bit / 8) {
            *byte |= 1 << (bit % 8);
        }
    }
    bits
}

/// Whether `bitmap` (over code from `text_start`) marks `return_address`
/// as following a rewritten site.
#[inline]
pub fn is_marked(bitmap: &[u8], text_start: u64, return_address: u64) -> bool {
    let Some(bit) = return_address
        .checked_sub(text_start)
        .and_then(|b| usize::try_from(b).ok())
    else {
        return false;
    };
    bitmap
        .get(bit / 8)
        .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    const ADDR: u64 = 0x40_1000;

    /// `mov eax, 39; syscall; ret` (getpid, as musl's wrappers look).
    const GETPID: &[u8] = &[0xB8, 0x27, 0, 0, 0, 0x0F, 0x05, 0xC3];

    #[test]
    fn a_plain_site_becomes_a_call_through_rax() {
        let mut code = GETPID.to_vec();
        let sites = rewrite(&mut code, ADDR, &[]);
        assert_eq!(sites.rewritten, [ADDR + 5]);
        assert!(sites.left.is_empty());
        assert_eq!(code, [0xB8, 0x27, 0, 0, 0, 0xFF, 0xD0, 0xC3]);
    }

    #[test]
    fn a_leaf_that_keeps_data_in_the_red_zone_keeps_its_syscall() {
        // mov [rsp-8], rdi; mov eax, 1; syscall; mov rdi, [rsp-8]; ret
        let mut code = vec![0x48, 0x89, 0x7C, 0x24, 0xF8];
        code.extend_from_slice(&[0xB8, 1, 0, 0, 0, 0x0F, 0x05]);
        code.extend_from_slice(&[0x48, 0x8B, 0x7C, 0x24, 0xF8, 0xC3]);
        let before = code.clone();
        #[allow(clippy::single_range_in_vec_init, reason = "one function's range")]
        let whole = [ADDR..ADDR + code.len() as u64];
        for functions in [&[][..], &whole[..]] {
            let mut copy = before.clone();
            let sites = rewrite(&mut copy, ADDR, functions);
            assert!(sites.rewritten.is_empty(), "{functions:?}");
            assert_eq!(sites.left, [ADDR + 10]);
            assert_eq!(copy, before);
        }
    }

    #[test]
    fn a_function_that_calls_may_use_rbp_below_its_frame() {
        // push rbp; mov rbp, rsp; sub rsp, 16; mov [rbp-8], rdi;
        // call +0; mov eax, 39; syscall; leave; ret
        let mut code = vec![0x55, 0x48, 0x89, 0xE5, 0x48, 0x83, 0xEC, 0x10];
        code.extend_from_slice(&[0x48, 0x89, 0x7D, 0xF8, 0xE8, 0, 0, 0, 0]);
        let site = code.len() as u64 + 5;
        code.extend_from_slice(&[0xB8, 0x27, 0, 0, 0, 0x0F, 0x05, 0xC9, 0xC3]);
        let function = ADDR..ADDR + code.len() as u64;
        let sites = rewrite(&mut code, ADDR, &[function]);
        assert_eq!(sites.rewritten, [ADDR + site]);
    }

    #[test]
    fn the_bitmap_marks_return_addresses_only() {
        let text = ADDR..ADDR + 64;
        let bits = bitmap(&text, &[ADDR + 7, ADDR + 42]);
        assert!(is_marked(&bits, ADDR, ADDR + 7));
        assert!(is_marked(&bits, ADDR, ADDR + 42));
        for other in [ADDR + 5, ADDR + 6, ADDR + 8, ADDR - 1, ADDR + 64, 0] {
            assert!(!is_marked(&bits, ADDR, other), "{other:#x}");
        }
    }

    #[test]
    fn bytes_0f_05_inside_another_instruction_are_not_a_site() {
        // mov eax, 0x050F0000; ret: the bytes 0F 05 are an immediate.
        let mut code = vec![0xB8, 0, 0, 0x0F, 0x05, 0xC3];
        let before = code.clone();
        let sites = rewrite(&mut code, ADDR, &[]);
        assert_eq!(sites, Sites::default());
        assert_eq!(code, before);
    }

    /// Where the stubs go in the tests: the page after the code.
    const STUBS: u64 = ADDR + 0x1000;
    /// The entry's address.
    const ENTRY: u64 = 0xFFFF_8000_0000_1234;

    #[test]
    fn a_go_site_becomes_a_call_to_a_stub_that_moves_the_instruction_before_it() {
        // mov eax, 39; syscall; ret
        let mut code = GETPID.to_vec();
        let stubs = call_stubs(&mut code, ADDR, &[], STUBS, ENTRY, 255);
        assert_eq!(stubs.return_addresses, [ADDR + 5]);
        assert!(stubs.left.is_empty());
        // call STUBS + 16; nop; nop; ret
        let call = i32::try_from(STUBS + 16 - (ADDR + 5)).unwrap();
        let mut expected = vec![0xE8];
        expected.extend_from_slice(&call.to_le_bytes());
        expected.extend_from_slice(&[0x90, 0x90, 0xC3]);
        assert_eq!(code, expected);
        // The stub: mov eax, 39; jmp [rip - (16 + 11)] (the entry's address
        // at STUBS), then int3 padding.
        let page = stubs.code;
        assert_eq!(page.len(), 32);
        assert_eq!(page[..8], ENTRY.to_le_bytes());
        let stub = &page[16..];
        assert_eq!(&stub[..5], &GETPID[..5]);
        assert_eq!(&stub[5..7], &[0xFF, 0x25]);
        let disp = i32::from_le_bytes(stub[7..11].try_into().unwrap());
        assert_eq!(i64::from(disp), -(16 + 11));
        assert!(stub[11..].iter().all(|&b| b == 0xCC));
    }

    #[test]
    fn go_sites_whose_instruction_before_cannot_move_stay_syscall() {
        for before in [
            // mov rdi, rsp: RSP is 8 lower in the stub.
            &[0x48, 0x89, 0xE7][..],
            // mov edi, [rsp + 8]: a memory operand.
            &[0x8B, 0x7C, 0x24, 0x08],
            // xor eax, eax: 2 bytes, no room for a call.
            &[0x31, 0xC0],
            // add rsp, 8: moves the stack pointer.
            &[0x48, 0x83, 0xC4, 0x08],
            // push 1 (a 5-byte immediate form): writes the stack.
            &[0x68, 1, 0, 0, 0],
        ] {
            let mut code = before.to_vec();
            code.extend_from_slice(&[0x0F, 0x05, 0xC3]);
            let original = code.clone();
            let stubs = call_stubs(&mut code, ADDR, &[], STUBS, ENTRY, 255);
            assert_eq!(stubs.left, [ADDR + before.len() as u64], "{before:x?}");
            assert!(stubs.return_addresses.is_empty(), "{before:x?}");
            assert_eq!(code, original, "{before:x?}");
        }
    }

    #[test]
    fn a_go_site_that_a_branch_lands_on_stays_syscall() {
        // mov eax, 39; syscall; jmp -4 (back onto the syscall)
        let mut code = vec![0xB8, 0x27, 0, 0, 0, 0x0F, 0x05, 0xEB, 0xFC];
        let stubs = call_stubs(&mut code, ADDR, &[], STUBS, ENTRY, 255);
        assert_eq!(stubs.left, [ADDR + 5]);
        assert_eq!(code[5..7], [0x0F, 0x05]);
    }

    #[test]
    fn go_sites_past_the_stubs_room_stay_syscall() {
        let mut code = [GETPID, GETPID, GETPID].concat();
        let stubs = call_stubs(&mut code, ADDR, &[], STUBS, ENTRY, 2);
        assert_eq!(stubs.return_addresses, [ADDR + 5, ADDR + 13]);
        assert_eq!(stubs.left, [ADDR + 21]);
        assert_eq!(stubs.code.len(), 48);
        // The second stub jumps through the same entry address.
        let disp = i32::from_le_bytes(stubs.code[32 + 7..32 + 11].try_into().unwrap());
        assert_eq!(i64::from(disp), -(32 + 11));
    }
}
