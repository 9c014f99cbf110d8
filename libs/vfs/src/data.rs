//! The contents of a regular file: sparse, in fixed-size chunks.
//!
//! A chunk is stored only once something was written into it, and only as
//! long as its last written byte, so a small file costs a few bytes, and
//! a hole (a range never written, e.g. after a seek past the end) costs
//! nothing and reads as zeros. The first chunk is kept outside the map:
//! most files are small, and a map's first node alone would cost a few
//! hundred bytes per file.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};

/// Bytes per chunk.
const CHUNK_BYTES: u64 = 16 << 10;

/// Largest file size (as for Linux's tmpfs on 64-bit: `MAX_LFS_FILESIZE`).
pub const MAX_FILE_BYTES: u64 = i64::MAX as u64;

#[derive(Debug, Default)]
pub(crate) struct FileData {
    /// Chunk 0's bytes (at most `CHUNK_BYTES`; bytes past the end of the
    /// vector are zero).
    first: Vec<u8>,
    /// Chunk index (from 1) → that chunk's bytes, as for `first`.
    chunks: BTreeMap<u64, Vec<u8>>,
    len_bytes: u64,
}

impl FileData {
    pub(crate) fn len(&self) -> u64 {
        self.len_bytes
    }

    /// Bytes of memory held for the contents.
    pub(crate) fn allocated_bytes(&self) -> u64 {
        self.first.len() as u64 + self.chunks.values().map(|c| c.len() as u64).sum::<u64>()
    }

    /// Chunks `first..=last` that hold bytes, with their indices.
    fn stored(&self, first: u64, last: u64) -> impl Iterator<Item = (u64, &Vec<u8>)> {
        let head = (first == 0).then_some((0, &self.first));
        let rest = self
            .chunks
            .range(first.max(1)..=last.max(1))
            .filter(move |(i, _)| **i <= last);
        head.into_iter().chain(rest.map(|(&i, c)| (i, c)))
    }

    fn chunk_mut(&mut self, index: u64) -> &mut Vec<u8> {
        if index == 0 {
            &mut self.first
        } else {
            self.chunks.entry(index).or_default()
        }
    }

