//! Physical memory: the free frames of guest RAM, and the rights their
//! identity-mapped pages have.
//!
//! Every frame of free RAM belongs to one [`FrameAllocator`] (from
//! `eremite-mm`). Whoever takes frames from it (the heap for a new arena
//! or a large block, a thread stack, `mmap`) gets them with [`take`],
//! which also makes their pages present and writable again if `munmap`
//! or a guard page had left them without rights, and zeroes them if asked
//! and they may have been used before.
//!
//! Virtual addresses are physical addresses (identity map), so buffers
//! anywhere in RAM can be handed to the VMM or a device as they are.
//!
//! Locks, in the order they may be taken: the address-space map
//! (`space`), the heap, [`EDITS`], [`FRAMES`]. Neither of the last two
//! allocates while held. [`QUARANTINE`] is taken with no other memory
//! lock held after it and allocates nothing.

use alloc::vec::Vec;
use core::mem::offset_of;

use eremite_interface::layout::{self, LARGE_PAGE_SIZE, PAGE_SIZE};
use eremite_interface::{BootInfo, KernelReport};
use eremite_mm::{FrameAllocator, PageRange};

use crate::arch::{self, EditError, PageRights};
use crate::sync::Lock;

struct Frames {
    allocator: FrameAllocator,
    /// No frame at or above this address has been handed out since boot,
    /// so they still hold the zeroes the VMM's fresh memory reads as.
    untouched_from: u64,
    /// Free frames that held data before they were given to the
    /// allocator (the initial ramdisk's).
    dirty: Option<PageRange>,
}

static FRAMES: Lock<Option<Frames>> = Lock::new(None);

/// Serialises page-table edits (see `arch::set_rights`).
static EDITS: Lock<()> = Lock::new(());

/// Run `edit` holding the page-table edit lock (it must not allocate:
/// taking frames edits page tables too).
pub(super) fn with_edit_lock<T>(edit: impl FnOnce() -> T) -> T {
    let _edit = EDITS.lock();
    edit()
}

/// A zeroed, identity-mapped page for a page table (from the heap, as
/// `set_rights` takes them), or `None` when memory is exhausted.
pub(super) fn table_page() -> Option<u64> {
    let table = super::heap::alloc_zeroed(PAGE_SIZE as usize, PAGE_SIZE as usize);
    (!table.is_null()).then_some(table as u64)
}

/// Set up the allocator for frames in `span`, owning `free` (page-aligned
/// ranges inside it). Its bitmaps come from the heap, which must already
/// have a first arena.
pub(super) fn init(span: PageRange, free: &[PageRange]) -> Result<(), &'static str> {
    let mut allocator = FrameAllocator::new(span);
    for &range in free {
        allocator
            .add_free(range)
            .map_err(|_| "overlapping free RAM ranges")?;
    }
    *FRAMES.lock() = Some(Frames {
        allocator,
        untouched_from: span.start,
        dirty: None,
    });
    Ok(())
}

/// Give the frames of `range`, which held data (the initial ramdisk), to
/// the allocator.
pub(super) fn add_used(range: PageRange) -> bool {
    let mut frames = FRAMES.lock();
    let Some(frames) = frames.as_mut() else {
        return false;
    };
    frames.dirty = Some(range);
    frames.allocator.add_free(range).is_ok()
}

/// Whether fresh frames must be zeroed before use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// Their contents do not matter (a heap arena, a stack).
    Any,
    /// They must read as zero.
    Zeroed,
}

/// When the host should back never-used frames with memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Commit {
    /// Now, in one exit (`hypervisor::populate`): the frames will be used
    /// soon (a heap arena, a block or mapping of at most
    /// [`COMMIT_NOW_MAX_BYTES`]). Spares one host page fault per page.
    Now,
    /// Page by page, at first touch (a stack, which mostly stays unused;
    /// a huge mapping).
    OnTouch,
}

/// Largest block or mapping committed at once; bigger ones are backed page
/// by page as they are touched, so an allocation nobody fills costs the
/// host nothing.
pub(super) const COMMIT_NOW_MAX_BYTES: u64 = 16 << 20;

/// Free frames now, in bytes (quarantined ones not counted).
pub(super) fn free_bytes() -> u64 {
    FRAMES
        .lock()
        .as_ref()
        .map_or(0, |frames| frames.allocator.free_frames() * PAGE_SIZE)
}

/// What [`take`] may do when the allocator has no run to give.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shortage {
    /// Reclaim quarantined frames and merge free blocks back into 2 MiB
    /// pages (frees page tables to the heap).
    ReclaimAndMerge,
    /// Reclaim quarantined frames only: for the heap's own growth, which
    /// must not use the heap.
    ReclaimOnly,
}

/// Take `pages` contiguous frames aligned to `align_bytes`, make them
/// present and writable, and zero them if `fill` asks and they were used
/// before; never-used ones are backed by the host as `commit` says.
/// `None` when RAM is exhausted.
pub(super) fn take(
    pages: u64,
    align_bytes: u64,
    fill: Fill,
    commit: Commit,
    shortage: Shortage,
) -> Option<PageRange> {
    take_where(
        Where::Anywhere { pages, align_bytes },
        fill,
        commit,
        shortage,
    )
}

