//! Link a Rust program with the eremite kernel.
//!
//! Add `eremite` as a dependency, write `use eremite as _;` in `main.rs`,
//! and build for `x86_64-unknown-hermit` with
//! `-Zbuild-std=std,panic_abort`: the build script links the kernel into
//! the executable, which `eremite run` then boots.
//!
//! Compiled for the application's target (with SSE), this crate also
//! provides what the hermit target expects from its C library: the memory
//! intrinsics ([`mem`]); [`fs`], the file-system calls that std for
//! hermit does not make (rename, symlinks, truncate, canonicalize…);
//! [`stats`], the kernel's counters for leak checks; and [`vm`], what a
//! program may ask of its VM (a snapshot of itself).
//!
//! On any other target (a native build of the same program) it is empty
//! but for [`fs`], which then calls std, so one `Cargo.toml` and one
//! `use eremite as _;` serve both builds.
#![no_std]
#![cfg_attr(target_os = "hermit", feature(link_arg_attribute))]
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

#[cfg(target_os = "hermit")]
pub mod fs;
#[cfg(not(target_os = "hermit"))]
#[path = "fs_std.rs"]
pub mod fs;
#[cfg(target_os = "hermit")]
mod mem;

// Link the image at the address where it runs, with its dynamic
// relocations already applied, so that a loader that knows nothing of
// relocations (QEMU's PVH boot loads `PT_LOAD` segments at their `p_paddr`
// and jumps to the PVH note's entry) gets a working image. Our VMM still
// applies the relocations (with a bias of zero). See docs/qemu.md.
#[cfg(target_os = "hermit")]
#[link(
    kind = "link-arg",
    name = "--image-base=0x200000",
    modifiers = "+verbatim"
)]
#[link(
    kind = "link-arg",
    name = "--apply-dynamic-relocs",
    modifiers = "+verbatim"
)]
unsafe extern "C" {}
#[cfg(target_os = "hermit")]
pub mod stats;
pub mod vm;
