//! Snapshots of a running VM (`eremite vm SOCKET snapshot DIR`) and
//! restoring them (`eremite restore DIR`); `docs/snapshots.md` is the
//! user's view.
//!
//! A snapshot is a directory of two files:
//! - `memory`: guest RAM at the offsets of its guest-physical addresses, a
//!   sparse file: only pages the guest touched and that hold something
//!   other than zeros are written ([`write_memory`]); the rest are holes.
//!   A restore maps it copy-on-write and lazily (`GuestRam::from_snapshot`).
//! - `state`: one line `eremite-snapshot FORMAT sha256=HEX` and then JSON
//!   ([`State`]): the versions, the host CPU features the guest saw (as a
//!   hash), the VM's configuration, where the guest's clocks stood, and
//!   every vCPU's state. The hash covers the JSON: a truncated or edited
//!   state is refused before anything is restored, as is a snapshot of
//!   another format or interface version or from a host whose CPU
//!   features differ ([`State::parse`], [`State::check_host`]).
//!
//! The VMM never opens snapshot files itself: confined, it could not. The
//! client (`eremite vm`) creates them and passes their descriptors over
//! the control socket; `eremite restore` opens them before it confines
//! the VMM.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eremite_interface::layout::PAGE_SIZE;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::arch::cpu_state::CpuState;
use crate::kvm::control::CpuAtPause;
use crate::memory::{GuestRam, RamLayout};

/// The format of the `state` file; a snapshot of another is refused.
pub const FORMAT: u32 = 1;

/// The first word of the `state` file.
const MAGIC: &str = "eremite-snapshot";

/// The largest `state` file read (its vCPUs' state is a few dozen KiB
/// each).
const MAX_STATE_BYTES: u64 = 16 << 20;

/// One vCPU in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SavedCpu {
    /// It waited for the guest to start it.
    Waiting,
    /// It ran: its state.
    Running(Arc<CpuState>),
}

/// The `state` file's contents.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct State {
    /// `eremite_interface::INTERFACE_VERSION` of the VMM that wrote it: the
    /// guest's kernel speaks it.
    pub(crate) interface_version: u32,
    /// The VMM's version, for messages.
    pub(crate) eremite_version: String,
    /// SHA-256 of the CPUID the vCPUs had (`cpu_features`).
    pub(crate) cpu_features: String,
    pub(crate) tsc_khz: u64,
    /// The guest's TSC less its `stopped_ticks` at the pause
    /// (`PausedClock::frozen_ticks`).
    pub(crate) frozen_ticks: u64,
    pub(crate) memory_bytes: u64,
    /// The length of the `memory` file (the end of the last RAM range).
    pub(crate) memory_file_bytes: u64,
    pub(crate) image: PathBuf,
    pub(crate) is_verbose: bool,
    /// Its mounts, reopened at restore.
    pub(crate) mounts: Vec<crate::MountSpec>,
    pub(crate) cpus: Vec<SavedCpu>,
    /// Its network cards (a restore attaches each to the link it is given).
    #[serde(default)]
    pub(crate) cards: Vec<crate::devices::SavedCard>,
    /// A `--diff` snapshot: what it is a difference from.
    #[serde(default)]
    pub(crate) diff: Option<Diff>,
    /// The files the guest had open on its mounts (opened again at
    /// restore).
    #[serde(default)]
    pub(crate) host_files: crate::sandbox::SavedFiles,
}

/// What a `--diff` snapshot adds to the one before it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Diff {
    /// SHA-256 of the previous snapshot's state file (its identity).
    pub(crate) parent: String,
    /// The runs of pages (first guest address, pages) its memory file
    /// holds; every other page is the previous snapshot's.
    pub(crate) changed: Vec<(u64, u64)>,
}