/// [`take`] of exactly the frames of `range` (a program's `MAP_FIXED`):
/// `None` unless every one is free (after reclaiming the quarantined).
pub(super) fn take_at(range: PageRange, fill: Fill, commit: Commit) -> Option<PageRange> {
    take_where(Where::At(range), fill, commit, Shortage::ReclaimAndMerge)
}

/// Tell the VMM that a request for `bytes` found too little free RAM
/// (`KernelReport::failed_alloc_bytes`), so that a run that fails for it
/// can name `--memory`.
fn note_shortage(bytes: u64) {
    let at = offset_of!(KernelReport, failed_alloc_bytes);
    arch::write_report_word(
        layout::BOOT_INFO_ADDR + (BootInfo::REPORT_OFFSET + at) as u64,
        bytes,
    );
}

/// Which frames [`take_where`] takes.
#[derive(Clone, Copy)]
enum Where {
    Anywhere { pages: u64, align_bytes: u64 },
    At(PageRange),
}

fn take_where(place: Where, fill: Fill, commit: Commit, shortage: Shortage) -> Option<PageRange> {
    let (range, is_untouched, fresh_from) = {
        let mut guard = FRAMES.lock();
        let frames = guard.as_mut()?;
        let taken = match place {
            Where::Anywhere { pages, align_bytes } => frames
                .allocator
                .alloc_contiguous(pages, align_bytes.max(PAGE_SIZE)),
            Where::At(range) => frames.allocator.alloc_range(range).map(|()| range),
        };
        let range = match taken {
            Ok(range) => range,
            Err(_) => {
                drop(guard);
                // Out of frames: the quarantined ones go back, and then
                // the run is tried again.
                let has_reclaimed = match shortage {
                    Shortage::ReclaimAndMerge => reclaim(),
                    Shortage::ReclaimOnly => reclaim_frames_only(),
                };
                if !has_reclaimed {
                    if let Where::Anywhere { pages, .. } = place {
                        note_shortage(pages * PAGE_SIZE);
                    }
                    return None;
                }
                return take_where(place, fill, commit, shortage);
            }
        };
        let is_untouched = range.start >= frames.untouched_from
            && frames
                .dirty
                .is_none_or(|d| d.end <= range.start || d.start >= range.end);
        let fresh_from = frames.untouched_from.max(range.start);
        frames.untouched_from = frames.untouched_from.max(range.end);
        (range, is_untouched, fresh_from)
    };
    if commit == Commit::Now && fresh_from < range.end {
        crate::hypervisor::populate(fresh_from, range.end - fresh_from);
    }
    // Free frames keep the rights their last owner left: present and
    // writable, or none (unmapped, or a guard page). Restoring rights
    // never needs a new table: a page without them is in a split table.
    let restored = {
        let _edit = EDITS.lock();
        arch::ensure_writable(range.start, range.end)
    };
    if restored.is_err() {
        give_back(range);
        return None;
    }
    if fill == Fill::Zeroed && !is_untouched {
        // SAFETY: the frames were just taken from the allocator, so
        // nothing else uses them, and are present and writable (above).
        unsafe { core::ptr::write_bytes(range.start as *mut u8, 0, range.len_bytes() as usize) };
    }
    Some(range)
}

/// Frames returned without rights (by `munmap`, or a stack with its
/// guard), not yet given to the allocator: handing them out again would
/// mean restoring their rights one trapped page-table write at a time
/// (on shadow-paging hosts), in 2 MiB pages that stay split. They wait
/// here while other frames last; [`reclaim`] then frees them all and maps
/// each 2 MiB block that became wholly free with one 2 MiB page again.
/// A fixed array: nothing allocates under its lock (the heap's growth
/// takes it too).
struct Quarantine {
    ranges: [PageRange; QUARANTINE_RANGES],
    count: usize,
    bytes: u64,
}

const QUARANTINE_RANGES: usize = 64;
/// Most bytes waiting in quarantine before they are reclaimed.
const QUARANTINE_MAX_BYTES: u64 = 64 << 20;

static QUARANTINE: Lock<Quarantine> = Lock::new(Quarantine {
    ranges: [PageRange { start: 0, end: 0 }; QUARANTINE_RANGES],
    count: 0,
    bytes: 0,
});

/// Return frames whose pages may have lost their rights (see
/// [`Quarantine`]).
pub(super) fn give_back_unmapped(range: PageRange) {
    loop {
        {
            let mut quarantine = QUARANTINE.lock();
            let is_full = quarantine.count == QUARANTINE_RANGES
                || quarantine.bytes + range.len_bytes() > QUARANTINE_MAX_BYTES;
            if !is_full {
                let at = quarantine.count;
                quarantine.ranges[at] = range;
                quarantine.count += 1;
                quarantine.bytes += range.len_bytes();
                return;
            }
        }
        if !reclaim() {
            // Too big to wait: straight to the allocator.
            give_back(range);
            return;
        }
    }
}

