//! Waiting for a child process and learning the most memory it held:
//! what `eremite scenario` reports for each VM (`wait4(2)`'s `ru_maxrss`,
//! which a `/proc` sample taken while it runs can miss).

use std::io;
use std::process::{Child, ExitStatus};

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub status: ExitStatus,
    /// Its peak resident memory (`ru_maxrss`).
    pub peak_bytes: u64,
}

/// Reap `child` if it has ended (without blocking): its status and peak
/// memory, `None` while it runs. Call it instead of `Child::try_wait`,
/// and not again once it returned `Some`.
#[allow(unsafe_code)]
pub fn try_wait_with_usage(child: &Child) -> io::Result<Option<Ended>> {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value (integers and
    // timevals only).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes of their types for
    // the whole call; `wait4` reads nothing else of ours.
    let reaped = unsafe { libc::wait4(pid, &raw mut status, libc::WNOHANG, &raw mut usage) };
    match reaped {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(Ended {
            status: ExitStatus::from_raw(status),
            peak_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        })),
    }
}
