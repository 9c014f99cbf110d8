//! Process-wide calls: exit, abort, ids, sizes, CPU count.

use eremite_interface::hypercall::ExitKind;
use eremite_interface::layout::PAGE_SIZE;

use crate::{boot, console, fs, hypervisor, net, sched};

/// End the program: like a host process's exit, close every descriptor
/// (connections then end cleanly), then stop the VM.
#[unsafe(no_mangle)]
pub extern "C" fn sys_exit(status: i32) -> ! {
    fs::close_all();
    net::finish();
    console::flush();
    hypervisor::exit(ExitKind::Exit, status)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_abort() -> ! {
    console::flush();
    hypervisor::exit(ExitKind::Abort, 0)
}

/// The one process of the VM has a fixed id.
#[unsafe(no_mangle)]
pub extern "C" fn sys_getpid() -> i32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_getpagesize() -> i32 {
    PAGE_SIZE as i32
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_available_parallelism() -> usize {
    boot::info().map_or(1, |info| info.cpu_count.max(1) as usize)
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_get_processor_count() -> usize {
    sys_available_parallelism()
}

/// The calling thread's last error: every `sys_*` function also returns
/// it (negated), which is what std reads.
#[unsafe(no_mangle)]
pub extern "C" fn sys_get_errno() -> i32 {
    sched::errno()
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_errno() -> i32 {
    sched::errno()
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_get_priority() -> u8 {
    2
}

#[unsafe(no_mangle)]
pub extern "C" fn sys_set_priority(_tid: u32, _prio: u8) {}

/// Beside hermit-abi: bytes allocated from the kernel heap now (the
/// application's memory and the kernel's), for leak checks
/// (`eremite::stats`).
#[unsafe(no_mangle)]
pub extern "C" fn sys_heap_in_use() -> usize {
    crate::mm::heap_in_use_bytes()
}

/// Beside hermit-abi: open sockets, for leak checks (`eremite::stats`).
#[unsafe(no_mangle)]
pub extern "C" fn sys_open_sockets() -> usize {
    net::socket_counts().0
}

/// Beside hermit-abi: closed connections still finishing with their
/// peers (`eremite::stats`).
#[unsafe(no_mangle)]
pub extern "C" fn sys_closing_sockets() -> usize {
    net::socket_counts().1
}
