//! Paths from the guest, checked for form before any host call sees them.
//!
//! [`GuestPath`] is the parsed form of a path in a `HostFs` request: no NUL,
//! no leading `/`, at most `PATH_MAX - 1` bytes, no component longer than
//! `NAME_MAX`. Form alone does not keep a path inside its mount (`a/../..`
//! is well formed, and so is `link` when `link -> /etc`): that is the
//! resolver's job in [`super`], which hands every path to `openat2` with
//! `RESOLVE_BENEATH`. [`LinkTarget`] is the text of a symbolic link to be
//! created; it is stored, never resolved, by the VMM.

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::{NAME_MAX, PATH_MAX};

/// Why a guest path is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than `PATH_MAX - 1` bytes.
    #[error("guest gave a path of {0} bytes, longer than PATH_MAX")]
    TooLong(u64),
    /// One component longer than `NAME_MAX` bytes.
    #[error("guest gave a path with a component longer than NAME_MAX")]
    NameTooLong,
    /// A NUL byte inside the path.
    #[error("guest gave a path with a NUL byte")]
    Nul,
    /// A leading `/`: paths are relative to the mount.
    #[error("guest gave an absolute path")]
    Absolute,
    /// An empty symbolic-link target.
    #[error("guest gave an empty symbolic link target")]
    EmptyTarget,
}

impl PathError {
    /// The errno the guest gets back.
    pub(crate) fn errno(self) -> Errno {
        match self {
            PathError::TooLong(_) | PathError::NameTooLong => errno::ENAMETOOLONG,
            PathError::Nul | PathError::Absolute => errno::EINVAL,
            PathError::EmptyTarget => errno::ENOENT,
        }
    }
}

/// Longest path in bytes, without the NUL that `PATH_MAX` counts.
pub(crate) const MAX_PATH_BYTES: u64 = PATH_MAX as u64 - 1;

/// A well-formed path relative to a mount's directory; empty means the
/// directory itself. Not yet known to stay inside the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestPath(Vec<u8>);

impl GuestPath {
    /// Check `bytes` (copied out of guest memory) for form.
    pub(crate) fn parse(bytes: Vec<u8>) -> Result<Self, PathError> {
        check_common(&bytes)?;
        if bytes.first() == Some(&b'/') {
            return Err(PathError::Absolute);
        }
        if bytes.split(|b| *b == b'/').any(|c| c.len() > NAME_MAX) {
            return Err(PathError::NameTooLong);
        }
        Ok(Self(bytes))
    }

    /// The path as `openat2` takes it: `.` for the directory itself, since
    /// `openat2` refuses an empty path.
    pub(crate) fn for_open(&self) -> &[u8] {
        if self.0.is_empty() { b"." } else { &self.0 }
    }

    /// Split into the parent directory (as `openat2` takes it) and the last
    /// component, with trailing slashes removed from the latter.
    pub(crate) fn split_last(&self) -> LastComponent<'_> {
        let trimmed = trim_trailing_slashes(&self.0);
        let has_trailing_slash = trimmed.len() < self.0.len();
        let (parent, name) = match trimmed.iter().rposition(|b| *b == b'/') {
            Some(slash) => (&trimmed[..=slash], &trimmed[slash + 1..]),
            None => (&b"."[..], trimmed),
        };
        let kind = match name {
            b"" => NameKind::Root,
            b"." => NameKind::Dot,
            b".." => NameKind::DotDot,
            _ => NameKind::Normal,
        };
        LastComponent {
            parent,
            name,
            kind,
            has_trailing_slash,
        }
    }
}

fn trim_trailing_slashes(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'/'] = bytes {
        bytes = rest;
    }
    bytes
}

fn check_common(bytes: &[u8]) -> Result<(), PathError> {
    if bytes.len() as u64 > MAX_PATH_BYTES {
        return Err(PathError::TooLong(bytes.len() as u64));
    }
    if bytes.contains(&0) {
        return Err(PathError::Nul);
    }
    Ok(())
}

/// What the last component of a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    /// An ordinary name.
    Normal,
    /// The empty path: the mount's directory itself.
    Root,
    /// `.`
    Dot,
    /// `..`
    DotDot,
}

/// A path split for an operation on its last component (`mkdirat`,
/// `unlinkat`, `renameat` and friends act on `name` relative to `parent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastComponent<'p> {
    /// Everything before the last component (with its slash), or `.`.
    pub(crate) parent: &'p [u8],
    /// The last component, no slashes.
    pub(crate) name: &'p [u8],
    pub(crate) kind: NameKind,
    /// The path ended in `/`: the object must be a directory.
    pub(crate) has_trailing_slash: bool,
}

/// The target text of a symbolic link the guest creates: any bytes but
/// NUL, absolute or not. The VMM writes it into the link and never follows
/// it itself; following it later goes through the same resolver as every
/// other path, so a target outside the mount cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkTarget(Vec<u8>);

impl LinkTarget {
    /// Check `bytes` for form.
    pub(crate) fn parse(bytes: Vec<u8>) -> Result<Self, PathError> {
        check_common(&bytes)?;
        if bytes.is_empty() {
            return Err(PathError::EmptyTarget);
        }
        Ok(Self(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Result<GuestPath, PathError> {
        GuestPath::parse(s.as_bytes().to_vec())
    }

    #[test]
    fn form_is_checked() {
        assert!(path("").is_ok());
        assert!(path("a/b/../c").is_ok(), "`..` is left to the resolver");
        assert_eq!(path("/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(path("a\0b"), Err(PathError::Nul));
        assert_eq!(path(&"x".repeat(256)), Err(PathError::NameTooLong));
        assert!(path(&"x".repeat(255)).is_ok());
        let long = "a/".repeat(2048);
        assert_eq!(path(&long), Err(PathError::TooLong(4096)));
        assert_eq!(path(&long[..4095]).map(|_| ()), Ok(()));
        assert_eq!(LinkTarget::parse(Vec::new()), Err(PathError::EmptyTarget));
        assert!(LinkTarget::parse(b"/etc".to_vec()).is_ok());
        assert_eq!(LinkTarget::parse(b"a\0".to_vec()), Err(PathError::Nul));
        assert_eq!(PathError::TooLong(5000).errno(), errno::ENAMETOOLONG);
    }

    #[test]
    fn last_components_are_split_off() {
        let split = |s: &str| {
            let p = path(s).unwrap();
            let l = p.split_last();
            (
                String::from_utf8(l.parent.to_vec()).unwrap(),
                String::from_utf8(l.name.to_vec()).unwrap(),
                l.kind,
                l.has_trailing_slash,
            )
        };
        let s = |x: &str| x.to_owned();
        assert_eq!(split("a"), (s("."), s("a"), NameKind::Normal, false));
        assert_eq!(split("a/b/c"), (s("a/b/"), s("c"), NameKind::Normal, false));
        assert_eq!(split("a/b//"), (s("a/"), s("b"), NameKind::Normal, true));
        assert_eq!(split(""), (s("."), s(""), NameKind::Root, false));
        assert_eq!(split("a/."), (s("a/"), s("."), NameKind::Dot, false));
        assert_eq!(split("a/../"), (s("a/"), s(".."), NameKind::DotDot, true));
        assert_eq!(path("").unwrap().for_open(), b".");
    }
}
