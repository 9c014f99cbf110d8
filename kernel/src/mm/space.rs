//! The application's mappings and the threads' stacks: what each range of
//! the address space is for ([`AddressSpace`] from `eremite-mm`), backed
//! by frames at their own addresses (the identity map).
//!
//! - `mmap` takes a run of free frames, zeroes them unless they were
//!   never used, and records an anonymous region; `munmap` takes every
//!   right from its pages (they fault from then on, until the frames are
//!   handed out again) and returns the frames; `mprotect` changes rights.
//! - A stack is a run of frames whose lowest [`GUARD_PAGES`] have no
//!   rights, so an overflow faults in the guard instead of writing over
//!   whatever lies below. Making a guard costs a TLB invalidation on every
//!   CPU, so stacks of exited threads are kept (guard in place) for the
//!   next thread that asks for the same size.
//! - [`explain_fault`] says what a faulting address was: a guard page
//!   (stack overflow), an unmapped page, a page without the right.

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
use eremite_mm::{Access, AddressSpace, FaultCause, Kind, PageRange, Prot, PteChange};

use super::ram::{self, Commit, Fill, Shortage};
use crate::arch::{self, PageRights};
use crate::sync::Lock;

/// Guard pages below every stack: 16 KiB. Rust code probes frames larger
/// than a page (stack probes), so an overflow always touches the guard.
pub(crate) const GUARD_PAGES: u64 = 4;

/// Stacks of exited threads kept for reuse: at most this many, and this
/// many bytes; all are given back when frames run out.
const CACHED_STACKS: usize = 16;
const CACHED_STACK_BYTES: u64 = 8 << 20;

/// Thread id recorded for stacks that belong to no thread (a CPU's idle
/// loop).
pub(crate) const NO_THREAD: u32 = 0;

static SPACE: Lock<Option<AddressSpace>> = Lock::new(None);

/// Whole stacks (guard included) ready for reuse.
static STACK_CACHE: Lock<Vec<PageRange>> = Lock::new(Vec::new());

pub(super) fn init(bounds: PageRange) {
    *SPACE.lock() = Some(AddressSpace::new(bounds));
}

/// The page rights that give `prot`.
pub(super) fn rights_of(prot: Prot) -> PageRights {
    match (prot.is_readable(), prot.is_writable(), prot.is_executable()) {
        (_, true, _) => PageRights::ReadWrite,
        (_, false, true) => PageRights::ReadExecute,
        (true, false, false) => PageRights::Read,
        (false, false, false) => PageRights::None,
    }
}

/// `mmap(2)` of anonymous memory: `len_bytes` (rounded up to pages) of
/// zeroed memory with protection `prot`.
pub(crate) fn map_anonymous(len_bytes: usize, prot: Prot) -> Result<u64, Errno> {
    if len_bytes == 0 {
        return Err(errno::EINVAL);
    }
    let pages = (len_bytes as u64).div_ceil(PAGE_SIZE);
    let commit = if pages * PAGE_SIZE <= ram::COMMIT_NOW_MAX_BYTES {
        Commit::Now
    } else {
        Commit::OnTouch
    };
    let range = ram::take(
        pages,
        PAGE_SIZE,
        Fill::Zeroed,
        commit,
        Shortage::ReclaimAndMerge,
    )
    .ok_or(errno::ENOMEM)?;
    map_taken(range, prot)
}

/// Map `range`, whose frames were just taken, as anonymous memory with
/// `prot`; on failure the frames go back.
fn map_taken(range: PageRange, prot: Prot) -> Result<u64, Errno> {
    let mapped = SPACE
        .lock()
        .as_mut()
        .ok_or(errno::ENOMEM)
        .and_then(|space| space.map(range, Kind::Anonymous, prot));
    if let Err(error) = mapped {
        ram::give_back(range);
        return Err(error);
    }
    if rights_of(prot) != PageRights::ReadWrite && ram::set_rights(range, rights_of(prot)).is_err()
    {
        let _ = unmap(range.start, range.len_bytes() as usize);
        return Err(errno::ENOMEM);
    }
    Ok(range.start)
}

