//! Memory: guest RAM, its frames, the heap, the application's mappings
//! and the threads' stacks.
//!
//! Guest RAM is identity-mapped (virtual address = physical address), so
//! any buffer can go to the VMM or a device as it is. At boot the VMM's
//! tables map it with 2 MiB pages; the memory manager changes the rights
//! of single pages where it must (guard pages, `munmap`, `mprotect`) and
//! otherwise leaves them alone, so the hot paths take no page fault:
//!
//! - [`ram`]: the frame allocator (all free RAM) and page-right edits,
//!   with TLB invalidation on every CPU ([`tlb`]);
//! - [`heap`]: the global allocator (talc arenas that grow on demand,
//!   large blocks straight from frames and back);
//! - [`space`]: `mmap`/`munmap`/`mprotect`, stacks with guard pages, and
//!   the explanation of page faults.
//!
//! The boot code hands over RAM with [`init`]; the initial ramdisk's
//! memory follows with [`add_region`] once it is unpacked.
#![allow(unsafe_code)]

mod cache;
mod heap;
mod ram;
mod space;
mod tlb;
pub(crate) mod window;

use alloc::vec::Vec;

use core::sync::atomic::AtomicU32;
use eremite_interface::errno::Errno;
use eremite_interface::layout::PAGE_SIZE;
use eremite_interface::{MAX_RAM_RANGES, MemRange};

use eremite_mm::PageRange;

use crate::arch;

pub(crate) use eremite_mm::Prot;
pub(crate) use heap::{alloc, alloc_zeroed, dealloc, has_room, realloc};
pub(crate) use space::{
    FaultExplanation, NO_THREAD, Stack, add_program_segment, explain_fault, map_anonymous_at,
    map_anonymous_fixed, remap,
};
pub(crate) use tlb::catch_up as tlb_catch_up;
pub(crate) use window::Placement as WindowPlacement;

/// Guest RAM: up to [`MAX_RAM_RANGES`] disjoint ranges in ascending
/// order (RAM below the 3–4 GiB hole, then RAM from 4 GiB), set once.
struct RamMap {
    ranges: [(u64, u64); MAX_RAM_RANGES],
    count: usize,
}

static RAM: spin::Once<RamMap> = spin::Once::new();

/// The RAM ranges, `[start, end)` each.
fn ram_ranges() -> &'static [(u64, u64)] {
    RAM.get().map_or(&[], |map| &map.ranges[..map.count])
}

/// Size of the heap's first arena, which holds the frame allocator's
/// bitmaps (2 bits per 4 KiB of the span) and the first small blocks.
fn first_arena_bytes(span_bytes: u64) -> u64 {
    let bitmap_bytes = (span_bytes / PAGE_SIZE).div_ceil(4);
    (bitmap_bytes + (1 << 20)).next_multiple_of(PAGE_SIZE)
}

/// Take over guest RAM: `ram` lists every range of it (`ram[0]` starts at
/// 0 and holds the boot structures and the image; the others are wholly
/// free). Everything in `[free_start, end of ram[0])` except `reserved`
/// (the initial ramdisk, given later with [`add_region`]) becomes free
/// memory, and so do the other ranges.
///
/// # Safety
/// The free ranges must be RAM that nothing else uses, and this must be
/// called once, before any allocation.
pub(crate) unsafe fn init(
    ram: &[MemRange],
    free_start: u64,
    reserved: Option<(u64, u64)>,
) -> Result<(), &'static str> {
    let mut map = RamMap {
        ranges: [(0, 0); MAX_RAM_RANGES],
        count: 0,
    };
    for (slot, range) in map.ranges.iter_mut().zip(ram) {
        let end = range.addr.checked_add(range.len).ok_or("bad RAM map")?;
        if end <= range.addr
            || !range.addr.is_multiple_of(PAGE_SIZE)
            || !end.is_multiple_of(PAGE_SIZE)
        {
            return Err("bad RAM map");
        }
        *slot = (range.addr, end);
        map.count += 1;
    }
    let ranges = &map.ranges[..map.count];
    let Some(&(low_start, low_end)) = ranges.first() else {
        return Err("no RAM");
    };
    if low_start != 0 || ranges.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err("bad RAM map");
    }
    let ram_end = ranges[ranges.len() - 1].1;
    let arena = first_arena_bytes(ram_end);
    let free_end = reserved.map_or(low_end, |(start, _)| start);
    let frames_start = free_start
        .checked_add(arena)
        .filter(|&s| s < free_end)
        .ok_or("RAM too small for the kernel's heap")?;
    RAM.call_once(|| map);
    crate::sync::set_spin_hook(tlb::catch_up);
    // SAFETY: the caller gives us `[free_start, ...)` for good; it is
    // identity-mapped RAM (the boot tables map all of it).
    if !unsafe { heap::claim_first_arena(free_start, arena) } {
        return Err("the heap refused its first arena");
    }
    let page_range = |start, end| PageRange::new(start, end).map_err(|_| "RAM is not page-aligned");
    let mut free = Vec::new();
    free.push(page_range(frames_start, free_end)?);
    for &(start, end) in &ram_ranges()[1..] {
        free.push(page_range(start, end)?);
    }
    ram::init(page_range(frames_start, ram_end)?, &free)?;
    heap::enable_large_blocks();
    space::init(page_range(PAGE_SIZE, ram_end)?);
    Ok(())
}

