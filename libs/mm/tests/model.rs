//! Random operation sequences against simple models: a per-frame state
//! array for the frame allocator, a per-page array for the address space.
//! Every result must agree with the model, and after every step the
//! invariants must hold: regions sorted, disjoint, page-aligned, inside
//! the bounds and canonical (no two touching regions that could merge);
//! the page-table changes, applied to a model page table backed by frames
//! of a real allocator, give exactly the present pages the map describes,
//! each frame free or behind exactly one page.

use std::collections::{BTreeMap, BTreeSet};

use eremite_interface::errno::{self, Errno};
use eremite_mm::{
    Access, AddressSpace, FaultCause, FrameAllocator, FrameError, Kind, PAGE_SIZE, PageRange, Prot,
    PteChange,
};
use proptest::prelude::*;

const P: u64 = PAGE_SIZE;

// ---------------------------------------------------------------------
// Frame allocator

/// The span: 300 frames from frame 5 (so alignment is not span-relative).
const SPAN_FIRST: u64 = 5;
const SPAN_FRAMES: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq)]
enum FrameState {
    NotOurs,
    Free,
    Allocated,
}

#[derive(Clone, Debug)]
enum FrameOp {
    AddFree { first: u64, count: u64 },
    Alloc,
    AllocContiguous { count: u64, align_shift: u32 },
    Free { frame: u64 },
    FreeRange { first: u64, count: u64 },
}

fn frame_op() -> impl Strategy<Value = FrameOp> {
    // Frame numbers reach a little outside the span on both sides.
    let frame = 0..SPAN_FIRST + SPAN_FRAMES + 5;
    prop_oneof![
        2 => (frame.clone(), 1..80u64).prop_map(|(first, count)| FrameOp::AddFree { first, count }),
        4 => Just(FrameOp::Alloc),
        3 => (1..40u64, 0..6u32)
            .prop_map(|(count, align_shift)| FrameOp::AllocContiguous { count, align_shift }),
        4 => frame.clone().prop_map(|frame| FrameOp::Free { frame }),
        2 => (frame, 1..20u64).prop_map(|(first, count)| FrameOp::FreeRange { first, count }),
    ]
}

struct FrameModel(Vec<FrameState>);

impl FrameModel {
    fn state(&self, frame: u64) -> FrameState {
        frame
            .checked_sub(SPAN_FIRST)
            .and_then(|i| self.0.get(i as usize).copied())
            .unwrap_or(FrameState::NotOurs)
    }

    fn set(&mut self, first: u64, count: u64, state: FrameState) {
        for frame in first..first + count {
            self.0[(frame - SPAN_FIRST) as usize] = state;
        }
    }

    fn in_span(first: u64, count: u64) -> bool {
        first >= SPAN_FIRST && first + count <= SPAN_FIRST + SPAN_FRAMES
    }

    fn first_in(&self, first: u64, count: u64, state: FrameState) -> Option<u64> {
        (first..first + count).find(|&f| self.state(f) == state)
    }

    fn add_free(&mut self, first: u64, count: u64) -> Result<(), FrameError> {
        if !Self::in_span(first, count) {
            return Err(FrameError::Invalid);
        }
        let owned = (first..first + count).find(|&f| self.state(f) != FrameState::NotOurs);
        if let Some(frame) = owned {
            return Err(FrameError::AlreadyAdded { addr: frame * P });
        }
        self.set(first, count, FrameState::Free);
        Ok(())
    }

    fn alloc_contiguous(&mut self, count: u64, align: u64) -> Result<u64, FrameError> {
        let end = SPAN_FIRST + SPAN_FRAMES;
        let first = (SPAN_FIRST..end)
            .filter(|f| f % align == 0 && f + count <= end)
            .find(|&f| (f..f + count).all(|g| self.state(g) == FrameState::Free))
            .ok_or(FrameError::OutOfMemory)?;
        self.set(first, count, FrameState::Allocated);
        Ok(first)
    }

    fn free(&mut self, first: u64, count: u64) -> Result<(), FrameError> {
        if !Self::in_span(first, count) {
            return Err(FrameError::Invalid);
        }
        if let Some(f) = self.first_in(first, count, FrameState::NotOurs) {
            return Err(FrameError::NotOurs { addr: f * P });
        }
        if let Some(f) = self.first_in(first, count, FrameState::Free) {
            return Err(FrameError::DoubleFree { addr: f * P });
        }
        self.set(first, count, FrameState::Free);
        Ok(())
    }

