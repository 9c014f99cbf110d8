//! Memory: the kernel heap, which also backs the application's allocator
//! (`sys_alloc` and friends), and the bounds of guest RAM.
//!
//! For now all free RAM above the image is one talc heap; stacks and TLS
//! blocks come from it too. Guest RAM is identity-mapped by the VMM, so an
//! address is valid exactly when it lies in `[PAGE_SIZE, ram_end)` (page 0
//! is the unmapped null guard).
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::layout::PAGE_SIZE;
use talc::TalcLock;
use talc::source::Manual;

#[global_allocator]
static HEAP: TalcLock<crate::sync::RawLock, Manual> = TalcLock::new(Manual);

static RAM_END: AtomicU64 = AtomicU64::new(0);

/// Record that guest RAM is `[0, ram_end)` and hand `[free_start,
/// heap_end)` to the heap.
///
/// # Safety
/// The heap range must be RAM that nothing else uses, and this must be
/// called once.
pub(crate) unsafe fn init(free_start: u64, heap_end: u64, ram_end: u64) -> bool {
    RAM_END.store(ram_end, Ordering::Relaxed);
    let Some(size) = heap_end.checked_sub(free_start) else {
        return false;
    };
    // SAFETY: the caller gives us exclusive use of this range of identity-
    // mapped RAM for the lifetime of the kernel.
    unsafe {
        HEAP.lock()
            .claim(free_start as *mut u8, size as usize)
            .is_some()
    }
}

/// Hand one more free range of RAM to the heap (the initial ramdisk's
/// memory once it is unpacked).
///
/// # Safety
/// `[start, end)` must be RAM that nothing uses or will use again except
/// through the heap, disjoint from every range handed over before.
pub(crate) unsafe fn add_region(start: u64, end: u64) -> bool {
    if start >= end || !is_ram(start, end - start) {
        return false;
    }
    // SAFETY: the caller gives the range up for good; it is mapped RAM
    // (checked) and disjoint from the heap's other arenas.
    unsafe {
        HEAP.lock()
            .claim(start as *mut u8, (end - start) as usize)
            .is_some()
    }
}

/// The bytes of the initial ramdisk, or `None` if the range is not RAM.
///
/// # Safety
/// The range must not be part of the heap (see `boot`), and the slice must
/// not be used after [`add_region`] has given its memory to the heap.
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
    HEAP.lock().counters().allocated_bytes
}

/// Whether `[addr, addr + len)` is mapped guest RAM (and not page 0).
pub(crate) fn is_ram(addr: u64, len: u64) -> bool {
    match addr.checked_add(len) {
        Some(end) => addr >= PAGE_SIZE && end <= RAM_END.load(Ordering::Relaxed),
        None => false,
    }
}

/// How many bytes from `addr` on are mapped guest RAM (0 if `addr` is not).
pub(crate) fn ram_bytes_from(addr: u64) -> u64 {
    let end = RAM_END.load(Ordering::Relaxed);
    if addr >= PAGE_SIZE && addr < end {
        end - addr
    } else {
        0
    }
}

/// Allocate; null when the heap is exhausted or the layout is invalid.
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size, align) {
        // SAFETY: the layout is valid; zero sizes are rounded up to one
        // byte because GlobalAlloc forbids them.
        Ok(layout) => unsafe { HEAP.alloc(pad_zero(layout)) },
        Err(_) => null_mut(),
    }
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

/// Allocate zeroed memory; null on failure.
pub(crate) fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size, align) {
        // SAFETY: as in `alloc`.
        Ok(layout) => unsafe { HEAP.alloc_zeroed(pad_zero(layout)) },
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
        unsafe { HEAP.dealloc(ptr, pad_zero(layout)) }
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
    unsafe { HEAP.realloc(ptr, pad_zero(layout), new_size.max(1)) }
}

/// A spawned thread's stack: heap memory, 16-byte aligned, freed when
/// dropped.
pub(crate) struct Stack {
    base: *mut u8,
    len_bytes: usize,
}

// SAFETY: plain memory owned by whoever holds the Stack.
unsafe impl Send for Stack {}

impl Stack {
    /// A stack of at least `len_bytes` (rounded up to pages), or `None`.
    pub(crate) fn new(len_bytes: usize) -> Option<Self> {
        let len_bytes = len_bytes.checked_next_multiple_of(PAGE_SIZE as usize)?;
        let base = alloc(len_bytes, 16);
        (!base.is_null()).then_some(Self { base, len_bytes })
    }

    /// One past its highest byte (16-byte aligned).
    pub(crate) fn top(&self) -> u64 {
        self.base as u64 + self.len_bytes as u64
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this size and alignment 16; the
        // scheduler drops it only once nothing runs on it.
        unsafe { dealloc(self.base, self.len_bytes, 16) }
    }
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

fn pad_zero(layout: Layout) -> Layout {
    if layout.size() == 0 {
        // Cannot fail: size 1 with an alignment that was already valid.
        Layout::from_size_align(1, layout.align()).unwrap_or(layout)
    } else {
        layout
    }
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
