//! TLB invalidation on every CPU after a page lost a right.
//!
//! The CPU that changed the page tables invalidates its own entries
//! through the CPL0 gate (`arch::flush_tlb`: `invlpg` for a few pages, a
//! CR3 reload for more). Every other CPU that is running must drop its
//! entries too before the change can be relied on (a stale entry would
//! let a write through to a page just made read-only, or a read of one
//! just unmapped). So the initiator bumps a generation number, sends each
//! of them the wake-up IPI, and waits until each has reported that
//! generation: a CPU catches up ([`catch_up`]) first thing in its
//! interrupt upcall and after every halt. The upcall runs whatever the
//! interrupted code holds (CPL3 code never masks interrupts), so waiting
//! cannot deadlock on a lock.
//!
//! Each change also leaves its range in a small ring ([`RECENT`]), so a
//! CPU that is behind by a change or two invalidates just those pages
//! (`invlpg`) instead of reloading CR3: on shadow-paging hosts a CR3
//! reload drops the host's shadow tables, and every page the CPU touches
//! afterwards costs a host fault. A CPU further behind, or that finds a
//! slot already reused, flushes everything.
//!
//! This costs an IPI, an exit and a CPL0 gate on every other CPU, so the
//! memory manager avoids narrowing rights on hot paths (thread stacks are
//! reused with their guard pages in place).

use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::layout::{MAX_CPUS, WAKE_VECTOR};

use crate::{arch, cpu, time};

/// Generation of the last change that every CPU must catch up with.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The generation each CPU has caught up with.
static SEEN: [AtomicU64; MAX_CPUS as usize] = [const { AtomicU64::new(0) }; MAX_CPUS as usize];

/// A change's range, for CPUs catching up: `generation` is written last
/// (and cleared first), so a reader that sees the same generation before
/// and after reading the range has read that change's range.
struct Change {
    generation: AtomicU64,
    start: AtomicU64,
    pages: AtomicU64,
}

/// The ranges of the last [`RECENT_CHANGES`] changes, by generation.
const RECENT_CHANGES: usize = 16;
static RECENT: [Change; RECENT_CHANGES] = [const {
    Change {
        generation: AtomicU64::new(0),
        start: AtomicU64::new(0),
        pages: AtomicU64::new(0),
    }
}; RECENT_CHANGES];

/// A CPU behind by more than this many changes flushes everything.
const CATCH_UP_RANGES_MAX: u64 = 4;

/// How long an initiator waits for the other CPUs before it gives up
/// with a kernel panic (a CPU that never takes an interrupt is a bug).
const PATIENCE_NS: u64 = 2_000_000_000;

/// Invalidate the TLB entries of `pages` pages from `start` on this CPU
/// and every other running CPU.
pub(super) fn flush(start: u64, pages: u64) {
    arch::flush_tlb(start, pages);
    let others = cpu::online_mask() & !(1 << cpu::this().index);
    if others == 0 {
        return;
    }
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    let slot = &RECENT[(generation % RECENT_CHANGES as u64) as usize];
    slot.generation.store(0, Ordering::SeqCst);
    slot.start.store(start, Ordering::SeqCst);
    slot.pages.store(pages, Ordering::SeqCst);
    slot.generation.store(generation, Ordering::SeqCst);
    // This CPU has done its part of this change; if it was up to date
    // before it, it is now (so `catch_up` below does not flush it all).
    let _ = SEEN[cpu::this().index as usize].compare_exchange(
        generation - 1,
        generation,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for index in (0..MAX_CPUS).filter(|&i| others & (1 << i) != 0) {
        // Set the wake word too, so a CPU spinning in its idle loop (which
        // takes the IPI as well) goes round its loop.
        cpu::get(index as usize).wake.store(1, Ordering::SeqCst);
        arch::send_ipi(index, WAKE_VECTOR);
    }
    let deadline = time::monotonic_ns().saturating_add(PATIENCE_NS);
    for index in (0..MAX_CPUS).filter(|&i| others & (1 << i) != 0) {
        while SEEN[index as usize].load(Ordering::SeqCst) < generation {
            if time::monotonic_ns() > deadline {
                panic!("CPU {index} did not invalidate its TLB within 2 s");
            }
            // That CPU may be waiting for this one's invalidation, with
            // interrupts off (see `sync::set_spin_hook`).
            catch_up();
            arch::pause();
        }
    }
}

/// Catch this CPU up with the TLB changes of other CPUs if it is behind:
/// the pages of each change it missed, or everything. Called from the
/// interrupt upcall, after halts and while spinning.
pub(crate) fn catch_up() {
    let index = cpu::this().index as usize;
    let generation = GENERATION.load(Ordering::SeqCst);
    let seen = SEEN[index].load(Ordering::SeqCst);
    if seen >= generation {
        return;
    }
    let ranges = (generation - seen <= CATCH_UP_RANGES_MAX)
        .then(|| {
            ((seen + 1)..=generation)
                .map(recent_range)
                .collect::<Option<Ranges>>()
        })
        .flatten();
    match ranges {
        Some(ranges) => {
            for (start, pages) in ranges.0.into_iter().take(ranges.1) {
                arch::flush_tlb(start, pages);
            }
        }
        None => arch::flush_tlb(0, 0),
    }
    SEEN[index].fetch_max(generation, Ordering::SeqCst);
}

/// The range of change `generation` if its slot still holds it (and it
/// is small enough to invalidate page by page).
fn recent_range(generation: u64) -> Option<(u64, u64)> {
    let slot = &RECENT[(generation % RECENT_CHANGES as u64) as usize];
    if slot.generation.load(Ordering::SeqCst) != generation {
        return None;
    }
    let start = slot.start.load(Ordering::SeqCst);
    let pages = slot.pages.load(Ordering::SeqCst);
    let is_small = pages != 0 && pages <= arch::FLUSH_PAGES_MAX;
    (slot.generation.load(Ordering::SeqCst) == generation && is_small).then_some((start, pages))
}

/// At most [`CATCH_UP_RANGES_MAX`] ranges, with no allocation (this runs
/// in interrupt upcalls and lock spins).
struct Ranges([(u64, u64); CATCH_UP_RANGES_MAX as usize], usize);

impl FromIterator<(u64, u64)> for Ranges {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut ranges = Ranges([(0, 0); CATCH_UP_RANGES_MAX as usize], 0);
        for range in iter.into_iter().take(CATCH_UP_RANGES_MAX as usize) {
            ranges.0[ranges.1] = range;
            ranges.1 += 1;
        }
        ranges
    }
}
