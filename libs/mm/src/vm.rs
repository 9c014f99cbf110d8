//! The virtual address-space map: what each page of the address space is
//! for, and with which permissions.
//!
//! [`AddressSpace`] keeps non-overlapping, page-aligned [`Region`]s in a
//! `BTreeMap` keyed by start address, so looking up an address costs
//! O(log n); finding a free range walks the regions in order (O(n), n
//! being the few dozen regions a unikernel has: image segments, heap
//! arenas, one stack per thread, the application's mappings).
//! Neighbouring regions of the same kind and protection are merged
//! (stacks never are: each belongs to one thread), so the map is
//! canonical: one sequence of regions per set of page attributes.
//!
//! Every operation checks all its preconditions before it changes
//! anything (Linux's `mprotect` can fail halfway; ours cannot) and
//! returns the [`PteChange`]s that make the page tables match, for the
//! kernel to apply and to invalidate the TLB for once per call. The map
//! assumes that a page outside every region is not present in the page
//! tables, so mapping fresh pages needs no invalidation.
//!
//! Rules, by [`Kind`] (the `mseal(2)` model: kernel-owned memory is sealed
//! against the application, `EPERM`):
//!
//! | kind | [`AddressSpace::munmap`], [`AddressSpace::mprotect`] | [`AddressSpace::release`] |
//! |---|---|---|
//! | `Supervisor`, `Image` | `EPERM` | `EPERM` |
//! | `Heap` | `EPERM` | any whole pages |
//! | `Stack` | `EPERM` | the whole stack, guard included |
//! | `Anonymous` | any pages (split and merged as Linux does) | any whole pages |

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use eremite_interface::errno::{self, Errno};

use crate::{PAGE_SIZE, PageRange, Prot, is_page_aligned, is_valid_align};

/// What a region of the address space is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Structures of the CPL0 supervisor (descriptor tables, TSSes, page
    /// tables, CPL0 stacks): present before boot, never unmapped.
    Supervisor,
    /// A segment of the loaded ELF image: present before boot, never
    /// unmapped, its protection fixed (W^X: code `r-x`, data `rw-`).
    Image,
    /// An arena of the kernel heap (which also serves the application's
    /// allocator): grows and shrinks by whole pages.
    Heap,
    /// A thread's stack: the region's lowest `guard_pages` pages are never
    /// present, so an overflow faults instead of corrupting memory below.
    Stack {
        /// The thread it belongs to.
        thread: u32,
        /// Pages at the bottom of the region that are never present.
        guard_pages: u64,
    },
    /// Anonymous memory of `mmap(2)`, handed out zeroed.
    Anonymous,
    /// A segment of a Linux program or its interpreter, loaded before
    /// boot: the program may change its protection (`PT_GNU_RELRO`), not
    /// unmap it.
    Program,
}

impl Kind {
    /// Whether the application may unmap it.
    fn is_application_owned(self) -> bool {
        self == Kind::Anonymous
    }

    /// Whether the application may change its protection.
    fn is_reprotectable(self) -> bool {
        matches!(self, Kind::Anonymous | Kind::Program)
    }

    /// Whether nothing, not even the kernel, may unmap it.
    fn is_permanent(self) -> bool {
        matches!(self, Kind::Supervisor | Kind::Image | Kind::Program)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Supervisor => write!(f, "supervisor memory"),
            Kind::Image => write!(f, "the image"),
            Kind::Heap => write!(f, "the heap"),
            Kind::Stack { thread, .. } => write!(f, "the stack of thread {thread}"),
            Kind::Anonymous => write!(f, "anonymous memory"),
            Kind::Program => write!(f, "the program's image"),
        }
    }
}

/// One region of the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Its pages, guard pages included.
    pub range: PageRange,
    /// What it is for.
    pub kind: Kind,
    /// The protection of its pages (of the stack proper, for a stack).
    pub prot: Prot,
}