/// `mmap(2)` of anonymous memory anywhere: in the virtual window, backed
/// at first touch (see [`window`]).
pub(crate) fn map_anonymous(len_bytes: usize, prot: Prot) -> Result<u64, Errno> {
    window::map(window::Placement::Anywhere, len_bytes, prot)
}

/// `munmap(2)` of the window's mappings or of RAM's, by address.
pub(crate) fn unmap(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    if window::contains(addr, len_bytes as u64) {
        window::unmap(addr, len_bytes)
    } else {
        space::unmap(addr, len_bytes)
    }
}

/// `mprotect(2)` of the window's mappings or of RAM's, by address.
pub(crate) fn protect(addr: u64, len_bytes: usize, prot: Prot) -> Result<(), Errno> {
    if window::contains(addr, len_bytes as u64) {
        window::protect(addr, len_bytes, prot)
    } else {
        space::protect(addr, len_bytes, prot)
    }
}

/// `madvise(MADV_DONTNEED)`: the pages read as zero from now on.
pub(crate) fn discard(addr: u64, len_bytes: usize) -> Result<(), Errno> {
    if window::contains(addr, len_bytes as u64) {
        window::discard(addr, len_bytes)
    } else {
        space::discard(addr, len_bytes)
    }
}

/// Whether a mapping of the program's (in the window or in RAM) holds
/// `addr`, whatever its protection.
pub(crate) fn is_mapped(addr: u64) -> bool {
    if window::contains(addr, 1) {
        window::is_mapped(addr)
    } else {
        space::is_mapped(addr)
    }
}

/// `mremap(2)`'s arguments checked (the address page-aligned, a new size
/// given) and its sizes in whole pages: `(old, new)`. The same for RAM's
/// mappings and the window's.
fn remap_lengths(addr: u64, old_bytes: usize, new_bytes: usize) -> Result<(u64, u64), Errno> {
    if !addr.is_multiple_of(PAGE_SIZE) || new_bytes == 0 {
        return Err(eremite_interface::errno::EINVAL);
    }
    let old = (old_bytes as u64)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(eremite_interface::errno::EFAULT)?;
    let new = (new_bytes as u64)
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(eremite_interface::errno::ENOMEM)?;
    Ok((old, new))
}

/// Take the IDT page out of CPL3's reach once the kernel has filled it in
/// (the VMM, and the PVH entry, leave it user-writable for that): from
/// then on a stray write to it faults instead of corrupting the gates.
pub(crate) fn seal_idt() -> Result<(), &'static str> {
    let idt = eremite_interface::layout::IDT_ADDR;
    let page = PageRange::new(idt, idt + PAGE_SIZE).map_err(|_| "IDT not page-aligned")?;
    ram::set_rights(page, arch::PageRights::Supervisor).map_err(|()| "cannot seal the IDT")
}

/// All guest RAM in bytes.
pub(crate) fn ram_bytes() -> u64 {
    ram_ranges().iter().map(|(start, end)| end - start).sum()
}

