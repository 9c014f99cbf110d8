//! Guest RAM: anonymous host mappings at guest-physical address 0 and, for
//! more than [`LOW_RAM_END`] bytes, at [`HIGH_RAM_START`] ([`RamLayout`]).
//!
//! [`GuestRam`] is the only way the VMM touches guest memory. Every access
//! is a bounds-checked copy (`addr + len` inside one of the RAM ranges,
//! with overflow checked) into or out of host-owned buffers; nothing holds a
//! Rust reference into memory the guest can change under it. The mapping
//! comes from rust-vmm's `vm-memory` (anonymous, `MAP_PRIVATE |
//! MAP_NORESERVE`), so the host commits no memory for pages the guest never
//! touches.
//!
//! [`ImageFile`] maps the image file read-only, so loading a large image
//! with debug information touches only the pages that are loaded.
//!
//! A snapshot's RAM ([`GuestRam::from_snapshot`]) is its memory file mapped
//! copy-on-write (`MAP_PRIVATE`): a restored guest reads pages from the
//! file as it touches them, and its writes never reach the file.
//!
//! `unsafe` here: mapping the image file ([`ImageFile::open`]), asking the
//! host which pages of guest RAM it backs ([`GuestRam::resident_pages`]),
//! and `madvise` ([`GuestRam::populate`]).
//! Handing guest RAM's host address to KVM is `kvm/`'s business; this
//! module only reports it.

use std::ops::Range;
use std::path::Path;

use eremite_interface::layout::{HIGH_RAM_START, LOW_RAM_END};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A guest access outside RAM: the guest's (or the loader's) fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at guest address {addr:#x} are outside guest memory")]
pub struct OutOfRange {
    /// Guest-physical start of the access.
    pub addr: u64,
    /// Length of the access in bytes.
    pub len: u64,
}

/// The host could not map guest memory.
#[derive(Debug, thiserror::Error)]
#[error("cannot map {size_bytes} bytes of guest memory: {source}")]
pub struct MapError {
    size_bytes: u64,
    source: vm_memory::mmap::FromRangesError,
}

/// Where `total_bytes` of guest RAM lie in guest-physical memory: the
/// first [`LOW_RAM_END`] bytes (3 GiB) from 0, the rest from
/// [`HIGH_RAM_START`] (4 GiB) up, so that the hole between holds the
/// device windows and the local APIC (see `eremite_interface::layout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RamLayout {
    total_bytes: u64,
}

impl RamLayout {
    /// The layout of `total_bytes` of RAM.
    pub(crate) const fn new(total_bytes: u64) -> Self {
        Self { total_bytes }
    }

    /// All RAM, in bytes.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// End of the RAM below the hole: `[0, low_end)` is RAM.
    pub(crate) fn low_end(&self) -> u64 {
        self.total_bytes.min(LOW_RAM_END)
    }

    /// The RAM ranges, ascending, none empty (one or two).
    pub(crate) fn ranges(&self) -> impl Iterator<Item = Range<u64>> + use<> {
        let high_bytes = self.total_bytes.saturating_sub(LOW_RAM_END);
        [
            0..self.low_end(),
            HIGH_RAM_START..HIGH_RAM_START + high_bytes,
        ]
        .into_iter()
        .filter(|range| !range.is_empty())
    }

    /// Whether `[addr, addr + len)` lies wholly inside one RAM range
    /// (overflow checked; an empty access must still start inside RAM or
    /// at a range's end).
    pub(crate) fn contains(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some_and(|end| {
            self.ranges()
                .any(|range| addr >= range.start && end <= range.end)
        })
    }
}

/// Guest RAM, laid out as [`RamLayout`] says, in guest-physical addresses.
///
/// A clone shares the same mappings (vm-memory keeps its regions in
/// `Arc`s), so a device thread can hold one; the mappings live until the
/// last clone is dropped.
#[derive(Clone)]
pub(crate) struct GuestRam {
    memory: GuestMemoryMmap,
    layout: RamLayout,
}

