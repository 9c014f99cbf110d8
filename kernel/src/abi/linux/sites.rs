//! The rewritten `syscall` sites of every piece of code the program runs:
//! the program's and its interpreter's (rewritten by the VMM, bitmaps in
//! read-only pages after them) and code mapped executable later (shared
//! libraries `ld.so` maps, `mprotect(PROT_EXEC)`), which this module
//! rewrites itself (`eremite-sites`) before the pages become executable.
//!
//! The dispatcher checks every call's return address here: a call into
//! page 0 that does not come from a rewritten site is a null function
//! pointer. The table is append-only (a region is never moved or freed,
//! so readers need no lock): up to [`MAX_REGIONS`] regions, each a code
//! range with its bitmap. Code unmapped whole loses its region; code
//! beyond the table's capacity keeps its `syscall`s, on the trap path.

use alloc::boxed::Box;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use eremite_interface::KernelReport;
use spin::Once;

use crate::console::klog;
use crate::sync::Lock;

/// Code ranges with rewritten sites the table holds at most.
const MAX_REGIONS: usize = 128;

/// One range of code and the bitmap of its sites' return addresses.
struct Region {
    start: u64,
    /// Its end; set to `start` when the code is unmapped.
    end: AtomicU64,
    bitmap: &'static [u8],
}

static REGIONS: [Once<Region>; MAX_REGIONS] = [const { Once::new() }; MAX_REGIONS];
/// Regions in use: the first `COUNT` slots are filled.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Serialises writers (readers take no lock).
static WRITER: Lock<()> = Lock::new(());

/// Whether page 0 holds the trampoline, so that code may be rewritten
/// (not for a Go program: see `vmm/src/linux`).
static IS_ENABLED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Let code mapped from now on be rewritten (page 0 holds the trampoline).
pub(super) fn enable() {
    IS_ENABLED.store(true, Ordering::Relaxed);
}

/// Sites rewritten and left by the kernel (after start).
static REWRITTEN: AtomicU64 = AtomicU64::new(0);
static LEFT: AtomicU64 = AtomicU64::new(0);

/// Add the code `[start, end)` whose rewritten sites `bitmap` marks;
/// false when the table is full.
pub(super) fn add(start: u64, end: u64, bitmap: &'static [u8]) -> bool {
    let _writer = WRITER.lock();
    let count = COUNT.load(Ordering::Relaxed);
    let Some(slot) = REGIONS.get(count) else {
        return false;
    };
    slot.call_once(|| Region {
        start,
        end: AtomicU64::new(end),
        bitmap,
    });
    COUNT.store(count + 1, Ordering::Release);
    true
}

/// Whether `return_address` follows a rewritten `syscall` site.
#[inline]
pub(super) fn is_rewritten(return_address: u64) -> bool {
    let count = COUNT.load(Ordering::Acquire);
    REGIONS[..count.min(MAX_REGIONS)].iter().any(|slot| {
        slot.get().is_some_and(|region| {
            return_address > region.start
                && return_address <= region.end.load(Ordering::Relaxed)
                && eremite_sites::is_marked(region.bitmap, region.start, return_address)
        })
    })
}

/// Rewrite the `syscall` sites in `[addr, addr + len)`, code about to be
/// made executable and writable now, judging each by its function in
/// `functions` where it has one, and add its region. The counts of sites
/// rewritten and left.
pub(super) fn rewrite(addr: u64, len: usize, functions: &[Range<u64>]) -> (usize, usize) {
    if !IS_ENABLED.load(Ordering::Relaxed) {
        return (0, 0);
    }
    let Ok(code) = super::user::slice_mut(super::ptr::<u8>(addr), len) else {
        return (0, 0);
    };
    let mut sites = eremite_sites::rewrite(code, addr, functions);
    let end = addr + len as u64;
    if !sites.rewritten.is_empty() {
        let bitmap: &'static [u8] = Box::leak(
            eremite_sites::bitmap(&(addr..end), &sites.return_addresses()).into_boxed_slice(),
        );
        if !add(addr, end, bitmap) {
            // No room to tell these sites from null calls: put them back.
            for &site in &sites.rewritten {
                let at = usize::try_from(site - addr).unwrap_or(usize::MAX);
                if let Some(bytes) = code.get_mut(at..at + 2) {
                    bytes.copy_from_slice(&[0x0F, 0x05]);
                }
            }
            sites.left.append(&mut sites.rewritten);
        }
    }
    let rewritten = REWRITTEN.fetch_add(sites.rewritten.len() as u64, Ordering::Relaxed)
        + sites.rewritten.len() as u64;
    let left = LEFT.fetch_add(sites.left.len() as u64, Ordering::Relaxed) + sites.left.len() as u64;
    super::report(
        core::mem::offset_of!(KernelReport, linux_sites_rewritten_later),
        rewritten,
    );
    super::report(
        core::mem::offset_of!(KernelReport, linux_sites_left_later),
        left,
    );
    klog!(
        "linux: code at {addr:#x}..{end:#x} mapped executable: {} sites rewritten, {} left",
        sites.rewritten.len(),
        sites.left.len()
    );
    (sites.rewritten.len(), sites.left.len())
}

/// Code in `[addr, addr + len)` is going: regions wholly inside lose
/// their sites.
pub(super) fn forget(addr: u64, len: usize) {
    let end = addr.saturating_add(len as u64);
    let count = COUNT.load(Ordering::Acquire);
    for region in REGIONS[..count.min(MAX_REGIONS)]
        .iter()
        .filter_map(Once::get)
    {
        if region.start >= addr && region.end.load(Ordering::Relaxed) <= end {
            region.end.store(region.start, Ordering::Relaxed);
        }
    }
}