    fn count(&self, state: FrameState) -> u64 {
        self.0.iter().filter(|&&s| s == state).count() as u64
    }
}

fn frame_range(first: u64, count: u64) -> PageRange {
    PageRange::new(first * P, (first + count) * P).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frame_allocator_agrees_with_a_per_frame_model(
        ops in prop::collection::vec(frame_op(), 1..120)
    ) {
        let mut frames = FrameAllocator::new(frame_range(SPAN_FIRST, SPAN_FRAMES));
        let mut model = FrameModel(vec![FrameState::NotOurs; SPAN_FRAMES as usize]);
        for op in &ops {
            match *op {
                FrameOp::AddFree { first, count } => {
                    prop_assert_eq!(
                        frames.add_free(frame_range(first, count)),
                        model.add_free(first, count)
                    );
                }
                FrameOp::Alloc => {
                    let expected = model.alloc_contiguous(1, 1).map(|f| f * P);
                    prop_assert_eq!(frames.alloc(), expected);
                }
                FrameOp::AllocContiguous { count, align_shift } => {
                    let align = 1 << align_shift;
                    let expected = model
                        .alloc_contiguous(count, align)
                        .map(|f| frame_range(f, count));
                    prop_assert_eq!(frames.alloc_contiguous(count, align * P), expected);
                }
                FrameOp::Free { frame } => {
                    prop_assert_eq!(frames.free(frame * P), model.free(frame, 1));
                }
                FrameOp::FreeRange { first, count } => {
                    prop_assert_eq!(
                        frames.free_range(frame_range(first, count)),
                        model.free(first, count)
                    );
                }
            }
            prop_assert_eq!(frames.free_frames(), model.count(FrameState::Free));
            prop_assert_eq!(
                frames.owned_frames(),
                SPAN_FRAMES - model.count(FrameState::NotOurs)
            );
            for frame in SPAN_FIRST - 1..=SPAN_FIRST + SPAN_FRAMES {
                let state = model.state(frame);
                prop_assert_eq!(frames.is_free(frame * P), state == FrameState::Free);
                prop_assert_eq!(frames.is_allocated(frame * P), state == FrameState::Allocated);
            }
        }
    }
}

// ---------------------------------------------------------------------
// Address space

/// Pages modelled: [0, PAGES); the space's bounds are [LOW, HIGH).
const PAGES: u64 = 64;
const LOW: u64 = 4;
const HIGH: u64 = 60;

#[derive(Clone, Copy, Debug)]
enum KindChoice {
    Supervisor,
    Image,
    Program,
    Heap,
    Stack { guard_pages: u64 },
    Anonymous,
}

#[derive(Clone, Debug)]
enum VmOp {
    Map {
        first: u64,
        count: u64,
        kind: KindChoice,
        prot: Prot,
    },
    MapAnywhere {
        count: u64,
        align_shift: u32,
        within: (u64, u64),
        kind: KindChoice,
        prot: Prot,
    },
    Munmap {
        addr: u64,
        len_bytes: u64,
    },
    Mprotect {
        addr: u64,
        len_bytes: u64,
        prot: Prot,
    },
    Release {
        first: u64,
        count: u64,
        kind: KindChoice,
        thread_back: u32,
    },
    /// Release the pages of the kind at `page`, around it, trimmed.
    ReleaseAround {
        page: u64,
        trim_low: u64,
        trim_high: u64,
    },
}

fn prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        Just(Prot::NONE),
        Just(Prot::READ),
        Just(Prot::READ_WRITE),
        Just(Prot::READ_EXEC),
    ]
}

fn kind() -> impl Strategy<Value = KindChoice> {
    prop_oneof![
        1 => Just(KindChoice::Supervisor),
        1 => Just(KindChoice::Image),
        1 => Just(KindChoice::Program),
        2 => Just(KindChoice::Heap),
        2 => (0..4u64).prop_map(|guard_pages| KindChoice::Stack { guard_pages }),
        5 => Just(KindChoice::Anonymous),
    ]
}

/// An address near page granularity: mostly aligned, sometimes not.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0..PAGES).prop_map(|page| page * P),
        1 => 0..PAGES * P,
    ]
}

fn len_bytes() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (1..12u64).prop_map(|pages| pages * P),
        2 => 0..12 * P,
        1 => Just(u64::MAX),
    ]
}

