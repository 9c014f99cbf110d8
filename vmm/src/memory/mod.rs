//! Guest RAM: one anonymous host mapping at guest-physical address 0.
//!
//! [`GuestRam`] is the only way the VMM touches guest memory. Every access
//! is a bounds-checked copy (`addr + len` against the RAM size, with
//! overflow checked) into or out of host-owned buffers; nothing holds a
//! Rust reference into memory the guest can change under it. The mapping
//! comes from rust-vmm's `vm-memory` (anonymous, `MAP_PRIVATE |
//! MAP_NORESERVE`), so the host commits no memory for pages the guest never
//! touches.
//!
//! [`ImageFile`] maps the image file read-only, so loading a large image
//! with debug information touches only the pages that are loaded.
//!
//! `unsafe` here: only mapping the image file ([`ImageFile::open`]).
//! Handing guest RAM's host address to KVM is `kvm/`'s business; this
//! module only reports it.

use std::path::Path;

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

/// Guest RAM: `[0, size_bytes)` in guest-physical addresses.
///
/// A clone shares the same mapping (vm-memory keeps its regions in `Arc`s),
/// so a device thread can hold one; the mapping lives until the last clone
/// is dropped.
#[derive(Clone)]
pub(crate) struct GuestRam {
    memory: GuestMemoryMmap,
    size_bytes: u64,
}

impl GuestRam {
    /// Map `size_bytes` of zeroed guest RAM.
    pub(crate) fn new(size_bytes: u64) -> Result<Self, MapError> {
        let len = usize::try_from(size_bytes).expect("memory size checked by VmConfig");
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)])
            .map_err(|source| MapError { size_bytes, source })?;
        Ok(Self { memory, size_bytes })
    }

    /// Size of guest RAM in bytes.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Host address of guest-physical address 0 (for KVM's memory slot).
    pub(crate) fn host_base(&self) -> u64 {
        let ptr = self
            .memory
            .get_host_address(GuestAddress(0))
            .expect("RAM starts at 0");
        ptr as u64
    }

    /// The vm-memory view of RAM, for rust-vmm's `virtio-queue`, which reads
    /// and writes the rings itself (bounds-checked copies and aligned atomic
    /// accesses through vm-memory, never references into the guest).
    pub(crate) fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Check that `[addr, addr + len)` lies inside RAM.
    pub(crate) fn check(&self, addr: u64, len: u64) -> Result<(), OutOfRange> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size_bytes => Ok(()),
            _ => Err(OutOfRange { addr, len }),
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

/// An image file mapped read-only into the VMM's address space.
pub(crate) struct ImageFile {
    map: memmap2::Mmap,
}

impl ImageFile {
    /// Map the file at `path`.
    #[allow(unsafe_code)]
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        // SAFETY: a private read-only mapping of a regular file. Another
        // process could change the file while it is mapped; the loader
        // treats the bytes as untrusted input anyway (every offset and
        // length checked), so changed bytes make at worst a bad image. A
        // truncation during loading would raise SIGBUS: we accept that for
        // a file the user asked us to boot, as every mmap-based loader does.
        let map = unsafe { memmap2::Mmap::map(&file)? };
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
}