impl Region {
    /// The guard pages of a stack (never present), if there are any.
    pub fn guard(&self) -> Option<PageRange> {
        match self.kind {
            Kind::Stack { guard_pages, .. } if guard_pages > 0 => Some(PageRange {
                start: self.range.start,
                end: self.range.start + guard_pages * PAGE_SIZE,
            }),
            _ => None,
        }
    }

    /// The pages that are present: all of them but a stack's guard pages.
    pub fn body(&self) -> PageRange {
        match self.guard() {
            Some(guard) => PageRange {
                start: guard.end,
                end: self.range.end,
            },
            None => self.range,
        }
    }

    /// Whether `other` may be merged with `self` when they touch.
    fn is_mergeable_with(&self, other: &Region) -> bool {
        self.kind == other.kind
            && self.prot == other.prot
            && !matches!(self.kind, Kind::Stack { .. })
    }
}

/// One change the page tables need after an [`AddressSpace`] operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteChange {
    /// The pages were not present: make them present with `prot`. For
    /// `Heap`, `Stack` and `Anonymous` each page gets a fresh zeroed
    /// frame; `Image` and `Supervisor` pages keep the frames they were
    /// loaded in (the identity mapping the VMM built) and only take `prot`.
    Map {
        /// The pages.
        range: PageRange,
        /// Their protection.
        prot: Prot,
        /// The kind of region they belong to.
        kind: Kind,
    },
    /// The pages are present with protection `from`: give them `to`.
    Protect {
        /// The pages.
        range: PageRange,
        /// Their protection until now.
        from: Prot,
        /// Their new protection.
        to: Prot,
    },
    /// The pages are present: make them fault, and free their frames.
    Unmap {
        /// The pages.
        range: PageRange,
    },
}

impl PteChange {
    /// The pages it concerns.
    pub fn range(&self) -> PageRange {
        match *self {
            PteChange::Map { range, .. }
            | PteChange::Protect { range, .. }
            | PteChange::Unmap { range } => range,
        }
    }

    /// Whether a CPU may hold a TLB entry that this change makes wrong:
    /// after an unmap or a protection that takes a permission away. A
    /// change that only adds permissions needs none if the fault handler
    /// retries a fault the map allows ([`FaultCause::Spurious`]; SDM
    /// vol. 3A, 4.10.4.3 "Optional Invalidation"); fresh pages were not
    /// present, so no CPU caches them.
    pub fn needs_tlb_flush(&self) -> bool {
        match *self {
            PteChange::Map { .. } => false,
            PteChange::Protect { from, to, .. } => !from.is_subset_of(to),
            PteChange::Unmap { .. } => true,
        }
    }
}

/// The kind of memory access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// Why an access faulted, according to the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCause {
    /// No region holds the address.
    Unmapped,
    /// The address is in a guard page under a thread's stack: a stack
    /// overflow.
    StackGuard {
        /// The thread whose stack overflowed.
        thread: u32,
    },
    /// The region's protection forbids the access.
    Denied {
        /// The region's kind.
        kind: Kind,
        /// The region's protection.
        prot: Prot,
    },
    /// The region allows the access: a CPU still held the translation of
    /// before a protection was relaxed. Retry the access.
    Spurious,
}

/// A page fault, explained: its `Display` is the kernel's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The faulting address (CR2).
    pub addr: u64,
    /// What the access was.
    pub access: Access,
    /// Why it faulted.
    pub cause: FaultCause,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match self.access {
            Access::Read => write!(f, "read of {addr:#x}: ")?,
            Access::Write => write!(f, "write to {addr:#x}: ")?,
            Access::Execute => write!(f, "execution at {addr:#x}: ")?,
        }
        match self.cause {
            FaultCause::Unmapped => write!(f, "address not mapped"),
            FaultCause::StackGuard { thread } => write!(
                f,
                "address in the guard page of the stack of thread {thread} (stack overflow)"
            ),
            FaultCause::Denied { kind, prot } => {
                let what = match self.access {
                    Access::Read => "readable",
                    Access::Write => "writable",
                    Access::Execute => "executable",
                };
                write!(f, "{kind} is not {what} (mapped {prot:?})")
            }
            FaultCause::Spurious => write!(f, "access allowed (stale TLB entry)"),
        }
    }
}

