//! tokio and mio for the hermit target, made from their crates.io releases
//! and the patches in `compat/` (see `compat/README.md` for what the
//! patches change and why).
//!
//! [`generate`] writes `DIR/tokio-VERSION/` and `DIR/mio-VERSION/`: each
//! the released `.crate` package from cargo's registry cache (fetched
//! with `cargo fetch` when missing), checked against the SHA-256 that
//! crates.io's index (and so `Cargo.lock`) gives for it, unpacked, and
//! patched. A `[patch.crates-io]` that names those directories makes a
//! hermit build use them. Nothing is downloaded from anywhere but the
//! crates registry, through cargo. A directory made from the same package
//! and patch is left as it is.
//!
//! Updating to a new release: change [`PATCHED`]'s version and checksum
//! (the new release's line in any `Cargo.lock`), run the generator; if a
//! hunk no longer applies, the error names the file and the hunk, and the
//! patch is mended by hand.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A crates.io release and the patch that makes it work on hermit.
#[derive(Debug, Clone, Copy)]
pub struct Patched {
    /// The crate's name.
    pub name: &'static str,
    /// The release.
    pub version: &'static str,
    /// SHA-256 of its `.crate` package, as in `Cargo.lock`.
    pub sha256: &'static str,
    /// A unified diff against the package's files (`a/PATH`, `b/PATH`).
    pub patch: &'static str,
}

/// What is patched.
pub const PATCHED: [Patched; 2] = [
    Patched {
        name: "tokio",
        version: "1.54.1",
        sha256: "b52fd3255258d26fac7264ab5a76b53c13367136dc011d3d6ad4f8ed070396a3",
        patch: include_str!("../../../compat/tokio/EREMITE.patch"),
    },
    Patched {
        name: "mio",
        version: "1.2.5",
        sha256: "20521a903f02b0a573cd6840e9d0a5a0cc043d361fe924092cd70f8556cc9c4a",
        patch: include_str!("../../../compat/mio/EREMITE.patch"),
    },
];

/// The file in a generated directory that records what it was made from.
const STAMP: &str = ".eremite-compat";

/// Why the patched crates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    /// `cargo fetch` could not be run or failed.
    #[error("cannot fetch {name} {version} with cargo: {reason}")]
    Fetch {
        /// The crate.
        name: &'static str,
        /// Its release.
        version: &'static str,
        /// Why.
        reason: String,
    },
    /// The package is not what crates.io published.
    #[error("{path}: SHA-256 {got}, but crates.io's index says {want}")]
    Checksum {
        /// The `.crate` file.
        path: PathBuf,
        /// Its digest.
        got: String,
        /// The index's.
        want: &'static str,
    },
    /// A hunk of the patch does not apply to the release.
    #[error(
        "{name} {version}: the patch does not apply to {file}: {reason} (mend compat/{name}/EREMITE.patch)"
    )]
    Patch {
        /// The crate.
        name: &'static str,
        /// Its release.
        version: &'static str,
        /// The file.
        file: String,
        /// Which hunk, and how.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CompatError + '_ {
    move |source| CompatError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Patched {
    /// Where [`generate`] puts it under `dir`.
    pub fn dir_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}-{}", self.name, self.version))
    }

    /// What a generated directory's stamp says: the package and a digest
    /// of the patch.
    fn stamp(&self) -> String {
        let patch = hex(&Sha256::digest(self.patch.as_bytes()));
        format!("{}\npatch {patch}\n", self.sha256)
    }
}

/// Cargo's home (`$CARGO_HOME`, else `~/.cargo`), whose registry cache
/// has the releases; `None` when neither variable is set.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// Make every [`PATCHED`] crate under `dir` (created if missing), using
/// the registry cache of `cargo_home` (cargo's `$CARGO_HOME`). Returns the
/// crates' directories, in [`PATCHED`] order.
pub fn generate(dir: &Path, cargo_home: &Path) -> Result<Vec<PathBuf>, CompatError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    PATCHED
        .iter()
        .map(|crate_| generate_one(crate_, dir, cargo_home))
        .collect()
}

/// The `[patch.crates-io]` lines for crates made under `dir`, with
/// socket2 too when `socket2` says where it is.
pub fn patch_section(dir: &Path, socket2: Option<&Path>) -> String {
    let mut section = String::from("[patch.crates-io]\n");
    if let Some(path) = socket2 {
        section.push_str(&format!("socket2 = {{ path = \"{}\" }}\n", path.display()));
    }
    for crate_ in PATCHED {
        section.push_str(&format!(
            "{} = {{ path = \"{}\" }}\n",
            crate_.name,
            crate_.dir_in(dir).display()
        ));
    }
    section
}