fn commit_for(range: PageRange) -> Commit {
    if range.len_bytes() <= ram::COMMIT_NOW_MAX_BYTES {
        Commit::Now
    } else {
        Commit::OnTouch
    }
}

/// `mmap(2)` of anonymous memory exactly at `addr`, if nothing is mapped
/// there and its frames are free RAM (a hint, `MAP_FIXED_NOREPLACE`):
/// `EEXIST` if a region holds a page of it, `ENOMEM` if the frames are
/// not free or not RAM.
pub(crate) fn map_anonymous_at(addr: u64, len_bytes: usize, prot: Prot) -> Result<u64, Errno> {
    let range = PageRange::from_addr_len(addr, len_bytes as u64)?;
    let is_taken = SPACE
        .lock()
        .as_ref()
        .is_none_or(|space| space.regions().any(|r| r.range.overlaps(range)));
    if is_taken {
        return Err(errno::EEXIST);
    }
    let range = ram::take_at(range, Fill::Zeroed, commit_for(range)).ok_or(errno::ENOMEM)?;
    map_taken(range, prot)
}

/// `mmap(2)` with `MAP_FIXED`: anonymous memory at `addr`, replacing the
/// program's anonymous mappings there (as Linux replaces any mapping).
/// `ENOMEM` if a page of it is anything else (the kernel's, the
/// program's image) or is not free RAM.
pub(crate) fn map_anonymous_fixed(addr: u64, len_bytes: usize, prot: Prot) -> Result<u64, Errno> {
    let range = PageRange::from_addr_len(addr, len_bytes as u64)?;
    let is_foreign = SPACE.lock().as_ref().is_none_or(|space| {
        space
            .regions()
            .any(|r| r.range.overlaps(range) && r.kind != Kind::Anonymous)
    });
    if is_foreign {
        return Err(errno::ENOMEM);
    }
    // What was mapped there goes (its frames are then free again, after
    // the allocator reclaims them from quarantine).
    unmap(range.start, range.len_bytes() as usize)?;
    let range = ram::take_at(range, Fill::Zeroed, commit_for(range)).ok_or(errno::ENOMEM)?;
    map_taken(range, prot)
}

/// The protection of the anonymous mapping that holds all of
/// `[addr, addr + len_bytes)` with one protection (`mremap`'s "one
/// mapping"); `EFAULT` otherwise.
fn one_mapping(addr: u64, len_bytes: u64) -> Result<Prot, Errno> {
    let range = PageRange::from_addr_len(addr, len_bytes).map_err(|_| errno::EFAULT)?;
    let guard = SPACE.lock();
    let space = guard.as_ref().ok_or(errno::EFAULT)?;
    let region = space.lookup(range.start).ok_or(errno::EFAULT)?;
    if region.kind != Kind::Anonymous || !region.range.covers(range) {
        return Err(errno::EFAULT);
    }
    Ok(region.prot)
}

/// `mremap(2)` of anonymous memory: shrink in place, grow in place when
/// the pages after it are free, else (with `may_move`) move it to a new
/// mapping, at `to` if given (`MREMAP_FIXED`). The new address.
pub(crate) fn remap(
    addr: u64,
    old_bytes: usize,
    new_bytes: usize,
    may_move: bool,
    to: Option<u64>,
) -> Result<u64, Errno> {
    let (old_len, new_len) = super::remap_lengths(addr, old_bytes, new_bytes)?;
    let prot = one_mapping(addr, old_len.max(PAGE_SIZE))?;
    if to.is_none() {
        if new_len <= old_len {
            if new_len < old_len {
                unmap(addr + new_len, (old_len - new_len) as usize)?;
            }
            return Ok(addr);
        }
        if map_anonymous_at(addr + old_len, (new_len - old_len) as usize, prot).is_ok() {
            return Ok(addr);
        }
        if !may_move {
            return Err(errno::ENOMEM);
        }
    }
    if let Some(to) = to {
        let target = PageRange::from_addr_len(to, new_len)?;
        let source = PageRange::from_addr_len(addr, old_len.max(PAGE_SIZE))?;
        if target.overlaps(source) {
            return Err(errno::EINVAL);
        }
    }
    // Move: a read-write mapping to copy into, then the old one's rights.
    let new = match to {
        Some(to) => map_anonymous_fixed(to, new_len as usize, Prot::READ_WRITE)?,
        None => map_anonymous(new_len as usize, Prot::READ_WRITE)?,
    };
    let copied = old_len.min(new_len);
    if !prot.is_readable() {
        // Unreadable pages cannot be copied from here: make them readable
        // for the copy (they are unmapped right after).
        protect(addr, copied as usize, Prot::READ)?;
    }
    // SAFETY: both ranges are the program's anonymous mappings, the old
    // one readable and the new one read-write (just arranged), and they
    // do not overlap (a new mapping was free, a fixed target that
    // overlaps is refused above).
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, new as *mut u8, copied as usize) };
    unmap(addr, old_len as usize)?;
    if prot != (Prot::READ_WRITE) {
        protect(new, new_len as usize, prot)?;
    }
    Ok(new)
}

