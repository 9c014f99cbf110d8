//! eremite's library OS.
//!
//! Linked with one application into one image and run at CPL3 by the
//! eremite VMM (see `docs/design.md`). The layers:
//! - [`arch`]: the only assembly: entry, CPL0 supervisor, port I/O, TSC;
//! - [`abi`]: hermit-abi's `sys_*` functions, a thin layer that checks
//!   pointers and calls the core;
//! - the ABI-neutral core: [`boot`], [`console`], [`fs`], [`mm`], [`time`],
//!   [`sched`], [`net`], [`fault`], [`hypervisor`], [`random`];
//! - [`pvh`]: booting on QEMU through the PVH entry instead of our VMM;
//! - [`drivers`]: virtio devices (the network card).
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

mod abi;
mod arch;
mod boot;
mod bootinfo;
mod console;
mod cpu;
mod drivers;
mod events;
mod fault;
mod fd;
mod fs;
mod functrace;
mod hypervisor;
mod mm;
mod net;
mod process;
mod pvh;
mod random;
mod resolve;
mod sched;
mod semaphore;
mod sync;
mod threadlist;
mod time;
