use alloc::format;
use alloc::vec;

use super::*;

const P: u64 = PAGE_SIZE;

fn range(start_page: u64, end_page: u64) -> PageRange {
    PageRange::new(start_page * P, end_page * P).unwrap()
}

/// An address space over pages [16, 1024).
fn space() -> AddressSpace {
    AddressSpace::new(range(16, 1024))
}

fn layout(space: &AddressSpace) -> Vec<(u64, u64, Kind, Prot)> {
    space
        .regions()
        .map(|r| (r.range.start / P, r.range.end / P, r.kind, r.prot))
        .collect()
}

const RW: Prot = Prot::READ_WRITE;
const RO: Prot = Prot::READ;
const RX: Prot = Prot::READ_EXEC;
const ANON: Kind = Kind::Anonymous;

fn stack(thread: u32) -> Kind {
    Kind::Stack {
        thread,
        guard_pages: 2,
    }
}

#[test]
fn prot_parses_linux_bits_and_refuses_w_plus_x() {
    assert_eq!(Prot::from_bits(0), Ok(Prot::NONE));
    assert_eq!(Prot::from_bits(3), Ok(RW));
    assert_eq!(Prot::from_bits(5), Ok(RX));
    assert_eq!(Prot::from_bits(6), Err(errno::EACCES));
    assert_eq!(Prot::from_bits(7), Err(errno::EACCES));
    assert_eq!(Prot::from_bits(8), Err(errno::EINVAL));
    let write_only = Prot::from_bits(2).unwrap();
    assert!(write_only.is_readable() && write_only.is_writable());
    assert!(RO.is_subset_of(RW) && !RW.is_subset_of(RO) && !RX.is_subset_of(RW));
    assert_eq!(format!("{RX:?}"), "r-x");
}

#[test]
fn page_range_from_addr_len_follows_munmap() {
    assert_eq!(PageRange::from_addr_len(P, 1), Ok(range(1, 2)));
    assert_eq!(PageRange::from_addr_len(P, P + 1), Ok(range(1, 3)));
    assert_eq!(PageRange::from_addr_len(P + 1, P), Err(errno::EINVAL));
    assert_eq!(PageRange::from_addr_len(P, 0), Err(errno::EINVAL));
    assert_eq!(PageRange::from_addr_len(P, u64::MAX), Err(errno::EINVAL));
    assert_eq!(PageRange::new(P, P), Err(errno::EINVAL));
}

#[test]
fn map_returns_the_pages_to_map_and_merges_neighbours() {
    let mut space = space();
    assert_eq!(
        space.map(range(20, 24), ANON, RW),
        Ok(vec![PteChange::Map {
            range: range(20, 24),
            prot: RW,
            kind: ANON
        }])
    );
    space.map(range(24, 26), ANON, RW).unwrap();
    space.map(range(18, 20), ANON, RW).unwrap();
    space.map(range(26, 27), ANON, RO).unwrap();
    space.map(range(27, 28), Kind::Heap, RW).unwrap();
    assert_eq!(
        layout(&space),
        vec![
            (18, 26, ANON, RW),
            (26, 27, ANON, RO),
            (27, 28, Kind::Heap, RW)
        ]
    );
}

#[test]
fn map_refuses_overlaps_out_of_bounds_and_stacks_of_guard_only() {
    let mut space = space();
    space.map(range(20, 24), ANON, RW).unwrap();
    assert_eq!(space.map(range(23, 25), ANON, RW), Err(errno::EEXIST));
    assert_eq!(space.map(range(16, 21), ANON, RW), Err(errno::EEXIST));
    assert_eq!(space.map(range(8, 17), ANON, RW), Err(errno::ENOMEM));
    assert_eq!(space.map(range(1000, 1025), ANON, RW), Err(errno::ENOMEM));
    assert_eq!(space.map(range(30, 32), stack(1), RW), Err(errno::EINVAL));
    assert_eq!(layout(&space), vec![(20, 24, ANON, RW)]);
}

