//! The heap: the kernel's allocator, which also serves the application's
//! (`sys_alloc` and friends).
//!
//! Small blocks come from talc, whose arenas grow on demand: when talc
//! runs out it asks [`Arenas::acquire`] for another 2 MiB (or more) of
//! contiguous frames. Blocks of up to 4 KiB (aligned to at most 16) go
//! through per-CPU caches of free blocks first ([`super::cache`]), which
//! serve most `malloc`/`free` pairs without talc's lock. Large blocks (at least [`LARGE_BYTES`], or aligned
//! to more than a page) bypass talc: each is a run of whole frames taken
//! from the frame allocator and given back when freed, so a program that
//! frees a large buffer returns its memory for `mmap`, stacks or other
//! arenas; a zeroed large block of never-used frames costs no zeroing.
//! Talc's arenas are not given back (they hold the small blocks).
//!
//! Allocation failure is a null pointer: std turns it into its "memory
//! allocation of N bytes failed" abort, `try_reserve` into an error.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eremite_interface::layout::PAGE_SIZE;
use talc::TalcLock;
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::source::Source;

use super::cache;
use super::ram::{self, Commit, Fill, Shortage};

/// Blocks of this size or more are runs of frames of their own.
pub(super) const LARGE_BYTES: usize = 256 << 10;
/// Smallest arena talc gets when it runs out.
const ARENA_BYTES: u64 = 2 << 20;

/// Bytes of large blocks in use (whole pages).
static LARGE_IN_USE: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

static TALC: TalcLock<crate::sync::RawLock, Arenas> = TalcLock::new(Arenas);

/// Talc's source of memory: arenas of frames.
#[derive(Debug)]
struct Arenas;

// SAFETY: `acquire` touches the heap only through the `talc` it is given:
// `ram::take` takes the frame and page-table locks, never the heap's, and
// allocates nothing (see `ram`).
unsafe impl Source for Arenas {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        // Room for the block at any alignment, plus talc's bookkeeping.
        let needed = (layout.size() as u64)
            .saturating_add(layout.align() as u64)
            .saturating_add(PAGE_SIZE);
        let bytes = needed.max(ARENA_BYTES).next_multiple_of(ARENA_BYTES);
        let range = ram::take(
            bytes / PAGE_SIZE,
            PAGE_SIZE,
            Fill::Any,
            Commit::Now,
            Shortage::ReclaimOnly,
        )
        .ok_or(())?;
        // SAFETY: the frames were just taken from the allocator for good,
        // are identity-mapped, present and writable, and nothing else
        // refers to them.
        let claimed = unsafe { talc.claim(range.start as *mut u8, bytes as usize) };
        if claimed.is_none() {
            ram::give_back(range);
            return Err(());
        }
        Ok(())
    }
}

/// Give `[start, start + len)` to talc as its first arena (before the
/// frame allocator exists, whose bitmaps are allocated from it).
///
/// # Safety
/// The range must be identity-mapped, writable RAM that nothing else uses,
/// for good.
pub(super) unsafe fn claim_first_arena(start: u64, len: u64) -> bool {
    // SAFETY: the caller's contract.
    unsafe { TALC.lock().claim(start as *mut u8, len as usize).is_some() }
}

/// Whether the frame allocator serves large blocks yet. Until it does
/// (while it allocates its own bitmaps, which live for ever), every block
/// comes from talc's first arena.
static IS_LARGE_READY: AtomicBool = AtomicBool::new(false);

/// Let large blocks come from frames (once the frame allocator exists).
pub(super) fn enable_large_blocks() {
    IS_LARGE_READY.store(true, Ordering::Release);
}

fn is_large(layout: Layout) -> bool {
    (layout.size() >= LARGE_BYTES || layout.align() > PAGE_SIZE as usize)
        && IS_LARGE_READY.load(Ordering::Acquire)
}

fn pages_of(layout: Layout) -> u64 {
    (layout.size() as u64).div_ceil(PAGE_SIZE).max(1)
}

fn alloc_large(layout: Layout, fill: Fill) -> *mut u8 {
    let pages = pages_of(layout);
    let commit = if pages * PAGE_SIZE <= ram::COMMIT_NOW_MAX_BYTES {
        Commit::Now
    } else {
        Commit::OnTouch
    };
    match ram::take(
        pages,
        layout.align() as u64,
        fill,
        commit,
        Shortage::ReclaimAndMerge,
    ) {
        Some(range) => {
            LARGE_IN_USE.fetch_add(range.len_bytes(), Ordering::Relaxed);
            range.start as *mut u8
        }
        None => null_mut(),
    }
}

fn dealloc_large(ptr: *mut u8, layout: Layout) {
    let start = ptr as u64;
    let end = start + pages_of(layout) * PAGE_SIZE;
    if let Ok(range) = eremite_mm::PageRange::new(start, end) {
        LARGE_IN_USE.fetch_sub(range.len_bytes(), Ordering::Relaxed);
        ram::give_back(range);
    }
}

struct Allocator;

/// The class of a block that the per-CPU caches serve, if `layout` has
/// one ([`cache`]); such a block is always taken from talc with the
/// class's layout ([`class_layout`]).
fn cached_class(layout: Layout) -> Option<usize> {
    (layout.size() <= cache::MAX_BYTES && layout.align() <= cache::ALIGN)
        .then(|| cache::class_of(layout.size()))
}

fn class_layout(class: usize) -> Layout {
    let size = eremite_mm::size_class::class_size(class);
    // SAFETY: class sizes are non-zero multiples of ALIGN, a power of two,
    // and far below isize::MAX.
    unsafe { Layout::from_size_align_unchecked(size, cache::ALIGN) }
}

