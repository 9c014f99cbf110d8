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
//! allocates while held.

use alloc::vec::Vec;

use eremite_interface::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
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

/// Take `pages` contiguous frames aligned to `align_bytes`, make them
/// present and writable, and zero them if `fill` asks and they were used
/// before; never-used ones are backed by the host as `commit` says.
/// `None` when RAM is exhausted.
pub(super) fn take(pages: u64, align_bytes: u64, fill: Fill, commit: Commit) -> Option<PageRange> {
    let (range, is_untouched, fresh_from) = {
        let mut guard = FRAMES.lock();
        let frames = guard.as_mut()?;
        let range = frames
            .allocator
            .alloc_contiguous(pages, align_bytes.max(PAGE_SIZE))
            .ok()?;
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
/// splitting 2 MiB pages where needed, and invalidate every CPU's TLB if a
/// present page changed. `ENOMEM` when no page-table page could be
/// had for a split (nothing changed then).
pub(super) fn set_rights(range: PageRange, rights: PageRights) -> Result<(), ()> {
    let mut tables: Vec<u64> = Vec::new();
    let result = loop {
        let attempt = {
            let _edit = EDITS.lock();
            arch::set_rights(range.start, range.end, rights, &mut tables)
        };
        match attempt {
            Ok(is_changed) => break Ok(is_changed),
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
    if result? {
        super::tlb::flush(range.start, range.pages());
    }
    Ok(())
}

fn free_tables(tables: &mut Vec<u64>) {
    for table in tables.drain(..) {
        // SAFETY: allocated above with this size and alignment, and not
        // installed in the page tables (only the ones `set_rights` popped
        // were).
        unsafe { super::heap::dealloc(table as *mut u8, PAGE_SIZE as usize, PAGE_SIZE as usize) };
    }
}

const _: () = assert!(LARGE_PAGE_SIZE.is_multiple_of(PAGE_SIZE));