/// Take every range out of quarantine.
fn empty_quarantine() -> ([PageRange; QUARANTINE_RANGES], usize) {
    let mut quarantine = QUARANTINE.lock();
    let taken = (quarantine.ranges, quarantine.count);
    quarantine.count = 0;
    quarantine.bytes = 0;
    taken
}

/// Free every quarantined frame, leaving their rights as they are; for the
/// heap's growth, which can allocate nothing.
fn reclaim_frames_only() -> bool {
    let (ranges, count) = empty_quarantine();
    if let Some(frames) = FRAMES.lock().as_mut() {
        for range in &ranges[..count] {
            let _ = frames.allocator.free_range(*range);
        }
    }
    count > 0
}

/// Free every quarantined frame, and map each 2 MiB block that is then
/// wholly free with one present, writable 2 MiB page (one TLB
/// invalidation for all). Whether there was anything to free.
pub(super) fn reclaim() -> bool {
    let (ranges, count) = empty_quarantine();
    let ranges = &ranges[..count];
    if ranges.is_empty() {
        return false;
    }
    let block_count: usize = ranges
        .iter()
        .map(|r| ((r.end - 1) / LARGE_PAGE_SIZE - r.start / LARGE_PAGE_SIZE + 1) as usize)
        .sum();
    let mut blocks: Vec<u64> = Vec::new();
    let mut retired: Vec<u64> = Vec::new();
    let has_room =
        blocks.try_reserve(block_count).is_ok() && retired.try_reserve(block_count).is_ok();
    {
        let _edit = EDITS.lock();
        let mut guard = FRAMES.lock();
        let Some(frames) = guard.as_mut() else {
            return false;
        };
        for range in ranges {
            let _ = frames.allocator.free_range(*range);
            let mut block = range.start & !(LARGE_PAGE_SIZE - 1);
            while has_room && block < range.end {
                if !blocks.contains(&block) {
                    blocks.push(block);
                }
                block += LARGE_PAGE_SIZE;
            }
        }
        for &block in &blocks {
            let is_free = (block..block + LARGE_PAGE_SIZE)
                .step_by(PAGE_SIZE as usize)
                .all(|frame| frames.allocator.is_free(frame));
            if is_free && let Some(table) = arch::merge_block(block) {
                retired.push(table);
            }
        }
        drop(guard);
        if !retired.is_empty() {
            super::tlb::flush(0, 0);
        }
    }
    free_tables(&mut retired);
    true
}

/// Return frames to the allocator (they keep their current rights).
pub(super) fn give_back(range: PageRange) {
    if let Some(frames) = FRAMES.lock().as_mut()
        && frames.allocator.free_range(range).is_err()
    {
        // A double free is a kernel bug; losing the frames is safer than
        // handing them out twice.
        crate::console::klog!(
            "mm: frames {:#x}..{:#x} freed twice",
            range.start,
            range.end
        );
    }
}

/// Give the pages of `range` the rights `rights` in the page tables,
/// splitting 2 MiB pages where needed, and invalidate every CPU's TLB if
/// one may still hold a right a page lost. `ENOMEM` when no page-table page could be
/// had for a split (nothing changed then).
pub(super) fn set_rights(range: PageRange, rights: PageRights) -> Result<(), ()> {
    let mut tables: Vec<u64> = Vec::new();
    let result = loop {
        let attempt = {
            let _edit = EDITS.lock();
            let attempt = arch::set_rights(range.start, range.end, rights, &mut tables);
            // Invalidate before the next edit: it may rely on the
            // accessed bits this one cleared (`arch::set_rights`).
            if attempt == Ok(true) {
                super::tlb::flush(range.start, range.pages());
            }
            attempt
        };
        match attempt {
            Ok(_) => break Ok(()),
            Err(EditError::NotRam) => break Err(()),
            Err(EditError::NeedTables(more)) => {
                for _ in 0..more {
                    // Page tables are plain heap pages: identity-mapped,
                    // present and writable for as long as they are used.
                    let table = super::heap::alloc_zeroed(PAGE_SIZE as usize, PAGE_SIZE as usize);
                    if table.is_null() {
                        free_tables(&mut tables);
                        return Err(());
                    }
                    tables.push(table as u64);
                }
            }
        }
    };
    free_tables(&mut tables);
    result
}

fn free_tables(tables: &mut Vec<u64>) {
    for table in tables.drain(..) {
        free_table_page(table);
    }
}

/// Free a page-table page from [`table_page`] that no table links (any
/// more) and no CPU can walk (its TLBs were invalidated since).
pub(super) fn free_table_page(table: u64) {
    // SAFETY: allocated by `table_page` or `set_rights` with this size
    // and alignment, and unused (the caller's contract).
    unsafe { super::heap::dealloc(table as *mut u8, PAGE_SIZE as usize, PAGE_SIZE as usize) };
}

const _: () = assert!(LARGE_PAGE_SIZE.is_multiple_of(PAGE_SIZE));
