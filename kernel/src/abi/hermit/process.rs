//! Process-wide calls: exit, abort, ids, sizes, CPU count.

use eremite_interface::layout::PAGE_SIZE;

use super::exported;
use crate::{bootinfo, net, process, sched};

exported! {
    /// End the program: like a host process's exit, close every descriptor
    /// (connections then end cleanly), then stop the VM.
    fn sys_exit(status: i32) -> ! {
        process::exit(status)
    }
}

exported! {
    fn sys_abort() -> ! {
        process::abort()
    }
}

exported! {
    /// The one process of the VM has a fixed id.
    fn sys_getpid() -> i32 {
        1
    }
}

exported! {
    fn sys_getpagesize() -> i32 {
        i32::try_from(PAGE_SIZE).unwrap_or(i32::MAX)
    }
}

exported! {
    fn sys_available_parallelism() -> usize {
        bootinfo::cpu_count()
    }
}

exported! {
    fn sys_get_processor_count() -> usize {
        sys_available_parallelism()
    }
}

exported! {
    /// The calling thread's last error: every `sys_*` function also returns
    /// it (negated), which is what std reads.
    fn sys_get_errno() -> i32 {
        sched::errno()
    }
}

exported! {
    fn sys_errno() -> i32 {
        sched::errno()
    }
}

exported! {
    fn sys_get_priority() -> u8 {
        2
    }
}

exported! {
    fn sys_set_priority(_tid: u32, _prio: u8) {}
}

exported! {
    /// Beside hermit-abi: bytes allocated from the kernel heap now (the
    /// application's memory and the kernel's), for leak checks
    /// (`eremite::stats`).
    fn sys_heap_in_use() -> usize {
        crate::mm::heap_in_use_bytes()
    }
}

exported! {
    /// Beside hermit-abi: snapshot the VM now (`eremite::vm::snapshot`):
    /// 0 in the VM that asked, 1 in one restored from the snapshot, a
    /// negative errno when none was written. Non-zero `stop`: the VM that
    /// asked ends once it is written.
    fn sys_eremite_snapshot(stop: i32) -> i64 {
        crate::hypervisor::snapshot(stop != 0)
    }
}

exported! {
    /// Beside hermit-abi: open sockets, for leak checks (`eremite::stats`).
    fn sys_open_sockets() -> usize {
        net::socket_counts().0
    }
}

exported! {
    /// Beside hermit-abi: closed connections still finishing with their
    /// peers (`eremite::stats`).
    fn sys_closing_sockets() -> usize {
        net::socket_counts().1
    }
}