/// `madvise(MADV_DONTNEED)` on anonymous memory: the pages read as zero
/// from now on. `ENOMEM` if a page is not mapped, `EINVAL` if one is not
/// the program's anonymous memory.
pub(crate) fn discard(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    let range = PageRange::from_addr_len(addr, len_bytes as u64)?;
    let parts: Vec<(PageRange, Prot)> = {
        let guard = SPACE.lock();
        let space = guard.as_ref().ok_or(errno::ENOMEM)?;
        let mut cursor = range.start;
        let mut parts = Vec::new();
        for region in space.regions().filter(|r| r.range.overlaps(range)) {
            if region.range.start > cursor {
                return Err(errno::ENOMEM);
            }
            if region.kind != Kind::Anonymous {
                return Err(errno::EINVAL);
            }
            if let Some(part) = region.range.intersect(range) {
                parts.push((part, region.prot));
            }
            cursor = region.range.end;
        }
        if cursor < range.end {
            return Err(errno::ENOMEM);
        }
        parts
    };
    for (part, prot) in parts {
        let is_writable = prot.is_writable();
        if !is_writable && ram::set_rights(part, PageRights::ReadWrite).is_err() {
            return Err(errno::ENOMEM);
        }
        // SAFETY: the program's own anonymous pages (checked above),
        // writable now; the program gave up their contents.
        unsafe { core::ptr::write_bytes(part.start as *mut u8, 0, part.len_bytes() as usize) };
        if !is_writable && ram::set_rights(part, rights_of(prot)).is_err() {
            return Err(errno::ENOMEM);
        }
    }
    Ok(())
}

/// `munmap(2)`: the application's mappings in the range lose every right
/// and their frames return to the allocator. Pages that are not mapped
/// are skipped; kernel memory (`EPERM`) is never unmapped.
pub(crate) fn unmap(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    let mut guard = SPACE.lock();
    let space = guard.as_mut().ok_or(errno::EINVAL)?;
    let changes = space.munmap(addr, len_bytes as u64)?;
    for change in changes {
        if let PteChange::Unmap { range } = change {
            // Taking rights away needs no new table when the pages are
            // already split, and mmap'd pages with other rights than
            // read-write are; a read-write mapping inside a 2 MiB page
            // needs one, which can fail only when memory is exhausted.
            if ram::set_rights(range, PageRights::None).is_err() {
                return Err(errno::ENOMEM);
            }
            ram::give_back_unmapped(range);
        }
    }
    Ok(())
}

/// Record the pages of a Linux program's segment (or its interpreter's),
/// which the VMM loaded with the rights of `prot`, so that the program can
/// change them (`mprotect` of `PT_GNU_RELRO`). Pages already recorded (a
/// page two segments share) are skipped.
pub(crate) fn add_program_segment(start: u64, end: u64, prot: Prot) -> Result<(), Errno> {
    let range = PageRange::new(start & !(PAGE_SIZE - 1), end.next_multiple_of(PAGE_SIZE))?;
    let mut guard = SPACE.lock();
    let space = guard.as_mut().ok_or(errno::ENOMEM)?;
    let mut cursor = range.start;
    let taken: Vec<PageRange> = space
        .regions()
        .filter(|r| r.range.overlaps(range))
        .map(|r| r.range)
        .collect();
    for region in taken.iter().chain(core::iter::once(&PageRange {
        start: range.end,
        end: range.end,
    })) {
        let free_end = region.start.clamp(cursor, range.end);
        if free_end > cursor {
            space.map(
                PageRange {
                    start: cursor,
                    end: free_end,
                },
                Kind::Program,
                prot,
            )?;
        }
        cursor = cursor.max(region.end);
    }
    Ok(())
}

