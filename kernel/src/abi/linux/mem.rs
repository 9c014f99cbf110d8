//! Memory: `mmap` of anonymous memory, `munmap`, `mprotect`, `brk`,
//! `madvise`, on the core's address space (`mm`).
//!
//! The program's break cannot grow (the kernel's heap starts right after
//! the program): `brk` reports it unchanged, and C libraries fall back to
//! `mmap`, as they do when Linux refuses to grow it. `MAP_FIXED`, address
//! hints and file mappings are not supported yet (decision 0002: memory
//! is identity-mapped RAM; a virtual window for them is planned).

use eremite_interface::errno::{self, Errno};
use spin::Once;

use super::SysResult;
use crate::{mm, sched};

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_FIXED: u32 = 0x10;
const MAP_ANONYMOUS: u32 = 0x20;
/// Flags that change nothing here: every mapping is committed RAM.
const MAP_IGNORED: u32 = 0x100 /* GROWSDOWN */ | 0x800 /* DENYWRITE */ | 0x1000 /* EXECUTABLE */
    | 0x4000 /* NORESERVE */ | 0x8000 /* POPULATE */ | 0x20000 /* STACK */;

/// The program's break, set at start.
static BREAK: Once<u64> = Once::new();

/// Record where the program's break is (its end).
pub(super) fn set_break(end: u64) {
    BREAK.call_once(|| end);
}

fn prot(bits: u32) -> Result<mm::Prot, Errno> {
    mm::Prot::from_bits(bits)
}

pub(super) fn mmap(
    addr: u64,
    len: usize,
    prot_bits: u32,
    flags: u32,
    fd: i32,
    offset: i64,
) -> SysResult {
    let prot = prot(prot_bits)?;
    let sharing = flags & (MAP_SHARED | MAP_PRIVATE);
    if sharing == 0 || sharing == MAP_SHARED | MAP_PRIVATE {
        return Err(errno::EINVAL);
    }
    if flags & !(MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_IGNORED) != 0 {
        return Err(errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        // File mappings: not yet.
        let _ = (fd, offset);
        return Err(errno::ENODEV);
    }
    if flags & MAP_FIXED != 0 || !addr.is_multiple_of(4096) {
        return Err(if flags & MAP_FIXED != 0 {
            errno::ENOMEM
        } else {
            errno::EINVAL
        });
    }
    // A hint without MAP_FIXED is only a hint.
    mm::map_anonymous(len, prot)
}

/// `munmap(2)`. A range that holds the caller's stack pointer `rsp` is
/// unmapped when the thread exits instead (musl's detached threads unmap
/// their own stack, then call `exit`, whose rewritten site pushes a
/// return address there).
pub(super) fn munmap(addr: u64, len: usize, rsp: u64) -> SysResult {
    let end = addr.saturating_add(len as u64);
    if (addr..end).contains(&rsp) {
        sched::unmap_at_exit(addr, len);
        return Ok(0);
    }
    mm::unmap(addr, len).map(|()| 0)
}

pub(super) fn mprotect(addr: u64, len: usize, prot_bits: u32) -> SysResult {
    mm::protect(addr, len, prot(prot_bits)?).map(|()| 0)
}

/// `brk(2)`: the break stays where the program ends.
pub(super) fn brk(_requested: u64) -> SysResult {
    Ok(BREAK.get().copied().unwrap_or(0))
}

/// `madvise(2)`: advice is accepted; `MADV_DONTNEED` on anonymous memory
/// would have to zero it, which callers rely on, so it is refused until
/// it does.
pub(super) fn madvise(_addr: u64, _len: usize, advice: i32) -> SysResult {
    const MADV_DONTNEED: i32 = 4;
    const MADV_FREE: i32 = 8;
    match advice {
        MADV_DONTNEED => Err(errno::EINVAL),
        MADV_FREE => Ok(0),
        _ => Ok(0),
    }
}
