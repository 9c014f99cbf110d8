//! Split virtqueues (virtio 1.2 §2.7): checking where the driver put a
//! queue, and parsing the descriptor chains it offers.
//!
//! [`QueueLayout`] is what the driver wrote to the transport's queue
//! registers; [`QueueLayout::build`] checks it (size a power of two within
//! the maximum, §2.7 alignment, every ring wholly inside guest RAM) and
//! turns it into rust-vmm's [`Queue`], which then walks the available ring,
//! fills the used ring and does the event-index arithmetic (§2.7.7,
//! §2.7.10).
//!
//! A descriptor chain is guest input, so it is parsed before anything acts
//! on it: [`parse_chain`] turns the descriptors `virtio-queue` yields into a
//! [`Chain`] of [`Segment`]s, each inside RAM, device-readable ones before
//! device-writable ones (§2.7.4.2), at most [`MAX_CHAIN_DESCRIPTORS`] of
//! them, ending in a descriptor without `NEXT`. `virtio-queue` stops a walk
//! after as many descriptors as the queue has (so a loop ends) or at a bad
//! index, and then yields nothing more; a chain whose last descriptor still
//! says `NEXT` was cut short that way and is refused. [`parse_chain`] is a
//! pure function of its descriptors and the RAM size, so it is also the
//! natural fuzz target. Payload bytes move through [`GuestRam`]'s
//! bounds-checked copies ([`Chain::read`], [`Chain::write`]).
//!
//! One gap: `virtio-queue` follows indirect descriptors (§2.7.5.3) although
//! no device here offers `VIRTIO_F_INDIRECT_DESC`; the descriptors of such
//! a table are checked like any other.

use std::fmt;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use crate::memory::{GuestRam, OutOfRange, RamLayout};

/// Most descriptors one chain may have (the largest queue size any device
/// here offers; it also bounds chains through indirect tables).
pub(crate) const MAX_CHAIN_DESCRIPTORS: usize = 256;

/// Sizes and alignment of the three areas (§2.7, "Virtqueue Alignment"
/// and §2.7.5, §2.7.6, §2.7.8): 16-byte descriptors; the available ring's
/// `flags`, `idx`, 2-byte entries and `used_event`; the used ring's `flags`,
/// `idx`, 8-byte entries and `avail_event`.
const DESCRIPTOR_BYTES: u64 = 16;
const DESCRIPTOR_TABLE_ALIGN: u64 = 16;
const DRIVER_AREA_ALIGN: u64 = 2;
const DEVICE_AREA_ALIGN: u64 = 4;

/// One of a queue's three areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    Descriptors,
    Driver,
    Device,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Area::Descriptors => "descriptor table",
            Area::Driver => "driver area (available ring)",
            Area::Device => "device area (used ring)",
        })
    }
}

/// A queue the driver configured badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    /// Zero, not a power of two, or above the maximum.
    #[error("guest set queue size {size}, not a power of two from 1 to {max}")]
    BadSize { size: u32, max: u16 },
    /// Misaligned area.
    #[error("guest put the {area} at {addr:#x}, not aligned to {align} bytes")]
    Misaligned { area: Area, addr: u64, align: u64 },
    /// Area not wholly inside guest RAM.
    #[error("guest put the {area} at {addr:#x}, outside its memory")]
    OutsideRam { area: Area, addr: u64 },
    /// `virtio-queue` takes an available ring at address 0 for one that was
    /// never configured, so it is refused.
    #[error("guest put the {} at address 0", Area::Driver)]
    DriverAreaAtZero,
}

/// Where the driver put a queue, as written to the transport's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct QueueLayout {
    /// `QueueNum`, as written.
    pub(crate) size: u32,
    /// `QueueDesc`.
    pub(crate) descriptor_table: u64,
    /// `QueueDriver`: the available ring.
    pub(crate) driver_area: u64,
    /// `QueueDevice`: the used ring.
    pub(crate) device_area: u64,
}