#[test]
fn stacks_map_only_above_their_guard_and_never_merge() {
    let mut space = space();
    assert_eq!(
        space.map(range(32, 40), stack(1), RW),
        Ok(vec![PteChange::Map {
            range: range(34, 40),
            prot: RW,
            kind: stack(1)
        }])
    );
    space.map(range(40, 48), stack(1), RW).unwrap();
    assert_eq!(space.regions().count(), 2);
    let region = space.lookup(33 * P).unwrap();
    assert_eq!(region.guard(), Some(range(32, 34)));
    assert_eq!(region.body(), range(34, 40));
}

#[test]
fn find_free_is_first_fit_with_alignment_and_bounds() {
    let mut space = space();
    assert_eq!(space.find_free(4, P, space.bounds()), Ok(16 * P));
    space.map(range(16, 20), ANON, RW).unwrap();
    space.map(range(22, 30), ANON, RW).unwrap();
    assert_eq!(space.find_free(2, P, space.bounds()), Ok(20 * P));
    assert_eq!(space.find_free(3, P, space.bounds()), Ok(30 * P));
    // 64 KiB alignment: page 32.
    assert_eq!(space.find_free(1, 16 * P, space.bounds()), Ok(32 * P));
    // Within a window that starts inside a region.
    assert_eq!(space.find_free(1, P, range(25, 40)), Ok(30 * P));
    assert_eq!(space.find_free(1, P, range(0, 17)), Err(errno::ENOMEM));
    assert_eq!(space.find_free(1, P, range(2000, 3000)), Err(errno::ENOMEM));
    assert_eq!(space.find_free(1000, P, space.bounds()), Err(errno::ENOMEM));
    assert_eq!(
        space.find_free(u64::MAX, P, space.bounds()),
        Err(errno::ENOMEM)
    );
    assert_eq!(space.find_free(0, P, space.bounds()), Err(errno::EINVAL));
    assert_eq!(
        space.find_free(1, 3 * P, space.bounds()),
        Err(errno::EINVAL)
    );
    // The last page of the space.
    space.map(range(30, 1023), ANON, RO).unwrap();
    assert_eq!(space.find_free(1, P, space.bounds()), Ok(20 * P));
    space.map(range(20, 22), ANON, RO).unwrap();
    assert_eq!(space.find_free(1, P, space.bounds()), Ok(1023 * P));
    assert_eq!(space.find_free(2, P, space.bounds()), Err(errno::ENOMEM));
}

#[test]
fn map_anywhere_reports_where() {
    let mut space = space();
    space.map(range(16, 17), Kind::Image, RX).unwrap();
    let (at, changes) = space.map_anywhere(2, P, space.bounds(), ANON, RW).unwrap();
    assert_eq!(at, range(17, 19));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].range(), at);
}

#[test]
fn munmap_splits_anonymous_memory_and_skips_holes() {
    let mut space = space();
    space.map(range(20, 30), ANON, RW).unwrap();
    space.map(range(32, 34), ANON, RO).unwrap();
    assert_eq!(
        space.munmap(22 * P, 2 * P),
        Ok(vec![PteChange::Unmap {
            range: range(22, 24)
        }])
    );
    assert_eq!(
        layout(&space),
        vec![(20, 22, ANON, RW), (24, 30, ANON, RW), (32, 34, ANON, RO)]
    );
    // Across a hole and two regions, the byte length rounded up.
    assert_eq!(
        space.munmap(28 * P, 5 * P - 1),
        Ok(vec![
            PteChange::Unmap {
                range: range(28, 30)
            },
            PteChange::Unmap {
                range: range(32, 33)
            }
        ])
    );
    // Nothing mapped there: fine, nothing to do.
    assert_eq!(space.munmap(100 * P, P), Ok(vec![]));
    assert_eq!(
        layout(&space),
        vec![(20, 22, ANON, RW), (24, 28, ANON, RW), (33, 34, ANON, RO)]
    );
}

#[test]
fn munmap_coalesces_adjacent_unmaps() {
    let mut space = space();
    space.map(range(20, 22), ANON, RW).unwrap();
    space.map(range(22, 24), ANON, RO).unwrap();
    assert_eq!(
        space.munmap(20 * P, 4 * P),
        Ok(vec![PteChange::Unmap {
            range: range(20, 24)
        }])
    );
    assert_eq!(space.regions().count(), 0);
}

