//! Checked access to memory named by the application.
//!
//! Every pointer an application passes to a `sys_*` function goes through
//! here: null (page 0), misaligned, outside guest RAM, into the kernel's
//! image beside a Linux program, or wrapping around the address space →
//! `EFAULT`, never a kernel fault. (Application and kernel share one
//! address space, so a checked range is a valid one.)
//!
//! The one module of `abi` where `unsafe_code` is allowed: turning a
//! checked pointer into a reference or a slice.
#![allow(unsafe_code)]

use core::mem::{align_of, size_of};
use core::sync::atomic::{AtomicU64, Ordering};

use eremite_interface::errno::{self, Errno};
use eremite_interface::layout::PAGE_SIZE;

use crate::mm::{self, UserAccess};

fn check(addr: u64, len: usize, align: usize, access: UserAccess) -> Result<(), Errno> {
    if !addr.is_multiple_of(align as u64)
        || is_kernels(addr, len as u64)
        || !mm::is_accessible(addr, len as u64, access)
    {
        return Err(errno::EFAULT);
    }
    Ok(())
}

/// The kernel's image when a Linux program runs beside it ([`set_kernel`]):
/// mapped, but not the program's. Empty for hermit programs, which are
/// one image with the kernel.
static KERNEL_START: AtomicU64 = AtomicU64::new(0);
static KERNEL_END: AtomicU64 = AtomicU64::new(0);

/// Refuse pointers into `[start, end)` from now on (the kernel's image,
/// below a Linux program: a pointer there is as wild as on Linux).
pub(super) fn set_kernel(start: u64, end: u64) {
    KERNEL_START.store(start, Ordering::Relaxed);
    KERNEL_END.store(end, Ordering::Relaxed);
}

/// Whether `[addr, addr + len)` touches page 0 (unmapped for hermit
/// programs, a Linux program's system-call trampoline) or the kernel's
/// image beside a Linux program.
fn is_kernels(addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    addr < PAGE_SIZE
        || (addr < KERNEL_END.load(Ordering::Relaxed) && end > KERNEL_START.load(Ordering::Relaxed))
}

/// The `len` bytes at `ptr`, for reading.
pub(super) fn slice<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Errno> {
    if len == 0 {
        return Ok(&[]);
    }
    check(ptr as u64, len, 1, UserAccess::Read)?;
    // SAFETY: the range is mapped RAM (checked). The application owns it
    // and does not mutate it during the call (the ABI's contract for input
    // buffers); u8 has no invalid values.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// The `len` bytes at `ptr`, for writing.
pub(super) fn slice_mut<'a>(ptr: *mut u8, len: usize) -> Result<&'a mut [u8], Errno> {
    if len == 0 {
        return Ok(&mut []);
    }
    check(ptr as u64, len, 1, UserAccess::Write)?;
    // SAFETY: the range is mapped RAM (checked) handed to us as an output
    // buffer, which the application does not touch during the call.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// The bytes of the NUL-terminated string at `ptr` (without the NUL):
/// `EFAULT` if it runs out of RAM, `ENAMETOOLONG` if it is `max_len` bytes
/// or longer without a NUL (`PATH_MAX` for paths).
pub(super) fn c_str<'a>(ptr: *const u8, max_len: usize) -> Result<&'a [u8], Errno> {
    let addr = ptr as u64;
    let max = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    let available = usize::try_from(mm::readable_bytes_from(addr, max)).unwrap_or(usize::MAX);
    if available == 0 {
        return Err(errno::EFAULT);
    }
    let bytes = slice(ptr, available.min(max_len))?;
    match bytes.iter().position(|&b| b == 0) {
        Some(len) => Ok(&bytes[..len]),
        None if available > max_len => Err(errno::ENAMETOOLONG),
        None => Err(errno::EFAULT),
    }
}

/// The first `max_len` bytes of the string at `ptr`, or fewer up to its
/// NUL (without it): a string cut short, as `prctl(PR_SET_NAME)` takes
/// one. `EFAULT` if RAM ends first.
pub(super) fn c_str_prefix<'a>(ptr: u64, max_len: usize) -> Result<&'a [u8], Errno> {
    let max = u64::try_from(max_len).unwrap_or(u64::MAX);
    let available = usize::try_from(mm::readable_bytes_from(ptr, max)).unwrap_or(usize::MAX);
    let bytes = slice(ptr as *const u8, available.min(max_len))?;
    match bytes.iter().position(|&b| b == 0) {
        Some(len) => Ok(&bytes[..len]),
        None if bytes.len() == max_len => Ok(bytes),
        None => Err(errno::EFAULT),
    }
}

/// A path argument: a C string shorter than `PATH_MAX`.
pub(super) fn path<'a>(ptr: *const u8) -> Result<&'a [u8], Errno> {
    c_str(ptr, eremite_interface::fs::PATH_MAX)
}

/// Read a `T` from application memory.
pub(super) fn read<T: Copy>(ptr: *const T) -> Result<T, Errno> {
    check(
        ptr as u64,
        size_of::<T>(),
        align_of::<T>(),
        UserAccess::Read,
    )?;
    // SAFETY: aligned, inside RAM (checked); callers only use plain-data
    // ABI structs for `T`, valid for any bit pattern.
    Ok(unsafe { ptr.read_volatile() })
}

/// Write a `T` to application memory.
pub(super) fn write<T: Copy>(ptr: *mut T, value: T) -> Result<(), Errno> {
    check(
        ptr as u64,
        size_of::<T>(),
        align_of::<T>(),
        UserAccess::Write,
    )?;
    // SAFETY: aligned, inside RAM (checked); an output parameter.
    unsafe { ptr.write_volatile(value) };
    Ok(())
}

/// An application's 32-bit futex word (`mm::user_word`).
pub(super) fn atomic_u32<'a>(ptr: *mut u32) -> Result<&'a core::sync::atomic::AtomicU32, Errno> {
    if is_kernels(ptr as u64, 4) {
        return Err(errno::EFAULT);
    }
    mm::user_word(ptr as u64, UserAccess::Read).ok_or(errno::EFAULT)
}
