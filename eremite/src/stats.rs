//! What the kernel holds, for tests and leak checks: heap memory in use
//! and sockets. Each call is a function call into the kernel (no exit).

unsafe extern "C" {
    fn sys_heap_in_use() -> usize;
    fn sys_open_sockets() -> usize;
    fn sys_closing_sockets() -> usize;
}

/// Bytes allocated from the guest's heap now: the application's
/// allocations and the kernel's own (socket buffers, thread stacks, open
/// files).
pub fn heap_in_use_bytes() -> usize {
    // SAFETY: takes no arguments and only reads the kernel's counters.
    unsafe { sys_heap_in_use() }
}

/// Sockets open now (each a descriptor of the application).
pub fn open_sockets() -> usize {
    // SAFETY: as above.
    unsafe { sys_open_sockets() }
}

/// Connections the application closed that are still finishing with
/// their peers (sending their last data and FIN).
pub fn closing_sockets() -> usize {
    // SAFETY: as above.
    unsafe { sys_closing_sockets() }
}
