//! Per-CPU caches of small free blocks in front of the heap: what makes
//! `malloc`/`free` of a small block a few loads and stores instead of a
//! lock and talc's bins (the `malloc_free_*` rows of `./x bench`).
//!
//! Blocks of at most [`MAX_BYTES`] with an alignment of at most
//! [`ALIGN`] fall into one of [`CLASSES`] size classes
//! (`eremite_mm::size_class`: 16-byte steps to 256 bytes, then four per
//! power of two to 4 KiB, so no block is more than a quarter larger than
//! asked). The heap always takes such a block
//! from talc with its class's size, so any block of a class can serve any
//! request of that class. A freed block goes on its CPU's list for the
//! class (a singly linked list through the blocks themselves) while the
//! list holds fewer than [`depth`] blocks; an allocation takes the
//! list's first block. Each CPU touches only its own lists, with
//! preemption held off for the few instructions of a push or a pop (the
//! interrupt upcall on the same CPU does not allocate while preemption is
//! off: it only switches threads, and runs the rest, when it may), so no
//! lock and no atomic read-modify-write is needed. A block freed on
//! another CPU than it was allocated on simply joins that CPU's list.

use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

use eremite_interface::layout::MAX_CPUS;

use crate::{cpu, sync};

pub(super) use eremite_mm::size_class::{ALIGN, MAX_BYTES, class_of};
use eremite_mm::size_class::{CLASSES, class_size};

/// Bytes of free blocks one CPU keeps per class at most.
const CLASS_BUDGET_BYTES: usize = 16 << 10;

/// Most free blocks of `class` one CPU keeps.
fn depth(class: usize) -> usize {
    (CLASS_BUDGET_BYTES / class_size(class)).clamp(4, 64)
}

/// A free block, as its first word sees it.
struct Free {
    next: *mut Free,
}

struct Lists {
    heads: [*mut Free; CLASSES],
    counts: [usize; CLASSES],
}

/// One CPU's lists, touched only by that CPU with preemption off; in
/// cache lines of its own (fetched in pairs), so two CPUs never share one.
#[repr(align(128))]
struct CpuCache {
    lists: UnsafeCell<Lists>,
    /// Bytes on its lists, for [`cached_bytes`]: written only by its CPU
    /// (a plain load and store), read from any.
    bytes: AtomicUsize,
}

// SAFETY: a CPU's `lists` are only touched by code running on that CPU
// with preemption held off ([`with_lists`]), so never by two contexts at
// once; `bytes` is atomic.
unsafe impl Sync for CpuCache {}

static CACHES: [CpuCache; MAX_CPUS as usize] = [const {
    CpuCache {
        lists: UnsafeCell::new(Lists {
            heads: [null_mut(); CLASSES],
            counts: [0; CLASSES],
        }),
        bytes: AtomicUsize::new(0),
    }
}; MAX_CPUS as usize];

/// Run `op` on this CPU's lists, with preemption held off.
#[inline]
fn with_lists<T>(op: impl FnOnce(&mut Lists, &AtomicUsize) -> T) -> T {
    let this = cpu::this();
    sync::preempt_disable_on(this);
    let cache = &CACHES[this.index as usize % MAX_CPUS as usize];
    // SAFETY: only this CPU touches its lists, and with preemption off no
    // other thread runs here until `preempt_enable`; the interrupt upcall
    // does not allocate meanwhile (module documentation). So this is the
    // only reference to them.
    let result = op(unsafe { &mut *cache.lists.get() }, &cache.bytes);
    sync::preempt_enable_on(this);
    result
}

/// A free block of `class` from this CPU's list, or null if it is empty.
pub(super) fn take(class: usize) -> *mut u8 {
    with_lists(|lists, bytes| {
        let head = lists.heads[class];
        if head.is_null() {
            return null_mut();
        }
        // SAFETY: blocks on the list are free blocks of the class that
        // [`give`] put there, at least 16 bytes and 16-aligned, their
        // first word written by it; nothing else uses them.
        lists.heads[class] = unsafe { (*head).next };
        lists.counts[class] -= 1;
        bytes.store(
            bytes.load(Ordering::Relaxed) - class_size(class),
            Ordering::Relaxed,
        );
        head.cast()
    })
}

/// Keep the free block `block` of `class` on this CPU's list; false if the
/// list is full (then the caller frees it).
///
/// # Safety
/// `block` must be a block of `class` from the heap (taken from talc with
/// the class's size and [`ALIGN`]) that nothing uses any more.
pub(super) unsafe fn give(block: *mut u8, class: usize) -> bool {
    with_lists(|lists, bytes| {
        if lists.counts[class] >= depth(class) {
            return false;
        }
        let free = block.cast::<Free>();
        // SAFETY: the block is free and ours (the caller's contract), at
        // least 16 bytes and 16-aligned: room for the link.
        unsafe {
            free.write(Free {
                next: lists.heads[class],
            })
        };
        lists.heads[class] = free;
        lists.counts[class] += 1;
        bytes.store(
            bytes.load(Ordering::Relaxed) + class_size(class),
            Ordering::Relaxed,
        );
        true
    })
}

/// Take every block off this CPU's lists, for `free(block, class)` to
/// give back (when memory runs short).
pub(super) fn drain(mut free: impl FnMut(*mut u8, usize)) {
    for class in 0..CLASSES {
        loop {
            let block = take(class);
            if block.is_null() {
                break;
            }
            free(block, class);
        }
    }
}

/// Bytes held on every CPU's lists (allocated from talc, free for the
/// program).
pub(super) fn cached_bytes() -> usize {
    CACHES
        .iter()
        .map(|cache| cache.bytes.load(Ordering::Relaxed))
        .sum()
}