impl QueueLayout {
    /// Check the layout against `max_size` and `ram`, and build a ready
    /// queue from it.
    pub(crate) fn build(
        &self,
        max_size: u16,
        ram: &GuestRam,
        has_event_idx: bool,
    ) -> Result<Queue, QueueError> {
        let bad_size = QueueError::BadSize {
            size: self.size,
            max: max_size,
        };
        let size = u16::try_from(self.size).map_err(|_| bad_size)?;
        if size == 0 || !size.is_power_of_two() || size > max_size {
            return Err(bad_size);
        }
        let n = u64::from(size);
        let areas = [
            (
                Area::Descriptors,
                self.descriptor_table,
                DESCRIPTOR_TABLE_ALIGN,
                DESCRIPTOR_BYTES * n,
            ),
            (Area::Driver, self.driver_area, DRIVER_AREA_ALIGN, 6 + 2 * n),
            (Area::Device, self.device_area, DEVICE_AREA_ALIGN, 6 + 8 * n),
        ];
        for (area, addr, align, len) in areas {
            if !addr.is_multiple_of(align) {
                return Err(QueueError::Misaligned { area, addr, align });
            }
            ram.check(addr, len)
                .map_err(|_| QueueError::OutsideRam { area, addr })?;
        }
        if self.driver_area == 0 {
            return Err(QueueError::DriverAreaAtZero);
        }
        let mut queue = Queue::new(max_size).map_err(|_| bad_size)?;
        // Checked above, so these cannot fail; map any error all the same.
        queue.try_set_size(size).map_err(|_| bad_size)?;
        let misaligned = |area, addr, align| QueueError::Misaligned { area, addr, align };
        queue
            .try_set_desc_table_address(vm_memory::GuestAddress(self.descriptor_table))
            .map_err(|_| {
                misaligned(
                    Area::Descriptors,
                    self.descriptor_table,
                    DESCRIPTOR_TABLE_ALIGN,
                )
            })?;
        queue
            .try_set_avail_ring_address(vm_memory::GuestAddress(self.driver_area))
            .map_err(|_| misaligned(Area::Driver, self.driver_area, DRIVER_AREA_ALIGN))?;
        queue
            .try_set_used_ring_address(vm_memory::GuestAddress(self.device_area))
            .map_err(|_| misaligned(Area::Device, self.device_area, DEVICE_AREA_ALIGN))?;
        queue.set_event_idx(has_event_idx);
        queue.set_ready(true);
        Ok(queue)
    }
}

/// One buffer of a chain: `len` bytes at guest address `addr`, inside RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) addr: u64,
    pub(crate) len: u32,
}

/// A parsed descriptor chain: device-readable buffers, then device-writable
/// ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    segments: Vec<Segment>,
    readable_count: usize,
    readable_bytes: u64,
    writable_bytes: u64,
}

/// A chain the device refuses. Each is the guest's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    /// No descriptor could be read at all.
    #[error("guest offered an empty descriptor chain")]
    Empty,
    /// The last descriptor read still says `NEXT`.
    #[error(
        "guest offered a descriptor chain that does not end (a loop, a bad index, or more than {MAX_CHAIN_DESCRIPTORS} descriptors)"
    )]
    Unterminated,
    /// A buffer not wholly inside guest RAM.
    #[error("guest gave a buffer of {len} bytes at {addr:#x} outside its memory")]
    OutsideRam { addr: u64, len: u32 },
    /// A descriptor that points to an indirect table (not negotiated).
    #[error("guest used an indirect descriptor, which it did not negotiate")]
    Indirect,
    /// §2.7.4.2: readable descriptors must come first.
    #[error("guest put a device-readable buffer after a device-writable one")]
    ReadableAfterWritable,
    /// A device-writable buffer in a queue the device only reads from.
    #[error("guest gave a device-writable buffer where the device only reads")]
    UnexpectedWritable,
    /// A device-readable buffer in a queue the device only writes to.
    #[error("guest gave a device-readable buffer where the device only writes")]
    UnexpectedReadable,
    /// Buffers too small for anything the device would put there.
    #[error("guest gave buffers too small for the device")]
    TooSmall,
}

