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
//! interrupt upcall and after every halt, with a full flush of its own.
//! The upcall runs whatever the interrupted code holds (CPL3 code never
//! masks interrupts), so waiting cannot deadlock on a lock.
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

/// Catch this CPU up with the TLB changes of other CPUs (a full flush) if
/// it is behind. Called from the interrupt upcall and after halts.
pub(crate) fn catch_up() {
    let index = cpu::this().index as usize;
    let generation = GENERATION.load(Ordering::SeqCst);
    if SEEN[index].load(Ordering::SeqCst) < generation {
        arch::flush_tlb(0, 0);
        SEEN[index].fetch_max(generation, Ordering::SeqCst);
    }
}
