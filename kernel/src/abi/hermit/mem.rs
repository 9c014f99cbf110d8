//! The allocation family: std's global allocator on hermit calls these.

use super::{exported, ret, user};
use crate::mm;

/// hermit-abi's `PROT_*` bits (Linux's: `PROT_READ` 1, `PROT_WRITE` 2,
/// `PROT_EXEC` 4) as the core's protection: `EINVAL` for unknown bits,
/// `EACCES` for write and execute together (W^X).
fn prot(bits: u32) -> Result<mm::Prot, eremite_interface::errno::Errno> {
    mm::Prot::from_bits(bits)
}

exported! {
    untraced fn sys_alloc(size: usize, align: usize) -> *mut u8 {
        mm::alloc(size, align)
    }
}

exported! {
    untraced fn sys_malloc(size: usize, align: usize) -> *mut u8 {
        mm::alloc(size, align)
    }
}

exported! {
    untraced fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
        mm::alloc_zeroed(size, align)
    }
}

exported! {
    /// # Safety
    /// `ptr` must be null or a live block from this allocator with this size
    /// and alignment (the allocator contract std upholds).
    untraced unsafe fn sys_realloc(
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        // SAFETY: forwarded caller contract.
        unsafe { mm::realloc(ptr, size, align, new_size) }
    }
}

exported! {
    /// # Safety
    /// As for [`sys_realloc`]; the block is not used afterwards.
    untraced unsafe fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
        // SAFETY: forwarded caller contract.
        unsafe { mm::dealloc(ptr, size, align) }
    }
}

exported! {
    /// # Safety
    /// As for [`sys_dealloc`].
    untraced unsafe fn sys_free(ptr: *mut u8, size: usize, align: usize) {
        // SAFETY: forwarded caller contract.
        unsafe { mm::dealloc(ptr, size, align) }
    }
}

exported! {
    /// `mmap` of anonymous memory: `size` bytes (rounded up to pages), zeroed,
    /// with protection `prot_flags` (`PROT_READ` 1, `PROT_WRITE` 2,
    /// `PROT_EXEC` 4; write and execute together are refused, `EACCES`). The
    /// address goes to `*ret`.
    fn sys_mmap(size: usize, prot_flags: u32, ret_ptr: *mut *mut u8) -> i32 {
        ret((|| {
            // Check the output first: a mapping nobody can learn of would leak.
            user::write(ret_ptr, core::ptr::null_mut())?;
            let addr = mm::map_anonymous(size, prot(prot_flags)?)?;
            user::write(ret_ptr, addr as *mut u8)?;
            Ok(0)
        })())
    }
}

exported! {
    /// `munmap`: the range's mappings fault on access from now on.
    fn sys_munmap(ptr: *mut u8, size: usize) -> i32 {
        ret(mm::unmap(ptr as u64, size).map(|()| 0))
    }
}

exported! {
    /// `mprotect`: new rights for the range's mappings.
    fn sys_mprotect(ptr: *mut u8, size: usize, prot_flags: u32) -> i32 {
        ret(prot(prot_flags).and_then(|prot| mm::protect(ptr as u64, size, prot)).map(|()| 0))
    }
}
