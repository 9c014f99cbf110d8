//! The virtual window (decision 0005): addresses above RAM, from
//! [`WINDOW_START`] (512 GiB) to [`WINDOW_END`] (128 TiB, the top of the
//! lower canonical half), where the program's anonymous mappings live
//! (`mmap` of both ABIs), backed on demand as Linux backs them.
//!
//! - `mmap` only records the region: no frame, no page table, no
//!   page-table write (a mapping of at most 64 KiB is backed at once, its
//!   entries marked untouched). A page gets a zeroed frame of its own at
//!   its first touch: the page fault comes here ([`back_on_fault`]), as does the
//!   kernel when it checks a buffer the program passed ([`back`]). A
//!   fault backs a chunk around the page (16 pages, doubling while the
//!   program touches chunk after chunk, up to a 2 MiB table), since each
//!   fault is a round trip through the CPL0 stub.
//! - `munmap` of pages nobody touched costs nothing but the record;
//!   touched pages lose their entries and their frames go back once no
//!   TLB can hold them (an invalidation only for pages whose accessed bit
//!   says a TLB may, `arch::set_window_entry`). A table left empty is
//!   unlinked and freed.
//! - `mprotect` changes the entries of backed pages only; `PROT_NONE`
//!   keeps the frame in a not-present entry, so data survives.
//! - Addresses are handed out next-fit: a range given back is not handed
//!   out again until the cursor has gone round the 127.5 TiB, so a stray
//!   access to unmapped memory faults instead of landing in a newer
//!   mapping, and each new mapping gets fresh tables.
//!
//! Frames stay identity-mapped too (the kernel zeroes them there). These
//! are the only translations that are not the identity; nothing but the
//! program's own memory is mapped so, and buffers handed to the VMM are
//! copied through the kernel's own memory when they lie here
//! (`hypervisor`).
//!
//! The regions are an `eremite-mm` address space of their own, with the
//! same `mmap`/`munmap`/`mprotect` rules as the RAM one. Every edit of the
//! window's entries happens under [`WINDOW`]'s lock, invalidations
//! included, which is what lets an edit trust the accessed bits.

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::layout::pte::ADDR_MASK;
use eremite_interface::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
use eremite_mm::{AddressSpace, Kind, PageRange, Prot, PteChange};

use super::UserAccess;
use super::ram::{self, Commit, Fill, Shortage};
use super::space::rights_of;
use crate::arch::{self, PageRights};
use crate::sync::{self, Lock, LockGuard};

/// The window's first address: 512 GiB, past any guest RAM.
pub(crate) const WINDOW_START: u64 = eremite_interface::layout::VIRTUAL_WINDOW_START;
/// One past its last: the top of the lower canonical half.
pub(crate) const WINDOW_END: u64 = eremite_interface::layout::VIRTUAL_WINDOW_END;

/// Pages a first fault backs; doubled for each fault that continues where
/// the last one ended, up to a whole table.
const FAULT_CHUNK_PAGES: u64 = 16;
const FAULT_CHUNK_MAX_PAGES: u64 = 512;

/// Mappings up to this size are backed when they are made.
const BACKED_AT_MAP_MAX_BYTES: u64 = 64 << 10;

struct Window {
    space: AddressSpace,
    /// Where the next search for free addresses starts.
    next_free: u64,
    /// The range the last fault backed, and how many pages the next one
    /// backs if it continues it.
    last_chunk: PageRange,
    chunk_pages: u64,
}

static WINDOW: Lock<Option<Window>> = Lock::new(None);

/// Where a mapping in the window goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// At this address if it is free, else anywhere in the window.
    Hint(u64),
    /// Exactly here, replacing what is there (`MAP_FIXED`).
    Fixed(u64),
    /// Exactly here, or `EEXIST` (`MAP_FIXED_NOREPLACE`).
    FixedNoReplace(u64),
    /// Anywhere in the window.
    Anywhere,
}

/// Whether `[addr, addr + len)` lies in the window.
pub(crate) fn contains(addr: u64, len: u64) -> bool {
    addr >= WINDOW_START && addr.checked_add(len).is_some_and(|end| end <= WINDOW_END)
}

fn bounds() -> PageRange {
    PageRange {
        start: WINDOW_START,
        end: WINDOW_END,
    }
}

fn window() -> LockGuard<'static, Option<Window>> {
    let mut guard = WINDOW.lock();
    if guard.is_none() {
        *guard = Some(Window {
            space: AddressSpace::new(bounds()),
            next_free: WINDOW_START,
            last_chunk: PageRange { start: 0, end: 0 },
            chunk_pages: FAULT_CHUNK_PAGES,
        });
    }
    guard
}