    /// Copy the bytes at `offset` into `buf`; the count copied (0 at or
    /// past the end).
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        let end = self.len_bytes.min(offset.saturating_add(buf.len() as u64));
        if offset >= end {
            return 0;
        }
        let total = (end - offset) as usize;
        let out = &mut buf[..total];
        out.fill(0);
        let first = offset / CHUNK_BYTES;
        let last = (end - 1) / CHUNK_BYTES;
        for (index, chunk) in self.stored(first, last) {
            let chunk_start = index * CHUNK_BYTES;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + chunk.len() as u64);
            if from < to {
                let src = &chunk[(from - chunk_start) as usize..(to - chunk_start) as usize];
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            }
        }
        total
    }

    /// Whether writing `len_bytes` at `offset` only overwrites bytes that
    /// are already stored, so it allocates nothing.
    pub(crate) fn is_overwrite(&self, offset: u64, len_bytes: u64) -> bool {
        let Some(end) = offset.checked_add(len_bytes) else {
            return false;
        };
        let mut at = offset;
        while at < end {
            let index = at / CHUNK_BYTES;
            let chunk_end = end.min((index + 1) * CHUNK_BYTES);
            let need = (chunk_end - index * CHUNK_BYTES) as usize;
            let stored = if index == 0 {
                Some(&self.first)
            } else {
                self.chunks.get(&index)
            };
            if stored.is_none_or(|chunk| chunk.len() < need) {
                return false;
            }
            at = chunk_end;
        }
        true
    }

    /// Write `data` at `offset`, growing the file; `ENOSPC` when memory
    /// runs out (nothing is written then), `EFBIG` past the size limit.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_BYTES)
            .ok_or(errno::EFBIG)?;
        // Reserve every chunk first, so that running out of memory leaves
        // the file unchanged.
        let mut at = offset;
        while at < end {
            let index = at / CHUNK_BYTES;
            let chunk_end = end.min((index + 1) * CHUNK_BYTES);
            let need = (chunk_end - index * CHUNK_BYTES) as usize;
            let chunk = self.chunk_mut(index);
            if need > chunk.len() {
                // Grow geometrically within the chunk so appends stay cheap.
                let want = need.max(chunk.capacity() * 2).min(CHUNK_BYTES as usize);
                chunk
                    .try_reserve_exact(want.saturating_sub(chunk.len()))
                    .map_err(|_| errno::ENOSPC)?;
            }
            at = chunk_end;
        }
        let mut at = offset;
        while at < end {
            let index = at / CHUNK_BYTES;
            let chunk_start = index * CHUNK_BYTES;
            let chunk_end = end.min(chunk_start + CHUNK_BYTES);
            let chunk = self.chunk_mut(index);
            let (from, to) = (
                (at - chunk_start) as usize,
                (chunk_end - chunk_start) as usize,
            );
            if chunk.len() < to {
                chunk.resize(to, 0);
            }
            chunk[from..to]
                .copy_from_slice(&data[(at - offset) as usize..(chunk_end - offset) as usize]);
            at = chunk_end;
        }
        self.len_bytes = self.len_bytes.max(end);
        Ok(data.len())
    }

    /// Set the length; bytes past a shrunk end are dropped, so growing it
    /// again reads zeros there.
    pub(crate) fn set_len(&mut self, len_bytes: u64) -> Result<(), Errno> {
        if len_bytes > MAX_FILE_BYTES {
            return Err(errno::EFBIG);
        }
        if len_bytes < self.len_bytes {
            let keep = len_bytes.div_ceil(CHUNK_BYTES);
            drop(self.chunks.split_off(&keep.max(1)));
            if keep == 0 {
                self.first = Vec::new();
            }
            let tail = (len_bytes % CHUNK_BYTES) as usize;
            if tail != 0 {
                let index = len_bytes / CHUNK_BYTES;
                if index == 0 {
                    self.first.truncate(tail);
                } else if let Some(last) = self.chunks.get_mut(&index) {
                    last.truncate(tail);
                }
            }
        }
        self.len_bytes = len_bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_read_as_zeros_and_cost_nothing() {
        let mut f = FileData::default();
        f.write(3 * CHUNK_BYTES + 5, b"xyz").unwrap();
        assert_eq!(f.len(), 3 * CHUNK_BYTES + 8);
        assert_eq!(f.allocated_bytes(), 8);
        let mut buf = [1u8; 10];
        assert_eq!(f.read(3 * CHUNK_BYTES, &mut buf), 8);
        assert_eq!(&buf[..8], b"\0\0\0\0\0xyz");
        let mut buf = [1u8; 4];
        assert_eq!(f.read(100, &mut buf), 4);
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn writes_across_chunk_boundaries_read_back() {
        let mut f = FileData::default();
        let data: Vec<u8> = (0..3 * CHUNK_BYTES as usize + 17)
            .map(|i| i as u8)
            .collect();
        f.write(CHUNK_BYTES - 3, &data).unwrap();
        let mut back = alloc::vec![0u8; data.len()];
        assert_eq!(f.read(CHUNK_BYTES - 3, &mut back), data.len());
        assert_eq!(back, data);
    }

    #[test]
    fn truncate_then_grow_reads_zeros() {
        let mut f = FileData::default();
        f.write(0, &[7u8; 40000]).unwrap();
        f.set_len(10).unwrap();
        f.set_len(30000).unwrap();
        let mut buf = [9u8; 30000];
        assert_eq!(f.read(0, &mut buf), 30000);
        assert!(buf[..10].iter().all(|&b| b == 7));
        assert!(buf[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn only_writes_over_stored_bytes_are_overwrites() {
        let mut f = FileData::default();
        f.write(0, &[1; 100]).unwrap();
        f.write(3 * CHUNK_BYTES, b"x").unwrap();
        assert!(f.is_overwrite(10, 90));
        assert!(!f.is_overwrite(10, 91));
        assert!(!f.is_overwrite(CHUNK_BYTES, 1), "a hole");
        assert!(f.is_overwrite(3 * CHUNK_BYTES, 1));
        assert!(f.is_overwrite(5, 0));
    }

    #[test]
    fn size_limit_is_efbig() {
        let mut f = FileData::default();
        assert_eq!(f.write(MAX_FILE_BYTES, b"x"), Err(errno::EFBIG));
        assert_eq!(f.write(u64::MAX, b"x"), Err(errno::EFBIG));
        assert_eq!(f.set_len(MAX_FILE_BYTES + 1), Err(errno::EFBIG));
    }
}