/// A snapshot that cannot be taken or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot write the snapshot: {0}")]
    Write(std::io::Error),
    #[error("not an eremite snapshot (its state file does not start with \"{MAGIC}\")")]
    NotASnapshot,
    #[error("the snapshot is of format {found}; this eremite reads format {FORMAT}")]
    Format { found: String },
    #[error("the snapshot's state file is damaged: {0}")]
    Damaged(String),
    #[error(
        "the snapshot was taken by eremite {version} (interface {found}); this one speaks interface {expected}"
    )]
    Version {
        version: String,
        found: u32,
        expected: u32,
    },
    #[error(
        "the snapshot was taken on a host with other CPU features; it can only be restored on a host like it"
    )]
    CpuFeatures,
    #[error("the snapshot's TSC runs at {saved} kHz, this host's at {here} kHz")]
    TscFrequency { saved: u64, here: u64 },
    #[error(
        "the snapshot's memory file is {found} bytes, not {expected}: it is truncated or not this snapshot's"
    )]
    MemorySize { found: u64, expected: u64 },
    #[error("the VM cannot be snapshotted: {0}")]
    Unsupported(String),
}

/// SHA-256 of the CPUID entries the vCPUs get, as hex, without what
/// names the host CPU that asked (`arch::cpu_state::feature_words`).
pub(crate) fn cpu_features(cpuid: &kvm_bindings::CpuId) -> String {
    let mut hash = Sha256::new();
    for word in crate::arch::cpu_state::feature_words(cpuid) {
        hash.update(word.to_le_bytes());
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl State {
    /// The vCPUs as the machine restores them.
    pub(crate) fn take_cpus(&mut self) -> Vec<CpuAtPause> {
        std::mem::take(&mut self.cpus)
            .into_iter()
            .map(|cpu| match cpu {
                SavedCpu::Waiting => CpuAtPause::Waiting,
                SavedCpu::Running(state) => CpuAtPause::Parked(state),
            })
            .collect()
    }

    /// The `state` file's bytes.
    pub(crate) fn to_file_bytes(&self) -> Vec<u8> {
        with_header(&serde_json::to_vec(self).expect("the state serialises"))
    }

    /// Parse a `state` file: its header, its hash, its JSON, and the
    /// interface version (the host's fit is [`State::check_host`]'s).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(SnapshotError::NotASnapshot)?;
        let header =
            std::str::from_utf8(&bytes[..newline]).map_err(|_| SnapshotError::NotASnapshot)?;
        let mut words = header.split(' ');
        if words.next() != Some(MAGIC) {
            return Err(SnapshotError::NotASnapshot);
        }
        let format = words.next().unwrap_or("");
        if format != FORMAT.to_string() {
            return Err(SnapshotError::Format {
                found: format.chars().take(20).collect(),
            });
        }
        let hash = words
            .next()
            .and_then(|w| w.strip_prefix("sha256="))
            .ok_or_else(|| SnapshotError::Damaged("no hash in its first line".into()))?;
        let body = &bytes[newline + 1..];
        if hex(&Sha256::digest(body)) != hash {
            return Err(SnapshotError::Damaged(
                "its contents do not match its hash (truncated or edited)".into(),
            ));
        }
        let state: State =
            serde_json::from_slice(body).map_err(|e| SnapshotError::Damaged(e.to_string()))?;
        if state.interface_version != eremite_interface::INTERFACE_VERSION {
            return Err(SnapshotError::Version {
                version: state.eremite_version.chars().take(40).collect(),
                found: state.interface_version,
                expected: eremite_interface::INTERFACE_VERSION,
            });
        }
        if state.cpus.is_empty() || state.cpus.len() > eremite_interface::layout::MAX_CPUS as usize
        {
            return Err(SnapshotError::Damaged(format!(
                "{} vCPUs",
                state.cpus.len()
            )));
        }
        if !matches!(state.cpus[0], SavedCpu::Running(_)) {
            return Err(SnapshotError::Damaged(
                "its boot vCPU is not running".into(),
            ));
        }
        // The memory file is mapped as the RAM's layout says: it must be as
        // long as that layout, or a guest access past its end would fault
        // in the host.
        crate::size::check_memory_size(state.memory_bytes)
            .map_err(|e| SnapshotError::Damaged(e.to_string()))?;
        let layout_end = layout_end(RamLayout::new(state.memory_bytes));
        if state.memory_file_bytes != layout_end {
            return Err(SnapshotError::Damaged(format!(
                "a memory file of {} bytes for {} bytes of RAM",
                state.memory_file_bytes, state.memory_bytes
            )));
        }
        Ok(state)
    }

    /// Refuse a host unlike the snapshot's: other CPU features (`here`,
    /// from [`cpu_features`]) or another TSC frequency.
    pub(crate) fn check_host(&self, here: &str, tsc_khz: u64) -> Result<(), SnapshotError> {
        if self.cpu_features != here {
            return Err(SnapshotError::CpuFeatures);
        }
        if self.tsc_khz != tsc_khz {
            return Err(SnapshotError::TscFrequency {
                saved: self.tsc_khz,
                here: tsc_khz,
            });
        }
        Ok(())
    }
}

/// A `state` file of `body`: the header line, with `body`'s hash, then
/// `body`.
pub(crate) fn with_header(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{MAGIC} {FORMAT} sha256={}\n", hex(&Sha256::digest(body))).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Read a snapshot's `state` file (at most [`MAX_STATE_BYTES`]), with its
/// identity (`state_id`).
pub(crate) fn read_state(file: &File) -> Result<(State, String), SnapshotError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SnapshotError::Damaged(e.to_string()))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(SnapshotError::Damaged("larger than any snapshot's".into()));
    }
    Ok((State::parse(&bytes)?, state_id(&bytes)))
}

