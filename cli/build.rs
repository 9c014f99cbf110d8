//! Build the stand-alone Linux-ABI kernel image (`kernel/src/bin/linux.rs`)
//! that `eremite run` boots Linux programs with, so that `cargo build` of
//! the CLI is all a user builds. The image is carried in the binary
//! (`include_bytes!` of `EREMITE_LINUX_KERNEL`).
#![forbid(unsafe_code)]

use std::env;
use std::path::PathBuf;

use eremite_kernel_build::{build_kernel, rerun_if_kernel_changes};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let repo = manifest_dir.join("..");
    rerun_if_kernel_changes(&repo);
    let built = build_kernel(
        &repo.join("kernel"),
        &out_dir.join("kernel-target"),
        &["--bin", "eremite-linux-kernel"],
        &[],
    );
    println!(
        "cargo:rustc-env=EREMITE_LINUX_KERNEL={}",
        built.join("eremite-linux-kernel").display()
    );
}
