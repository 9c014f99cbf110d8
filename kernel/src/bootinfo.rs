//! The boot info the VMM (or the PVH entry) left for the kernel, once
//! `boot` has read and checked it: CPU count, RAM, image extent, TLS
//! template, argv, environment, command line, mounts.
//!
//! A leaf for everything above `mm`: any module may ask it, and it
//! imports nothing but `mm` (for the boot data area its strings live in).

use eremite_interface::{BootInfo, StringList};
use spin::Once;

use crate::mm;

static BOOT_INFO: Once<BootInfo> = Once::new();

/// Keep `info` as the boot info (the first call wins); the kept copy.
pub(crate) fn set(info: BootInfo) -> &'static BootInfo {
    BOOT_INFO.call_once(|| info)
}

/// The boot info, once boot has read it.
pub(crate) fn info() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}

/// Whether the VMM asked idle CPUs to halt without spinning first
/// ([`eremite_interface::boot_flags::HALT_WHEN_IDLE`]).
pub(crate) fn halts_when_idle() -> bool {
    info().is_some_and(|info| info.flags & eremite_interface::boot_flags::HALT_WHEN_IDLE != 0)
}

/// How many CPUs the VM has (1 before boot has read the boot info).
pub(crate) fn cpu_count() -> usize {
    info().map_or(1, |info| info.cpu_count.max(1) as usize)
}

/// The strings of a boot-info list (mount paths, command-line tokens).
pub(crate) fn strings(list: &StringList) -> impl Iterator<Item = &'static [u8]> {
    let bytes = mm::boot_data(list.addr, list.len);
    bytes
        .split(|&b| b == 0)
        .take(usize::try_from(list.count).unwrap_or(0))
}
