//! `eremite binfmt install|uninstall`: eremite images run like native
//! executables (`./hello arg`), as the HermitCore proxy made them, through
//! Linux's `binfmt_misc` (Documentation/admin-guide/binfmt-misc.rst).
//!
//! An image is recognised by the start of its ELF header: 64-bit,
//! little-endian, version 1 and OS ABI 0xFF (what the hermit target
//! writes; Linux programs have 0 or 3). The kernel then runs `eremite
//! PATH ARGS...`, which `main` takes as `eremite run PATH ARGS...`. The
//! `F` flag opens eremite when the rule is installed, so the rule works
//! in other mount namespaces and keeps working if the binary moves.

use std::path::Path;

/// Where `binfmt_misc` lives.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// `\x7fELF`, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI 0xFF.
const MAGIC: &[u8] = b"\x7fELF\x02\x01\x01\xff";

/// The rule's name unless one is given.
pub(crate) const DEFAULT_NAME: &str = "eremite";

/// Register eremite (this executable) for images under `name`.
pub(crate) fn install(name: &str) -> Result<(), String> {
    check_name(name)?;
    let dir = Path::new(BINFMT_DIR);
    if !dir.join("register").exists() {
        // Not mounted: root may mount it (systemd usually has).
        let status = std::process::Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR])
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() || !dir.join("register").exists() {
            return Err(format!(
                "binfmt_misc is not mounted at {BINFMT_DIR} and could not be (needs root)"
            ));
        }
    }
    if dir.join(name).exists() {
        return Err(format!(
            "a binfmt_misc rule named {name} exists already: `eremite binfmt uninstall{}` first",
            name_flag(name)
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let exe = exe
        .to_str()
        .filter(|p| !p.contains(':'))
        .ok_or_else(|| format!("{}: a path binfmt_misc cannot take", exe.display()))?;
    let magic: String = MAGIC.iter().map(|b| format!("\\x{b:02x}")).collect();
    let rule = format!(":{name}:M:0:{magic}::{exe}:F");
    std::fs::write(dir.join("register"), rule)
        .map_err(|e| format!("cannot register with binfmt_misc (needs root): {e}"))
}

/// Remove the rule `name`.
pub(crate) fn uninstall(name: &str) -> Result<(), String> {
    check_name(name)?;
    let entry = Path::new(BINFMT_DIR).join(name);
    if !entry.exists() {
        return Err(format!("no binfmt_misc rule named {name} is installed"));
    }
    std::fs::write(&entry, "-1")
        .map_err(|e| format!("cannot remove {} (needs root): {e}", entry.display()))
}

fn name_flag(name: &str) -> String {
    if name == DEFAULT_NAME {
        String::new()
    } else {
        format!(" --name {name}")
    }
}

/// A rule name is a file name in binfmt_misc's directory.
fn check_name(name: &str) -> Result<(), String> {
    let is_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !matches!(name, "register" | "status");
    if is_ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a rule name (letters, digits, - and _)"
        ))
    }
}

/// How `binfmt_misc` runs an image: `eremite PATH ARGS...`. The path is
/// what was executed, so it has a `/` (a shell that finds a program on
/// `PATH` runs it by its full path); no subcommand has one.
pub(crate) fn is_direct_run(first: &std::ffi::OsStr) -> bool {
    let path = Path::new(first);
    first.as_encoded_bytes().contains(&b'/') && path.is_file()
}