/// Hand RAM that held the initial ramdisk to the frame allocator.
///
/// # Safety
/// `[start, end)` must be RAM that nothing uses or will use again except
/// through the allocator, inside the reserved range given to [`init`].
pub(crate) unsafe fn add_region(start: u64, end: u64) -> bool {
    PageRange::new(start, end).is_ok_and(ram::add_used)
}

/// The bytes of the initial ramdisk, or `None` if the range is not RAM.
///
/// # Safety
/// The range must be the reserved range given to [`init`], and the slice
/// must not be used after [`add_region`] has given its memory away.
pub(crate) unsafe fn initrd_bytes(addr: u64, len: u64) -> Option<&'static [u8]> {
    if !is_ram(addr, len) {
        return None;
    }
    // SAFETY: mapped RAM (checked) that the VMM filled before boot and
    // that nothing writes while the caller uses the slice (contract).
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// Bytes allocated from the heap now (the kernel's and the application's).
pub(crate) fn heap_in_use_bytes() -> usize {
    heap::in_use_bytes()
}

/// Whether `[addr, addr + len)` lies in one range of guest RAM (and not
/// in page 0). It may still hold pages without rights: see
/// [`is_accessible`].
pub(crate) fn is_ram(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    addr >= PAGE_SIZE
        && ram_ranges()
            .iter()
            .any(|&(start, stop)| addr >= start && end <= stop)
}

/// What an access to application memory is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserAccess {
    /// The kernel reads it.
    Read,
    /// The kernel writes it.
    Write,
}

/// Whether the application could make this access to all `len` bytes
/// from `addr`: RAM whose pages are present (and writable, for a write)
/// at CPL3. A check, not a lock: another thread may unmap the range after.
///
/// Pages of the virtual window that a mapping allows but that have no
/// frame yet are backed here, as the program's own access would back them.
pub(crate) fn is_accessible(addr: u64, len: u64, access: UserAccess) -> bool {
    let is_write = access == UserAccess::Write;
    if is_ram(addr, len) {
        return arch::is_accessible(addr, addr + len, is_write);
    }
    window::contains(addr, len)
        && (arch::is_accessible(addr, addr + len, is_write)
            || (window::back(addr, len, access) && arch::is_accessible(addr, addr + len, is_write)))
}

/// Deal with a page fault at `addr` (`error_code` as the CPU gave it,
/// SDM vol. 3A, 4.7) if it is not the program's or the kernel's mistake:
/// a stale TLB entry, or the first touch of a page of the virtual window.
/// Whether the faulting instruction can now run again.
pub(crate) fn resolve_fault(addr: u64, error_code: u64) -> bool {
    const PROTECTION: u64 = 1;
    const WRITE: u64 = 1 << 1;
    if arch::is_spurious_fault(addr, error_code) {
        return true;
    }
    let access = if error_code & WRITE != 0 {
        UserAccess::Write
    } else {
        UserAccess::Read
    };
    error_code & PROTECTION == 0 && window::contains(addr, 1) && window::back_on_fault(addr, access)
}

/// The application's 32-bit word at `addr` (a futex word, a thread's
/// clear-on-exit word), if it is aligned and the application could make
/// `access` to it.
pub(crate) fn user_word<'a>(addr: u64, access: UserAccess) -> Option<&'a AtomicU32> {
    if !addr.is_multiple_of(4) || !is_accessible(addr, 4, access) {
        return None;
    }
    // SAFETY: aligned and inside RAM the application may access (checked
    // just above; the application shares our address space); AtomicU32
    // has the layout of u32, and all access to such a word is atomic by
    // the ABIs' contracts (futexes, `clear_child_tid`).
    Some(unsafe { AtomicU32::from_ptr(addr as *mut u32) })
}

/// How many bytes from `addr` on, up to `max`, the application could read.
pub(crate) fn readable_bytes_from(addr: u64, max: u64) -> u64 {
    let end = if window::contains(addr, 1) {
        window::WINDOW_END
    } else if let Some(&(_, end)) = ram_ranges()
        .iter()
        .find(|&&(start, stop)| addr >= start.max(PAGE_SIZE) && addr < stop)
    {
        end
    } else {
        return 0;
    };
    let limit = end.min(addr.saturating_add(max));
    let mut page = addr & !(PAGE_SIZE - 1);
    while page < limit && is_accessible(page, PAGE_SIZE, UserAccess::Read) {
        page += PAGE_SIZE;
    }
    page.min(limit).saturating_sub(addr)
}

