//! The page tables, edited at CPL3.
//!
//! The VMM (or the PVH entry) builds 4-level page tables that identity-map
//! guest RAM, 2 MiB pages where it can, and leaves them user-writable in
//! the page-table area, with the PML4 at `layout::PAGE_TABLES_ADDR`. The
//! kernel's memory manager changes them here: it gives 4 KiB pages of
//! identity-mapped RAM a protection (or takes them away: not present),
//! splitting a 2 MiB page into a table of 512 small ones the first time a
//! page inside it needs other bits. Tables are never merged back.
//!
//! Translations stay the identity: an entry only ever maps its own
//! address, so a CPU that still holds a stale TLB entry for a page can
//! have other rights than the tables grant, never a wrong frame. Each
//! edit says whether a CPU may still hold a right the page lost; then
//! the caller invalidates the TLBs ([`flush_tlb`] here, and every other
//! CPU) before anyone relies on the change.
//!
//! Invalidations are the expensive part (a CPL0 gate, emulated on PVM
//! hosts, and an IPI to every other CPU), so an edit asks for one only
//! when a TLB can hold the page: a CPU caches a translation only after it
//! has set the accessed bit of the entry (SDM vol. 3A, 4.10.2.3), so an
//! entry whose accessed bit is clear is in no TLB. The module keeps that
//! true: an entry it writes has the accessed bit clear when no TLB can
//! hold the page afterwards (it was not present, its accessed bit was
//! clear, or the caller invalidates it now), and keeps a set bit
//! otherwise. Entries are replaced with `cmpxchg`, so a bit the CPU sets
//! meanwhile is not lost. A right that is only widened needs no
//! invalidation either: a CPU that faults on its stale, narrower entry
//! finds the page accessible, drops the entry and retries
//! ([`is_spurious_fault`], SDM vol. 3A, 4.10.4.3).
//!
//! Callers serialise edits with one lock (`mm`); reads for checks may race
//! with an edit and see the old or the new entry, either of which was
//! true at some point of the call.
//!
//! References: Intel SDM vol. 3A, 4.5 (4-level paging), tables 4-14 to
//! 4-20 (entry formats), 4.10.4 (invalidation).

use eremite_interface::layout::{LARGE_PAGE_SIZE, PAGE_SIZE, PAGE_TABLES_ADDR};

use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::layout::pte::{
    ACCESSED, ADDR_MASK, CACHE_DISABLE, DIRTY, LARGE, NO_EXECUTE, PRESENT, USER, WRITABLE,
    WRITE_THROUGH,
};

/// PAT bit of a 2 MiB leaf entry (bit 7 is PAT in a 4 KiB one; SDM vol.
/// 3A, table 4-18).
const LARGE_PAT: u64 = 1 << 12;
const LARGE_ADDR_MASK: u64 = 0x000f_ffff_ffe0_0000;
/// Bits of a leaf that this module decides; the rest (caching) is kept.
const RIGHTS: u64 = PRESENT | WRITABLE | USER | NO_EXECUTE;

/// What a 4 KiB page may be used for at CPL3.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PageRights {
    /// Not present: every access faults.
    None,
    /// Present, read-only, not executable.
    Read,
    /// Present, writable, not executable.
    ReadWrite,
    /// Present, read-only, executable.
    ReadExecute,
    /// Present, writable, not executable, and not accessible at CPL3: for
    /// structures only the CPU and the CPL0 supervisor use (the IDT).
    Supervisor,
}

impl PageRights {
    fn bits(self) -> u64 {
        match self {
            PageRights::None => 0,
            PageRights::Read => PRESENT | USER | NO_EXECUTE,
            PageRights::ReadWrite => PRESENT | USER | WRITABLE | NO_EXECUTE,
            PageRights::ReadExecute => PRESENT | USER,
            PageRights::Supervisor => PRESENT | WRITABLE | NO_EXECUTE,
        }
    }
}

/// Why an edit could not be made (nothing was changed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EditError {
    /// This many more fresh, zeroed, 4 KiB-aligned page-table pages are
    /// needed to split 2 MiB pages.
    NeedTables(usize),
    /// Part of the range is not mapped by a page directory at all (not
    /// RAM that the boot tables cover).
    NotRam,
}