/// A block of `class` from talc; if talc is out of memory, this CPU's
/// cached blocks go back to it first and it is asked again.
fn alloc_class(class: usize, fill: Fill) -> *mut u8 {
    let layout = class_layout(class);
    let take = || {
        // SAFETY: a valid, non-zero layout.
        unsafe {
            match fill {
                Fill::Zeroed => TALC.alloc_zeroed(layout),
                Fill::Any => TALC.alloc(layout),
            }
        }
    };
    let block = take();
    if !block.is_null() {
        return block;
    }
    cache::drain(|block, class| {
        // SAFETY: a free block of `class`, taken from talc with its layout.
        unsafe { TALC.dealloc(block, class_layout(class)) }
    });
    take()
}

// SAFETY: small blocks are talc's (a correct allocator), some of them
// parked on a CPU's cache while free; large blocks are whole runs of
// frames that the frame allocator hands out once and that return to it
// only through `dealloc` with the same layout.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = cached_class(layout) {
            let block = cache::take(class);
            return if block.is_null() {
                alloc_class(class, Fill::Any)
            } else {
                block
            };
        }
        if is_large(layout) {
            alloc_large(layout, Fill::Any)
        } else {
            // SAFETY: forwarded GlobalAlloc contract.
            unsafe { TALC.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(class) = cached_class(layout) {
            let block = cache::take(class);
            if block.is_null() {
                return alloc_class(class, Fill::Zeroed);
            }
            // SAFETY: a free block of the class, at least `layout.size()`
            // bytes, now ours.
            unsafe { core::ptr::write_bytes(block, 0, layout.size()) };
            return block;
        }
        if is_large(layout) {
            alloc_large(layout, Fill::Zeroed)
        } else {
            // SAFETY: forwarded GlobalAlloc contract.
            unsafe { TALC.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = cached_class(layout) {
            // SAFETY: the caller gives up a live block of this layout, so
            // of this class, taken from talc with the class's layout.
            if !unsafe { cache::give(ptr, class) } {
                // SAFETY: as just said.
                unsafe { TALC.dealloc(ptr, class_layout(class)) }
            }
            return;
        }
        if is_large(layout) {
            dealloc_large(ptr, layout);
        } else {
            // SAFETY: forwarded GlobalAlloc contract: a small block of talc.
            unsafe { TALC.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let (class, new_class) = (cached_class(layout), cached_class(new_layout));
        if class.is_some() && class == new_class {
            return ptr;
        }
        if class.is_none() && new_class.is_none() && !is_large(layout) && !is_large(new_layout) {
            // SAFETY: forwarded GlobalAlloc contract, both talc's own.
            return unsafe { TALC.realloc(ptr, layout, new_size) };
        }
        if is_large(layout) && is_large(new_layout) && pages_of(layout) == pages_of(new_layout) {
            return ptr;
        }
        // SAFETY: a valid layout (checked above).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy stays
            // inside the smaller of them.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Allocate; null when memory is exhausted or the layout is invalid.
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size, align) {
        // SAFETY: the layout is valid; zero sizes are rounded up to one
        // byte because GlobalAlloc forbids them.
        Ok(layout) => unsafe { ALLOCATOR.alloc(pad_zero(layout)) },
        Err(_) => null_mut(),
    }
}

/// Allocate zeroed memory; null on failure.
pub(crate) fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size, align) {
        // SAFETY: as in `alloc`.
        Ok(layout) => unsafe { ALLOCATOR.alloc_zeroed(pad_zero(layout)) },
        Err(_) => null_mut(),
    }
}

/// Free a block.
///
/// # Safety
/// `ptr` must come from [`alloc`]/[`alloc_zeroed`]/[`realloc`] with this
/// size and alignment, and not be used afterwards.
pub(crate) unsafe fn dealloc(ptr: *mut u8, size: usize, align: usize) {
    if ptr.is_null() {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(size, align) {
        // SAFETY: the caller passes a live block with its layout.
        unsafe { ALLOCATOR.dealloc(ptr, pad_zero(layout)) }
    }
}

/// Resize a block; null (with the old block intact) on failure.
///
/// # Safety
/// As for [`dealloc`]; on success the old pointer must not be used.
pub(crate) unsafe fn realloc(ptr: *mut u8, size: usize, align: usize, new_size: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(size, align) else {
        return null_mut();
    };
    if Layout::from_size_align(new_size, align).is_err() {
        return null_mut();
    }
    if ptr.is_null() {
        return alloc(new_size, align);
    }
    // SAFETY: the caller passes a live block with its layout; new_size
    // forms a valid layout with the same alignment (checked above).
    unsafe { ALLOCATOR.realloc(ptr, pad_zero(layout), new_size.max(1)) }
}

/// Whether the heap could still hand out a block of `bytes`: a probe
/// allocation, freed at once. Operations that grow kernel structures whose
/// allocations cannot fail gracefully (tree nodes) check this first and
/// report `ENOSPC`/`ENOMEM` instead of running the heap dry.
pub(crate) fn has_room(bytes: usize) -> bool {
    let probe = alloc(bytes, 16);
    if probe.is_null() {
        return false;
    }
    // SAFETY: `probe` was just allocated with this size and alignment.
    unsafe { dealloc(probe, bytes, 16) };
    true
}

/// Bytes allocated from the heap now (the kernel's and the application's).
pub(crate) fn in_use_bytes() -> usize {
    let small = TALC.lock().counters().allocated_bytes;
    small.saturating_sub(cache::cached_bytes()) + LARGE_IN_USE.load(Ordering::Relaxed) as usize
}

fn pad_zero(layout: Layout) -> Layout {
    if layout.size() == 0 {
        // Cannot fail: size 1 with an alignment that was already valid.
        Layout::from_size_align(1, layout.align()).unwrap_or(layout)
    } else {
        layout
    }
}