/// One RAM range as KVM needs it for a memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostRegion {
    /// Guest-physical start.
    pub(crate) guest_addr: u64,
    /// Length in bytes.
    pub(crate) len: u64,
    /// Host address of `guest_addr`.
    pub(crate) host_addr: u64,
}

impl GuestRam {
    /// Map `size_bytes` of zeroed guest RAM (a separate host mapping per
    /// range, each `MAP_NORESERVE`).
    pub(crate) fn new(size_bytes: u64) -> Result<Self, MapError> {
        let layout = RamLayout::new(size_bytes);
        let ranges: Vec<(GuestAddress, usize)> = layout
            .ranges()
            .map(|range| {
                let len = usize::try_from(range.end - range.start)
                    .expect("memory size checked by VmConfig");
                (GuestAddress(range.start), len)
            })
            .collect();
        let memory = GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|source| MapError { size_bytes, source })?;
        Ok(Self { memory, layout })
    }

    /// `size_bytes` of guest RAM laid out as [`GuestRam::new`] lays it out,
    /// each range mapped copy-on-write from `file` at the offset of its
    /// guest address (a snapshot's memory file, which must be long enough:
    /// the caller checks).
    pub(crate) fn from_snapshot(size_bytes: u64, file: &std::fs::File) -> Result<Self, MapError> {
        use vm_memory::{FileOffset, GuestRegionMmap, MmapRegion};
        let layout = RamLayout::new(size_bytes);
        let regions = layout
            .ranges()
            .map(|range| {
                let len = usize::try_from(range.end - range.start)
                    .expect("memory size checked by VmConfig");
                let file = file
                    .try_clone()
                    .map_err(vm_memory::mmap::MmapRegionError::Mmap)?;
                let mapping = MmapRegion::build(
                    Some(FileOffset::new(file, range.start)),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                )?;
                Ok(GuestRegionMmap::new(mapping, GuestAddress(range.start))
                    .expect("ranges end below 2^64"))
            })
            .collect::<Result<Vec<_>, vm_memory::mmap::MmapRegionError>>()
            .map_err(|e| MapError {
                size_bytes,
                source: vm_memory::mmap::FromRangesError::MmapRegion(e),
            })?;
        let memory = GuestMemoryMmap::from_regions(regions).map_err(|e| MapError {
            size_bytes,
            source: e.into(),
        })?;
        Ok(Self { memory, layout })
    }

    /// Which pages of `[addr, addr + len)` (inside one RAM range, whole
    /// pages) the host backs: touched by the guest since the mapping was
    /// made, or (for a snapshot's RAM) in the host's page cache. Pages it
    /// does not back read as zero.
    #[allow(unsafe_code)]
    pub(crate) fn resident_pages(&self, addr: u64, len: u64) -> std::io::Result<Vec<bool>> {
        const PAGE: u64 = eremite_interface::layout::PAGE_SIZE;
        if !addr.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let host = self
            .host_ptr(addr, len)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let pages = usize::try_from(len / PAGE).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let mut vec = vec![0u8; pages];
        // SAFETY: `[host, host + len)` is inside one of our guest-RAM
        // mappings (checked by `host_ptr`), page-aligned (guest RAM ranges
        // start on pages and `addr` is a page's); `mincore` only reports
        // residency into `vec`, which has one byte per page of the range,
        // and touches no page.
        let rc = unsafe { libc::mincore(host.cast(), len as usize, vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(vec.into_iter().map(|v| v & 1 != 0).collect())
    }

    /// Where the RAM lies.
    pub(crate) fn layout(&self) -> RamLayout {
        self.layout
    }

    /// End of the RAM below the hole (see [`RamLayout::low_end`]).
    pub(crate) fn low_end(&self) -> u64 {
        self.layout.low_end()
    }

    /// Each RAM range with its host address (for KVM's memory slots).
    pub(crate) fn host_regions(&self) -> Vec<HostRegion> {
        self.layout
            .ranges()
            .map(|range| {
                let ptr = self
                    .memory
                    .get_host_address(GuestAddress(range.start))
                    .expect("each range is mapped");
                HostRegion {
                    guest_addr: range.start,
                    len: range.end - range.start,
                    host_addr: ptr as u64,
                }
            })
            .collect()
    }

    /// The host address of guest RAM `[addr, addr + len)`, if it lies in
    /// one range.
    pub(crate) fn host_ptr(&self, addr: u64, len: u64) -> Option<*mut u8> {
        self.check(addr, len).ok()?;
        let ptr = self.memory.get_host_address(GuestAddress(addr)).ok()?;
        // One range must hold all of it (each range is one host mapping).
        let region = self
            .host_regions()
            .into_iter()
            .find(|r| (r.guest_addr..r.guest_addr + r.len).contains(&addr))?;
        (addr + len <= region.guest_addr + region.len).then_some(ptr)
    }

    /// The vm-memory view of RAM, for rust-vmm's `virtio-queue`, which reads
    /// and writes the rings itself (bounds-checked copies and aligned atomic
    /// accesses through vm-memory, never references into the guest).
    pub(crate) fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Back `[addr, addr + len)` (inside one RAM range) with host memory
    /// now (`madvise(MADV_POPULATE_WRITE)`), so the guest's first touches
    /// of it take no host page fault. Contents do not change.
    #[allow(unsafe_code)]
    pub(crate) fn populate(&self, addr: u64, len: u64) -> std::io::Result<()> {
        self.check(addr, len)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let host = self
            .memory
            .get_host_address(GuestAddress(addr))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: `[host, host + len)` is inside one of our own anonymous
        // guest-RAM mappings (the range lies inside one RAM range, checked,
        // and each range is one mapping); MADV_POPULATE_WRITE only faults
        // its pages in, as a write would, without changing their contents
        // (madvise(2)), so no Rust-visible memory changes.
        let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_POPULATE_WRITE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Check that `[addr, addr + len)` lies inside one RAM range.
    pub(crate) fn check(&self, addr: u64, len: u64) -> Result<(), OutOfRange> {
        if self.layout.contains(addr, len) {
            Ok(())
        } else {
            Err(OutOfRange { addr, len })
        }
    }

    /// Copy guest bytes at `addr` into `buf`.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let len = buf.len() as u64;
        self.check(addr, len)?;
        self.memory
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| OutOfRange { addr, len })
    }

    /// Copy `bytes` into guest memory at `addr`.
    pub(crate) fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let len = bytes.len() as u64;
        self.check(addr, len)?;
        self.memory
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|_| OutOfRange { addr, len })
    }

    /// Read a plain-data value (a copy, never a reference into the guest).
    pub(crate) fn read_obj<T: FromBytes + IntoBytes>(&self, addr: u64) -> Result<T, OutOfRange> {
        let mut value = T::new_zeroed();
        self.read(addr, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Write a plain-data value.
    pub(crate) fn write_obj<T: IntoBytes + Immutable>(
        &self,
        addr: u64,
        value: &T,
    ) -> Result<(), OutOfRange> {
        self.write(addr, value.as_bytes())
    }
}

/// Open `path` for reading if it is a regular file, and never wait: a
/// FIFO's open would block until a writer comes, so the file is opened
/// non-blocking and checked through the descriptor (no window for the
/// path to change in between).
pub(crate) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// An image file mapped read-only into the VMM's address space.
pub(crate) struct ImageFile {
    map: std::sync::Arc<memmap2::Mmap>,
}

/// The file an image's mapping was made from: the same path, and a file
/// that has not changed since (same inode, size and modification time).
#[derive(Clone, PartialEq, Eq)]
struct ImageKey {
    path: std::path::PathBuf,
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

/// The last image mapped. One `eremite run` asks about its image several
/// times before it loads it (is it a test harness, how much memory does
/// it want); each asks through [`ImageFile::open`], which maps the file
/// once and hands out that mapping while the file is unchanged.
static LAST_IMAGE: std::sync::Mutex<Option<(ImageKey, std::sync::Arc<memmap2::Mmap>)>> =
    std::sync::Mutex::new(None);

impl ImageFile {
    /// Map the file at `path` (or reuse the mapping of the same, unchanged
    /// file).
    #[allow(unsafe_code)]
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let file = open_regular(path)?;
        let metadata = file.metadata()?;
        let key = ImageKey {
            path: path.to_owned(),
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        };
        let mut last = LAST_IMAGE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached, map)) = last.as_ref()
            && *cached == key
        {
            return Ok(Self { map: map.clone() });
        }
        // SAFETY: a private read-only mapping of a regular file. Another
        // process could change the file while it is mapped; the loader
        // treats the bytes as untrusted input anyway (every offset and
        // length checked), so changed bytes make at worst a bad image. A
        // truncation during loading would raise SIGBUS: we accept that for
        // a file the user asked us to boot, as every mmap-based loader does.
        let map = std::sync::Arc::new(unsafe { memmap2::Mmap::map(&file)? });
        *last = Some((key, map.clone()));
        Ok(Self { map })
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_memory_is_zero_and_round_trips() {
        let ram = GuestRam::new(1 << 20).unwrap();
        assert_eq!(ram.read_obj::<u64>(0x1000).unwrap(), 0);
        ram.write_obj(0x1000, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(ram.read_obj::<u64>(0x1000).unwrap(), 0x1122_3344_5566_7788);
    }

    #[test]
    fn accesses_past_the_end_or_overflowing_are_refused() {
        let ram = GuestRam::new(1 << 20).unwrap();
        assert!(ram.write(0xf_fffc, &[0; 4]).is_ok());
        assert_eq!(
            ram.write(0xf_fffd, &[0; 4]),
            Err(OutOfRange {
                addr: 0xf_fffd,
                len: 4
            })
        );
        assert!(ram.check(u64::MAX - 1, 4).is_err());
        let mut buf = [0u8; 8];
        assert!(ram.read(1 << 20, &mut buf).is_err());
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn ram_beyond_3_gib_continues_at_4_gib() {
        let only = |total: u64| {
            let ranges: Vec<_> = RamLayout::new(total).ranges().collect();
            assert_eq!(ranges.len(), 1);
            ranges[0].clone()
        };
        assert_eq!(only(64 << 20), 0..64 << 20);
        assert_eq!(only(3 * GIB), 0..3 * GIB);
        let layout = RamLayout::new(8 * GIB);
        assert_eq!(
            layout.ranges().collect::<Vec<_>>(),
            [0..3 * GIB, 4 * GIB..9 * GIB]
        );
        assert_eq!(layout.low_end(), 3 * GIB);
        assert!(layout.contains(3 * GIB - 8, 8));
        assert!(!layout.contains(3 * GIB - 8, 9), "into the hole");
        assert!(!layout.contains(3 * GIB, 1));
        assert!(!layout.contains(4 * GIB - 1, 2), "from the hole");
        assert!(layout.contains(4 * GIB, 5 * GIB));
        assert!(!layout.contains(4 * GIB, 5 * GIB + 1));
        assert!(!layout.contains(2 * GIB, 3 * GIB), "across the hole");
        assert!(!layout.contains(u64::MAX, 2));
    }

    #[test]
    fn ram_above_4_gib_is_read_and_written_and_bounded() {
        let ram = GuestRam::new(4 * GIB + (2 << 20)).unwrap();
        let regions = ram.host_regions();
        assert_eq!(regions.len(), 2);
        assert_eq!(
            (regions[1].guest_addr, regions[1].len),
            (4 * GIB, GIB + (2 << 20))
        );
        let top = 5 * GIB + (2 << 20);
        ram.write_obj(top - 8, &7u64).unwrap();
        assert_eq!(ram.read_obj::<u64>(top - 8).unwrap(), 7);
        ram.write_obj(4 * GIB, &9u64).unwrap();
        assert_eq!(ram.read_obj::<u64>(4 * GIB).unwrap(), 9);
        assert_eq!(ram.read_obj::<u64>(3 * GIB - 8).unwrap(), 0);
        assert!(ram.read_obj::<u64>(top - 4).is_err());
        assert!(ram.write(3 * GIB, &[1]).is_err());
        assert!(ram.write(3 * GIB - 4, &[1; 8]).is_err());
    }
}
