//! eremite's memory bookkeeping: which physical frames are free, and what
//! each virtual page of the address space is for.
//!
//! Pure logic with no `unsafe` and no page tables: the kernel's `mm`
//! module owns one [`FrameAllocator`] and one [`AddressSpace`] behind its
//! locks, applies the [`PteChange`]s that every address-space operation
//! returns to the real page tables, and invalidates the TLB once per
//! operation through the CPL0 gate (the batch is the returned `Vec`; see
//! [`PteChange::needs_tlb_flush`]). Nothing here knows the hermit ABI:
//! `sys_mmap`/`sys_munmap`/`sys_mprotect` convert their arguments and call
//! [`AddressSpace::map_anywhere`], [`AddressSpace::munmap`] and
//! [`AddressSpace::mprotect`], whose rules and error numbers follow Linux's
//! `mmap(2)`, `munmap(2)` and `mprotect(2)`.
//!
//! Key types:
//! - [`PageRange`]: a page-aligned, half-open range of addresses.
//! - [`FrameAllocator`]: free 4 KiB physical frames (a two-level bitmap).
//! - [`AddressSpace`]: non-overlapping virtual [`Region`]s, each with a
//!   [`Kind`] and a [`Prot`]ection; a [`Prot`] can never be writable and
//!   executable at once (W^X holds by construction).
//! - [`Fault`]: what a faulting address was, for the message the kernel
//!   prints ("... is in the guard page of the stack of thread 3").
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod frames;
mod vm;

use core::fmt;

use eremite_interface::errno::{self, Errno};
pub mod size_class;

pub use eremite_interface::layout::PAGE_SIZE;

pub use frames::{FrameAllocator, FrameError};
pub use vm::{Access, AddressSpace, Fault, FaultCause, Kind, PteChange, Region};

/// A half-open range `[start, end)` of page-aligned addresses, physical or
/// virtual. Never empty once it comes out of this crate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageRange {
    /// First byte (page-aligned).
    pub start: u64,
    /// One past the last byte (page-aligned).
    pub end: u64,
}

impl PageRange {
    /// `[start, end)`, or `EINVAL` if either end is not page-aligned or the
    /// range is empty or reversed.
    pub fn new(start: u64, end: u64) -> Result<Self, Errno> {
        if !is_page_aligned(start) || !is_page_aligned(end) || start >= end {
            return Err(errno::EINVAL);
        }
        Ok(Self { start, end })
    }

    /// The pages that `len_bytes` from `addr` touch, as `munmap(2)` reads
    /// its arguments: `addr` must be page-aligned, `len_bytes` is rounded
    /// up to whole pages and must not be zero (`EINVAL`), and the range
    /// must not wrap (`EINVAL`).
    pub fn from_addr_len(addr: u64, len_bytes: u64) -> Result<Self, Errno> {
        if !is_page_aligned(addr) || len_bytes == 0 {
            return Err(errno::EINVAL);
        }
        let end = len_bytes
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|len| addr.checked_add(len))
            .ok_or(errno::EINVAL)?;
        Ok(Self { start: addr, end })
    }

    /// Size in bytes.
    pub fn len_bytes(self) -> u64 {
        self.end - self.start
    }

    /// Size in pages.
    pub fn pages(self) -> u64 {
        self.len_bytes() / PAGE_SIZE
    }

    /// Whether `addr` lies inside.
    pub fn contains(self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the two ranges share a page.
    pub fn overlaps(self, other: PageRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside.
    pub fn covers(self, other: PageRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The common part, if any.
    pub fn intersect(self, other: PageRange) -> Option<PageRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(PageRange { start, end })
    }
}

impl fmt::Debug for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

/// Page protection, with the bits of Linux's `PROT_*` (`PROT_READ` = 1,
/// `PROT_WRITE` = 2, `PROT_EXEC` = 4). Writable and executable together is
/// unrepresentable: W^X holds for every page this crate describes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot(u8);

impl Prot {
    /// `PROT_NONE`: every access faults.
    pub const NONE: Prot = Prot(0);
    /// `PROT_READ`.
    pub const READ: Prot = Prot(1);
    /// `PROT_READ | PROT_WRITE`.
    pub const READ_WRITE: Prot = Prot(1 | 2);
    /// `PROT_READ | PROT_EXEC`.
    pub const READ_EXEC: Prot = Prot(1 | 4);

    const WRITE_BIT: u8 = 2;
    const EXEC_BIT: u8 = 4;

    /// Parse `PROT_*` bits: `EINVAL` for unknown bits, as `mprotect(2)`
    /// does, and `EACCES` ("the memory cannot be given the specified
    /// access") for write together with execute: eremite's W^X, a rule
    /// Linux does not have.
    pub fn from_bits(bits: u32) -> Result<Prot, Errno> {
        if bits & !7 != 0 {
            return Err(errno::EINVAL);
        }
        let bits = bits as u8;
        if bits & Self::WRITE_BIT != 0 && bits & Self::EXEC_BIT != 0 {
            return Err(errno::EACCES);
        }
        Ok(Prot(bits))
    }

    /// The `PROT_*` bits.
    pub fn bits(self) -> u32 {
        u32::from(self.0)
    }

    /// Whether reads are allowed (x86 cannot forbid reading a writable or
    /// executable page, so those count as readable too).
    pub fn is_readable(self) -> bool {
        self.0 != 0
    }

    /// Whether writes are allowed.
    pub fn is_writable(self) -> bool {
        self.0 & Self::WRITE_BIT != 0
    }

    /// Whether instruction fetches are allowed.
    pub fn is_executable(self) -> bool {
        self.0 & Self::EXEC_BIT != 0
    }

    /// Whether every access `self` allows, `other` allows too.
    pub fn is_subset_of(self, other: Prot) -> bool {
        (self.is_readable() <= other.is_readable())
            && (self.is_writable() <= other.is_writable())
            && (self.is_executable() <= other.is_executable())
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.0 & 1 != 0 { 'r' } else { '-' };
        let w = if self.is_writable() { 'w' } else { '-' };
        let x = if self.is_executable() { 'x' } else { '-' };
        write!(f, "{r}{w}{x}")
    }
}

fn is_page_aligned(addr: u64) -> bool {
    addr.is_multiple_of(PAGE_SIZE)
}

/// Whether `align_bytes` is a usable alignment: a power of two of at least
/// one page.
fn is_valid_align(align_bytes: u64) -> bool {
    align_bytes.is_power_of_two() && align_bytes >= PAGE_SIZE
}
