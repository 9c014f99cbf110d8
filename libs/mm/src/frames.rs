//! The physical frame allocator: which 4 KiB frames of guest RAM are free.
//!
//! [`FrameAllocator`] covers one span of physical addresses fixed at
//! creation (for the kernel, all of guest RAM) and owns the frames of the
//! free ranges handed to it, at boot or later ([`FrameAllocator::add_free`],
//! e.g. the initial ramdisk once unpacked). Every frame of the span is in
//! one of three states: not ours (never handed over), free, or allocated.
//!
//! Why a bitmap rather than a tree of free extents (O(log n) per call):
//! the kernel's heap grows by asking for frames, so the frame allocator
//! must never allocate itself, or a heap that runs dry would recurse into
//! its own lock. A bitmap needs its memory once, at creation (2 bits per
//! frame plus 1/64 of that: about 200 KiB for 3 GiB of RAM), and nothing
//! afterwards; an extent tree needs a node for every free that splits an
//! extent. A second level, one bit per bitmap word that has a free frame,
//! makes finding a free frame a scan of `frames / 4096` words (192 for
//! 3 GiB) instead of `frames / 64`. Contiguous aligned runs (2 MiB pages,
//! DMA buffers) skip from free frame to free frame and test 64 frames per
//! word, so their cost is linear in the words of the span that they pass.
//!
//! Freeing checks the state of every frame first: a double free or a
//! frame that was never handed out is an error that changes nothing, and
//! the kernel reports it as the bug it is.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use eremite_interface::errno::{self, Errno};

use crate::{PAGE_SIZE, PageRange, is_page_aligned, is_valid_align};

/// Why a frame operation failed. Nothing changed in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame, or no free run of that length and alignment.
    OutOfMemory,
    /// A misaligned address, a zero count, an alignment that is not a
    /// power of two of at least a page, or a range outside the span.
    Invalid,
    /// [`FrameAllocator::add_free`] was given a frame it already owns.
    AlreadyAdded {
        /// The first such frame.
        addr: u64,
    },
    /// A frame that was never handed to the allocator was freed.
    NotOurs {
        /// The first such frame.
        addr: u64,
    },
    /// A frame that is already free was freed again.
    DoubleFree {
        /// The first such frame.
        addr: u64,
    },
}

impl From<FrameError> for Errno {
    fn from(error: FrameError) -> Errno {
        match error {
            FrameError::OutOfMemory => errno::ENOMEM,
            _ => errno::EINVAL,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfMemory => write!(f, "out of physical memory"),
            FrameError::Invalid => write!(f, "invalid frame address, count or alignment"),
            FrameError::AlreadyAdded { addr } => {
                write!(f, "frame {addr:#x} was already given to the allocator")
            }
            FrameError::NotOurs { addr } => {
                write!(f, "frame {addr:#x} was never given to the allocator")
            }
            FrameError::DoubleFree { addr } => write!(f, "frame {addr:#x} freed twice"),
        }
    }
}

/// Free 4 KiB frames within one span of physical memory.
pub struct FrameAllocator {
    span: PageRange,
    /// Frames in the span.
    frames: u64,
    /// Bit `i`: frame `i` of the span is free.
    free: Vec<u64>,
    /// Bit `i`: frame `i` of the span belongs to the allocator (free or
    /// allocated).
    owned: Vec<u64>,
    /// Bit `w`: word `w` of `free` is not zero.
    summary: Vec<u64>,
    free_count: u64,
    owned_count: u64,
}

impl FrameAllocator {
    /// An allocator for the frames of `span`, owning none of them yet.
    /// Allocates its bitmaps now (2 bits per frame of the span, plus a
    /// 64th of that) and never again.
    pub fn new(span: PageRange) -> Self {
        let frames = span.pages();
        let words = words_for(frames);
        Self {
            span,
            frames,
            free: vec![0; words],
            owned: vec![0; words],
            summary: vec![0; words_for(words as u64)],
            free_count: 0,
            owned_count: 0,
        }
    }

    /// The physical span this allocator can own frames of.
    pub fn span(&self) -> PageRange {
        self.span
    }

    /// Free frames.
    pub fn free_frames(&self) -> u64 {
        self.free_count
    }

    /// Frames owned (free or allocated).
    pub fn owned_frames(&self) -> u64 {
        self.owned_count
    }