/// The regions of one address space.
#[derive(Clone, Debug)]
pub struct AddressSpace {
    bounds: PageRange,
    /// Regions by start address: sorted, disjoint, canonical.
    regions: BTreeMap<u64, Region>,
}

impl AddressSpace {
    /// An empty address space whose regions must lie within `bounds`.
    pub fn new(bounds: PageRange) -> Self {
        Self {
            bounds,
            regions: BTreeMap::new(),
        }
    }

    /// Where regions may lie.
    pub fn bounds(&self) -> PageRange {
        self.bounds
    }

    /// The regions, in address order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    /// The region that holds `addr`, if any.
    pub fn lookup(&self, addr: u64) -> Option<&Region> {
        self.regions
            .range(..=addr)
            .next_back()
            .map(|(_, region)| region)
            .filter(|region| region.range.contains(addr))
    }

    /// Explain a fault of `access` at `addr`.
    pub fn fault(&self, addr: u64, access: Access) -> Fault {
        let cause = match self.lookup(addr) {
            None => FaultCause::Unmapped,
            Some(region) => match (region.guard(), region.kind) {
                (Some(guard), Kind::Stack { thread, .. }) if guard.contains(addr) => {
                    FaultCause::StackGuard { thread }
                }
                _ => {
                    let prot = region.prot;
                    let is_allowed = match access {
                        Access::Read => prot.is_readable(),
                        Access::Write => prot.is_writable(),
                        Access::Execute => prot.is_executable(),
                    };
                    if is_allowed {
                        FaultCause::Spurious
                    } else {
                        FaultCause::Denied {
                            kind: region.kind,
                            prot,
                        }
                    }
                }
            },
        };
        Fault {
            addr,
            access,
            cause,
        }
    }

    /// The lowest address of `pages` free pages aligned to `align_bytes`
    /// (a power of two, at least a page) inside `within` and the bounds.
    /// `EINVAL` for zero pages or a bad alignment, `ENOMEM` if there is no
    /// such gap.
    pub fn find_free(&self, pages: u64, align_bytes: u64, within: PageRange) -> Result<u64, Errno> {
        if pages == 0 || !is_valid_align(align_bytes) {
            return Err(errno::EINVAL);
        }
        let within = within.intersect(self.bounds).ok_or(errno::ENOMEM)?;
        let len_bytes = pages.checked_mul(PAGE_SIZE).ok_or(errno::ENOMEM)?;
        // A gap [cursor, gap_end) fits if its first aligned address leaves
        // room for the pages.
        let fits = |cursor: u64, gap_end: u64| {
            cursor
                .checked_next_multiple_of(align_bytes)
                .filter(|start| {
                    start
                        .checked_add(len_bytes)
                        .is_some_and(|end| end <= gap_end)
                })
        };
        let mut cursor = within.start;
        // From the region that may hold `within.start` on (a search from
        // a cursor, as the window's next-fit does, skips the rest).
        let first = self
            .regions
            .range(..=within.start)
            .next_back()
            .map_or(within.start, |(&start, _)| start);
        for region in self.regions.range(first..).map(|(_, region)| region) {
            if region.range.end <= cursor {
                continue;
            }
            if region.range.start >= within.end {
                break;
            }
            if let Some(start) = fits(cursor, region.range.start) {
                return Ok(start);
            }
            cursor = region.range.end;
        }
        fits(cursor, within.end).ok_or(errno::ENOMEM)
    }

