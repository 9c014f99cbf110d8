//! hermit-abi functions that are not implemented yet. They exist so that
//! every std program links; each fails with `ENOSYS` (or the ABI's failure
//! value where the return type has no errno). The README's "what works"
//! table lists them.

use core::ffi::c_void;

use eremite_interface::errno::ENOSYS;

macro_rules! enosys {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name($(_: $arg),*) -> $ret {
                <$ret>::from(ENOSYS.negated() as i8)
            }
        )*
    };
}

enosys! {
    // Memory mappings.
    sys_mmap(usize, u32, *mut *mut u8) -> i32;
    sys_munmap(*mut u8, usize) -> i32;
    sys_mprotect(*mut u8, usize, u32) -> i32;
    // Semaphores and wait queues.
    sys_sem_init(*mut c_void, i32, u32) -> i32;
    sys_sem_destroy(*mut c_void) -> i32;
    sys_sem_post(*mut c_void) -> i32;
    sys_sem_trywait(*mut c_void) -> i32;
    sys_sem_timedwait(*mut c_void, *const c_void) -> i32;
    sys_notify(usize, i32) -> i32;
    sys_add_queue(usize, i64) -> i32;
    sys_wait(usize) -> i32;
    sys_init_queue(usize) -> i32;
    sys_destroy_queue(usize) -> i32;
    // Network.
    sys_network_init() -> i32;
    sys_getaddrbyname(*const u8, *mut u8, usize) -> i32;
    sys_accept(i32, *mut c_void, *mut u32) -> i32;
    sys_bind(i32, *const c_void, u32) -> i32;
    sys_connect(i32, *const c_void, u32) -> i32;
    sys_listen(i32, i32) -> i32;
    sys_recv(i32, *mut u8, usize, i32) -> isize;
    sys_recvfrom(i32, *mut u8, usize, i32, *mut c_void, *mut u32) -> isize;
    sys_send(i32, *const c_void, usize, i32) -> isize;
    sys_sendto(i32, *const c_void, usize, i32, *const c_void, u32) -> isize;
    sys_getpeername(i32, *mut c_void, *mut u32) -> i32;
    sys_getsockname(i32, *mut c_void, *mut u32) -> i32;
    sys_getsockopt(i32, i32, i32, *mut c_void, *mut u32) -> i32;
    sys_setsockopt(i32, i32, i32, *const c_void, u32) -> i32;
    sys_ioctl(i32, i32, *mut c_void) -> i32;
    sys_eventfd(u64, i16) -> i32;
    sys_poll(*mut c_void, usize, i32) -> i32;
    sys_shutdown(i32, i32) -> i32;
    sys_shutdown_socket(i32, i32) -> i32;
    sys_socket(i32, i32, i32) -> i32;
    sys_getaddrinfo(*const u8, *const u8, *const c_void, *mut *mut c_void) -> i32;
}

/// Nothing is ever allocated by `sys_getaddrinfo` yet.
#[unsafe(no_mangle)]
pub extern "C" fn sys_freeaddrinfo(_ai: *mut c_void) {}