/// `mprotect(2)` of the application's mappings.
pub(crate) fn protect(addr: u64, len_bytes: usize, prot: Prot) -> Result<(), Errno> {
    let mut guard = SPACE.lock();
    let space = guard.as_mut().ok_or(errno::ENOMEM)?;
    // Make room for the page-table splits first, so that the map and the
    // page tables cannot disagree: a failed split leaves both unchanged.
    let before: Vec<_> = space.regions().copied().collect();
    let changes = space.mprotect(addr, len_bytes as u64, prot)?;
    for change in &changes {
        if let PteChange::Protect { range, to, .. } = *change
            && ram::set_rights(range, rights_of(to)).is_err()
        {
            restore(space, &before);
            return Err(errno::ENOMEM);
        }
    }
    Ok(())
}

/// Put the map back as it was (after a failed `mprotect`), and the rights
/// of its pages with it.
fn restore(space: &mut AddressSpace, before: &[eremite_mm::Region]) {
    let bounds = space.bounds();
    let mut fresh = AddressSpace::new(bounds);
    for region in before {
        let _ = fresh.map(region.range, region.kind, region.prot);
        if matches!(region.kind, Kind::Anonymous | Kind::Program) {
            let _ = ram::set_rights(region.range, rights_of(region.prot));
        }
    }
    *space = fresh;
}

/// A thread's stack: guard pages, then the stack proper; frames of its own
/// at their own addresses.
pub(crate) struct Stack {
    /// The whole run, guard included.
    range: PageRange,
}

/// Spawned threads' stacks leave RAM / this free for the heap.
const HEAP_RESERVE_DIVISOR: u64 = 16;

impl Stack {
    /// A stack of at least `len_bytes` (rounded up to pages) above
    /// [`GUARD_PAGES`] guard pages, recorded for thread `thread` in the
    /// map, or `None` when memory is exhausted. Spawned threads pass
    /// [`NO_THREAD`] (the scheduler, which holds their stacks, names them
    /// at fault time, so spawning records nothing), as do CPUs' idle
    /// stacks; the main thread passes its id.
    ///
    /// A fresh stack for a spawned thread is not taken from the last
    /// [`HEAP_RESERVE_DIVISOR`]th of RAM: a program that starts a thread
    /// per client until memory runs out then gets an error from the spawn,
    /// which it can handle, instead of from its next allocation, which
    /// aborts it (httpd with 256 clients at 64 MiB did).
    pub(crate) fn new(len_bytes: usize, thread: u32) -> Option<Self> {
        let pages = (len_bytes as u64)
            .div_ceil(PAGE_SIZE)
            .checked_add(GUARD_PAGES)?;
        let reserve = super::ram_bytes() / HEAP_RESERVE_DIVISOR;
        let is_spawned = thread == NO_THREAD;
        // Cached stacks are recorded for no thread; one for a named thread
        // (the main thread's, at boot) is always fresh.
        let reused = (thread == NO_THREAD)
            .then(|| {
                let mut cache = STACK_CACHE.lock();
                let at = cache.iter().position(|r| r.pages() == pages)?;
                Some(cache.swap_remove(at))
            })
            .flatten();
        match reused {
            Some(range) => Some(Self { range }),
            // Out of frames: the cached stacks are the first to go.
            None if is_spawned && ram::free_bytes() < pages * PAGE_SIZE + reserve => {
                drain_stack_cache();
                (ram::free_bytes() >= pages * PAGE_SIZE + reserve)
                    .then(|| Self::fresh(pages, thread))
                    .flatten()
            }
            None => Self::fresh(pages, thread).or_else(|| {
                drain_stack_cache();
                Self::fresh(pages, thread)
            }),
        }
    }