fn vm_op() -> impl Strategy<Value = VmOp> {
    prop_oneof![
        4 => (0..PAGES, 1..10u64, kind(), prot())
            .prop_map(|(first, count, kind, prot)| VmOp::Map { first, count, kind, prot }),
        3 => (0..10u64, 0..4u32, (0..PAGES, 0..PAGES + 4), kind(), prot()).prop_map(
            |(count, align_shift, within, kind, prot)| VmOp::MapAnywhere {
                count, align_shift, within, kind, prot
            }
        ),
        3 => (addr(), len_bytes()).prop_map(|(addr, len_bytes)| VmOp::Munmap { addr, len_bytes }),
        4 => (addr(), len_bytes(), prot())
            .prop_map(|(addr, len_bytes, prot)| VmOp::Mprotect { addr, len_bytes, prot }),
        2 => (0..PAGES, 1..12u64, kind(), 0..3u32).prop_map(|(first, count, kind, thread_back)| {
            VmOp::Release { first, count, kind, thread_back }
        }),
        3 => (LOW..HIGH, prop_oneof![3 => Just(0u64), 1 => 1..3u64], prop_oneof![3 => Just(0u64), 1 => 1..3u64])
            .prop_map(|(page, trim_low, trim_high)| VmOp::ReleaseAround { page, trim_low, trim_high }),
    ]
}

/// The model: each page's region kind and protection. Every stack gets a
/// thread of its own, so a stack's pages are those with its kind.
#[derive(Clone)]
struct VmModel(Vec<Option<(Kind, Prot)>>);

fn is_permanent(kind: Kind) -> bool {
    matches!(kind, Kind::Supervisor | Kind::Image | Kind::Program)
}

impl VmModel {
    fn pages(&self, first: u64, end: u64) -> impl Iterator<Item = Option<(Kind, Prot)>> + '_ {
        (first..end).map(|p| self.0.get(p as usize).copied().flatten())
    }

    fn set(&mut self, first: u64, end: u64, value: Option<(Kind, Prot)>) {
        for p in first..end {
            self.0[p as usize] = value;
        }
    }

    fn map(&mut self, first: u64, end: u64, kind: Kind, prot: Prot) -> Result<(), Errno> {
        if first < LOW || end > HIGH {
            return Err(errno::ENOMEM);
        }
        if let Kind::Stack { guard_pages, .. } = kind
            && guard_pages >= end - first
        {
            return Err(errno::EINVAL);
        }
        if self.pages(first, end).any(|p| p.is_some()) {
            return Err(errno::EEXIST);
        }
        self.set(first, end, Some((kind, prot)));
        Ok(())
    }

    fn find_free(&self, count: u64, align: u64, within: (u64, u64)) -> Result<u64, Errno> {
        if count == 0 {
            return Err(errno::EINVAL);
        }
        let (low, high) = (within.0.max(LOW), within.1.min(HIGH));
        (low..high)
            .filter(|f| f % align == 0 && f + count <= high)
            .find(|&f| self.pages(f, f + count).all(|p| p.is_none()))
            .ok_or(errno::ENOMEM)
    }

    /// Linux's reading of (addr, len) for munmap: pages, or EINVAL.
    fn munmap_pages(addr: u64, len_bytes: u64) -> Result<(u64, u64), Errno> {
        if !addr.is_multiple_of(P) || len_bytes == 0 {
            return Err(errno::EINVAL);
        }
        let pages = len_bytes.div_ceil(P);
        let end = (addr / P)
            .checked_add(pages)
            .filter(|&end| end <= u64::MAX / P);
        end.map(|end| (addr / P, end)).ok_or(errno::EINVAL)
    }

    fn munmap(&mut self, addr: u64, len_bytes: u64) -> Result<(), Errno> {
        let (first, end) = Self::munmap_pages(addr, len_bytes)?;
        if first < LOW || end > HIGH {
            return Err(errno::EINVAL);
        }
        if self
            .pages(first, end)
            .flatten()
            .any(|(kind, _)| kind != Kind::Anonymous)
        {
            return Err(errno::EPERM);
        }
        self.set(first, end, None);
        Ok(())
    }

    fn mprotect(&mut self, addr: u64, len_bytes: u64, prot: Prot) -> Result<(), Errno> {
        if !addr.is_multiple_of(P) {
            return Err(errno::EINVAL);
        }
        if len_bytes == 0 {
            return Ok(());
        }
        let (first, end) = Self::munmap_pages(addr, len_bytes).map_err(|_| errno::ENOMEM)?;
        if end > PAGES || self.pages(first, end).any(|p| p.is_none()) {
            return Err(errno::ENOMEM);
        }
        if self
            .pages(first, end)
            .flatten()
            .any(|(kind, _)| !matches!(kind, Kind::Anonymous | Kind::Program))
        {
            return Err(errno::EPERM);
        }
        for p in first..end {
            let (kind, _) = self.0[p as usize].unwrap();
            self.0[p as usize] = Some((kind, prot));
        }
        Ok(())
    }

    fn release(&mut self, first: u64, end: u64, kind: Kind) -> Result<(), Errno> {
        if is_permanent(kind)
            || self
                .pages(first, end)
                .flatten()
                .any(|(k, _)| is_permanent(k))
        {
            return Err(errno::EPERM);
        }
        if self
            .pages(first, end)
            .any(|p| p.is_none_or(|(k, _)| k != kind))
        {
            return Err(errno::EINVAL);
        }
        // A stack goes whole or not at all.
        if matches!(kind, Kind::Stack { .. })
            && self
                .pages(0, first)
                .chain(self.pages(end, PAGES))
                .any(|p| p.is_some_and(|(k, _)| k == kind))
        {
            return Err(errno::EINVAL);
        }
        self.set(first, end, None);
        Ok(())
    }

    /// Whether the page is present in the page tables, and with what.
    fn present(&self, page: u64) -> Option<Prot> {
        let (kind, prot) = self.0[page as usize]?;
        if let Kind::Stack { guard_pages, .. } = kind {
            let bottom = (0..page)
                .rev()
                .take_while(|&p| self.0[p as usize].is_some_and(|(k, _)| k == kind))
                .count() as u64;
            if bottom < guard_pages {
                return None;
            }
        }
        Some(prot)
    }
}