/// A thread's TLS block: where it was allocated, and its thread pointer.
pub(crate) struct TlsBlock {
    pub(crate) thread_pointer: u64,
    base: *mut u8,
    size: usize,
    align: usize,
}

// SAFETY: the block is plain memory owned by whoever holds the TlsBlock.
unsafe impl Send for TlsBlock {}

impl Drop for TlsBlock {
    fn drop(&mut self) {
        // SAFETY: allocated by `create_tls` with this size and alignment;
        // the owner drops it only after its thread has finished.
        unsafe { dealloc(self.base, self.size, self.align) }
    }
}

/// Allocate and initialise a TLS block from the image's template and
/// return it with its thread pointer (x86_64 TLS variant II: the block ends at the
/// thread pointer, whose first word points to itself; see Drepper, "ELF
/// Handling For Thread-Local Storage", 3.4.2). `None` when out of memory.
pub(crate) fn create_tls(template: &eremite_interface::TlsTemplate) -> Option<TlsBlock> {
    let align = template.align.max(16);
    // The linker places TLS variables at negative offsets from the thread
    // pointer: the block size rounded up to the template's alignment.
    let offset = template
        .mem_size
        .checked_next_multiple_of(template.align.max(1))?;
    // Padding in front keeps the thread pointer aligned to `align`, so the
    // block start (thread pointer - offset) is aligned to the template's.
    let front = offset.checked_next_multiple_of(align)?;
    let total = front.checked_add(16)?;
    let (size, align) = (usize::try_from(total).ok()?, usize::try_from(align).ok()?);
    let base = alloc_zeroed(size, align);
    if base.is_null() {
        return None;
    }
    let thread_pointer = base as u64 + front;
    let block_start = thread_pointer - offset;
    let init_len = if template.file_size <= template.mem_size {
        template.file_size
    } else {
        0
    };
    if init_len > 0 && is_ram(template.addr, init_len) {
        // SAFETY: (1) the source is the image's TLS template, inside RAM
        // (checked) and never written; (2) the destination
        // [block_start, block_start + init_len) lies inside the block just
        // allocated, as init_len <= mem_size <= offset; (3) they are disjoint.
        unsafe {
            core::ptr::copy_nonoverlapping(
                template.addr as *const u8,
                block_start as *mut u8,
                init_len as usize,
            );
        }
    }
    // SAFETY: the allocation has 16 bytes past the thread pointer, which is
    // 16-aligned; the first word of the TCB points to itself (the ABI's
    // `%fs:0` self-pointer).
    unsafe { (thread_pointer as *mut u64).write(thread_pointer) };
    Some(TlsBlock {
        thread_pointer,
        base,
        size,
        align,
    })
}

/// The bytes of the boot data area written by the VMM (args, environment,
/// command line), or an empty slice if the range is not inside it.
pub(crate) fn boot_data(addr: u64, len: u64) -> &'static [u8] {
    use eremite_interface::layout::{BOOT_DATA_ADDR, BOOT_DATA_END};
    match addr.checked_add(len) {
        Some(end) if addr >= BOOT_DATA_ADDR && end <= BOOT_DATA_END => {
            // SAFETY: the range is inside the boot data area (checked),
            // which is identity-mapped RAM that the VMM filled before boot
            // and that nothing writes afterwards.
            unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }
        }
        _ => &[],
    }
}

/// Read `N` words at `addr`, which the caller checked with [`is_ram`]
/// (`N * 8` bytes, 8-aligned). Used to walk stacks in fault reports.
pub(crate) fn read_words<const N: usize>(addr: u64) -> [u64; N] {
    debug_assert!(addr.is_multiple_of(8) && is_ram(addr, N as u64 * 8));
    // SAFETY: the caller checked that the aligned range is mapped RAM; the
    // values are plain integers, and a concurrent writer can at worst make
    // them stale, which a backtrace tolerates.
    unsafe { core::ptr::read_volatile(addr as *const [u64; N]) }
}