fn read_entry(addr: u64) -> u64 {
    // SAFETY: `addr` is an 8-aligned entry of a page table reached from
    // the PML4 the boot code built in the page-table area, or of a table
    // this module installed; page tables are identity-mapped RAM that no
    // Rust reference covers. Volatile: the CPU reads them too.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

fn write_entry(addr: u64, value: u64) {
    // SAFETY: as in `read_entry`; callers hold the memory manager's edit
    // lock, so no other CPU writes page tables concurrently.
    unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
}

/// The entry at `addr` as an atomic, for a replacement that must not
/// lose the accessed and dirty bits a CPU sets meanwhile.
fn atomic_entry<'a>(addr: u64) -> &'a AtomicU64 {
    // SAFETY: as in `read_entry`: an 8-aligned entry of a live page
    // table; the CPU updates entries with locked operations, so treating
    // the word as an atomic matches every other access to it.
    unsafe { AtomicU64::from_ptr(addr as *mut u64) }
}

/// Whether a CPU that cached `old` could do something that `new` forbids.
fn narrows(old: u64, new: u64) -> bool {
    old & PRESENT != 0
        && (new & PRESENT == 0
            || (old ^ new) & ADDR_MASK != 0
            || old & !new & (WRITABLE | USER) != 0
            || new & !old & NO_EXECUTE != 0)
}

/// Replace the entry at `at` by `make(old)`, with the accessed bit as the
/// module's rule says (see the module documentation). Returns whether a
/// TLB may still hold a right the page lost: then the caller must
/// invalidate it before releasing the edit lock.
fn replace_entry(at: u64, make: impl Fn(u64) -> u64) -> bool {
    let entry = atomic_entry(at);
    let mut old = entry.load(Ordering::Relaxed);
    loop {
        let wanted = make(old) & !ACCESSED;
        let must_flush = old & ACCESSED != 0 && narrows(old, wanted);
        let new = if must_flush || old & PRESENT == 0 {
            wanted
        } else {
            wanted | (old & ACCESSED)
        };
        if new == old {
            return false;
        }
        match entry.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return must_flush,
            Err(now) => old = now,
        }
    }
}

fn index(addr: u64, level: u32) -> u64 {
    (addr >> (12 + 9 * level)) & 0x1ff
}

/// The address of the page-directory entry that maps `addr`, or `None`
/// when a higher level is not present.
fn pde_addr(addr: u64) -> Option<u64> {
    let pml4e = read_entry(PAGE_TABLES_ADDR + 8 * index(addr, 3));
    if pml4e & PRESENT == 0 {
        return None;
    }
    let pdpte = read_entry((pml4e & ADDR_MASK) + 8 * index(addr, 2));
    if pdpte & PRESENT == 0 || pdpte & LARGE != 0 {
        return None;
    }
    Some((pdpte & ADDR_MASK) + 8 * index(addr, 1))
}

/// The leaf bits that map the 4 KiB page at `addr` (for a 2 MiB page,
/// its bits as a 4 KiB entry would carry them), or 0 when not present.
pub(crate) fn leaf(addr: u64) -> u64 {
    walk(addr).0
}

/// The leaf bits of the page at `addr` as [`leaf`] gives them, and the
/// size of the page that maps it (4 KiB, or 2 MiB).
fn walk(addr: u64) -> (u64, u64) {
    let Some(pde_at) = pde_addr(addr) else {
        return (0, LARGE_PAGE_SIZE);
    };
    let pde = read_entry(pde_at);
    if pde & PRESENT == 0 {
        return (0, LARGE_PAGE_SIZE);
    }
    if pde & LARGE != 0 {
        return (pde & !(LARGE | LARGE_PAT), LARGE_PAGE_SIZE);
    }
    (
        read_entry((pde & ADDR_MASK) + 8 * index(addr, 0)),
        PAGE_SIZE,
    )
}

/// Whether every page of `[start, end)` is present for CPL3 with `write`
/// allowed when `is_write`.
pub(crate) fn is_accessible(start: u64, end: u64, is_write: bool) -> bool {
    let mut page = start & !(PAGE_SIZE - 1);
    while page < end {
        let (bits, size) = walk(page);
        if bits & (PRESENT | USER) != (PRESENT | USER) || (is_write && bits & WRITABLE == 0) {
            return false;
        }
        // A 2 MiB page answers for all its small pages at once.
        page = (page | (size - 1)) + 1;
    }
    true
}