/// Page tables for the test: page -> (frame, protection).
struct PageTable {
    entries: BTreeMap<u64, (u64, Prot)>,
    frames: FrameAllocator,
}

impl PageTable {
    fn apply(&mut self, changes: &[PteChange]) -> Result<(), TestCaseError> {
        for change in changes {
            let range = change.range();
            prop_assert!(range.start < range.end && range.start.is_multiple_of(P));
            for page in range.start / P..range.end / P {
                match *change {
                    PteChange::Map { prot, .. } => {
                        let frame = self.frames.alloc().expect("enough frames for every page");
                        let old = self.entries.insert(page, (frame, prot));
                        prop_assert!(old.is_none(), "page {page} mapped twice");
                    }
                    PteChange::Protect { from, to, .. } => {
                        let entry = self.entries.get_mut(&page);
                        prop_assert!(entry.is_some(), "protect of absent page {page}");
                        let entry = entry.unwrap();
                        prop_assert_eq!(entry.1, from);
                        entry.1 = to;
                    }
                    PteChange::Unmap { .. } => {
                        let old = self.entries.remove(&page);
                        prop_assert!(old.is_some(), "unmap of absent page {page}");
                        prop_assert_eq!(self.frames.free(old.unwrap().0), Ok(()));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_invariants(space: &AddressSpace) -> Result<(), TestCaseError> {
    let regions: Vec<_> = space.regions().copied().collect();
    for region in &regions {
        let range = region.range;
        prop_assert!(range.start < range.end);
        prop_assert!(range.start.is_multiple_of(P) && range.end.is_multiple_of(P));
        prop_assert!(space.bounds().covers(range));
        prop_assert!(!(region.prot.is_writable() && region.prot.is_executable()));
        if let Kind::Stack { guard_pages, .. } = region.kind {
            prop_assert!(guard_pages < range.pages());
        }
    }
    for pair in regions.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        prop_assert!(
            a.range.end <= b.range.start,
            "unsorted or overlapping: {a:?} {b:?}"
        );
        let is_mergeable =
            a.kind == b.kind && a.prot == b.prot && !matches!(a.kind, Kind::Stack { .. });
        prop_assert!(
            a.range.end < b.range.start || !is_mergeable,
            "not merged: {a:?} {b:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn address_space_agrees_with_a_per_page_model(
        ops in prop::collection::vec(vm_op(), 1..60)
    ) {
        let mut space = AddressSpace::new(PageRange::new(LOW * P, HIGH * P).unwrap());
        let mut model = VmModel(vec![None; PAGES as usize]);
        // Frames for every page that can be present, from a real allocator.
        let mut frames = FrameAllocator::new(PageRange::new(0, 128 * P).unwrap());
        frames.add_free(PageRange::new(0, 128 * P).unwrap()).unwrap();
        let mut table = PageTable { entries: BTreeMap::new(), frames };
        let mut next_thread: u32 = 0;
        let mut to_kind = |choice: KindChoice, thread_back: u32, is_new: bool| match choice {
            KindChoice::Supervisor => Kind::Supervisor,
            KindChoice::Image => Kind::Image,
            KindChoice::Program => Kind::Program,
            KindChoice::Heap => Kind::Heap,
            KindChoice::Anonymous => Kind::Anonymous,
            KindChoice::Stack { guard_pages } => {
                if is_new {
                    next_thread += 1;
                }
                Kind::Stack { thread: next_thread.saturating_sub(thread_back), guard_pages }
            }
        };
        for op in &ops {
            let (result, expected) = match *op {
                VmOp::Map { first, count, kind, prot } => {
                    let kind = to_kind(kind, 0, true);
                    let range = PageRange::new(first * P, (first + count) * P).unwrap();
                    (space.map(range, kind, prot), model.map(first, first + count, kind, prot))
                }
                VmOp::MapAnywhere { count, align_shift, within, kind, prot } => {
                    let kind = to_kind(kind, 0, true);
                    let align = 1u64 << align_shift;
                    let within_range = PageRange::new(within.0 * P, within.1 * P);
                    let Ok(within_range) = within_range else { continue };
                    let result = space.map_anywhere(count, align * P, within_range, kind, prot);
                    let expected = model
                        .find_free(count, align, within)
                        .and_then(|first| {
                            model.map(first, first + count, kind, prot)?;
                            Ok(first)
                        });
                    if let (Ok((range, _)), Ok(first)) = (&result, &expected) {
                        prop_assert_eq!(range.start, first * P);
                        prop_assert_eq!(range.pages(), count);
                    }
                    (result.map(|(_, changes)| changes), expected.map(|_| ()))
                }
                VmOp::Munmap { addr, len_bytes } => {
                    (space.munmap(addr, len_bytes), model.munmap(addr, len_bytes))
                }
                VmOp::Mprotect { addr, len_bytes, prot } => {
                    (space.mprotect(addr, len_bytes, prot), model.mprotect(addr, len_bytes, prot))
                }
                VmOp::Release { first, count, kind, thread_back } => {
                    let kind = to_kind(kind, thread_back, false);
                    let range = PageRange::new(first * P, (first + count) * P).unwrap();
                    (space.release(range, kind), model.release(first, first + count, kind))
                }
                VmOp::ReleaseAround { page, trim_low, trim_high } => {
                    let Some((kind, _)) = model.0[page as usize] else { continue };
                    let same = |p: &u64| model.0[*p as usize].is_some_and(|(k, _)| k == kind);
                    let first = (0..=page).rev().take_while(same).last().unwrap() + trim_low;
                    let end = (page..PAGES).take_while(same).last().unwrap() + 1 - trim_high;
                    let Ok(range) = PageRange::new(first * P, end * P) else { continue };
                    (space.release(range, kind), model.release(first, end, kind))
                }
            };
            prop_assert_eq!(result.as_ref().err().copied(), expected.err(), "{:?}", op);
            if let Ok(changes) = &result {
                table.apply(changes)?;
            }

            check_invariants(&space)?;
            // Per page: the map, the model and the page table agree.
            for page in 0..PAGES {
                let addr = page * P;
                let in_space = space.lookup(addr).map(|r| (r.kind, r.prot));
                prop_assert_eq!(in_space, model.0[page as usize], "page {}", page);
                let present = table.entries.get(&page).map(|&(_, prot)| prot);
                prop_assert_eq!(present, model.present(page), "page {} present", page);
                let fault = space.fault(addr, Access::Write).cause;
                match (model.0[page as usize], model.present(page)) {
                    (None, _) => prop_assert_eq!(fault, FaultCause::Unmapped),
                    (Some((Kind::Stack { thread, .. }, _)), None) => {
                        prop_assert_eq!(fault, FaultCause::StackGuard { thread });
                    }
                    (Some((_, prot)), Some(_)) => {
                        prop_assert_eq!(fault == FaultCause::Spurious, prot.is_writable());
                    }
                    (Some(_), None) => prop_assert!(false, "only guard pages are absent"),
                }
            }
            // Every frame is free or behind exactly one present page.
            let used: BTreeSet<u64> = table.entries.values().map(|&(frame, _)| frame).collect();
            prop_assert_eq!(used.len(), table.entries.len());
            prop_assert_eq!(table.frames.free_frames() + used.len() as u64, 128);
            for frame in used {
                prop_assert!(table.frames.is_allocated(frame));
            }
        }
    }
}
