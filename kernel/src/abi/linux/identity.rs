//! Who the program is: user and group IDs, supplementary groups, its
//! process group and session. The program starts as root (uid and gid 0)
//! in a process group and session of its own (pid 1 leads both). As root
//! it may change its IDs; they are kept and reported, though nothing in a
//! unikernel checks them (there is no other user to protect files from).
//! Servers that drop privileges (`memcached -u`, nginx's `user`) work.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use eremite_interface::errno::{self, Errno};

use super::{SysResult, ptr, user};
use crate::sync::Lock;

/// Real, effective, saved and file-system IDs.
struct Ids {
    real: AtomicU32,
    effective: AtomicU32,
    saved: AtomicU32,
}

static UIDS: Ids = Ids::root();
static GIDS: Ids = Ids::root();
/// Supplementary groups (`setgroups`).
static GROUPS: Lock<Vec<u32>> = Lock::new(Vec::new());
/// Most supplementary groups (Linux's `NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65536;
/// "Leave this ID as it is" in the `set*id` calls.
const UNCHANGED: u32 = u32::MAX;

impl Ids {
    const fn root() -> Self {
        Self {
            real: AtomicU32::new(0),
            effective: AtomicU32::new(0),
            saved: AtomicU32::new(0),
        }
    }

    fn set(id: &AtomicU32, value: u32) {
        if value != UNCHANGED {
            id.store(value, Ordering::Relaxed);
        }
    }

    /// `setresuid`/`setresgid`: each of the three unless it is -1.
    fn set_all(&self, real: u32, effective: u32, saved: u32) -> SysResult {
        Self::set(&self.real, real);
        Self::set(&self.effective, effective);
        Self::set(&self.saved, saved);
        Ok(0)
    }

    /// `getresuid`/`getresgid`.
    fn get_all(&self, real: u64, effective: u64, saved: u64) -> SysResult {
        for (out, id) in [
            (real, &self.real),
            (effective, &self.effective),
            (saved, &self.saved),
        ] {
            user::write(ptr::<u32>(out), id.load(Ordering::Relaxed))?;
        }
        Ok(0)
    }
}

fn ids(is_group: bool) -> &'static Ids {
    if is_group { &GIDS } else { &UIDS }
}

/// `getuid`, `geteuid`, `getgid`, `getegid`.
pub(super) fn get(is_group: bool, is_effective: bool) -> SysResult {
    let ids = ids(is_group);
    let id = if is_effective {
        &ids.effective
    } else {
        &ids.real
    };
    Ok(u64::from(id.load(Ordering::Relaxed)))
}

/// `setuid`/`setgid`: root sets all three.
pub(super) fn set(is_group: bool, id: u32) -> SysResult {
    if id == UNCHANGED {
        return Err(errno::EINVAL);
    }
    ids(is_group).set_all(id, id, id)
}

/// `setreuid`/`setregid`.
pub(super) fn set_real_effective(is_group: bool, real: u32, effective: u32) -> SysResult {
    ids(is_group).set_all(real, effective, UNCHANGED)
}

/// `setresuid`/`setresgid`.
pub(super) fn set_all(is_group: bool, real: u32, effective: u32, saved: u32) -> SysResult {
    ids(is_group).set_all(real, effective, saved)
}

/// `getresuid`/`getresgid`.
pub(super) fn get_all(is_group: bool, real: u64, effective: u64, saved: u64) -> SysResult {
    ids(is_group).get_all(real, effective, saved)
}

/// `setfsuid`/`setfsgid`: the previous ID (the effective one, which it
/// follows).
pub(super) fn set_fs(is_group: bool, _id: u32) -> SysResult {
    get(is_group, true)
}

/// `getgroups(2)`: the count with `size` 0, else the list (`EINVAL` if
/// it does not fit).
pub(super) fn getgroups(size: i32, list: u64) -> SysResult {
    let groups = GROUPS.lock().clone();
    if size == 0 {
        return Ok(groups.len() as u64);
    }
    if usize::try_from(size).map_or(true, |size| size < groups.len()) {
        return Err(errno::EINVAL);
    }
    for (i, group) in groups.iter().enumerate() {
        user::write(ptr::<u32>(list + 4 * i as u64), *group)?;
    }
    Ok(groups.len() as u64)
}

/// `setgroups(2)`.
pub(super) fn setgroups(size: usize, list: u64) -> SysResult {
    if size > NGROUPS_MAX {
        return Err(errno::EINVAL);
    }
    let mut groups = Vec::new();
    groups.try_reserve(size).map_err(|_| errno::ENOMEM)?;
    for i in 0..size {
        groups.push(user::read(ptr::<u32>(list + 4 * i as u64))?);
    }
    *GROUPS.lock() = groups;
    Ok(0)
}

/// `getpgrp`, `getpgid`, `getsid` of the program (pid 0 or 1): 1, the
/// group and session it leads; `ESRCH` for any other process.
pub(super) fn group_of(pid: i32) -> SysResult {
    match pid {
        0 | 1 => Ok(1),
        _ => Err(errno::ESRCH),
    }
}

/// `setpgid(2)`: the program into its own group (it is there already).
pub(super) fn setpgid(pid: i32, group: i32) -> SysResult {
    match (pid, group) {
        (0 | 1, 0 | 1) => Ok(0),
        (0 | 1, _) => Err(errno::EPERM),
        _ => Err(errno::ESRCH),
    }
}

/// `setsid(2)`: `EPERM`, as for any process-group leader.
pub(super) fn setsid() -> Result<u64, Errno> {
    Err(errno::EPERM)
}