/// Give every 4 KiB page of `[start, end)` (page-aligned identity-mapped
/// RAM) the rights `rights`. A 2 MiB page with other rights is first
/// split into a table taken from `tables`, filled before it is linked; if `tables` holds too few, nothing changes and the error says
/// how many more are needed. Returns whether a TLB may still hold a right
/// a page lost (then the caller must invalidate the range on every CPU
/// before it releases the edit lock).
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn set_rights(
    start: u64,
    end: u64,
    rights: PageRights,
    tables: &mut alloc::vec::Vec<u64>,
) -> Result<bool, EditError> {
    debug_assert!(start.is_multiple_of(PAGE_SIZE) && end.is_multiple_of(PAGE_SIZE));
    let new_bits = rights.bits();
    // Pass 1: count the splits, so that a failure changes nothing.
    let mut splits = 0;
    let mut block = start & !(LARGE_PAGE_SIZE - 1);
    while block < end {
        let pde = read_entry(pde_addr(block).ok_or(EditError::NotRam)?);
        if pde & PRESENT == 0 {
            return Err(EditError::NotRam);
        }
        if pde & LARGE != 0 && pde & RIGHTS != new_bits & RIGHTS {
            splits += 1;
        }
        block += LARGE_PAGE_SIZE;
    }
    if tables.len() < splits {
        return Err(EditError::NeedTables(splits - tables.len()));
    }
    // Pass 2: split and write.
    let mut is_changed = false;
    let mut block = start & !(LARGE_PAGE_SIZE - 1);
    while block < end {
        let Some(pde_at) = pde_addr(block) else {
            return Err(EditError::NotRam);
        };
        let pde = read_entry(pde_at);
        let from = start.max(block);
        let to = end.min(block + LARGE_PAGE_SIZE);
        if pde & LARGE != 0 {
            if pde & RIGHTS == new_bits & RIGHTS {
                block += LARGE_PAGE_SIZE;
                continue;
            }
            // The new table gets its final entries before anything walks
            // it: on shadow-paging hosts a write to a table in use traps,
            // one to a table not yet linked does not.
            is_changed |= split(pde_at, tables, |page, old| {
                if (from..to).contains(&page) {
                    entry_for_rights(rights, old, page)
                } else {
                    old
                }
            });
            block += LARGE_PAGE_SIZE;
            continue;
        }
        let table = pde & ADDR_MASK;
        let mut page = from;
        while page < to {
            let at = table + 8 * index(page, 0);
            is_changed |= replace_entry(at, |old| entry_for_rights(rights, old, page));
            page += PAGE_SIZE;
        }
        block += LARGE_PAGE_SIZE;
    }
    Ok(is_changed)
}

/// Make every 4 KiB page of `[start, end)` present and writable (and not
/// executable) where it is not: pages handed out again after `munmap` or
/// as a guard. A 2 MiB page that is present and writable already stays as
/// it is; one that is not would need a split, which this never does:
/// `NeedTables`, with nothing changed. Never narrows a right.
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn ensure_writable(start: u64, end: u64) -> Result<(), EditError> {
    let mut block = start & !(LARGE_PAGE_SIZE - 1);
    while block < end {
        let pde = read_entry(pde_addr(block).ok_or(EditError::NotRam)?);
        if pde & PRESENT == 0 {
            return Err(EditError::NotRam);
        }
        if pde & LARGE != 0 && pde & (WRITABLE | USER) != (WRITABLE | USER) {
            return Err(EditError::NeedTables(1));
        }
        block += LARGE_PAGE_SIZE;
    }
    let mut page = start;
    while page < end {
        let Some(pde_at) = pde_addr(page) else {
            return Err(EditError::NotRam);
        };
        let pde = read_entry(pde_at);
        if pde & LARGE != 0 {
            page = (page | (LARGE_PAGE_SIZE - 1)) + 1;
            continue;
        }
        let at = (pde & ADDR_MASK) + 8 * index(page, 0);
        let old = read_entry(at);
        if old & (PRESENT | WRITABLE | USER) != (PRESENT | WRITABLE | USER) {
            write_entry(
                at,
                (old & !RIGHTS & !ADDR_MASK) | page | PageRights::ReadWrite.bits(),
            );
        }
        page += PAGE_SIZE;
    }
    Ok(())
}

/// The 4 KiB entry for `page` with rights `rights`, keeping the other bits
/// of `old`.
fn entry_for_rights(rights: PageRights, old: u64, page: u64) -> u64 {
    if rights == PageRights::None {
        (old & !RIGHTS & ADDR_MASK) | page
    } else {
        (old & !RIGHTS & !ADDR_MASK) | page | rights.bits()
    }
}