    /// Add a region of `kind` and `prot` over `range`. `ENOMEM` if the
    /// range leaves the bounds, `EEXIST` if it overlaps a region (as
    /// `MAP_FIXED_NOREPLACE` does), `EINVAL` for a stack with no page
    /// above its guard pages.
    pub fn map(
        &mut self,
        range: PageRange,
        kind: Kind,
        prot: Prot,
    ) -> Result<Vec<PteChange>, Errno> {
        if !self.bounds.covers(range) {
            return Err(errno::ENOMEM);
        }
        if let Kind::Stack { guard_pages, .. } = kind
            && guard_pages >= range.pages()
        {
            return Err(errno::EINVAL);
        }
        if self.overlapping(range).next().is_some() {
            return Err(errno::EEXIST);
        }
        let region = Region { range, kind, prot };
        self.insert_merged(region);
        Ok(alloc::vec![PteChange::Map {
            range: region.body(),
            prot,
            kind,
        }])
    }

    /// [`find_free`](Self::find_free), then [`map`](Self::map): where the
    /// region went, and the changes.
    pub fn map_anywhere(
        &mut self,
        pages: u64,
        align_bytes: u64,
        within: PageRange,
        kind: Kind,
        prot: Prot,
    ) -> Result<(PageRange, Vec<PteChange>), Errno> {
        let start = self.find_free(pages, align_bytes, within)?;
        let range = PageRange {
            start,
            end: start + pages * PAGE_SIZE,
        };
        Ok((range, self.map(range, kind, prot)?))
    }

    /// `munmap(2)` for the application: remove the pages that `len_bytes`
    /// from `addr` touch. Unmapped pages in the range are fine; `EINVAL`
    /// for a misaligned `addr`, a zero length or a range outside the
    /// bounds; `EPERM` if a page belongs to anything but anonymous memory.
    pub fn munmap(&mut self, addr: u64, len_bytes: u64) -> Result<Vec<PteChange>, Errno> {
        let range = PageRange::from_addr_len(addr, len_bytes)?;
        if !self.bounds.covers(range) {
            return Err(errno::EINVAL);
        }
        if self
            .overlapping(range)
            .any(|region| !region.kind.is_application_owned())
        {
            return Err(errno::EPERM);
        }
        Ok(self.remove(range))
    }

    /// The kernel gives back pages of `kind`: part of a heap arena, a
    /// whole stack (guard included), or anonymous memory. Every page of
    /// `range` must be mapped with exactly `kind` (`EINVAL` otherwise, and
    /// for part of a stack); `EPERM` for the image and supervisor memory.
    pub fn release(&mut self, range: PageRange, kind: Kind) -> Result<Vec<PteChange>, Errno> {
        if kind.is_permanent() || self.overlapping(range).any(|r| r.kind.is_permanent()) {
            return Err(errno::EPERM);
        }
        let mut cursor = range.start;
        for region in self.overlapping(range) {
            let is_partial_stack =
                matches!(region.kind, Kind::Stack { .. }) && !range.covers(region.range);
            if region.range.start > cursor || region.kind != kind || is_partial_stack {
                return Err(errno::EINVAL);
            }
            cursor = region.range.end;
        }
        if cursor < range.end {
            return Err(errno::EINVAL);
        }
        Ok(self.remove(range))
    }