/// A snapshot's identity: the SHA-256 of its state file, as hex (a `--diff`
/// snapshot names its parent so).
pub(crate) fn state_id(state_file: &[u8]) -> String {
    hex(&Sha256::digest(state_file))
}

/// Create (or empty) `dir`'s `state` and `memory` files for a snapshot to
/// be written into later.
pub fn create_files(dir: &Path) -> Result<(File, File), SnapshotError> {
    std::fs::create_dir_all(dir).map_err(SnapshotError::Write)?;
    let create = |name: &str| {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .map_err(SnapshotError::Write)
    };
    Ok((create("state")?, create("memory")?))
}

/// The length of a memory file for `ram`: the end of its last range.
pub(crate) fn memory_file_bytes(ram: &GuestRam) -> u64 {
    layout_end(ram.layout())
}

fn layout_end(layout: RamLayout) -> u64 {
    layout.ranges().map(|r| r.end).max().unwrap_or(0)
}

/// Write the pages gathered in `run` at `start` of `file`, if any.
fn flush(file: &File, run: &mut Vec<u8>, start: u64, written: &mut u64) -> std::io::Result<()> {
    if !run.is_empty() {
        file.write_all_at(run, start)?;
        *written += run.len() as u64;
        run.clear();
    }
    Ok(())
}

/// A hash of each page of guest RAM that held data (backed by the host
/// and not all zeros) when a snapshot was written, by guest address: what
/// the next `--diff` snapshot compares with.
pub(crate) type PageHashes = HashMap<u64, u64>;

/// What [`write_memory`] wrote.
pub(crate) struct Written {
    /// Bytes of memory written.
    pub(crate) bytes: u64,
    /// The pages with data now.
    pub(crate) hashes: PageHashes,
    /// With a previous snapshot: the runs of pages (first address, pages)
    /// that differ from it, all written (zeros too).
    pub(crate) changed: Vec<(u64, u64)>,
}

fn page_hash(page: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher as _};
    let mut hasher = DefaultHasher::new();
    hasher.write(page);
    hasher.finish()
}