/// Replace the 2 MiB page of the entry at `pde_at` by a table of 512
/// small pages, entry `i` being `entry(page, the 2 MiB page's bits for
/// it)`; the table is filled before it is linked. Returns whether a TLB
/// may still hold a right a page lost (the 2 MiB page had been used and
/// one of its pages now has less).
fn split(pde_at: u64, tables: &mut alloc::vec::Vec<u64>, entry: impl Fn(u64, u64) -> u64) -> bool {
    let Some(table) = tables.pop() else {
        unreachable!("pass 1 counted the tables");
    };
    let link = table | PRESENT | WRITABLE | USER;
    let pde_entry = atomic_entry(pde_at);
    let mut pde = pde_entry.load(Ordering::Relaxed);
    loop {
        let base = pde & LARGE_ADDR_MASK;
        let bits = pde & !(LARGE | LARGE_PAT | LARGE_ADDR_MASK);
        let mut must_flush = false;
        for i in 0..512 {
            let page = base + i * PAGE_SIZE;
            let old = page | bits;
            let new = entry(page, old) & !ACCESSED;
            must_flush |= old & ACCESSED != 0 && narrows(old, new);
            write_entry(table + 8 * i, new | (old & ACCESSED));
        }
        if must_flush {
            // The caller invalidates every page whose rights changed: no
            // TLB holds those afterwards.
            for i in 0..512 {
                let page = base + i * PAGE_SIZE;
                let old = page | bits;
                if entry(page, old) != old {
                    write_entry(table + 8 * i, read_entry(table + 8 * i) & !ACCESSED);
                }
            }
        }
        // Pages whose rights did not change keep their translation, so
        // the split itself needs no invalidation (SDM vol. 3A, 4.10.2.3).
        match pde_entry.compare_exchange(pde, link, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return must_flush,
            // A CPU set the accessed or dirty bit meanwhile: fill the
            // (still unlinked) table again from the new bits.
            Err(now) => pde = now,
        }
    }
}

/// Map the 2 MiB block at `block` (2 MiB aligned) with one present,
/// writable, not executable 2 MiB page again, if a table of small pages
/// maps it now; the retired table's address, which the caller frees once
/// every CPU's TLB and paging-structure caches are invalidated. Only for
/// blocks whose every frame is free: their rights do not matter to
/// anyone.
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn merge_block(block: u64) -> Option<u64> {
    debug_assert!(block.is_multiple_of(LARGE_PAGE_SIZE));
    let pde_at = pde_addr(block)?;
    let pde = read_entry(pde_at);
    if pde & PRESENT == 0 || pde & LARGE != 0 {
        return None;
    }
    let table = pde & ADDR_MASK;
    // Keep the caching bits the boot tables gave the block's pages.
    let caching = read_entry(table) & (WRITE_THROUGH | CACHE_DISABLE);
    write_entry(
        pde_at,
        block | LARGE | caching | PageRights::ReadWrite.bits(),
    );
    Some(table)
}

/// The address of the 4 KiB entry that maps `addr` in the virtual window
/// (above RAM; `mm::window`), or `None` if a table on the way is missing
/// and `tables` has none left to link there (then nothing is changed
/// beyond the tables linked so far, which stay). Tables taken from
/// `tables` must be zeroed, identity-mapped pages; they are linked
/// present, writable and user-accessible, so the leaf decides.
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn window_entry(addr: u64, tables: &mut alloc::vec::Vec<u64>) -> Option<u64> {
    let mut at = PAGE_TABLES_ADDR + 8 * index(addr, 3);
    for level in [2, 1, 0] {
        let mut entry = read_entry(at);
        if entry & PRESENT == 0 {
            let table = tables.pop()?;
            entry = table | PRESENT | WRITABLE | USER;
            write_entry(at, entry);
        }
        if entry & LARGE != 0 {
            return None;
        }
        at = (entry & ADDR_MASK) + 8 * index(addr, level);
    }
    Some(at)
}

/// Unlink the window's page table that maps the 2 MiB block holding
/// `addr` if none of its entries maps anything any more, and then the
/// page directory above it if that is empty too: the tables unlinked
/// (the caller frees them once no CPU can walk them), and whether a CPU
/// may have cached them (then the caller invalidates first, which also
/// drops paging-structure caches: SDM vol. 3A, 4.10.4.1).
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn unlink_empty_window_tables(addr: u64) -> ([Option<u64>; 2], bool) {
    let mut unlinked = [None, None];
    let mut must_flush = false;
    let pml4e = read_entry(PAGE_TABLES_ADDR + 8 * index(addr, 3));
    if pml4e & PRESENT == 0 {
        return (unlinked, false);
    }
    let pdpte_at = (pml4e & ADDR_MASK) + 8 * index(addr, 2);
    let pdpte = read_entry(pdpte_at);
    if pdpte & PRESENT == 0 || pdpte & LARGE != 0 {
        return (unlinked, false);
    }
    let directory = pdpte & ADDR_MASK;
    let pde_at = directory + 8 * index(addr, 1);
    let pde = read_entry(pde_at);
    if pde & PRESENT == 0 || pde & LARGE != 0 || !is_empty_table(pde & ADDR_MASK) {
        return (unlinked, false);
    }
    must_flush |= replace_entry(pde_at, |_| 0);
    unlinked[0] = Some(pde & ADDR_MASK);
    if is_empty_table(directory) {
        must_flush |= replace_entry(pdpte_at, |_| 0);
        unlinked[1] = Some(directory);
    }
    (unlinked, must_flush)
}