    /// Whether the frame at `addr` is free.
    pub fn is_free(&self, addr: u64) -> bool {
        self.index(addr).is_some_and(|i| get(&self.free, i))
    }

    /// Whether the frame at `addr` is allocated (owned and not free).
    pub fn is_allocated(&self, addr: u64) -> bool {
        self.index(addr)
            .is_some_and(|i| get(&self.owned, i) && !get(&self.free, i))
    }

    /// Hand the frames of `range` to the allocator, free. `Invalid` if the
    /// range leaves the span, `AlreadyAdded` if it holds a frame the
    /// allocator already owns.
    pub fn add_free(&mut self, range: PageRange) -> Result<(), FrameError> {
        let (from, to) = self.indices(range)?;
        if let Some(i) = find(&self.owned, from, to, true) {
            return Err(FrameError::AlreadyAdded { addr: self.addr(i) });
        }
        fill(&mut self.owned, from, to, true);
        self.owned_count += to - from;
        self.mark_free(from, to);
        Ok(())
    }

    /// Allocate one frame; its address.
    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        let i = self.next_free(0).ok_or(FrameError::OutOfMemory)?;
        self.mark_allocated(i, i + 1);
        Ok(self.addr(i))
    }

    /// Allocate `count` contiguous frames starting at a multiple of
    /// `align_bytes` (a power of two, at least [`PAGE_SIZE`]); the lowest
    /// such run is taken.
    pub fn alloc_contiguous(
        &mut self,
        count: u64,
        align_bytes: u64,
    ) -> Result<PageRange, FrameError> {
        if count == 0 || !is_valid_align(align_bytes) {
            return Err(FrameError::Invalid);
        }
        let align_frames = align_bytes / PAGE_SIZE;
        let base = self.span.start / PAGE_SIZE;
        let mut start = 0;
        loop {
            start = self.next_free(start).ok_or(FrameError::OutOfMemory)?;
            // The first aligned frame index at or after `start`.
            start = (base + start).next_multiple_of(align_frames) - base;
            let end = start
                .checked_add(count)
                .filter(|&end| end <= self.frames)
                .ok_or(FrameError::OutOfMemory)?;
            match find(&self.free, start, end, false) {
                None => {
                    self.mark_allocated(start, end);
                    return Ok(PageRange {
                        start: self.addr(start),
                        end: self.addr(end),
                    });
                }
                Some(used) => start = used + 1,
            }
        }
    }

    /// Allocate exactly the frames of `range` (a program's `MAP_FIXED`):
    /// `Invalid` if the range leaves the span, `OutOfMemory` (nothing
    /// taken) unless every frame of it is free.
    pub fn alloc_range(&mut self, range: PageRange) -> Result<(), FrameError> {
        let (from, to) = self.indices(range)?;
        if find(&self.free, from, to, false).is_some() {
            return Err(FrameError::OutOfMemory);
        }
        self.mark_allocated(from, to);
        Ok(())
    }

    /// Free the frame at `addr`.
    pub fn free(&mut self, addr: u64) -> Result<(), FrameError> {
        let range =
            PageRange::new(addr, addr.wrapping_add(PAGE_SIZE)).map_err(|_| FrameError::Invalid)?;
        self.free_range(range)
    }

    /// Free every frame of `range`: all of them must be allocated, or
    /// nothing is freed.
    pub fn free_range(&mut self, range: PageRange) -> Result<(), FrameError> {
        let (from, to) = self.indices(range)?;
        if let Some(i) = find(&self.owned, from, to, false) {
            return Err(FrameError::NotOurs { addr: self.addr(i) });
        }
        if let Some(i) = find(&self.free, from, to, true) {
            return Err(FrameError::DoubleFree { addr: self.addr(i) });
        }
        self.mark_free(from, to);
        Ok(())
    }

    fn index(&self, addr: u64) -> Option<u64> {
        (is_page_aligned(addr) && self.span.contains(addr))
            .then(|| (addr - self.span.start) / PAGE_SIZE)
    }

    fn indices(&self, range: PageRange) -> Result<(u64, u64), FrameError> {
        if !self.span.covers(range) {
            return Err(FrameError::Invalid);
        }
        let from = (range.start - self.span.start) / PAGE_SIZE;
        Ok((from, from + range.pages()))
    }

    fn addr(&self, index: u64) -> u64 {
        self.span.start + index * PAGE_SIZE
    }

    fn mark_free(&mut self, from: u64, to: u64) {
        fill(&mut self.free, from, to, true);
        self.free_count += to - from;
        self.update_summary(from, to);
    }

    fn mark_allocated(&mut self, from: u64, to: u64) {
        fill(&mut self.free, from, to, false);
        self.free_count -= to - from;
        self.update_summary(from, to);
    }

    fn update_summary(&mut self, from: u64, to: u64) {
        for w in from / 64..to.div_ceil(64) {
            let has_free = self.free[w as usize] != 0;
            set(&mut self.summary, w, has_free);
        }
    }

    /// The first free frame at or after index `from`.
    fn next_free(&self, from: u64) -> Option<u64> {
        if from >= self.frames {
            return None;
        }
        let w = from / 64;
        let bits = self.free[w as usize] & (!0 << (from % 64));
        if bits != 0 {
            return Some(w * 64 + u64::from(bits.trailing_zeros()));
        }
        // Words after `w` that hold a free frame, from the summary.
        let next = find(&self.summary, w + 1, self.free.len() as u64, true)?;
        let bits = self.free[next as usize];
        Some(next * 64 + u64::from(bits.trailing_zeros()))
    }
}