/// `mmap(2)` of anonymous memory in the window: where it went. Nothing is
/// backed yet; a mapping with rights larger than the free memory is
/// refused (`ENOMEM`) rather than failing at a touch much later.
pub(crate) fn map(placement: Placement, len_bytes: usize, prot: Prot) -> Result<u64, Errno> {
    if len_bytes == 0 {
        return Err(errno::EINVAL);
    }
    let len = (len_bytes as u64)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(errno::ENOMEM)?;
    if prot != Prot::NONE && len > ram::free_bytes() {
        return Err(errno::ENOMEM);
    }
    let mut guard = window();
    let Some(window) = guard.as_mut() else {
        unreachable!("window() makes the window");
    };
    let range = match placement {
        Placement::Fixed(addr) => {
            let range = PageRange::from_addr_len(addr, len)?;
            if !bounds().covers(range) {
                return Err(errno::ENOMEM);
            }
            let changes = window.space.munmap(addr, len)?;
            apply(&changes);
            range
        }
        Placement::FixedNoReplace(addr) => PageRange::from_addr_len(addr, len)?,
        Placement::Hint(addr) => PageRange::from_addr_len(addr & !(PAGE_SIZE - 1), len)
            .ok()
            .filter(|r| {
                bounds().covers(*r) && !window.space.regions().any(|g| g.range.overlaps(*r))
            })
            .map_or_else(|| window.free_range(len), Ok)?,
        Placement::Anywhere => window.free_range(len)?,
    };
    if !bounds().covers(range) {
        return Err(errno::ENOMEM);
    }
    window.space.map(range, Kind::Anonymous, prot)?;
    // A small mapping is mostly used at once (a C library's allocator
    // groups, a small buffer): backed now, it spares the fault a first
    // touch costs (tens of µs here); untouched, it still goes without an
    // invalidation.
    if prot != Prot::NONE
        && len <= BACKED_AT_MAP_MAX_BYTES
        && back_range(range, rights_of(prot), Marking::Untouched).is_err()
    {
        let changes = window.space.munmap(range.start, len)?;
        apply(&changes);
        return Err(errno::ENOMEM);
    }
    Ok(range.start)
}

impl Window {
    /// A free range of `len` bytes, next-fit from the cursor, 2 MiB
    /// aligned when it is that large (so that it can fill whole tables).
    fn free_range(&mut self, len: u64) -> Result<PageRange, Errno> {
        let align = if len >= LARGE_PAGE_SIZE {
            LARGE_PAGE_SIZE
        } else {
            PAGE_SIZE
        };
        let pages = len / PAGE_SIZE;
        let from_cursor = PageRange {
            start: self.next_free,
            end: WINDOW_END,
        };
        let start = self
            .space
            .find_free(pages, align, from_cursor)
            .or_else(|_| self.space.find_free(pages, align, bounds()))?;
        self.next_free = start + len;
        Ok(PageRange {
            start,
            end: start + len,
        })
    }
}

/// `munmap(2)` in the window.
pub(crate) fn unmap(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    let mut guard = window();
    let Some(window) = guard.as_mut() else {
        return Ok(());
    };
    let changes = window.space.munmap(addr, len_bytes as u64)?;
    apply(&changes);
    Ok(())
}

/// `mprotect(2)` in the window.
pub(crate) fn protect(addr: u64, len_bytes: usize, prot: Prot) -> Result<(), Errno> {
    let mut guard = window();
    let Some(window) = guard.as_mut() else {
        return Err(errno::ENOMEM);
    };
    let changes = window.space.mprotect(addr, len_bytes as u64, prot)?;
    apply(&changes);
    Ok(())
}

/// `madvise(MADV_DONTNEED)` in the window: the backed pages give their
/// frames back and read as zero at their next touch. `ENOMEM` if a page
/// of the range is not mapped.
pub(crate) fn discard(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    let range = PageRange::from_addr_len(addr, len_bytes as u64)?;
    let guard = window();
    let Some(window) = guard.as_ref() else {
        return Err(errno::ENOMEM);
    };
    let mut cursor = range.start;
    for region in window.space.regions().filter(|r| r.range.overlaps(range)) {
        if region.range.start > cursor {
            return Err(errno::ENOMEM);
        }
        cursor = region.range.end;
    }
    if cursor < range.end {
        return Err(errno::ENOMEM);
    }
    release(range);
    Ok(())
}

