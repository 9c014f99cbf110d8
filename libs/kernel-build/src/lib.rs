//! What the build scripts that need the kernel share: the `eremite`
//! crate's (which links the kernel's static library into hermit images)
//! and the CLI's (which carries the stand-alone Linux-ABI kernel image).
//! Both run a nested `cargo build` of `kernel/` for `x86_64-unknown-none`
//! with the pinned toolchain's own tools.
#![forbid(unsafe_code)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel's target.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Tell cargo to run the build script again when the kernel's sources or
/// those of the crates it is built from change; `repo` is the checkout.
pub fn rerun_if_kernel_changes(repo: &Path) {
    let mut paths = vec![
        repo.join("kernel/src"),
        repo.join("kernel/Cargo.toml"),
        repo.join("kernel/Cargo.lock"),
        repo.join("kernel/build.rs"),
        repo.join("kernel/.cargo/config.toml"),
        repo.join("interface/src"),
        repo.join("interface/Cargo.toml"),
    ];
    for lib in ["vfs", "cpio", "virtq", "net", "mm"] {
        paths.push(repo.join("libs").join(lib).join("src"));
        paths.push(repo.join("libs").join(lib).join("Cargo.toml"));
    }
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Build the kernel crate in `kernel_dir` (release, for
/// [`KERNEL_TARGET`]) into `target_dir`, with `selection` choosing what
/// (`["--lib"]`, `["--bin", NAME]`). The environment cargo gave this build
/// script is cleaned of everything meant for the outer build (target,
/// flags, profile), so only the kernel's own configuration applies, with
/// `extra_rustflags` added to it (cargo joins the `build.rustflags`
/// arrays of its configuration sources). Returns the directory of the
/// built artifacts.
pub fn build_kernel(
    kernel_dir: &Path,
    target_dir: &Path,
    selection: &[&str],
    extra_rustflags: &[&str],
) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(kernel_dir)
        .args(["build", "--release", "--target", KERNEL_TARGET])
        .args(selection)
        .arg("--target-dir")
        .arg(target_dir);
    if !extra_rustflags.is_empty() {
        let flags: Vec<String> = extra_rustflags.iter().map(|f| format!("{f:?}")).collect();
        command
            .arg("--config")
            .arg(format!("build.rustflags=[{}]", flags.join(",")));
    }
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let is_outer_build_setting = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("__CARGO")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER";
        if is_outer_build_setting {
            command.env_remove(key.as_ref());
        }
    }
    run(&mut command);
    target_dir.join(KERNEL_TARGET).join("release")
}

/// Where the toolchain keeps rust-lld and the llvm-tools binaries.
pub fn toolchain_bin_dir() -> PathBuf {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc).args(["--print", "sysroot"]).output();
    let sysroot = match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!("eremite: cannot ask {rustc:?} for its sysroot"),
    };
    let host = env::var("HOST").expect("set by cargo");
    let bin = PathBuf::from(sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin");
    if !bin.join("llvm-objcopy").exists() {
        panic!(
            "eremite: {} has no llvm-objcopy; install the toolchain's llvm-tools component \
             (copy eremite's rust-toolchain.toml next to your Cargo.toml)",
            bin.display()
        );
    }
    bin
}

/// Run `command`, which must succeed.
pub fn run(command: &mut Command) {
    let status = command.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("eremite: {command:?} failed with {s}"),
        Err(e) => panic!("eremite: cannot run {command:?}: {e}"),
    }
}