impl fmt::Debug for FrameAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("span", &self.span)
            .field("owned_frames", &self.owned_count)
            .field("free_frames", &self.free_count)
            .finish()
    }
}

fn words_for(bits: u64) -> usize {
    bits.div_ceil(64) as usize
}

fn get(words: &[u64], i: u64) -> bool {
    words[(i / 64) as usize] & (1 << (i % 64)) != 0
}

fn set(words: &mut [u64], i: u64, value: bool) {
    let word = &mut words[(i / 64) as usize];
    if value {
        *word |= 1 << (i % 64);
    } else {
        *word &= !(1 << (i % 64));
    }
}

/// The mask of bits `[from, to)` of one word (`from < to <= 64`).
fn mask(from: u64, to: u64) -> u64 {
    let high = if to == 64 { !0 } else { (1 << to) - 1 };
    high & (!0 << from)
}

/// Set bits `[from, to)` to `value`, a word at a time.
fn fill(words: &mut [u64], from: u64, to: u64, value: bool) {
    let mut i = from;
    while i < to {
        let w = i / 64;
        let upto = to.min((w + 1) * 64);
        let m = mask(i % 64, upto - w * 64);
        if value {
            words[w as usize] |= m;
        } else {
            words[w as usize] &= !m;
        }
        i = upto;
    }
}