    fn fresh(pages: u64, thread: u32) -> Option<Self> {
        // The guard splits its 2 MiB page, and on shadow-paging hosts
        // every small page of a split 2 MiB page costs a fault of its own
        // at first touch. A stack of 2 MiB or more starts on a 2 MiB
        // boundary, so the split page holds only its guard and its deepest
        // part, which most programs never reach.
        let align = if pages * PAGE_SIZE >= LARGE_PAGE_SIZE {
            LARGE_PAGE_SIZE
        } else {
            PAGE_SIZE
        };
        let range = ram::take(
            pages,
            align,
            Fill::Any,
            Commit::OnTouch,
            Shortage::ReclaimAndMerge,
        )?;
        let guard = PageRange {
            start: range.start,
            end: range.start + GUARD_PAGES * PAGE_SIZE,
        };
        if ram::set_rights(guard, PageRights::None).is_err() {
            ram::give_back(range);
            return None;
        }
        let kind = Kind::Stack {
            thread,
            guard_pages: GUARD_PAGES,
        };
        let mapped = SPACE
            .lock()
            .as_mut()
            .map(|space| space.map(range, kind, Prot::READ_WRITE));
        if !matches!(mapped, Some(Ok(_))) {
            ram::give_back_unmapped(range);
            return None;
        }
        Some(Self { range })
    }

    /// Whether `addr` lies in the stack or its guard pages.
    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.range.contains(addr)
    }

    /// One past its highest byte (page-aligned, so 16-byte aligned).
    pub(crate) fn top(&self) -> u64 {
        self.range.end
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut cache = STACK_CACHE.lock();
        let cached_bytes: u64 = cache.iter().map(|r| r.len_bytes()).sum();
        if cache.len() < CACHED_STACKS
            && cached_bytes + self.range.len_bytes() <= CACHED_STACK_BYTES
            && cache.try_reserve(1).is_ok()
        {
            cache.push(self.range);
            return;
        }
        drop(cache);
        release_stack(self.range);
    }
}

/// Forget a stack and return its frames (the guard keeps no rights;
/// whoever takes its frames next restores them).
fn release_stack(range: PageRange) {
    let is_released = SPACE
        .lock()
        .as_mut()
        .and_then(|space| {
            let kind = space.lookup(range.start)?.kind;
            space.release(range, kind).ok()
        })
        .is_some();
    if is_released {
        ram::give_back_unmapped(range);
    }
}

/// Return the frames of every cached stack.
fn drain_stack_cache() {
    let cached = core::mem::take(&mut *STACK_CACHE.lock());
    for range in cached {
        release_stack(range);
    }
}

/// Whether an anonymous mapping or a program segment holds `addr`.
pub(super) fn is_mapped(addr: u64) -> bool {
    SPACE.try_lock().is_some_and(|guard| {
        guard.as_ref().is_some_and(|space| {
            space
                .lookup(addr)
                .is_some_and(|r| matches!(r.kind, Kind::Anonymous | Kind::Program))
        })
    })
}

/// What a page fault at `addr` was, for the report: `None` if the memory
/// manager is busy on this CPU (the fault hit it mid-change) or knows
/// nothing of the address.
pub(crate) fn explain_fault(addr: u64, access: Access) -> Option<FaultExplanation> {
    let guard = SPACE.try_lock()?;
    let space = guard.as_ref()?;
    let fault = space.fault(addr, access);
    Some(match fault.cause {
        FaultCause::StackGuard { thread } => FaultExplanation::StackOverflow { thread },
        _ if space.lookup(addr).is_some() => FaultExplanation::Mapping(fault),
        _ => FaultExplanation::Other(arch::paging_leaf(addr)),
    })
}

/// See [`explain_fault`].
pub(crate) enum FaultExplanation {
    /// The address is in the guard pages of this thread's stack
    /// ([`NO_THREAD`]: a CPU's idle stack).
    StackOverflow {
        /// The thread.
        thread: u32,
    },
    /// The address is in a mapping or a stack; the fault, explained.
    Mapping(eremite_mm::Fault),
    /// Not in the map (image, heap, supervisor memory, unmapped): the leaf
    /// page-table bits of the address.
    Other(u64),
}