/// Parse the descriptors of one chain, in the order the walker yields
/// them, against guest RAM laid out as `ram`. Descriptors after the
/// first one without `NEXT` are not read.
pub(crate) fn parse_chain(
    descriptors: impl IntoIterator<Item = Descriptor>,
    ram: RamLayout,
) -> Result<Chain, ChainError> {
    let mut chain = Chain {
        segments: Vec::new(),
        readable_count: 0,
        readable_bytes: 0,
        writable_bytes: 0,
    };
    for descriptor in descriptors.into_iter().take(MAX_CHAIN_DESCRIPTORS) {
        if descriptor.refers_to_indirect_table() {
            return Err(ChainError::Indirect);
        }
        let segment = Segment {
            addr: descriptor.addr().0,
            len: descriptor.len(),
        };
        if !ram.contains(segment.addr, u64::from(segment.len)) {
            return Err(ChainError::OutsideRam {
                addr: segment.addr,
                len: segment.len,
            });
        }
        if descriptor.is_write_only() {
            chain.writable_bytes += u64::from(segment.len);
        } else if chain.has_writable() {
            return Err(ChainError::ReadableAfterWritable);
        } else {
            chain.readable_count += 1;
            chain.readable_bytes += u64::from(segment.len);
        }
        chain.segments.push(segment);
        if !descriptor.has_next() {
            return Ok(chain);
        }
    }
    Err(if chain.segments.is_empty() {
        ChainError::Empty
    } else {
        ChainError::Unterminated
    })
}

/// A chain the driver made available.
pub(crate) struct Offered {
    /// Its head index, to return it in the used ring whatever its fate.
    pub(crate) head: u16,
    /// The chain, parsed.
    pub(crate) chain: Result<Chain, ChainError>,
}

/// Take the next chain the driver made available and parse it (`Ok(None)`
/// when there is none). `Err` means the guest broke the available ring
/// itself (an index more than a ring ahead).
pub(crate) fn pop_chain(
    queue: &mut Queue,
    ram: &GuestRam,
) -> Result<Option<Offered>, virtio_queue::Error> {
    let mut available = queue.iter(ram.memory())?;
    Ok(available.next().map(|descriptors| Offered {
        head: descriptors.head_index(),
        chain: parse_chain(descriptors, ram.layout()),
    }))
}

/// Return the chain at `head` to the used ring with `len` bytes written.
/// A head index outside the descriptor table cannot go there: such a chain
/// (refused already, as [`ChainError::Empty`]) is dropped.
pub(crate) fn put_used(
    queue: &mut Queue,
    ram: &GuestRam,
    head: u16,
    len: u32,
) -> Result<(), virtio_queue::Error> {
    if head >= queue.size() {
        return Ok(());
    }
    queue.add_used(ram.memory(), head, len)
}

impl Chain {
    /// Total length of the device-readable buffers.
    pub(crate) fn readable_bytes(&self) -> u64 {
        self.readable_bytes
    }

    /// Total length of the device-writable buffers.
    pub(crate) fn writable_bytes(&self) -> u64 {
        self.writable_bytes
    }

    fn has_writable(&self) -> bool {
        self.segments.len() > self.readable_count
    }

    /// This chain, if it has no device-writable buffer.
    pub(crate) fn into_readable_only(self) -> Result<Self, ChainError> {
        if self.has_writable() {
            return Err(ChainError::UnexpectedWritable);
        }
        Ok(self)
    }

    /// This chain, if it has no device-readable buffer.
    pub(crate) fn into_writable_only(self) -> Result<Self, ChainError> {
        if self.readable_count > 0 {
            return Err(ChainError::UnexpectedReadable);
        }
        Ok(self)
    }

    /// Copy the device-readable bytes, in order, into `out` until it is
    /// full or they end. Returns how many bytes were copied.
    pub(crate) fn read(&self, ram: &GuestRam, out: &mut [u8]) -> Result<usize, OutOfRange> {
        copy_segments(
            &self.segments[..self.readable_count],
            out.len(),
            |at, seg| ram.read(seg.addr, &mut out[at..at + seg_len(seg)]),
        )
    }