/// Write guest RAM into `file` at its guest addresses and make the file
/// [`memory_file_bytes`] long. Without `previous`: every page the host
/// backs that is not all zeros (the rest are holes). With `previous` (a
/// `--diff` snapshot): only the pages whose contents differ from what
/// `previous` recorded, zeros included (a hole then means "unchanged").
/// No vCPU or device may change RAM meanwhile.
pub(crate) fn write_memory(
    ram: &GuestRam,
    file: &File,
    previous: Option<&PageHashes>,
) -> std::io::Result<Written> {
    /// Residency is asked for this much at a time.
    const CHUNK: u64 = 2 << 20;
    file.set_len(0)?;
    let mut written = Written {
        bytes: 0,
        hashes: HashMap::new(),
        changed: Vec::new(),
    };
    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0u64;
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for range in ram.layout().ranges() {
        let mut chunk = range.start;
        while chunk < range.end {
            let len = CHUNK.min(range.end - chunk);
            let resident = ram.resident_pages(chunk, len)?;
            for (i, is_resident) in (0u64..).zip(resident) {
                let addr = chunk + i * PAGE_SIZE;
                // A page the host does not back reads as zeros: neither
                // read nor hashed.
                let hash = if is_resident {
                    ram.read(addr, &mut page)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    page.iter().any(|&b| b != 0).then(|| page_hash(&page))
                } else {
                    None
                };
                if let Some(hash) = hash {
                    written.hashes.insert(addr, hash);
                }
                let is_written = match previous {
                    None => hash.is_some(),
                    Some(previous) => previous.get(&addr).copied() != hash,
                };
                if !is_written {
                    flush(file, &mut run, run_start, &mut written.bytes)?;
                    continue;
                }
                if previous.is_some() {
                    match written.changed.last_mut() {
                        Some((start, pages)) if *start + *pages * PAGE_SIZE == addr => *pages += 1,
                        _ => written.changed.push((addr, 1)),
                    }
                }
                if hash.is_none() {
                    // Written as zeros: it held data in the previous
                    // snapshot.
                    page.fill(0);
                }
                if run.is_empty() {
                    run_start = addr;
                }
                run.extend_from_slice(&page);
                if run.len() as u64 >= CHUNK {
                    flush(file, &mut run, run_start, &mut written.bytes)?;
                }
            }
            chunk += len;
        }
        flush(file, &mut run, run_start, &mut written.bytes)?;
    }
    file.set_len(memory_file_bytes(ram))?;
    Ok(written)
}

