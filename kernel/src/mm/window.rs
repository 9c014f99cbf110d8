//! The virtual window (decision 0005): addresses above RAM, from
//! [`WINDOW_START`] (512 GiB) to [`WINDOW_END`] (128 TiB, the top of the
//! lower canonical half), for a Linux program's mappings that RAM at its
//! own addresses cannot give: an address hint or `MAP_FIXED` there (Go
//! reserves its heap arenas at `0xc000000000` and up), and large
//! `PROT_NONE` reservations (Go's page-allocator summaries, 600 MiB and
//! more, almost all of it never used).
//!
//! A page of the window is backed by a frame of its own only while some
//! mapping gives it a right: a reservation costs neither frames nor page
//! tables, and a page that becomes accessible (`mmap` with rights,
//! `mprotect`) gets a zeroed frame at once (memory is committed when
//! mapped, as everywhere in eremite). Its entry keeps the frame while it
//! is `PROT_NONE` again, so `mprotect` never loses data; `munmap` frees it
//! after every CPU's TLB has dropped the page. The frames stay
//! identity-mapped too (the kernel zeroes them there). These are the only
//! translations that are not the identity; nothing but the program's own
//! memory is mapped so, and buffers handed to the VMM are copied through
//! the kernel's own memory when they lie here (`hypervisor`).
//!
//! The regions are an `eremite-mm` address space of their own, with the
//! same `mmap`/`munmap`/`mprotect` rules as the RAM one.

use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::layout::PAGE_SIZE;
use eremite_mm::{AddressSpace, Kind, PageRange, Prot, PteChange};

use super::ram::{self, Commit, Fill, Shortage};
use super::space::rights_of;
use crate::arch::{self, PageRights};
use crate::sync::Lock;

/// The window's first address: 512 GiB, past any guest RAM.
pub(crate) const WINDOW_START: u64 = eremite_interface::layout::VIRTUAL_WINDOW_START;
/// One past its last: the top of the lower canonical half.
pub(crate) const WINDOW_END: u64 = eremite_interface::layout::VIRTUAL_WINDOW_END;

static WINDOW: Lock<Option<AddressSpace>> = Lock::new(None);

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

/// `mmap(2)` of anonymous memory in the window: where it went.
pub(crate) fn map(placement: Placement, len_bytes: usize, prot: Prot) -> Result<u64, Errno> {
    let len = (len_bytes as u64).next_multiple_of(PAGE_SIZE);
    if len == 0 {
        return Err(errno::EINVAL);
    }
    let mut guard = WINDOW.lock();
    let space = guard.get_or_insert_with(|| AddressSpace::new(bounds()));
    let range = match placement {
        Placement::Fixed(addr) => {
            let range = PageRange::from_addr_len(addr, len)?;
            let changes = space.munmap(addr, len)?;
            apply(&changes)?;
            range
        }
        Placement::FixedNoReplace(addr) => PageRange::from_addr_len(addr, len)?,
        Placement::Hint(addr) => PageRange::from_addr_len(addr & !(PAGE_SIZE - 1), len)
            .ok()
            .filter(|r| bounds().covers(*r) && !space.regions().any(|g| g.range.overlaps(*r)))
            .map_or_else(|| free_range(space, len), Ok)?,
        Placement::Anywhere => free_range(space, len)?,
    };
    if !bounds().covers(range) {
        return Err(errno::ENOMEM);
    }
    let changes = space.map(range, Kind::Anonymous, prot)?;
    if let Err(error) = apply(&changes) {
        if let Ok(undo) = space.munmap(range.start, range.len_bytes()) {
            let _ = apply(&undo);
        }
        return Err(error);
    }
    Ok(range.start)
}

/// A free range of `len` bytes in the window, 2 MiB aligned when it is
/// that large (so a later huge-page backing stays possible).
fn free_range(space: &AddressSpace, len: u64) -> Result<PageRange, Errno> {
    let align = if len >= 2 << 20 { 2 << 20 } else { PAGE_SIZE };
    let start = space.find_free(len / PAGE_SIZE, align, bounds())?;
    Ok(PageRange {
        start,
        end: start + len,
    })
}

/// `munmap(2)` in the window.
pub(crate) fn unmap(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    let mut guard = WINDOW.lock();
    let Some(space) = guard.as_mut() else {
        return Ok(());
    };
    let changes = space.munmap(addr, len_bytes as u64)?;
    apply(&changes)
}

/// `mprotect(2)` in the window.
pub(crate) fn protect(addr: u64, len_bytes: usize, prot: Prot) -> Result<(), Errno> {
    let mut guard = WINDOW.lock();
    let space = guard.as_mut().ok_or(errno::ENOMEM)?;
    let changes = space.mprotect(addr, len_bytes as u64, prot)?;
    apply(&changes)
}

/// `madvise(MADV_DONTNEED)` in the window: the backed pages read as zero
/// from now on (their frames stay; this does not give memory back).
pub(crate) fn discard(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    let range = PageRange::from_addr_len(addr, len_bytes as u64)?;
    let guard = WINDOW.lock();
    let space = guard.as_ref().ok_or(errno::ENOMEM)?;
    if space.regions().filter(|r| r.range.overlaps(range)).count() == 0 {
        return Err(errno::ENOMEM);
    }
    for page in (range.start..range.end).step_by(PAGE_SIZE as usize) {
        if let Some(frame) = frame_of(page) {
            // SAFETY: `frame` backs the program's page (its entry says
            // so, under the window lock, so it is not being freed); the
            // frame's identity mapping is present and writable (frames
            // keep it), and the program gave up the page's contents.
            unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_SIZE as usize) };
        }
    }
    Ok(())
}