#[test]
fn munmap_checks_arguments_and_refuses_kernel_memory() {
    let mut space = space();
    space.map(range(16, 20), Kind::Image, RX).unwrap();
    space.map(range(20, 24), ANON, RW).unwrap();
    space.map(range(24, 28), Kind::Heap, RW).unwrap();
    space.map(range(28, 32), stack(3), RW).unwrap();
    space
        .map(range(32, 33), Kind::Supervisor, Prot::NONE)
        .unwrap();
    let before = layout(&space);
    assert_eq!(space.munmap(20 * P + 1, P), Err(errno::EINVAL));
    assert_eq!(space.munmap(20 * P, 0), Err(errno::EINVAL));
    assert_eq!(space.munmap(8 * P, P), Err(errno::EINVAL));
    assert_eq!(space.munmap(19 * P, 2 * P), Err(errno::EPERM));
    assert_eq!(space.munmap(23 * P, 2 * P), Err(errno::EPERM));
    assert_eq!(space.munmap(28 * P, P), Err(errno::EPERM));
    assert_eq!(space.munmap(32 * P, P), Err(errno::EPERM));
    assert_eq!(layout(&space), before);
}

#[test]
fn release_gives_back_heap_pages_and_whole_stacks() {
    let mut space = space();
    space.map(range(40, 48), Kind::Heap, RW).unwrap();
    space.map(range(48, 56), Kind::Heap, RW).unwrap();
    assert_eq!(
        space.release(range(52, 56), Kind::Heap),
        Ok(vec![PteChange::Unmap {
            range: range(52, 56)
        }])
    );
    assert_eq!(layout(&space), vec![(40, 52, Kind::Heap, RW)]);

    space.map(range(60, 68), stack(7), RW).unwrap();
    assert_eq!(space.release(range(62, 68), stack(7)), Err(errno::EINVAL));
    assert_eq!(space.release(range(60, 68), stack(8)), Err(errno::EINVAL));
    assert_eq!(space.release(range(60, 68), Kind::Heap), Err(errno::EINVAL));
    assert_eq!(
        space.release(range(60, 68), stack(7)),
        Ok(vec![PteChange::Unmap {
            range: range(62, 68)
        }])
    );
    assert!(space.lookup(60 * P).is_none());
}

#[test]
fn release_refuses_holes_and_permanent_memory() {
    let mut space = space();
    space.map(range(16, 20), Kind::Image, RX).unwrap();
    space.map(range(20, 24), Kind::Heap, RW).unwrap();
    space.map(range(26, 28), Kind::Heap, RW).unwrap();
    assert_eq!(space.release(range(20, 28), Kind::Heap), Err(errno::EINVAL));
    assert_eq!(space.release(range(22, 25), Kind::Heap), Err(errno::EINVAL));
    assert_eq!(space.release(range(16, 17), Kind::Image), Err(errno::EPERM));
    assert_eq!(space.release(range(19, 21), Kind::Heap), Err(errno::EPERM));
    assert_eq!(
        space.release(range(100, 101), Kind::Supervisor),
        Err(errno::EPERM)
    );
    assert_eq!(space.release(range(100, 101), ANON), Err(errno::EINVAL));
    assert_eq!(space.regions().count(), 3);
}

#[test]
fn mprotect_splits_and_merges_back() {
    let mut space = space();
    space.map(range(20, 30), ANON, RW).unwrap();
    assert_eq!(
        space.mprotect(22 * P, 2 * P, RO),
        Ok(vec![PteChange::Protect {
            range: range(22, 24),
            from: RW,
            to: RO
        }])
    );
    assert_eq!(
        layout(&space),
        vec![(20, 22, ANON, RW), (22, 24, ANON, RO), (24, 30, ANON, RW)]
    );
    // Back to RW: one region again.
    let changes = space.mprotect(20 * P, 10 * P, RW).unwrap();
    assert_eq!(
        changes,
        vec![PteChange::Protect {
            range: range(22, 24),
            from: RO,
            to: RW
        }]
    );
    assert_eq!(layout(&space), vec![(20, 30, ANON, RW)]);
    // Merges with a neighbouring region that has the new protection.
    space.map(range(30, 32), ANON, RX).unwrap();
    space.mprotect(28 * P, 2 * P, RX).unwrap();
    assert_eq!(layout(&space), vec![(20, 28, ANON, RW), (28, 32, ANON, RX)]);
}

