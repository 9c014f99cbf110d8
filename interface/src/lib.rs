//! The contract between the eremite kernel and the eremite VMM.
//!
//! This crate is the only one that both sides share (see `docs/design.md`).
//! It defines:
//! - [`layout`]: where the VMM puts the machine's fixed structures in guest
//!   physical memory (identity-mapped, so these are also virtual addresses);
//! - [`BootInfo`]: what the VMM tells the kernel at entry, and the small
//!   report area the kernel fills in for the VMM to read after the run;
//! - [`cmdline`]: the kernel command-line parameters the VMM passes (the
//!   virtio-MMIO devices, the network address);
//! - [`hypercall`]: the guest → host calls, one request struct each;
//! - [`errno`]: Linux error numbers, used by the kernel ABI and hypercalls;
//! - [`fs`]: open flags, mode bits and the stat/directory records;
//! - [`note`]: the ELF note that marks an image as an eremite image;
//! - [`pvh`]: what replaces hypercalls when the image boots on QEMU.
//!
//! Every struct here is `#[repr(C)]` with explicit padding and derives
//! zerocopy's traits, so both sides convert to and from bytes without
//! `unsafe`. A change to any layout bumps [`INTERFACE_VERSION`].
#![no_std]
#![forbid(unsafe_code)]

pub mod cmdline;
pub mod errno;
pub mod fs;
pub mod hypercall;
pub mod layout;
pub mod linux_syscalls;
pub mod note;
pub mod pvh;
pub mod trace;
pub mod trap;

mod boot_info;
pub use boot_info::*;

/// `b"EREMITE\0"` read as a little-endian integer: the first field of
/// [`BootInfo`] and the descriptor of the image note.
pub const MAGIC: u64 = u64::from_le_bytes(*b"EREMITE\0");

/// Version of everything in this crate. The kernel refuses a boot info of
/// another version; the VMM refuses an image whose note names another one.
pub const INTERFACE_VERSION: u32 = 14;