/// The frame backing the window page `page`, if any.
fn frame_of(page: u64) -> Option<u64> {
    let mut none = Vec::new();
    let at = ram::with_edit_lock(|| arch::window_entry(page, &mut none))?;
    let entry = arch::paging_entry(at);
    let frame = entry & eremite_interface::layout::pte::ADDR_MASK;
    (frame != 0).then_some(frame)
}

/// Make the page tables say what `changes` (from the window's address
/// space) say.
fn apply(changes: &[PteChange]) -> Result<(), Errno> {
    for change in changes {
        match *change {
            PteChange::Map { range, prot, .. } => {
                if prot != Prot::NONE {
                    back(range, rights_of(prot))?;
                }
            }
            PteChange::Protect { range, to, .. } if to == Prot::NONE => hide(range),
            PteChange::Protect { range, to, .. } => back(range, rights_of(to))?,
            PteChange::Unmap { range } => release(range),
        }
    }
    Ok(())
}

/// The entry address of every page of `range`, linking the tables that
/// are missing.
fn entries(range: PageRange) -> Result<Vec<u64>, Errno> {
    let mut entries = Vec::new();
    entries
        .try_reserve(range.pages() as usize)
        .map_err(|_| errno::ENOMEM)?;
    let mut tables: Vec<u64> = Vec::new();
    let mut page = range.start;
    while page < range.end {
        match ram::with_edit_lock(|| arch::window_entry(page, &mut tables)) {
            Some(at) => {
                entries.push(at);
                page += PAGE_SIZE;
            }
            // A table is missing: get one (outside the edit lock) and try
            // again. At most three per page, at the first of its 2 MiB.
            None => tables.push(ram::table_page().ok_or(errno::ENOMEM)?),
        }
    }
    Ok(entries)
}

/// Give every page of `range` the rights `rights`, backing with fresh
/// zeroed frames the pages that have none (unless `rights` is none).
fn back(range: PageRange, rights: PageRights) -> Result<(), Errno> {
    let entries = entries(range)?;
    let mut is_changed = false;
    let mut index = 0;
    while index < entries.len() {
        // The run of pages from here that have no frame yet.
        let has_frame = |i: usize| {
            arch::paging_entry(entries[i]) & eremite_interface::layout::pte::ADDR_MASK != 0
        };
        if has_frame(index) {
            let at = entries[index];
            let frame = arch::paging_entry(at) & eremite_interface::layout::pte::ADDR_MASK;
            if frame != 0 {
                is_changed |= ram::with_edit_lock(|| arch::set_window_entry(at, frame, rights));
            }
            index += 1;
            continue;
        }
        let run = (index..entries.len())
            .take(512)
            .take_while(|&i| !has_frame(i))
            .count();
        let frames = take_frames(run as u64).ok_or(errno::ENOMEM)?;
        ram::with_edit_lock(|| {
            for (i, frame) in (frames.start..frames.end)
                .step_by(PAGE_SIZE as usize)
                .enumerate()
            {
                arch::set_window_entry(entries[index + i], frame, rights);
            }
        });
        index += run;
    }
    if is_changed {
        super::tlb::flush(range.start, range.pages());
    }
    Ok(())
}

/// `pages` contiguous zeroed frames, or as many as a smaller run gives.
fn take_frames(pages: u64) -> Option<PageRange> {
    let commit = if pages * PAGE_SIZE <= ram::COMMIT_NOW_MAX_BYTES {
        Commit::Now
    } else {
        Commit::OnTouch
    };
    ram::take(
        pages,
        PAGE_SIZE,
        Fill::Zeroed,
        commit,
        Shortage::ReclaimAndMerge,
    )
}

/// Take every right from the pages of `range` (keeping their frames and
/// contents); pages without tables have none to take.
fn hide(range: PageRange) {
    let mut none = Vec::new();
    let is_changed = ram::with_edit_lock(|| {
        let mut is_changed = false;
        for page in (range.start..range.end).step_by(PAGE_SIZE as usize) {
            if let Some(at) = arch::window_entry(page, &mut none) {
                let frame = arch::paging_entry(at) & eremite_interface::layout::pte::ADDR_MASK;
                if frame != 0 {
                    is_changed |= arch::set_window_entry(at, frame, PageRights::None);
                }
            }
        }
        is_changed
    });
    if is_changed {
        super::tlb::flush(range.start, range.pages());
    }
}

/// Unmap every page of `range` and free its frame once no TLB holds it.
fn release(range: PageRange) {
    let mut frames: Vec<u64> = Vec::new();
    let mut none = Vec::new();
    ram::with_edit_lock(|| {
        for page in (range.start..range.end).step_by(PAGE_SIZE as usize) {
            let Some(at) = arch::window_entry(page, &mut none) else {
                continue;
            };
            let frame = arch::paging_entry(at) & eremite_interface::layout::pte::ADDR_MASK;
            if frame != 0 {
                arch::set_window_entry(at, 0, PageRights::None);
                // Without memory for the list, the frame is lost rather
                // than freed while a TLB may still hold it.
                if frames.try_reserve(1).is_ok() {
                    frames.push(frame);
                }
            }
        }
    });
    if frames.is_empty() {
        return;
    }
    super::tlb::flush(range.start, range.pages());
    for frame in frames {
        ram::give_back(PageRange {
            start: frame,
            end: frame + PAGE_SIZE,
        });
    }
}
