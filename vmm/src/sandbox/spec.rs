//! `--mount HOST_DIR:GUEST_PATH[:ro]`: what the user asks to mount, checked
//! before the VM is built.

use std::path::PathBuf;

use eremite_interface::fs::PATH_MAX;

/// Most mounts one VM may have ([`eremite_interface::BootInfo::read_only_mounts`]
/// has one bit per mount).
pub const MAX_MOUNTS: usize = 64;

/// One host directory to mount in the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    /// The host directory.
    pub host_dir: PathBuf,
    /// Where the guest sees it: absolute, normalised (no `.`, `..`, empty
    /// components or trailing slash), not `/`.
    pub guest_path: String,
    /// The guest may not change anything below it.
    pub is_read_only: bool,
}

/// A `--mount` value or a set of mounts that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MountSpecError {
    /// Not `HOST_DIR:GUEST_PATH[:ro]`.
    #[error("{0:?} is not HOST_DIR:GUEST_PATH[:ro]")]
    Format(String),
    /// The host directory cannot be used.
    #[error("cannot mount {}: {source}", path.display())]
    HostDir {
        /// The host directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guest path is unusable.
    #[error("guest path {path:?} {reason}")]
    GuestPath {
        /// The guest path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two mounts at the same guest path, or one inside another.
    #[error("mount at {inner} lies inside the mount at {outer}")]
    Nested {
        /// The inner (or repeated) guest path.
        inner: String,
        /// The outer guest path.
        outer: String,
    },
    /// More than [`MAX_MOUNTS`].
    #[error("{0} mounts, more than the {MAX_MOUNTS} a VM can have")]
    TooMany(usize),
}

/// Parse a `--mount` value, `HOST_DIR:GUEST_PATH[:ro]`. The host directory
/// must exist and be a directory; the guest path is normalised.
pub fn parse_mount_spec(spec: &str) -> Result<MountSpec, MountSpecError> {
    let (rest, is_read_only) = match spec.strip_suffix(":ro") {
        Some(rest) => (rest, true),
        None => (spec, false),
    };
    let Some((host, guest)) = rest.rsplit_once(':') else {
        return Err(MountSpecError::Format(spec.to_owned()));
    };
    if host.is_empty() || guest.is_empty() {
        return Err(MountSpecError::Format(spec.to_owned()));
    }
    // Whether the directory exists is checked when the VM starts (a
    // missing file is a setup error, like a missing image).
    let host_dir = PathBuf::from(host);
    Ok(MountSpec {
        host_dir,
        guest_path: normalise_guest_path(guest)?,
        is_read_only,
    })
}

/// `/a//b/./c/` becomes `/a/b/c`; relative paths, `..`, `/` itself and
/// NUL bytes are refused.
pub(crate) fn normalise_guest_path(path: &str) -> Result<String, MountSpecError> {
    let bad = |reason| MountSpecError::GuestPath {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("must be absolute"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path.len() >= PATH_MAX {
        return Err(bad("is too long"));
    }
    let mut out = String::new();
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            return Err(bad("must not contain .."));
        }
        out.push('/');
        out.push_str(component);
    }
    if out.is_empty() {
        return Err(bad(
            "must not be / (only directories below it can be mounted)",
        ));
    }
    Ok(out)
}

/// Check a whole set of mounts: at most [`MAX_MOUNTS`], each guest path
/// normalised, none at or below another.
pub(crate) fn check_mounts(mounts: &[MountSpec]) -> Result<(), MountSpecError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(MountSpecError::TooMany(mounts.len()));
    }
    for (i, spec) in mounts.iter().enumerate() {
        if normalise_guest_path(&spec.guest_path)? != spec.guest_path {
            return Err(MountSpecError::GuestPath {
                path: spec.guest_path.clone(),
                reason: "is not normalised",
            });
        }
        for other in &mounts[..i] {
            let (a, b) = (&spec.guest_path, &other.guest_path);
            let (inner, outer) = if a.len() >= b.len() { (a, b) } else { (b, a) };
            let is_inside = inner == outer
                || (inner.starts_with(outer.as_str())
                    && inner.as_bytes().get(outer.len()) == Some(&b'/'));
            if is_inside {
                return Err(MountSpecError::Nested {
                    inner: inner.clone(),
                    outer: outer.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(guest: &str) -> MountSpec {
        MountSpec {
            host_dir: std::env::temp_dir(),
            guest_path: guest.to_owned(),
            is_read_only: false,
        }
    }

    #[test]
    fn specs_are_parsed_and_guest_paths_normalised() {
        let tmp = std::env::temp_dir();
        let t = tmp.display();
        let m = parse_mount_spec(&format!("{t}://data/./x/")).unwrap();
        assert_eq!(m.host_dir, tmp);
        assert_eq!(m.guest_path, "/data/x");
        assert!(!m.is_read_only);
        let m = parse_mount_spec(&format!("{t}:/data:ro")).unwrap();
        assert_eq!(m.guest_path, "/data");
        assert!(m.is_read_only);
    }

    #[test]
    fn bad_specs_are_refused_naming_the_problem() {
        let t = std::env::temp_dir();
        let t = t.display();
        let err = |s: &str| parse_mount_spec(s).unwrap_err().to_string();
        assert!(err("nocolon").contains("HOST_DIR:GUEST_PATH"));
        assert!(err(":/data").contains("HOST_DIR:GUEST_PATH"));
        assert!(err(&format!("{t}:")).contains("HOST_DIR:GUEST_PATH"));
        assert!(err(&format!("{t}:data")).contains("must be absolute"));
        assert!(err(&format!("{t}:/")).contains("must not be /"));
        assert!(err(&format!("{t}:/a/../b")).contains(".."));
        // The host directory is only checked when the VM starts.
        assert!(parse_mount_spec("/nonexistent-eremite-dir:/data").is_ok());
    }

    #[test]
    fn mount_sets_must_not_nest_or_repeat() {
        assert!(check_mounts(&[spec("/a"), spec("/ab"), spec("/b/c")]).is_ok());
        for (a, b) in [("/a", "/a"), ("/a", "/a/b"), ("/a/b/c", "/a")] {
            let e = check_mounts(&[spec(a), spec(b)]).unwrap_err();
            assert!(matches!(e, MountSpecError::Nested { .. }), "{a} {b}");
        }
        assert!(check_mounts(&[spec("/a/")]).is_err());
        let many: Vec<_> = (0..=MAX_MOUNTS).map(|i| spec(&format!("/m{i}"))).collect();
        assert!(matches!(
            check_mounts(&many),
            Err(MountSpecError::TooMany(65))
        ));
        assert!(check_mounts(&many[..MAX_MOUNTS]).is_ok());
    }
}
