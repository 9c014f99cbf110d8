//! Build the eremite kernel and link it into the application.
//!
//! 1. `cargo build` the kernel crate (`../kernel`) for
//!    `x86_64-unknown-none` in a target directory under `OUT_DIR`;
//! 2. partially link its static library into one relocatable object
//!    (`rust-lld -r --whole-archive`), so the kernel's internal references
//!    are resolved inside it;
//! 3. make every symbol local except the ABI (`sys_*`), the entry point
//!    `_start` and `mcount` (`llvm-objcopy --keep-global-symbol`): the
//!    kernel's own core, alloc and compiler_builtins can then never clash
//!    with the application's;
//! 4. archive that object and tell cargo to link it whole.
//!
//! The tools come from the toolchain's `llvm-tools` component.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_TARGET: &str = "x86_64-unknown-none";
const KEPT_SYMBOLS: [&str; 3] = ["sys_*", "_start", "mcount"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let kernel_dir = manifest_dir.join("../kernel");
    let interface_dir = manifest_dir.join("../interface");
    let libs_dir = manifest_dir.join("../libs");
    for path in [
        kernel_dir.join("src"),
        kernel_dir.join("Cargo.toml"),
        kernel_dir.join("Cargo.lock"),
        kernel_dir.join(".cargo/config.toml"),
        interface_dir.join("src"),
        interface_dir.join("Cargo.toml"),
        libs_dir.join("vfs/src"),
        libs_dir.join("vfs/Cargo.toml"),
        libs_dir.join("cpio/src"),
        libs_dir.join("cpio/Cargo.toml"),
        libs_dir.join("virtq/src"),
        libs_dir.join("virtq/Cargo.toml"),
        libs_dir.join("net/src"),
        libs_dir.join("net/Cargo.toml"),
        libs_dir.join("mm/src"),
        libs_dir.join("mm/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let target_dir = out_dir.join("kernel-target");
    build_kernel(&kernel_dir, &target_dir);
    let archive = target_dir
        .join(KERNEL_TARGET)
        .join("release/liberemite_kernel.a");

    let tools = toolchain_bin_dir();
    let object = out_dir.join("eremite_kernel.o");
    run(Command::new(tools.join("rust-lld"))
        .args(["-flavor", "gnu", "-r", "--whole-archive"])
        .arg(&archive)
        .arg("-o")
        .arg(&object));
    let mut objcopy = Command::new(tools.join("llvm-objcopy"));
    objcopy.arg("--wildcard");
    for symbol in KEPT_SYMBOLS {
        objcopy.arg(format!("--keep-global-symbol={symbol}"));
    }
    run(objcopy.arg(&object));

    let library = out_dir.join("liberemite_kernel.a");
    let _ = std::fs::remove_file(&library);
    run(Command::new(tools.join("llvm-ar"))
        .arg("crs")
        .arg(&library)
        .arg(&object));

    println!("cargo:rustc-link-search=native={}", out_dir.display());
    println!("cargo:rustc-link-lib=static:+whole-archive=eremite_kernel");
}

/// Run a nested cargo for the kernel, with the environment cargo gave this
/// build script cleaned of everything meant for the outer build (target,
/// flags, profile), so only the kernel's own configuration applies.
fn build_kernel(kernel_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(kernel_dir)
        .args([
            "build",
            "--release",
            "--target",
            KERNEL_TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
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
}

/// Where the toolchain keeps rust-lld and the llvm-tools binaries.
fn toolchain_bin_dir() -> PathBuf {
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

fn run(command: &mut Command) {
    let status = command.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("eremite: {command:?} failed with {s}"),
        Err(e) => panic!("eremite: cannot run {command:?}: {e}"),
    }
}