/// `mremap(2)` in the window: shrink in place, grow in place when the
/// addresses after it are free, else (with `may_move`) move it, at `to`
/// if given (`MREMAP_FIXED`, inside the window). A move carries the
/// frames over to the new addresses; nothing is copied.
pub(crate) fn remap(
    addr: u64,
    old_bytes: usize,
    new_bytes: usize,
    may_move: bool,
    to: Option<u64>,
) -> Result<u64, Errno> {
    let (old_len, new_len) = super::remap_lengths(addr, old_bytes, new_bytes)?;
    let source = PageRange::from_addr_len(addr, old_len).map_err(|_| errno::EFAULT)?;
    let mut guard = window();
    let Some(window) = guard.as_mut() else {
        return Err(errno::EFAULT);
    };
    let prot = match window.space.lookup(addr) {
        Some(region) if region.kind == Kind::Anonymous && region.range.covers(source) => {
            region.prot
        }
        _ => return Err(errno::EFAULT),
    };
    if to.is_none() {
        if new_len <= old_len {
            let changes = window.space.munmap(addr + new_len, old_len - new_len)?;
            apply(&changes);
            return Ok(addr);
        }
        let extension = PageRange::from_addr_len(addr + old_len, new_len - old_len)?;
        if bounds().covers(extension)
            && !window.space.regions().any(|r| r.range.overlaps(extension))
        {
            window.space.map(extension, Kind::Anonymous, prot)?;
            return Ok(addr);
        }
        if !may_move {
            return Err(errno::ENOMEM);
        }
    }
    let target = match to {
        Some(to) => {
            let target = PageRange::from_addr_len(to, new_len)?;
            if !bounds().covers(target) {
                return Err(errno::EINVAL);
            }
            if target.overlaps(source) {
                return Err(errno::EINVAL);
            }
            let changes = window.space.munmap(to, new_len)?;
            apply(&changes);
            target
        }
        None => window.free_range(new_len)?,
    };
    window.space.map(target, Kind::Anonymous, prot)?;
    if let Err(error) = carry(source, target.start, old_len.min(new_len)) {
        let changes = window.space.munmap(target.start, new_len)?;
        apply(&changes);
        return Err(error);
    }
    let changes = window.space.munmap(addr, old_len)?;
    apply(&changes);
    Ok(target.start)
}

/// Move the frames of the backed pages of `[source.start, +len)` to the
/// same offsets from `to` (whose pages have none), with their entries'
/// rights.
fn carry(source: PageRange, to: u64, len: u64) -> Result<(), Errno> {
    let mut is_flush_needed = false;
    for offset in (0..len).step_by(PAGE_SIZE as usize) {
        let Some((at, entry)) = entry_of(source.start + offset) else {
            continue;
        };
        let frame = entry & ADDR_MASK;
        if frame == 0 {
            continue;
        }
        let target = entry_at(to + offset)?;
        ram::with_edit_lock(|| {
            let rights = arch::window_rights(entry);
            arch::set_window_entry(target, frame, rights);
            is_flush_needed |= arch::set_window_entry(at, 0, PageRights::None);
        });
    }
    if is_flush_needed {
        super::tlb::flush(source.start, len / PAGE_SIZE);
    }
    Ok(())
}

/// Back the pages of `[addr, addr + len)` that the window's mappings
/// allow `access` to and that have no frame yet: for the kernel's check of
/// a buffer the program passed. Whether every page of the range could
/// be backed (or already was).
pub(crate) fn back(addr: u64, len: u64, access: UserAccess) -> bool {
    let Ok(range) =
        PageRange::from_addr_len(addr & !(PAGE_SIZE - 1), len.max(1) + addr % PAGE_SIZE)
    else {
        return false;
    };
    let guard = window();
    let Some(window) = guard.as_ref() else {
        return false;
    };
    let mut page = range.start;
    while page < range.end {
        let Some(region) = window.space.lookup(page) else {
            return false;
        };
        if !allows(region.prot, access) {
            return false;
        }
        let part = PageRange {
            start: page,
            end: region.range.end.min(range.end),
        };
        if back_range(part, rights_of(region.prot), Marking::InUse).is_err() {
            return false;
        }
        page = part.end;
    }
    true
}