/// Whether no entry of the table at `table` maps anything (a frame kept
/// in a not-present entry counts as something).
fn is_empty_table(table: u64) -> bool {
    (0..512).all(|i| read_entry(table + 8 * i) & (PRESENT | ADDR_MASK) == 0)
}

/// The 4 KiB entry at `at` (from [`window_entry`]).
pub(crate) fn entry(at: u64) -> u64 {
    read_entry(at)
}

/// Write the window entry at `at` (from [`window_entry`]): `frame` with
/// `rights`; [`PageRights::None`] keeps the frame in a not-present entry.
/// Returns whether a TLB may still hold a right the page lost (the caller
/// invalidates it before it releases the edit lock).
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn set_window_entry(at: u64, frame: u64, rights: PageRights) -> bool {
    replace_entry(at, |old| {
        let dirty = if old & ADDR_MASK == frame & ADDR_MASK {
            old & DIRTY
        } else {
            0
        };
        (frame & ADDR_MASK) | rights.bits() | dirty
    })
}

/// Back the window page whose entry is `at` (from [`window_entry`], with
/// no frame yet) with `frame` and `rights`, its accessed (and, if
/// writable, dirty) bits set already: on shadow-paging hosts the host
/// then builds the shadow entries of such neighbours together at the
/// first fault of one (KVM prefetches only entries marked accessed),
/// instead of one host fault per page, and a first write needs no fault
/// to set the dirty bit. The page was not present, so no TLB holds it.
///
/// The caller holds the memory manager's edit lock.
pub(crate) fn back_window_entry(at: u64, frame: u64, rights: PageRights) {
    debug_assert!(read_entry(at) & (PRESENT | ADDR_MASK) == 0);
    let bits = rights.bits();
    let dirty = if bits & WRITABLE != 0 { DIRTY } else { 0 };
    write_entry(at, (frame & ADDR_MASK) | bits | ACCESSED | dirty);
}

/// The rights a window entry (from [`window_entry`]) gives.
pub(crate) fn window_rights(entry: u64) -> PageRights {
    if entry & (PRESENT | USER) != (PRESENT | USER) {
        PageRights::None
    } else if entry & WRITABLE != 0 {
        PageRights::ReadWrite
    } else if entry & NO_EXECUTE == 0 {
        PageRights::ReadExecute
    } else {
        PageRights::Read
    }
}

/// Whether a page fault at `addr` with `error_code` (SDM vol. 3A, 4.7)
/// came from a stale TLB entry: the tables now allow the CPL3 access
/// that faulted, because a right was widened without an invalidation.
/// Then this CPU's entry for the page is dropped here, and the faulting
/// instruction can simply run again.
pub(crate) fn is_spurious_fault(addr: u64, error_code: u64) -> bool {
    const WRITE: u64 = 1 << 1;
    const USER_MODE: u64 = 1 << 2;
    const RESERVED_BIT: u64 = 1 << 3;
    const FETCH: u64 = 1 << 4;
    if error_code & USER_MODE == 0 || error_code & RESERVED_BIT != 0 {
        return false;
    }
    let (bits, _) = walk(addr);
    let is_allowed = bits & (PRESENT | USER) == (PRESENT | USER)
        && (error_code & WRITE == 0 || bits & WRITABLE != 0)
        && (error_code & FETCH == 0 || bits & NO_EXECUTE == 0);
    if is_allowed {
        flush_tlb(addr & !(PAGE_SIZE - 1), 1);
    }
    is_allowed
}

/// Most pages [`flush_tlb`] invalidates one by one; more reload CR3.
pub(crate) const FLUSH_PAGES_MAX: u64 = 8;

/// Invalidate this CPU's TLB entries for `pages` pages from `start` (all
/// of them when `pages` is 0 or above [`FLUSH_PAGES_MAX`]), through the
/// CPL0 gate.
pub(crate) fn flush_tlb(start: u64, pages: u64) {
    // SAFETY: the flush gate (`supervisor.rs`) only executes `invlpg` for
    // the given pages or reloads CR3 (same tables), and returns after the
    // trapping instruction with only caller-saved registers changed.
    unsafe { super::supervisor::eremite_flush(start, pages) }
}