#[test]
fn mprotect_follows_linux_errors_and_changes_nothing_on_error() {
    let mut space = space();
    space.map(range(16, 20), Kind::Image, RX).unwrap();
    space.map(range(20, 24), ANON, RW).unwrap();
    space.map(range(26, 28), ANON, RW).unwrap();
    let before = layout(&space);
    assert_eq!(space.mprotect(20 * P, 0, RO), Ok(vec![]));
    assert_eq!(space.mprotect(20 * P + 8, P, RO), Err(errno::EINVAL));
    assert_eq!(space.mprotect(20 * P, 8 * P, RO), Err(errno::ENOMEM));
    assert_eq!(space.mprotect(26 * P, 3 * P, RO), Err(errno::ENOMEM));
    assert_eq!(space.mprotect(200 * P, P, RO), Err(errno::ENOMEM));
    assert_eq!(space.mprotect(20 * P, u64::MAX, RO), Err(errno::ENOMEM));
    assert_eq!(space.mprotect(16 * P, P, RO), Err(errno::EPERM));
    assert_eq!(space.mprotect(19 * P, 2 * P, RO), Err(errno::EPERM));
    assert_eq!(layout(&space), before);
}

#[test]
fn tlb_flush_only_when_permissions_shrink_or_pages_go() {
    let map = PteChange::Map {
        range: range(1, 2),
        prot: RW,
        kind: ANON,
    };
    let protect = |from, to| PteChange::Protect {
        range: range(1, 2),
        from,
        to,
    };
    assert!(!map.needs_tlb_flush());
    assert!(!protect(RO, RW).needs_tlb_flush());
    assert!(!protect(Prot::NONE, RO).needs_tlb_flush());
    assert!(protect(RW, RO).needs_tlb_flush());
    assert!(protect(RW, RX).needs_tlb_flush());
    assert!(protect(RO, Prot::NONE).needs_tlb_flush());
    assert!(PteChange::Unmap { range: range(1, 2) }.needs_tlb_flush());
}

#[test]
fn faults_are_explained() {
    let mut space = space();
    space.map(range(16, 20), Kind::Image, RX).unwrap();
    space.map(range(20, 24), ANON, RO).unwrap();
    space
        .map(
            range(32, 40),
            Kind::Stack {
                thread: 3,
                guard_pages: 1,
            },
            RW,
        )
        .unwrap();
    let fault = space.fault(32 * P + 0xff8, Access::Write);
    assert_eq!(fault.cause, FaultCause::StackGuard { thread: 3 });
    assert_eq!(
        format!("{fault}"),
        "write to 0x20ff8: address in the guard page of the stack of thread 3 (stack overflow)"
    );
    assert_eq!(
        space.fault(33 * P, Access::Write).cause,
        FaultCause::Spurious
    );
    assert_eq!(
        format!("{}", space.fault(24 * P, Access::Read)),
        "read of 0x18000: address not mapped"
    );
    assert_eq!(
        format!("{}", space.fault(20 * P + 4, Access::Write)),
        "write to 0x14004: anonymous memory is not writable (mapped r--)"
    );
    assert_eq!(
        format!("{}", space.fault(17 * P, Access::Write)),
        "write to 0x11000: the image is not writable (mapped r-x)"
    );
    assert_eq!(
        space.fault(21 * P, Access::Execute).cause,
        FaultCause::Denied {
            kind: ANON,
            prot: RO
        }
    );
    assert_eq!(space.fault(0, Access::Read).cause, FaultCause::Unmapped);
    assert_eq!(
        space.fault(u64::MAX, Access::Read).cause,
        FaultCause::Unmapped
    );
}

#[test]
fn lookup_finds_the_region_or_none() {
    let mut space = space();
    space.map(range(20, 24), ANON, RW).unwrap();
    assert_eq!(space.lookup(20 * P).unwrap().range, range(20, 24));
    assert_eq!(space.lookup(24 * P - 1).unwrap().range, range(20, 24));
    assert!(space.lookup(24 * P).is_none());
    assert!(space.lookup(20 * P - 1).is_none());
}
