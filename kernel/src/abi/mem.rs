//! The allocation family: std's global allocator on hermit calls these.

use crate::mm;

#[unsafe(no_mangle)]
pub extern "C" fn sys_alloc(size: usize, align: usize) -> *mut u8 {
    mm::alloc(size, align)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
    mm::alloc(size, align)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    mm::alloc_zeroed(size, align)
}

/// # Safety
/// `ptr` must be null or a live block from this allocator with this size
/// and alignment (the allocator contract std upholds).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_realloc(
    ptr: *mut u8,
    size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: forwarded caller contract.
    unsafe { mm::realloc(ptr, size, align, new_size) }
}

/// # Safety
/// As for [`sys_realloc`]; the block is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded caller contract.
    unsafe { mm::dealloc(ptr, size, align) }
}

/// # Safety
/// As for [`sys_dealloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: forwarded caller contract.
    unsafe { mm::dealloc(ptr, size, align) }
}
