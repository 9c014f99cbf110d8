//! Confining the VMM process once the VM is built (`docs/design.md`,
//! "Threat model"): the guest is untrusted, so the process that serves it
//! keeps only what serving it needs. Before a vCPU first runs:
//!
//! - no new privileges (`PR_SET_NO_NEW_PRIVS`): nothing this process or
//!   its children execute can gain privileges;
//! - capabilities: all dropped but the three that let a VMM run as root
//!   act as the guest's root on the files of its mounts
//!   (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`), which
//!   Landlock and the mount sandbox keep to the mounts;
//! - Landlock: file-system access only beneath the `--mount` directories
//!   (read-only ones for reading), a second wall behind the mount sandbox's
//!   `openat2(RESOLVE_BENEATH)`. Files already open (the image, `/dev/kvm`,
//!   the tap, passt's and the switch's sockets, the console) stay usable;
//! - seccomp: a filter per kind of thread (`seccomp`, lists in `rules`),
//!   each thread entering its own as it starts.
//!
//! Descriptors the VMM inherited are closed at its start
//! ([`close_inherited_descriptors`]), so a guest that took over the VMM
//! could not use its launcher's files either. The `eremite switch`
//! process confines itself the same way once it listens
//! ([`confine_switch`]).

mod bpf;
mod rules;
mod seccomp;

use std::path::Path;

pub(crate) use seccomp::{ThreadKind, enter};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};

use crate::sandbox::Mount;

/// The Landlock rights this VMM handles (and so denies unless a rule
/// allows them): every file-system right up to ABI 3 (truncation).
/// Rights of later ABIs are left alone, so a newer kernel changes
/// nothing here.
const HANDLED_ABI: ABI = ABI::V3;

/// How far the confinement went on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// No new privileges, capabilities dropped, seccomp filters per
    /// thread, and Landlock's rules all hold.
    Full,
    /// All of [`Confinement::Full`] but Landlock: the kernel enforces
    /// only part of its rules, or none (Landlock missing or disabled).
    WithoutLandlock,
    /// Not confined: the caller asked so (`VmConfig::is_confined`).
    None,
}

impl std::fmt::Display for Confinement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = "no new privileges, capabilities dropped, seccomp filters";
        match self {
            Self::Full => write!(f, "confined: {all}, Landlock"),
            Self::WithoutLandlock => {
                write!(f, "confined: {all} (Landlock not enforced by this kernel)")
            }
            Self::None => f.write_str("not confined"),
        }
    }
}

/// The process could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("cannot set no-new-privileges: {0}")]
    NoNewPrivileges(std::io::Error),
    /// Building or enforcing the Landlock ruleset failed.
    #[error("cannot restrict file-system access with Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The switch's socket directory cannot be opened for its rule.
    #[error("cannot open the switch's directory: {0}")]
    SocketDirectory(std::io::Error),
    /// Dropping capabilities failed.
    #[error("cannot drop capabilities: {0}")]
    Capabilities(std::io::Error),
    /// The seccomp filters cannot be built or their handler installed.
    #[error("cannot prepare the seccomp filters: {0}")]
    Seccomp(std::io::Error),
}

/// Confine the calling thread, and every thread it starts from now on,
/// to what serving `mounts` needs. Call it on the thread that goes on to
/// start the vCPUs and devices, before any of them starts; each of them
/// then [`enter`]s the seccomp filter of its kind.
pub(crate) fn confine(mounts: &[Mount]) -> Result<Confinement, ConfineError> {
    rustix::thread::set_no_new_privs(true).map_err(|e| ConfineError::NoNewPrivileges(e.into()))?;
    drop_capabilities()?;
    let all = AccessFs::from_all(HANDLED_ABI);
    // What a guest may do in a writable mount: everything but executing
    // and making device nodes (the sandbox offers neither).
    let writable = all & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock);
    let readable: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .create()?;
    for mount in mounts {
        let access = if mount.is_read_only() {
            readable
        } else {
            writable
        };
        ruleset = ruleset.add_rule(PathBeneath::new(mount.dir(), access))?;
    }
    let status = ruleset.restrict_self()?;
    seccomp::prepare(&ThreadKind::VMM).map_err(ConfineError::Seccomp)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Confinement::Full,
        _ => Confinement::WithoutLandlock,
    })
}

