//! hermit-abi functions that are not implemented yet. They exist so that
//! every std program links; each fails with `ENOSYS`. The README's "what
//! works" table lists them.

use eremite_interface::errno::ENOSYS;

use super::exported;

exported! {
    // Hermit's wait queues (no std or crate we know of calls them).
    fn sys_notify(_queue: usize, _count: i32) -> i32 {
        ENOSYS.negated()
    }
    fn sys_add_queue(_queue: usize, _timeout_ns: i64) -> i32 {
        ENOSYS.negated()
    }
    fn sys_wait(_queue: usize) -> i32 {
        ENOSYS.negated()
    }
    fn sys_init_queue(_queue: usize) -> i32 {
        ENOSYS.negated()
    }
    fn sys_destroy_queue(_queue: usize) -> i32 {
        ENOSYS.negated()
    }
}
