//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and `strlen` for the
//! application (std for hermit expects them from the platform).
//!
//! The copies and fills use the string instructions (`rep movsb`,
//! `rep stosb`), which are fast on CPUs with ERMS/FSRM and run natively at
//! CPL3. They are written in assembly so the compiler cannot turn their
//! bodies back into calls to themselves.
#![allow(clippy::missing_safety_doc)]

use core::arch::asm;
use core::ffi::{c_char, c_int, c_void};

/// # Safety
/// C's `memcpy`: `dest` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
    // SAFETY: the caller guarantees both ranges; `rep movsb` copies exactly
    // `n` bytes forwards (DF is clear per the SysV ABI).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// C's `memmove`: `dest` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
    let (dest, src) = (dest.cast::<u8>(), src.cast::<u8>());
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src or past its end: a forward copy never reads a
        // byte it already wrote.
        // SAFETY: as for memcpy; forward order is safe for this overlap.
        unsafe { memcpy(dest.cast(), src.cast(), n) };
    } else {
        // SAFETY: dest overlaps the tail of src; copying backwards from the
        // last byte (DF set, then cleared again as the ABI requires) reads
        // every byte before overwriting it.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dest.wrapping_add(n).wrapping_sub(1) => _,
                 inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
                 options(nostack));
        }
    }
    dest.cast()
}

/// # Safety
/// C's `memset`: `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut c_void, c: c_int, n: usize) -> *mut c_void {
    // SAFETY: the caller guarantees the range; `rep stosb` writes exactly
    // `n` bytes of the low byte of `c`.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// C's `memcmp`: both ranges valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
    let (a, b) = (a.cast::<u8>(), b.cast::<u8>());
    let mut i = 0;
    // Word at a time while equal, then bytes to find the first difference.
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, so both 8-byte reads are inside the ranges.
        let (x, y) = unsafe {
            (
                (a.add(i) as *const u64).read_unaligned(),
                (b.add(i) as *const u64).read_unaligned(),
            )
        };
        if x != y {
            break;
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As [`memcmp`]; only equality is reported.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// C's `strlen`: `s` points to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let end: *const u8;
    // SAFETY: the caller guarantees a terminating NUL, so `repne scasb`
    // (with rcx = max) stops inside the string.
    unsafe {
        asm!("repne scasb", inout("rdi") s => end, inout("rcx") usize::MAX => _, in("al") 0u8,
             options(nostack, readonly));
    }
    end as usize - s as usize - 1
}