/// Confine the `eremite switch` process once it listens on `socket`: no
/// new privileges, no capabilities, files only to remove its own socket
/// (Landlock), and the switch's seccomp filter.
pub(crate) fn confine_switch(socket: &Path) -> Result<(), ConfineError> {
    rustix::thread::set_no_new_privs(true).map_err(|e| ConfineError::NoNewPrivileges(e.into()))?;
    set_capabilities(rustix::thread::CapabilitySet::empty())?;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(HANDLED_ABI))?
        .create()?;
    if let Some(dir) = socket.parent() {
        let dir = rustix::fs::open(
            dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| ConfineError::SocketDirectory(e.into()))?;
        ruleset = ruleset.add_rule(PathBeneath::new(dir, AccessFs::RemoveFile))?;
    }
    ruleset.restrict_self()?;
    seccomp::prepare(&[ThreadKind::Switch]).map_err(ConfineError::Seccomp)?;
    enter(ThreadKind::Switch).map_err(ConfineError::Seccomp)
}

/// The capabilities a VMM run as root keeps: those that make it the
/// guest's root on its mounts' files (reading, writing, listing and
/// changing the mode of files whatever their owner and mode).
fn kept_capabilities() -> rustix::thread::CapabilitySet {
    use rustix::thread::CapabilitySet;
    CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH | CapabilitySet::FOWNER
}

/// Drop every capability but [`kept_capabilities`] from this thread (and
/// so from the threads it starts), and the ambient set.
fn drop_capabilities() -> Result<(), ConfineError> {
    set_capabilities(kept_capabilities())
}

/// Keep only `keep` (of what the thread has) as permitted and effective;
/// nothing inheritable or ambient.
fn set_capabilities(keep: rustix::thread::CapabilitySet) -> Result<(), ConfineError> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let error = |e: rustix::io::Errno| ConfineError::Capabilities(e.into());
    // Fails only on kernels without ambient capabilities (before 4.3).
    let _ = rustix::thread::clear_ambient_capability_set();
    let now = rustix::thread::capabilities(None).map_err(error)?;
    let permitted = now.permitted & keep;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: permitted,
            permitted,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(error)
}

/// Close every descriptor above standard error: whatever the launcher
/// left open (a shell's, a test harness's) is not the VMM's to use. Call
/// it first thing in `main`, before anything in this process opens one.
#[allow(unsafe_code)]
pub fn close_inherited_descriptors() {
    // SAFETY: `close_range` only closes descriptors. At the start of
    // `main` nothing in this process owns a descriptor above 2 (the
    // runtime opens none), so no `OwnedFd` or `File` is left dangling.
    let closed = unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
    // Kernels before 5.9 lack close_range; there the descriptors stay.
    let _ = closed;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::sandbox::MountSpec;

    /// Set in the child process of the test below, which confines itself.
    const CHILD: &str = "EREMITE_CONFINE_TEST_DIR";

    /// Landlock is per process: the test re-runs itself as a child that
    /// confines itself to one writable and one read-only mount, then
    /// checks what it may still open.
    #[test]
    fn a_confined_process_reaches_only_its_mounts() {
        if let Some(base) = std::env::var_os(CHILD) {
            let base = std::path::PathBuf::from(base);
            let spec = |dir: &str, is_read_only| MountSpec {
                host_dir: base.join(dir),
                guest_path: format!("/{dir}"),
                is_read_only,
            };
            let mounts = [
                Mount::open(&spec("rw", false)).unwrap(),
                Mount::open(&spec("ro", true)).unwrap(),
            ];
            // This thread's (the test's, not the process's main thread),
            // opened before: Landlock may then deny opening it.
            let mut status = std::fs::File::open("/proc/thread-self/status").unwrap();
            let confinement = confine(&mounts).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut status, &mut text).unwrap();
            assert!(text.contains("NoNewPrivs:\t1"), "{text}");
            let caps = rustix::thread::capabilities(None).unwrap();
            assert!(kept_capabilities().contains(caps.permitted), "{caps:?}");
            if confinement != Confinement::Full {
                println!("landlock not enforced");
                return;
            }
            std::fs::write(base.join("rw/new"), b"ok").unwrap();
            assert_eq!(std::fs::read(base.join("ro/file")).unwrap(), b"ro");
            let denied = |r: std::io::Result<()>| {
                r.is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            };
            assert!(denied(std::fs::write(base.join("ro/new"), b"no")));
            assert!(denied(std::fs::read(base.join("outside")).map(drop)));
            assert!(denied(std::fs::read("/etc/hostname").map(drop)));
            println!("confined as expected");
            return;
        }
        let base = std::env::temp_dir().join(format!("eremite-confine-{}", std::process::id()));
        std::fs::create_dir_all(base.join("rw")).unwrap();
        std::fs::create_dir_all(base.join("ro")).unwrap();
        std::fs::write(base.join("ro/file"), b"ro").unwrap();
        std::fs::write(base.join("outside"), b"secret").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "confine::tests::a_confined_process_reaches_only_its_mounts",
                "--nocapture",
            ])
            .env(CHILD, &base)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let _ = std::fs::remove_dir_all(&base);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("confined as expected") || stdout.contains("landlock not enforced"),
            "{stdout}"
        );
    }
}
