//! What a program may ask of the VM it runs in.
//!
//! [`snapshot`] writes a snapshot of the whole VM at the point the program
//! chooses (after loading its data or warming up, say), into the directory
//! given with `eremite run --snapshot-to DIR`; `eremite restore DIR` then
//! starts from there, skipping the work before it (docs/snapshots.md).
//! Without `--snapshot-to` the calls fail with `EOPNOTSUPP`; on another
//! target (a native build of the same program) there is no VM, and they
//! fail with [`io::ErrorKind::Unsupported`].

extern crate std;

use std::io;

/// Where the program is when [`snapshot`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshotted {
    /// In the VM that asked: the snapshot is written, and it goes on.
    Taken,
    /// In a VM restored from the snapshot (`eremite restore`).
    Restored,
}

#[cfg(target_os = "hermit")]
unsafe extern "C" {
    fn sys_eremite_snapshot(stop: i32) -> i64;
}

#[cfg(target_os = "hermit")]
fn ask(stop: bool) -> io::Result<Snapshotted> {
    // SAFETY: takes a plain integer; the kernel pauses every vCPU while the
    // VMM writes the snapshot and returns when it is done.
    match unsafe { sys_eremite_snapshot(i32::from(stop)) } {
        0 => Ok(Snapshotted::Taken),
        1 => Ok(Snapshotted::Restored),
        error => Err(io::Error::from_raw_os_error(
            i32::try_from(-error).unwrap_or(i32::MAX),
        )),
    }
}

#[cfg(not(target_os = "hermit"))]
fn ask(_stop: bool) -> io::Result<Snapshotted> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "not in an eremite VM",
    ))
}

/// Snapshot the VM here and go on. Returns [`Snapshotted::Taken`] in this
/// run and [`Snapshotted::Restored`] in every run restored from the
/// snapshot. Fails when the VM was started without `--snapshot-to`, or
/// cannot be snapshotted (a FIFO, socket or device open on a host mount), or
/// the files could not be written.
pub fn snapshot() -> io::Result<Snapshotted> {
    ask(false)
}

/// Snapshot the VM here and end it (`eremite run` exits with 0). Returns
/// only in a run restored from the snapshot (`Ok`), or when no snapshot
/// was written (`Err`, as [`snapshot`]'s).
pub fn snapshot_and_stop() -> io::Result<()> {
    match ask(true)? {
        Snapshotted::Restored => Ok(()),
        Snapshotted::Taken => Err(io::Error::other(
            "the VM went on after a snapshot that should have stopped it",
        )),
    }
}