    /// Copy `bytes`, in order, into the device-writable buffers until they
    /// are full or `bytes` ends. Returns how many bytes were copied.
    pub(crate) fn write(&self, ram: &GuestRam, bytes: &[u8]) -> Result<usize, OutOfRange> {
        copy_segments(
            &self.segments[self.readable_count..],
            bytes.len(),
            |at, seg| ram.write(seg.addr, &bytes[at..at + seg_len(seg)]),
        )
    }
}

fn seg_len(segment: &Segment) -> usize {
    usize::try_from(segment.len).unwrap_or(usize::MAX)
}

/// Walk `segments` over a host buffer of `total` bytes: `copy(offset,
/// piece)` for each piece, where `piece` is the segment cut to what is left.
fn copy_segments(
    segments: &[Segment],
    total: usize,
    mut copy: impl FnMut(usize, &Segment) -> Result<(), OutOfRange>,
) -> Result<usize, OutOfRange> {
    let mut done = 0;
    for segment in segments {
        let left = total - done;
        if left == 0 {
            break;
        }
        let len = seg_len(segment).min(left);
        let piece = Segment {
            addr: segment.addr,
            // `len` is at most `segment.len`, a u32.
            len: u32::try_from(len).unwrap_or(segment.len),
        };
        copy(done, &piece)?;
        done += len;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;

    use super::*;
    use crate::devices::testing::{NEXT, WRITE};
    const RAM_BYTES: u64 = 1 << 20;
    const RAM: RamLayout = RamLayout::new(RAM_BYTES);

    fn desc(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn a_chain_is_split_into_readable_and_writable_buffers() {
        let chain = parse_chain(
            [
                desc(0x1000, 12, NEXT),
                desc(0x2000, 100, NEXT),
                desc(0x3000, 50, WRITE),
            ],
            RAM,
        )
        .unwrap();
        assert_eq!(chain.readable_bytes(), 112);
        assert_eq!(chain.writable_bytes(), 50);
        assert_eq!(
            chain.clone().into_readable_only(),
            Err(ChainError::UnexpectedWritable)
        );
        assert_eq!(
            chain.into_writable_only(),
            Err(ChainError::UnexpectedReadable)
        );
        // Descriptors after the last one are never read.
        let chain = parse_chain([desc(0x1000, 1, 0), desc(u64::MAX, 9, 0)], RAM).unwrap();
        assert_eq!(chain.readable_bytes(), 1);
    }

    #[test]
    fn hostile_chains_are_refused() {
        let parse = |d: &[Descriptor]| parse_chain(d.iter().copied(), RAM);
        assert_eq!(parse(&[]), Err(ChainError::Empty));
        assert_eq!(
            parse(&[desc(RAM_BYTES - 4, 8, 0)]),
            Err(ChainError::OutsideRam {
                addr: RAM_BYTES - 4,
                len: 8
            })
        );
        assert_eq!(
            parse(&[desc(u64::MAX - 1, 4, 0)]),
            Err(ChainError::OutsideRam {
                addr: u64::MAX - 1,
                len: 4
            })
        );
        assert_eq!(
            parse(&[desc(0x1000, 8, WRITE | NEXT), desc(0x2000, 8, 0)]),
            Err(ChainError::ReadableAfterWritable)
        );
        // A zero-length writable buffer still counts as writable.
        assert_eq!(
            parse(&[desc(0x1000, 0, WRITE | NEXT), desc(0x2000, 8, 0)]),
            Err(ChainError::ReadableAfterWritable)
        );
        assert_eq!(
            parse(&[desc(0x1000, 16, VRING_DESC_F_INDIRECT as u16)]),
            Err(ChainError::Indirect)
        );
        // Cut short by the walker: the last descriptor still says NEXT.
        assert_eq!(
            parse(&[desc(0x1000, 8, NEXT)]),
            Err(ChainError::Unterminated)
        );
        // Above 4 GiB: inside the high range, never across the hole.
        let big = RamLayout::new(5 << 30);
        let high = parse_chain([desc(4 << 30, 4096, 0)], big).unwrap();
        assert_eq!(high.readable_bytes(), 4096);
        assert_eq!(
            parse_chain([desc((3 << 30) - 4, 8, 0)], big),
            Err(ChainError::OutsideRam {
                addr: (3 << 30) - 4,
                len: 8
            })
        );
        assert!(parse_chain([desc(3 << 30, 8, 0)], big).is_err());
        // An endless stream stops at the bound.
        let endless = std::iter::repeat(desc(0x1000, 8, NEXT));
        assert_eq!(parse_chain(endless, RAM), Err(ChainError::Unterminated));
    }

    #[test]
    fn bytes_are_gathered_and_scattered_across_buffers() {
        let ram = GuestRam::new(RAM_BYTES).unwrap();
        let chain = parse_chain(
            [
                desc(0x1000, 3, NEXT),
                desc(0x2000, 5, NEXT),
                desc(0x3000, 4, WRITE | NEXT),
                desc(0x4000, 4, WRITE),
            ],
            RAM,
        )
        .unwrap();
        ram.write(0x1000, b"abc").unwrap();
        ram.write(0x2000, b"defgh").unwrap();
        let mut out = [0u8; 10];
        assert_eq!(chain.read(&ram, &mut out).unwrap(), 8);
        assert_eq!(&out[..8], b"abcdefgh");
        let mut short = [0u8; 4];
        assert_eq!(chain.read(&ram, &mut short).unwrap(), 4);
        assert_eq!(&short, b"abcd");

        assert_eq!(chain.write(&ram, b"0123456789").unwrap(), 8);
        let mut back = [0u8; 4];
        ram.read(0x3000, &mut back).unwrap();
        assert_eq!(&back, b"0123");
        ram.read(0x4000, &mut back).unwrap();
        assert_eq!(&back, b"4567");
    }

    #[test]
    fn queue_layouts_are_checked_before_use() {
        let ram = GuestRam::new(RAM_BYTES).unwrap();
        let good = QueueLayout {
            size: 256,
            descriptor_table: 0x1000,
            driver_area: 0x2000,
            device_area: 0x3000,
        };
        let queue = good.build(256, &ram, true).unwrap();
        assert!(queue.ready());
        assert_eq!(queue.size(), 256);
        assert!(queue.event_idx_enabled());

        for size in [0, 3, 100, 512, 1 << 16, u32::MAX] {
            let layout = QueueLayout { size, ..good };
            assert!(
                matches!(
                    layout.build(256, &ram, false),
                    Err(QueueError::BadSize { .. })
                ),
                "{size}"
            );
        }
        let with = |f: fn(&mut QueueLayout)| {
            let mut layout = good;
            f(&mut layout);
            layout.build(256, &ram, false)
        };
        assert!(matches!(
            with(|l| l.descriptor_table = 0x1008),
            Err(QueueError::Misaligned {
                area: Area::Descriptors,
                ..
            })
        ));
        assert!(matches!(
            with(|l| l.driver_area = 0x2001),
            Err(QueueError::Misaligned {
                area: Area::Driver,
                ..
            })
        ));
        assert!(matches!(
            with(|l| l.device_area = 0x3002),
            Err(QueueError::Misaligned {
                area: Area::Device,
                ..
            })
        ));
        // The used ring of 256 entries needs 2054 bytes: it must not run
        // past the end of RAM.
        assert!(matches!(
            with(|l| l.device_area = RAM_BYTES - 2048),
            Err(QueueError::OutsideRam {
                area: Area::Device,
                ..
            })
        ));
        assert!(matches!(
            with(|l| l.descriptor_table = u64::MAX - 15),
            Err(QueueError::OutsideRam { .. })
        ));
        assert_eq!(
            with(|l| l.driver_area = 0),
            Err(QueueError::DriverAreaAtZero)
        );
    }
}