/// `compat/socket2` (ours: socket2's API over hermit-abi), file by file.
const SOCKET2_FILES: [(&str, &str); 7] = [
    (
        "Cargo.toml",
        include_str!("../../../compat/socket2/Cargo.toml"),
    ),
    (
        "README.md",
        include_str!("../../../compat/socket2/README.md"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../compat/socket2/src/lib.rs"),
    ),
    (
        "src/sockaddr.rs",
        include_str!("../../../compat/socket2/src/sockaddr.rs"),
    ),
    (
        "src/sockref.rs",
        include_str!("../../../compat/socket2/src/sockref.rs"),
    ),
    (
        "src/socket.rs",
        include_str!("../../../compat/socket2/src/socket.rs"),
    ),
    (
        "src/sys.rs",
        include_str!("../../../compat/socket2/src/sys.rs"),
    ),
];

/// Write `compat/socket2` as `dir/socket2/`, a package of its own (in the
/// repository it is a member of the examples' workspace); returns its
/// directory.
pub fn write_socket2(dir: &Path) -> Result<PathBuf, CompatError> {
    let out = dir.join("socket2");
    for (file, text) in SOCKET2_FILES {
        let path = out.join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let text = if file == "Cargo.toml" {
            text.lines()
                .filter(|line| !line.starts_with("workspace = "))
                .map(|line| format!("{line}\n"))
                .collect()
        } else {
            text.to_owned()
        };
        fs::write(&path, text).map_err(io_error(&path))?;
    }
    Ok(out)
}

fn generate_one(crate_: &Patched, dir: &Path, cargo_home: &Path) -> Result<PathBuf, CompatError> {
    let out = crate_.dir_in(dir);
    let stamp_path = out.join(STAMP);
    if fs::read_to_string(&stamp_path).is_ok_and(|stamp| stamp == crate_.stamp()) {
        return Ok(out);
    }
    let package = match find_package(crate_, cargo_home) {
        Some(path) => path,
        None => {
            fetch(crate_, dir)?;
            find_package(crate_, cargo_home).ok_or_else(|| CompatError::Fetch {
                name: crate_.name,
                version: crate_.version,
                reason: format!(
                    "cargo fetched it, but it is not in {}/registry/cache",
                    cargo_home.display()
                ),
            })?
        }
    };
    let bytes = fs::read(&package).map_err(io_error(&package))?;
    let got = hex(&Sha256::digest(&bytes));
    if got != crate_.sha256 {
        return Err(CompatError::Checksum {
            path: package,
            got,
            want: crate_.sha256,
        });
    }
    if out.exists() {
        fs::remove_dir_all(&out).map_err(io_error(&out))?;
    }
    unpack(&bytes, crate_, &out)?;
    apply(crate_, &out)?;
    fs::write(&stamp_path, crate_.stamp()).map_err(io_error(&stamp_path))?;
    Ok(out)
}

/// The release's `.crate` in cargo's cache, if cargo has it.
fn find_package(crate_: &Patched, cargo_home: &Path) -> Option<PathBuf> {
    let cache = cargo_home.join("registry/cache");
    let file = format!("{}-{}.crate", crate_.name, crate_.version);
    fs::read_dir(&cache)
        .ok()?
        .filter_map(Result::ok)
        .map(|registry| registry.path().join(&file))
        .find(|path| path.is_file())
}

/// Have cargo download the release into its cache: `cargo fetch` in a
/// scratch package under `dir` that depends on exactly it.
fn fetch(crate_: &Patched, dir: &Path) -> Result<(), CompatError> {
    let scratch = dir.join(format!(".fetch-{}", crate_.name));
    let manifest = format!(
        "[package]\nname = \"fetch-{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\n{name} = \"={version}\"\n",
        name = crate_.name,
        version = crate_.version
    );
    let error = |reason: String| CompatError::Fetch {
        name: crate_.name,
        version: crate_.version,
        reason,
    };
    fs::create_dir_all(scratch.join("src")).map_err(io_error(&scratch))?;
    fs::write(scratch.join("Cargo.toml"), manifest).map_err(io_error(&scratch))?;
    fs::write(scratch.join("src/lib.rs"), "").map_err(io_error(&scratch))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .arg("fetch")
        .arg("--manifest-path")
        .arg(scratch.join("Cargo.toml"))
        .output()
        .map_err(|e| error(e.to_string()))?;
    let _ = fs::remove_dir_all(&scratch);
    if output.status.success() {
        Ok(())
    } else {
        Err(error(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}

/// Unpack the gzipped tar `package` (whose members sit under
/// `NAME-VERSION/`) into `out`.
fn unpack(package: &[u8], crate_: &Patched, out: &Path) -> Result<(), CompatError> {
    let prefix = format!("{}-{}", crate_.name, crate_.version);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(package));
    let entries = archive.entries().map_err(io_error(out))?;
    for entry in entries {
        let mut entry = entry.map_err(io_error(out))?;
        let path = entry.path().map_err(io_error(out))?.into_owned();
        // Only plain relative names under the package's own directory.
        let Ok(relative) = path.strip_prefix(&prefix) else {
            continue;
        };
        if relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let target = out.join(relative);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(io_error(&target))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_error(parent))?;
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(io_error(&target))?;
            fs::write(&target, data).map_err(io_error(&target))?;
        }
    }
    Ok(())
}

/// Apply the crate's patch to the files under `out`, file by file.
fn apply(crate_: &Patched, out: &Path) -> Result<(), CompatError> {
    for (file, diff) in split_patch(crate_.patch) {
        let failure = |reason: String| CompatError::Patch {
            name: crate_.name,
            version: crate_.version,
            file: file.to_owned(),
            reason,
        };
        let path = out.join(file);
        let original = fs::read_to_string(&path).map_err(|e| failure(e.to_string()))?;
        let patch = diffy::Patch::from_str(diff).map_err(|e| failure(e.to_string()))?;
        let patched = diffy::apply(&original, &patch).map_err(|e| failure(e.to_string()))?;
        fs::write(&path, patched).map_err(io_error(&path))?;
    }
    Ok(())
}

/// A multi-file unified diff as (file, that file's diff) pairs, the file
/// taken from its `+++ b/PATH` line.
fn split_patch(patch: &str) -> Vec<(&str, &str)> {
    let mut starts: Vec<usize> = patch
        .match_indices("--- a/")
        .map(|(at, _)| at)
        .filter(|&at| at == 0 || patch.as_bytes()[at - 1] == b'\n')
        .collect();
    starts.push(patch.len());
    starts
        .windows(2)
        .filter_map(|w| {
            let diff = &patch[w[0]..w[1]];
            let file = diff
                .lines()
                .find_map(|line| line.strip_prefix("+++ b/"))?
                .split('\t')
                .next()?;
            Some((file, diff))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket2_is_written_whole_and_standing_alone() {
        let dir = std::env::temp_dir().join(format!("eremite-socket2-test-{}", std::process::id()));
        let out = write_socket2(&dir).unwrap();
        let manifest = fs::read_to_string(out.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"socket2\"") && !manifest.contains("workspace ="));
        let sources = fs::read_dir(out.join("src")).unwrap().count();
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat/socket2/src");
        assert_eq!(
            sources,
            fs::read_dir(repository).unwrap().count(),
            "every source file"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_patches_name_their_files() {
        for crate_ in PATCHED {
            let files: Vec<&str> = split_patch(crate_.patch).iter().map(|(f, _)| *f).collect();
            assert!(!files.is_empty(), "{}", crate_.name);
            assert!(files.iter().all(|f| f.starts_with("src/")), "{files:?}");
        }
    }

    #[test]
    fn a_hunk_that_does_not_apply_is_named() {
        let dir = std::env::temp_dir().join(format!("eremite-compat-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/lib.rs"), "fn main() {}\n").unwrap();
        let crate_ = Patched {
            name: "demo",
            version: "1.0.0",
            sha256: "",
            patch: "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-fn other() {}\n+fn patched() {}\n",
        };
        let error = apply(&crate_, &dir).unwrap_err().to_string();
        assert!(error.contains("src/lib.rs"), "{error}");
        assert!(error.contains("hunk"), "{error}");
        let fitting = Patched {
            patch: "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-fn main() {}\n+fn patched() {}\n",
            ..crate_
        };
        apply(&fitting, &dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("src/lib.rs")).unwrap(),
            "fn patched() {}\n"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
