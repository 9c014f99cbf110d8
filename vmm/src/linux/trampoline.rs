//! Page 0 of a Linux program's address space: the landing strip of its
//! rewritten system calls (zpoline, USENIX ATC 2023).
//!
//! A rewritten site is `call *%rax` with the system-call number in RAX, so
//! it jumps to the address equal to that number: somewhere in this page.
//! Every such address must lead, touching no register but RIP, to one jump
//! to the kernel's dispatcher, which then finds the number still in RAX
//! and the site's return address on the stack.
//!
//! zpoline fills the page with one-byte NOPs, which for `getpid` (39)
//! means about 500 of them. Here most of the page is hops instead: pairs
//! `EB 4E`. Entered at an `EB`, that is `jmp +0x4E`, 80 bytes forward, onto
//! another `EB`; entered at a `4E`, it is a REX prefix (W, R, X; not B, so
//! it changes nothing that follows) on the next pair's jump, 81 bytes
//! forward. Then shorter hops, pairs `EB 26` (40 bytes; `26`, an ES
//! override, is as harmless a prefix), catch the long ones, and a few
//! NOPs catch the short ones before `jmp rel32` to the dispatcher. So any
//! number below [`FIRST_EXIT`] reaches the dispatcher in at most eight
//! jumps and 42 NOPs. A second region does the same for the numbers above
//! it, up to the end of the page, so that an unknown number gets `ENOSYS`
//! rather than a crash. Numbers that land inside a `jmp rel32` (577 to
//! 580 and 4092 to 4095) are not system calls on any Linux.

/// The page's size.
pub(crate) const PAGE_BYTES: usize = 4096;

/// One long hop: `jmp +0x4E`, whose displacement byte is also a harmless
/// REX prefix.
const LONG_HOP: [u8; 2] = [0xEB, 0x4E];
/// The longest long hop (from a `4E`: three bytes of instruction and 78).
const LONGEST_LONG_HOP: usize = 81;
/// One short hop: `jmp +0x26`, whose displacement byte is an ES override.
const SHORT_HOP: [u8; 2] = [0xEB, 0x26];
/// The longest short hop.
const LONGEST_SHORT_HOP: usize = 41;

/// Where the first `jmp rel32` stands: every system call of Linux x86_64
/// (numbers up to about 470) lands before it.
pub(crate) const FIRST_EXIT: usize = 576;
/// Where the second one stands, at the end of the page.
pub(crate) const SECOND_EXIT: usize = PAGE_BYTES - 5;

/// The page for a dispatcher at `entry`, or `None` when `entry` is beyond
/// the reach of a `jmp rel32` from page 0 (it is a kernel address near
/// 2 MiB in practice).
pub(crate) fn page(entry: u64) -> Option<[u8; PAGE_BYTES]> {
    let mut page = [0x90u8; PAGE_BYTES];
    // Two regions: [start, exit): long hops, short hops enough to catch
    // the longest long hop, NOPs enough to catch the longest short hop.
    for (start, exit) in [(0, FIRST_EXIT), (FIRST_EXIT + 5, SECOND_EXIT)] {
        let nops_start = exit - (LONGEST_SHORT_HOP + 1);
        let short_start = nops_start - (LONGEST_LONG_HOP + 1).next_multiple_of(2);
        let short_start = short_start - (short_start - start) % 2;
        for pair in page[start..short_start].as_chunks_mut::<2>().0 {
            *pair = LONG_HOP;
        }
        for pair in page[short_start..nops_start].as_chunks_mut::<2>().0 {
            *pair = SHORT_HOP;
        }
        let next = i64::try_from(exit + 5).ok()?;
        let rel = i32::try_from(i64::try_from(entry).ok()? - next).ok()?;
        page[exit] = 0xE9;
        page[exit + 1..exit + 5].copy_from_slice(&rel.to_le_bytes());
    }
    Some(page)
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    use super::*;

    const ENTRY: u64 = 0x20_3456;

    /// Run the page from `start` as the CPU would, allowing only NOPs and
    /// jumps: where it leaves the page and how many instructions it took.
    fn run(page: &[u8; PAGE_BYTES], start: usize) -> (u64, usize) {
        let mut ip = start as u64;
        for steps in 1..200 {
            let at = usize::try_from(ip).unwrap();
            let mut decoder = Decoder::with_ip(64, &page[at..], ip, DecoderOptions::NONE);
            let instr = decoder.decode();
            match instr.mnemonic() {
                Mnemonic::Nop => ip = instr.next_ip(),
                Mnemonic::Jmp => {
                    ip = instr.near_branch_target();
                    if ip >= PAGE_BYTES as u64 {
                        return (ip, steps);
                    }
                }
                other => panic!("{other:?} at {at:#x} (from {start:#x})"),
            }
        }
        panic!("no way out from {start:#x}");
    }

    #[test]
    fn every_system_call_number_reaches_the_dispatcher_touching_nothing() {
        let page = page(ENTRY).unwrap();
        let mut most_jumps = 0;
        for start in (0..FIRST_EXIT).chain(FIRST_EXIT + 5..SECOND_EXIT) {
            let (to, steps) = run(&page, start);
            assert_eq!(to, ENTRY, "from {start:#x}");
            if start < 470 {
                most_jumps = most_jumps.max(steps);
            }
        }
        // Hops and a few NOPs, not hundreds of NOPs.
        assert!(most_jumps <= 52, "{most_jumps} instructions");
        assert_eq!(run(&page, 39).0, ENTRY);
    }

    #[test]
    fn a_dispatcher_out_of_reach_is_refused() {
        assert!(page(1 << 40).is_none());
    }
}