/// The first touch of a window page (a not-present page fault at `addr`
/// with `access`): back it and its chunk if a mapping allows the access.
/// Whether the faulting instruction can run again.
///
/// Called from the exception upcall, which may have interrupted anything:
/// code on this CPU that holds a kernel lock could hold the window's, so
/// then the lock is only tried, and the fault left to the report if it
/// is taken.
pub(crate) fn back_on_fault(addr: u64, access: UserAccess) -> bool {
    let mut guard = if !sync::is_holding_locks() {
        window()
    } else {
        match WINDOW.try_lock() {
            Some(guard) => guard,
            None => return false,
        }
    };
    let Some(window) = guard.as_mut() else {
        return false;
    };
    let Some(region) = window.space.lookup(addr).copied() else {
        return false;
    };
    if !allows(region.prot, access) {
        return false;
    }
    let page = addr & !(PAGE_SIZE - 1);
    let is_continued = page == window.last_chunk.end
        || page.checked_add(PAGE_SIZE) == Some(window.last_chunk.start);
    window.chunk_pages = if is_continued {
        (window.chunk_pages * 2).min(FAULT_CHUNK_MAX_PAGES)
    } else {
        FAULT_CHUNK_PAGES
    };
    // The aligned chunk around the page, inside the region and inside one
    // table.
    let chunk_bytes = window.chunk_pages * PAGE_SIZE;
    let block = page & !(LARGE_PAGE_SIZE - 1);
    let start = (page & !(chunk_bytes - 1))
        .max(region.range.start)
        .max(block);
    let end = ((page & !(chunk_bytes - 1)) + chunk_bytes)
        .min(region.range.end)
        .min(block + LARGE_PAGE_SIZE);
    let chunk = PageRange { start, end };
    if back_range(chunk, rights_of(region.prot), Marking::InUse).is_err() {
        return false;
    }
    window.last_chunk = chunk;
    true
}

/// Whether a mapping of the window holds `addr` (for a fault report: a
/// fault there is a denied access, not an unmapped address). Like
/// [`back_on_fault`], only tries the lock where waiting could deadlock.
pub(crate) fn is_mapped(addr: u64) -> bool {
    let guard = if !sync::is_holding_locks() {
        window()
    } else {
        match WINDOW.try_lock() {
            Some(guard) => guard,
            None => return false,
        }
    };
    guard
        .as_ref()
        .is_some_and(|window| window.space.lookup(addr).is_some())
}

fn allows(prot: Prot, access: UserAccess) -> bool {
    match access {
        UserAccess::Read => prot.is_readable() || prot.is_executable(),
        UserAccess::Write => prot.is_writable(),
    }
}

/// The entry of the window page `page` and its value, if its tables exist.
fn entry_of(page: u64) -> Option<(u64, u64)> {
    let mut none = Vec::new();
    let at = ram::with_edit_lock(|| arch::window_entry(page, &mut none))?;
    Some((at, arch::paging_entry(at)))
}

/// The entry of the window page `page`, linking the tables that are
/// missing.
fn entry_at(page: u64) -> Result<u64, Errno> {
    let mut tables: Vec<u64> = Vec::new();
    loop {
        if let Some(at) = ram::with_edit_lock(|| arch::window_entry(page, &mut tables)) {
            // A table taken and not linked (another edit linked one
            // meanwhile) goes back.
            for table in tables {
                ram::free_table_page(table);
            }
            return Ok(at);
        }
        // A table is missing: get one (outside the edit lock) and try
        // again; at most three.
        tables.push(ram::table_page().ok_or(errno::ENOMEM)?);
    }
}

/// How new entries are written.
#[derive(Clone, Copy)]
enum Marking {
    /// Accessed (and dirty, if writable) already: for pages being touched
    /// now, whose neighbours the host's shadow MMU then prefetches.
    InUse,
    /// Clear: for pages backed ahead of their use, which `munmap` can
    /// then take back without an invalidation if nobody touched them.
    Untouched,
}

/// Give every page of `range` (inside one mapping) a frame where it has
/// none, zeroed, with `rights`; pages backed already keep theirs.
fn back_range(range: PageRange, rights: PageRights, marking: Marking) -> Result<(), Errno> {
    let mut page = range.start;
    while page < range.end {
        let at = entry_at(page)?;
        if arch::paging_entry(at) & ADDR_MASK != 0 {
            page += PAGE_SIZE;
            continue;
        }
        // The run of pages from here without a frame, inside this table.
        let table_end = (page | (LARGE_PAGE_SIZE - 1)) + 1;
        let run_end = range.end.min(table_end);
        let run = (page..run_end)
            .step_by(PAGE_SIZE as usize)
            .take_while(|&p| arch::paging_entry(at + (p - page) / PAGE_SIZE * 8) & ADDR_MASK == 0)
            .count() as u64;
        let frames = take_frames(run).ok_or(errno::ENOMEM)?;
        let taken = frames.pages();
        ram::with_edit_lock(|| {
            for i in 0..taken {
                let frame = frames.start + i * PAGE_SIZE;
                match marking {
                    Marking::InUse => arch::back_window_entry(at + 8 * i, frame, rights),
                    Marking::Untouched => {
                        arch::set_window_entry(at + 8 * i, frame, rights);
                    }
                }
            }
        });
        page += taken * PAGE_SIZE;
    }
    Ok(())
}

