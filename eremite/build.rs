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
//! The tools come from the toolchain's `llvm-tools` component. With the
//! `trace-kernel` feature the kernel is built with `-Zinstrument-mcount`
//! (docs/tracing.md).

use std::env;
use std::path::PathBuf;
use std::process::Command;

use eremite_kernel_build::{build_kernel, rerun_if_kernel_changes, run, toolchain_bin_dir};

const KEPT_SYMBOLS: [&str; 3] = ["sys_*", "_start", "mcount"];

fn main() {
    // A native build of the same program (`cargo build` for Linux) links
    // no kernel: the crate is then std's file calls only (src/fs_std.rs).
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("hermit") {
        return;
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let repo = manifest_dir.join("..");
    rerun_if_kernel_changes(&repo);

    // The `trace-kernel` feature: the kernel calls `mcount` too, so
    // `eremite run --trace` follows calls into the library OS.
    let extra_rustflags: &[&str] = if env::var_os("CARGO_FEATURE_TRACE_KERNEL").is_some() {
        &["-Zinstrument-mcount", "-Cpasses=ee-instrument<post-inline>"]
    } else {
        &[]
    };
    let built = build_kernel(
        &repo.join("kernel"),
        &out_dir.join("kernel-target"),
        &["--lib"],
        extra_rustflags,
    );
    let archive = built.join("liberemite_kernel.a");

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
