//! Memory: `mmap` of anonymous memory and of files, `munmap`, `mprotect`, `brk`,
//! `madvise`, on the core's address space (`mm`).
//!
//! The program's break cannot grow (the kernel's heap starts right after
//! the program): `brk` reports it unchanged, and C libraries fall back to
//! `mmap`, as they do when Linux refuses to grow it. Memory is
//! identity-mapped RAM (decisions 0002 and 0004), so an address hint or
//! `MAP_FIXED` is honoured where that RAM is free or the program's own
//! anonymous memory, and is `ENOMEM` elsewhere (the kernel's memory, the
//! program's image, beyond RAM). A file mapping is a private copy of the
//! file's bytes; code mapped executable, from a file or by `mprotect`,
//! has its `syscall` sites rewritten before it can run ([`sites`]).

use eremite_interface::errno::{self, Errno};
use eremite_interface::layout::PAGE_SIZE;
use spin::Once;

use super::{SysResult, sites, symbols, user};
use crate::{fd, mm, sched};

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_FIXED: u32 = 0x10;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
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
    if flags
        & !(MAP_SHARED
            | MAP_PRIVATE
            | MAP_FIXED
            | MAP_FIXED_NOREPLACE
            | MAP_ANONYMOUS
            | MAP_IGNORED)
        != 0
    {
        return Err(errno::EINVAL);
    }
    if len == 0 {
        return Err(errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        return map_file(addr, len, prot, flags, fd, offset);
    }
    place(addr, len, prot, flags)
}

/// Anonymous memory where `addr` and `flags` say: in RAM at its own
/// address, or in the virtual window (`mm::window`) for addresses there
/// and for large reservations.
fn place(addr: u64, len: usize, prot: mm::Prot, flags: u32) -> SysResult {
    use mm::WindowPlacement as At;
    let is_window = mm::window::contains(addr & !(PAGE_SIZE - 1), len as u64);
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 && !addr.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    if flags & MAP_FIXED != 0 {
        return if is_window {
            mm::window::map(At::Fixed(addr), len, prot)
        } else {
            mm::map_anonymous_fixed(addr, len, prot)
        };
    }
    if flags & MAP_FIXED_NOREPLACE != 0 {
        return if is_window {
            mm::window::map(At::FixedNoReplace(addr), len, prot)
        } else {
            mm::map_anonymous_at(addr, len, prot)
        };
    }
    // A hint: there if that memory is free, else anywhere (as Linux).
    let hint = addr & !(PAGE_SIZE - 1);
    if hint != 0 && is_window {
        return mm::window::map(At::Hint(hint), len, prot);
    }
    if hint != 0
        && let Ok(mapped) = mm::map_anonymous_at(hint, len, prot)
    {
        return Ok(mapped);
    }
    mm::map_anonymous(len, prot)
}

/// `mmap(2)` of a file: a private copy of its bytes from `offset` (zero
/// past its end), as `MAP_PRIVATE` gives and as `MAP_SHARED` gives while
/// nobody writes (a shared mapping that is writable is `ENODEV`: writes
/// would not reach the file). Code mapped executable has its `syscall`
/// sites rewritten first, while the pages are still writable.
fn map_file(addr: u64, len: usize, prot: mm::Prot, flags: u32, fd: i32, offset: i64) -> SysResult {
    const S_IFMT: u32 = 0o170_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFCHR: u32 = 0o020_000;
    let offset = u64::try_from(offset).map_err(|_| errno::EINVAL)?;
    if !offset.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    let stat = fd::fstat(fd)?;
    if !matches!(stat.mode & S_IFMT, S_IFREG | S_IFCHR) {
        return Err(errno::ENODEV);
    }
    if !fd::status_flags(fd)?.is_readable() {
        return Err(errno::EACCES);
    }
    if flags & MAP_SHARED != 0 && prot.is_writable() {
        return Err(errno::ENODEV);
    }
    let at = place(addr, len, mm::Prot::READ_WRITE, flags)?;
    let filled = fill(at, len, fd, offset).and_then(|()| {
        if prot.is_executable() {
            sites::rewrite(at, len, &symbols::functions(fd, offset, at));
        }
        if prot == mm::Prot::READ_WRITE {
            Ok(())
        } else {
            mm::protect(at, len, prot)
        }
    });
    if let Err(error) = filled {
        let _ = mm::unmap(at, len);
        return Err(error);
    }
    Ok(at)
}

/// Read the file `fd` from `offset` into the fresh, zeroed mapping at
/// `at` (`len` bytes) until the file ends.
fn fill(at: u64, len: usize, fd: i32, offset: u64) -> Result<(), Errno> {
    let buf = user::slice_mut(super::ptr::<u8>(at), len)?;
    let mut done = 0;
    while done < buf.len() {
        match fd::pread(fd, &mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(())
}

/// `mremap(2)` of anonymous memory (`MREMAP_MAYMOVE`, `MREMAP_FIXED`).
pub(super) fn mremap(
    addr: u64,
    old_len: usize,
    new_len: usize,
    flags: u32,
    new_addr: u64,
) -> SysResult {
    const MREMAP_MAYMOVE: u32 = 1;
    const MREMAP_FIXED: u32 = 2;
    const MREMAP_DONTUNMAP: u32 = 4;
    if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
        || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
    {
        return Err(errno::EINVAL);
    }
    if flags & MREMAP_DONTUNMAP != 0 {
        // Leaves the old range mapped, empty: not yet.
        return Err(errno::EINVAL);
    }
    if old_len == 0 {
        // Duplicating a shared mapping: there are none.
        return Err(errno::EINVAL);
    }
    let to = (flags & MREMAP_FIXED != 0).then_some(new_addr);
    if to.is_some_and(|to| !to.is_multiple_of(PAGE_SIZE)) {
        return Err(errno::EINVAL);
    }
    let may_move = flags & MREMAP_MAYMOVE != 0;
    if mm::window::contains(addr, old_len as u64) {
        mm::window::remap(addr, old_len, new_len, may_move, to)
    } else {
        mm::remap(addr, old_len, new_len, may_move, to)
    }
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
    mm::unmap(addr, len)?;
    sites::forget(addr, len);
    Ok(0)
}

/// `mprotect(2)`. Code made executable has its `syscall` sites rewritten
/// first (made writable for that if it is not).
pub(super) fn mprotect(addr: u64, len: usize, prot_bits: u32) -> SysResult {
    let prot = prot(prot_bits)?;
    if prot.is_executable() && len > 0 {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(errno::EINVAL);
        }
        let len = len.next_multiple_of(super::size(PAGE_SIZE));
        if user::slice_mut(super::ptr::<u8>(addr), len).is_err() {
            mm::protect(addr, len, mm::Prot::READ_WRITE)?;
        }
        sites::rewrite(addr, len, &[]);
    }
    mm::protect(addr, len, prot).map(|()| 0)
}

/// `brk(2)`: the break stays where the program ends.
pub(super) fn brk(_requested: u64) -> SysResult {
    Ok(BREAK.get().copied().unwrap_or(0))
}

/// `madvise(2)`: `MADV_DONTNEED` zeroes the pages (what callers rely
/// on); `MADV_FREE` and the rest are advice, taken as given (the memory
/// stays, as `MADV_FREE` allows).
pub(super) fn madvise(addr: u64, len: usize, advice: i32) -> SysResult {
    const MADV_DONTNEED: i32 = 4;
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(errno::EINVAL);
    }
    match advice {
        MADV_DONTNEED if len > 0 => mm::discard(addr, len).map(|()| 0),
        _ => Ok(0),
    }
}