/// The first bit in `[from, to)` equal to `value`, a word at a time.
fn find(words: &[u64], from: u64, to: u64, value: bool) -> Option<u64> {
    let mut i = from;
    while i < to {
        let w = i / 64;
        let upto = to.min((w + 1) * 64);
        let word = if value {
            words[w as usize]
        } else {
            !words[w as usize]
        };
        let bits = word & mask(i % 64, upto - w * 64);
        if bits != 0 {
            return Some(w * 64 + u64::from(bits.trailing_zeros()));
        }
        i = upto;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn range(start: u64, end: u64) -> PageRange {
        PageRange::new(start, end).unwrap()
    }

    fn allocator(span: (u64, u64), free: &[(u64, u64)]) -> FrameAllocator {
        let mut frames = FrameAllocator::new(range(span.0, span.1));
        for &(start, end) in free {
            frames.add_free(range(start, end)).unwrap();
        }
        frames
    }

    #[test]
    fn allocates_lowest_frames_first_and_counts() {
        let mut frames = allocator((0, 4 * MIB), &[(MIB, 2 * MIB)]);
        assert_eq!(frames.owned_frames(), 256);
        assert_eq!(frames.free_frames(), 256);
        assert_eq!(frames.alloc(), Ok(MIB));
        assert_eq!(frames.alloc(), Ok(MIB + PAGE_SIZE));
        assert_eq!(frames.free_frames(), 254);
        assert!(frames.is_allocated(MIB));
        assert!(!frames.is_free(MIB));
        frames.free(MIB).unwrap();
        assert!(frames.is_free(MIB));
        assert_eq!(frames.alloc(), Ok(MIB));
    }

    #[test]
    fn allocates_a_given_range_only_if_all_of_it_is_free() {
        let mut frames = allocator((0, 4 * MIB), &[(MIB, 2 * MIB)]);
        let wanted = range(MIB + 0x3000, MIB + 0x6000);
        assert_eq!(frames.alloc_range(wanted), Ok(()));
        assert!(frames.is_allocated(MIB + 0x3000) && frames.is_allocated(MIB + 0x5000));
        assert_eq!(frames.free_frames(), 253);
        // Overlapping allocated frames, or frames not ours: nothing taken.
        let before = frames.free_frames();
        for bad in [
            range(MIB, MIB + 0x4000),
            range(2 * MIB - 0x1000, 2 * MIB + 0x1000),
        ] {
            assert_eq!(frames.alloc_range(bad), Err(FrameError::OutOfMemory));
        }
        assert_eq!(frames.free_frames(), before);
        assert_eq!(
            frames.alloc_range(range(5 * MIB, 6 * MIB)),
            Err(FrameError::Invalid)
        );
        // The lowest free frame is still the first one.
        assert_eq!(frames.alloc(), Ok(MIB));
        frames.free_range(wanted).unwrap();
        assert!(frames.is_free(MIB + 0x3000));
    }

    #[test]
    fn runs_dry_with_enomem() {
        let mut frames = allocator((0, MIB), &[(0x5000, 0x7000)]);
        assert_eq!(frames.alloc(), Ok(0x5000));
        assert_eq!(frames.alloc(), Ok(0x6000));
        assert_eq!(frames.alloc(), Err(FrameError::OutOfMemory));
        assert_eq!(Errno::from(FrameError::OutOfMemory), errno::ENOMEM);
        frames.free(0x6000).unwrap();
        assert_eq!(frames.alloc(), Ok(0x6000));
    }

    #[test]
    fn empty_allocator_has_nothing() {
        let mut frames = allocator((0, MIB), &[]);
        assert_eq!(frames.alloc(), Err(FrameError::OutOfMemory));
        assert_eq!(
            frames.alloc_contiguous(1, PAGE_SIZE),
            Err(FrameError::OutOfMemory)
        );
    }

    #[test]
    fn double_free_and_foreign_frames_are_errors() {
        let mut frames = allocator((0, MIB), &[(0x10000, 0x20000)]);
        let a = frames.alloc().unwrap();
        frames.free(a).unwrap();
        assert_eq!(frames.free(a), Err(FrameError::DoubleFree { addr: a }));
        assert_eq!(
            frames.free(0x8000),
            Err(FrameError::NotOurs { addr: 0x8000 })
        );
        assert_eq!(frames.free(2 * MIB), Err(FrameError::Invalid));
        assert_eq!(frames.free(0x10001), Err(FrameError::Invalid));
        assert_eq!(frames.free(!0xfff), Err(FrameError::Invalid));
        assert_eq!(frames.free_frames(), 16);
    }

    #[test]
    fn free_range_is_all_or_nothing() {
        let mut frames = allocator((0, MIB), &[(0, 0x10000)]);
        let run = frames.alloc_contiguous(4, PAGE_SIZE).unwrap();
        assert_eq!(run, range(0, 0x4000));
        frames.free(0x2000).unwrap();
        assert_eq!(
            frames.free_range(run),
            Err(FrameError::DoubleFree { addr: 0x2000 })
        );
        assert!(frames.is_allocated(0x1000) && frames.is_allocated(0x3000));
        assert_eq!(
            frames.free_range(range(0xe000, 0x12000)),
            Err(FrameError::NotOurs { addr: 0x10000 })
        );
        frames.free_range(range(0, 0x2000)).unwrap();
        frames.free(0x3000).unwrap();
        assert_eq!(frames.free_frames(), 16);
    }

    #[test]
    fn add_free_refuses_overlaps_and_ranges_outside_the_span() {
        let mut frames = allocator((MIB, 3 * MIB), &[(MIB, 2 * MIB)]);
        assert_eq!(
            frames.add_free(range(2 * MIB - PAGE_SIZE, 2 * MIB + PAGE_SIZE)),
            Err(FrameError::AlreadyAdded {
                addr: 2 * MIB - PAGE_SIZE
            })
        );
        assert_eq!(
            frames.add_free(range(0, PAGE_SIZE)),
            Err(FrameError::Invalid)
        );
        assert_eq!(
            frames.add_free(range(3 * MIB - PAGE_SIZE, 3 * MIB + PAGE_SIZE)),
            Err(FrameError::Invalid)
        );
        assert_eq!(frames.free_frames(), 256);
        // Later additions, even of frames the allocator knew as foreign.
        frames.add_free(range(2 * MIB, 3 * MIB)).unwrap();
        assert_eq!(frames.free_frames(), 512);
    }

    #[test]
    fn contiguous_runs_honour_alignment() {
        // Free from 1 MiB + 4 KiB to 8 MiB: the first 2 MiB-aligned run
        // of 512 frames starts at 2 MiB.
        let mut frames = allocator((0, 8 * MIB), &[(MIB + PAGE_SIZE, 8 * MIB)]);
        let big = frames.alloc_contiguous(512, 2 * MIB).unwrap();
        assert_eq!(big, range(2 * MIB, 4 * MIB));
        // Below it, single frames are still there.
        assert_eq!(frames.alloc(), Ok(MIB + PAGE_SIZE));
        // A hole at 4 MiB + 8 KiB breaks the next candidate run.
        let hole = 4 * MIB + 2 * PAGE_SIZE;
        frames.free_range(big).unwrap();
        let mut taken = Vec::new();
        while let Ok(addr) = frames.alloc() {
            if addr == hole {
                break;
            }
            taken.push(addr);
        }
        for addr in taken {
            frames.free(addr).unwrap();
        }
        assert!(frames.is_allocated(hole));
        assert_eq!(
            frames.alloc_contiguous(512, 2 * MIB),
            Ok(range(2 * MIB, 4 * MIB))
        );
        assert_eq!(
            frames.alloc_contiguous(512, 2 * MIB),
            Ok(range(6 * MIB, 8 * MIB))
        );
        assert_eq!(
            frames.alloc_contiguous(512, 2 * MIB),
            Err(FrameError::OutOfMemory)
        );
        // An unaligned run still fits in [4 MiB + 12 KiB, 6 MiB).
        assert_eq!(
            frames.alloc_contiguous(500, PAGE_SIZE),
            Ok(range(hole + PAGE_SIZE, hole + PAGE_SIZE + 500 * PAGE_SIZE))
        );
    }

    #[test]
    fn alignment_is_in_physical_addresses_not_span_offsets() {
        // The span starts at 12 KiB: a 16 KiB-aligned frame is index 1.
        let mut frames = allocator((0x3000, 0x20000), &[(0x3000, 0x20000)]);
        assert_eq!(
            frames.alloc_contiguous(2, 0x4000),
            Ok(range(0x4000, 0x6000))
        );
    }

    #[test]
    fn contiguous_rejects_bad_arguments() {
        let mut frames = allocator((0, MIB), &[(0, MIB)]);
        assert_eq!(
            frames.alloc_contiguous(0, PAGE_SIZE),
            Err(FrameError::Invalid)
        );
        assert_eq!(frames.alloc_contiguous(1, 0x3000), Err(FrameError::Invalid));
        assert_eq!(frames.alloc_contiguous(1, 0x800), Err(FrameError::Invalid));
        assert_eq!(
            frames.alloc_contiguous(u64::MAX, PAGE_SIZE),
            Err(FrameError::OutOfMemory)
        );
        assert_eq!(
            frames.alloc_contiguous(257, PAGE_SIZE),
            Err(FrameError::OutOfMemory)
        );
        assert_eq!(frames.alloc_contiguous(256, PAGE_SIZE), Ok(range(0, MIB)));
    }

    #[test]
    fn summary_finds_free_frames_far_away() {
        // 64 MiB span: 16384 frames, 256 words; one free frame at the end.
        let end = 64 * MIB;
        let mut frames = allocator((0, end), &[(end - PAGE_SIZE, end)]);
        assert_eq!(frames.alloc(), Ok(end - PAGE_SIZE));
        assert_eq!(frames.alloc(), Err(FrameError::OutOfMemory));
    }

    #[test]
    fn bit_helpers_work_across_words() {
        let mut words = [0u64; 3];
        fill(&mut words, 60, 130, true);
        assert_eq!(find(&words, 0, 192, true), Some(60));
        assert_eq!(find(&words, 61, 192, false), Some(130));
        assert_eq!(find(&words, 64, 128, false), None);
        fill(&mut words, 64, 128, false);
        assert_eq!(find(&words, 61, 192, false), Some(64));
        assert_eq!(find(&words, 64, 192, true), Some(128));
        assert_eq!(mask(0, 64), !0);
        assert_eq!(mask(3, 5), 0b11000);
    }
}