    /// `mprotect(2)` for the application: give the pages that `len_bytes`
    /// from `addr` touch the protection `prot`. A zero length does
    /// nothing; `EINVAL` for a misaligned `addr`, `ENOMEM` if the range
    /// wraps or holds an unmapped page, `EPERM` if a page belongs to
    /// anything but anonymous memory or a Linux program's segments.
    pub fn mprotect(
        &mut self,
        addr: u64,
        len_bytes: u64,
        prot: Prot,
    ) -> Result<Vec<PteChange>, Errno> {
        if !is_page_aligned(addr) {
            return Err(errno::EINVAL);
        }
        if len_bytes == 0 {
            return Ok(Vec::new());
        }
        let range = PageRange::from_addr_len(addr, len_bytes).map_err(|_| errno::ENOMEM)?;
        let mut cursor = range.start;
        let mut is_foreign = false;
        for region in self.overlapping(range) {
            if region.range.start > cursor {
                return Err(errno::ENOMEM);
            }
            is_foreign |= !region.kind.is_reprotectable();
            cursor = region.range.end;
        }
        if cursor < range.end {
            return Err(errno::ENOMEM);
        }
        if is_foreign {
            return Err(errno::EPERM);
        }
        let mut changes = Vec::new();
        for piece in self.carve(range) {
            if piece.prot != prot {
                changes.push(PteChange::Protect {
                    range: piece.range,
                    from: piece.prot,
                    to: prot,
                });
            }
            self.insert_merged(Region { prot, ..piece });
        }
        Ok(changes)
    }

    /// The regions that share a page with `range`, in order.
    fn overlapping(&self, range: PageRange) -> impl Iterator<Item = &Region> {
        let first = self
            .regions
            .range(..range.start)
            .next_back()
            .filter(|(_, region)| region.range.end > range.start)
            .map_or(range.start, |(&start, _)| start);
        self.regions
            .range(first..range.end)
            .map(|(_, region)| region)
    }

    /// Take the parts of regions inside `range` out of the map, leaving
    /// the parts outside in place; the parts taken, in order. Callers
    /// never cut a stack (its guard would move).
    fn carve(&mut self, range: PageRange) -> Vec<Region> {
        let starts: Vec<u64> = self.overlapping(range).map(|r| r.range.start).collect();
        let mut pieces = Vec::with_capacity(starts.len());
        for start in starts {
            let Some(region) = self.regions.remove(&start) else {
                continue;
            };
            let Some(inside) = region.range.intersect(range) else {
                continue;
            };
            debug_assert!(
                inside == region.range || !matches!(region.kind, Kind::Stack { .. }),
                "a stack was cut"
            );
            if region.range.start < inside.start {
                let below = PageRange {
                    start: region.range.start,
                    end: inside.start,
                };
                self.regions.insert(
                    below.start,
                    Region {
                        range: below,
                        ..region
                    },
                );
            }
            if inside.end < region.range.end {
                let above = PageRange {
                    start: inside.end,
                    end: region.range.end,
                };
                self.regions.insert(
                    above.start,
                    Region {
                        range: above,
                        ..region
                    },
                );
            }
            pieces.push(Region {
                range: inside,
                ..region
            });
        }
        pieces
    }

    /// Remove the parts of regions inside `range`; the unmaps of their
    /// present pages, neighbours coalesced.
    fn remove(&mut self, range: PageRange) -> Vec<PteChange> {
        let mut changes: Vec<PteChange> = Vec::new();
        for piece in self.carve(range) {
            let body = piece.body();
            match changes.last_mut() {
                Some(PteChange::Unmap { range: last }) if last.end == body.start => {
                    last.end = body.end;
                }
                _ => changes.push(PteChange::Unmap { range: body }),
            }
        }
        changes
    }

    /// Insert a region that overlaps none, merging it with neighbours it
    /// touches that have the same attributes.
    fn insert_merged(&mut self, mut region: Region) {
        let left = self
            .regions
            .range(..region.range.start)
            .next_back()
            .map(|(_, left)| *left)
            .filter(|left| left.range.end == region.range.start && left.is_mergeable_with(&region));
        if let Some(left) = left {
            self.regions.remove(&left.range.start);
            region.range.start = left.range.start;
        }
        let right = self
            .regions
            .get(&region.range.end)
            .copied()
            .filter(|right| right.is_mergeable_with(&region));
        if let Some(right) = right {
            self.regions.remove(&right.range.start);
            region.range.end = right.range.end;
        }
        self.regions.insert(region.range.start, region);
    }
}

#[cfg(test)]
mod tests;