/// Copy a `--diff` snapshot's changed pages (`changed`, from its state)
/// from its memory `file` into `ram`.
pub(crate) fn apply_diff(
    ram: &GuestRam,
    file: &File,
    changed: &[(u64, u64)],
) -> Result<(), SnapshotError> {
    let mut buf = Vec::new();
    for &(addr, pages) in changed {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|&len| ram.check(addr, len).is_ok() && addr.is_multiple_of(PAGE_SIZE))
            .ok_or_else(|| {
                SnapshotError::Damaged(format!("changed pages at {addr:#x} outside RAM"))
            })?;
        buf.resize(usize::try_from(len).expect("inside RAM"), 0);
        file.read_exact_at(&mut buf, addr)
            .map_err(|e| SnapshotError::Damaged(format!("its memory file: {e}")))?;
        ram.write(addr, &buf)
            .map_err(|e| SnapshotError::Damaged(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            interface_version: eremite_interface::INTERFACE_VERSION,
            eremite_version: "test".into(),
            cpu_features: "ab".into(),
            tsc_khz: 2_000_000,
            frozen_ticks: 5,
            memory_bytes: 64 << 20,
            memory_file_bytes: 64 << 20,
            image: "hello".into(),
            is_verbose: false,
            mounts: Vec::new(),
            cpus: vec![SavedCpu::Waiting],
            cards: Vec::new(),
            diff: None,
            host_files: crate::sandbox::SavedFiles::default(),
        }
    }

    #[test]
    fn a_state_file_is_refused_unless_whole_and_of_this_version() {
        let mut first = state();
        // A boot vCPU that waits is refused.
        let bytes = first.to_file_bytes();
        assert!(matches!(
            State::parse(&bytes),
            Err(SnapshotError::Damaged(_))
        ));
        first.cpus.clear();
        let bytes = first.to_file_bytes();
        assert!(matches!(
            State::parse(&bytes),
            Err(SnapshotError::Damaged(_))
        ));
        let bytes = state().to_file_bytes();
        // Truncated anywhere, or one byte changed anywhere: refused.
        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(State::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in [0, 17, 30, bytes.len() / 2, bytes.len() - 2] {
            let mut edited = bytes.clone();
            edited[at] ^= 0x01;
            assert!(State::parse(&edited).is_err(), "edit at {at}");
        }
        assert!(matches!(
            State::parse(b"something else\n{}"),
            Err(SnapshotError::NotASnapshot)
        ));
        assert!(matches!(
            State::parse(b"eremite-snapshot 99 sha256=00\n{}"),
            Err(SnapshotError::Format { .. })
        ));
        let mut other = state();
        other.interface_version += 1;
        let bytes = with_header(&serde_json::to_vec(&other).unwrap());
        assert!(matches!(
            State::parse(&bytes),
            Err(SnapshotError::Version { .. })
        ));
    }

    #[test]
    fn a_state_whose_memory_file_is_shorter_than_its_ram_is_refused() {
        let running = || vec![SavedCpu::Running(Arc::new(CpuState::default()))];
        let mut good = state();
        good.cpus = running();
        assert!(State::parse(&good.to_file_bytes()).is_ok());
        let mut big = state();
        big.cpus = running();
        big.memory_bytes = 1 << 30;
        let refused = State::parse(&big.to_file_bytes());
        assert!(
            matches!(&refused, Err(SnapshotError::Damaged(why)) if why.contains("memory file")),
            "{refused:?}"
        );
        let mut odd = state();
        odd.cpus = running();
        odd.memory_bytes = (64 << 20) + 1;
        odd.memory_file_bytes = odd.memory_bytes;
        assert!(matches!(
            State::parse(&odd.to_file_bytes()),
            Err(SnapshotError::Damaged(_))
        ));
    }

    #[test]
    fn another_hosts_features_or_clock_are_refused() {
        let state = state();
        assert!(state.check_host("ab", 2_000_000).is_ok());
        assert!(matches!(
            state.check_host("cd", 2_000_000),
            Err(SnapshotError::CpuFeatures)
        ));
        assert!(matches!(
            state.check_host("ab", 2_100_000),
            Err(SnapshotError::TscFrequency { .. })
        ));
    }

    #[test]
    fn only_pages_with_data_are_written_and_the_file_has_the_ram_length() {
        let ram = GuestRam::new(8 << 20).unwrap();
        ram.write(0x1000, &[1; 10]).unwrap();
        ram.write(0x3000, &[2; 4096]).unwrap();
        ram.write(0x4000, &[3; 1]).unwrap();
        // Touched, but zeros: not written.
        ram.write(0x7000, &[0; 4096]).unwrap();
        let dir = std::env::temp_dir().join(format!("eremite-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let written = write_memory(&ram, &file, None).unwrap();
        assert_eq!(written.bytes, 3 * PAGE_SIZE);
        assert_eq!(written.hashes.len(), 3);
        assert_eq!(file.metadata().unwrap().len(), 8 << 20);
        let restored = GuestRam::from_snapshot(8 << 20, &file).unwrap();
        let mut got = [0u8; 16];
        restored.read(0x1000, &mut got).unwrap();
        assert_eq!(&got[..10], &[1; 10]);
        assert_eq!(&got[10..], &[0; 6]);
        restored.read(0x3ff0, &mut got).unwrap();
        assert_eq!(got, [2; 16]);
        // Copy-on-write: a write to the restored RAM leaves the file alone.
        restored.write(0x1000, &[9; 4]).unwrap();
        let mut on_disk = [0u8; 4];
        file.read_exact_at(&mut on_disk, 0x1000).unwrap();
        assert_eq!(on_disk, [1; 4]);

        // A difference: a page changed, one zeroed, one new; the rest left.
        ram.write(0x1000, &[5; 4]).unwrap();
        ram.write(0x3000, &[0; 4096]).unwrap();
        ram.write(0x6000, &[6; 8]).unwrap();
        let diff_file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("diff"))
            .unwrap();
        let diff = write_memory(&ram, &diff_file, Some(&written.hashes)).unwrap();
        assert_eq!(diff.changed, vec![(0x1000, 1), (0x3000, 1), (0x6000, 1)]);
        assert_eq!(diff.bytes, 3 * PAGE_SIZE);
        // The base, with the difference applied, is the RAM now.
        let restored = GuestRam::from_snapshot(8 << 20, &file).unwrap();
        apply_diff(&restored, &diff_file, &diff.changed).unwrap();
        for addr in (0..0x8000).step_by(PAGE_SIZE as usize) {
            let (mut want, mut got) = ([0u8; 4096], [0u8; 4096]);
            ram.read(addr, &mut want).unwrap();
            restored.read(addr, &mut got).unwrap();
            assert!(want == got, "page {addr:#x}");
        }
        // A run outside RAM is refused.
        assert!(apply_diff(&restored, &diff_file, &[(8 << 20, 1)]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