/// Up to `pages` contiguous zeroed frames: as many as one run gives.
fn take_frames(pages: u64) -> Option<PageRange> {
    let mut pages = pages;
    loop {
        let commit = if pages * PAGE_SIZE <= ram::COMMIT_NOW_MAX_BYTES {
            Commit::Now
        } else {
            Commit::OnTouch
        };
        let taken = ram::take(
            pages,
            PAGE_SIZE,
            Fill::Zeroed,
            commit,
            Shortage::ReclaimAndMerge,
        );
        if taken.is_some() || pages == 1 {
            return taken;
        }
        pages /= 2;
    }
}

/// Make the page tables say what `changes` (from the window's address
/// space) say. Nothing is backed here: fresh pages are backed at their
/// first touch.
fn apply(changes: &[PteChange]) {
    for change in changes {
        match *change {
            PteChange::Map { .. } => {}
            PteChange::Protect { range, to, .. } => reprotect(range, rights_of(to)),
            PteChange::Unmap { range } => release(range),
        }
    }
}

/// Give the backed pages of `range` the rights `rights` (none keeps the
/// frame in a not-present entry).
fn reprotect(range: PageRange, rights: PageRights) {
    let mut is_flush_needed = false;
    for_each_backed(range, |at, frame| {
        is_flush_needed |= arch::set_window_entry(at, frame, rights);
    });
    if is_flush_needed {
        super::tlb::flush(range.start, range.pages());
    }
}

/// Unmap every backed page of `range` and free its frame once no TLB
/// holds it; unlink the tables left empty.
fn release(range: PageRange) {
    // Room for the frames first: nothing may allocate under the edit
    // lock (the heap's growth edits page tables). Without it, the frames
    // are lost rather than freed while a TLB may still hold them.
    let mut backed = 0;
    for_each_backed(range, |_, _| backed += 1);
    let mut frames: Vec<PageRange> = Vec::new();
    let has_room = frames.try_reserve(backed).is_ok();
    let mut is_flush_needed = false;
    for_each_backed(range, |at, frame| {
        is_flush_needed |= arch::set_window_entry(at, 0, PageRights::None);
        // Neighbouring frames go back as one range.
        match frames.last_mut() {
            Some(last) if last.end == frame => last.end += PAGE_SIZE,
            _ if has_room => frames.push(PageRange {
                start: frame,
                end: frame + PAGE_SIZE,
            }),
            _ => {}
        }
    });
    let mut tables: Vec<u64> = Vec::new();
    let mut block = range.start & !(LARGE_PAGE_SIZE - 1);
    while block < range.end {
        let (unlinked, must_flush) =
            ram::with_edit_lock(|| arch::unlink_empty_window_tables(block));
        is_flush_needed |= must_flush;
        for table in unlinked.into_iter().flatten() {
            if tables.try_reserve(1).is_ok() {
                tables.push(table);
            }
        }
        block += LARGE_PAGE_SIZE;
    }
    if is_flush_needed {
        super::tlb::flush(range.start, range.pages());
    }
    for frames in frames {
        ram::give_back(frames);
    }
    for table in tables {
        ram::free_table_page(table);
    }
}

/// Call `edit(entry address, frame)` for every page of `range` that has
/// a frame, holding the edit lock for each table's worth.
fn for_each_backed(range: PageRange, mut edit: impl FnMut(u64, u64)) {
    let mut page = range.start;
    while page < range.end {
        let table_end = ((page | (LARGE_PAGE_SIZE - 1)) + 1).min(range.end);
        let Some((first, _)) = entry_of(page) else {
            // No table: nothing here is backed.
            page = table_end;
            continue;
        };
        ram::with_edit_lock(|| {
            for i in 0..(table_end - page) / PAGE_SIZE {
                let at = first + 8 * i;
                let frame = arch::paging_entry(at) & ADDR_MASK;
                if frame != 0 {
                    edit(at, frame);
                }
            }
        });
        page = table_end;
    }
}
