//! hermit-abi: the `sys_*` functions Rust's std calls on
//! `target_os = "hermit"` (hermit-abi 0.5, as pinned by the toolchain's
//! std), exported with C linkage and unmangled names through
//! [`exported!`](super::exported).
//!
//! Each function only turns raw pointers into checked references through
//! [`user`] (the one place with pointer `unsafe`), converts hermit-abi's
//! numbers into the core's types (open flags, protections, poll events,
//! socket options), calls the core (`fd`, `fs`, `net`, `mm`, `time`,
//! `sched`, `process`) and maps `Result<_, Errno>` to the ABI's
//! negative-errno form with [`ret`]. Functions not implemented yet return
//! `-ENOSYS` from [`unsupported`]. `unsafe_code` stays denied here: only
//! the functions whose contract is unsafe (the allocator's `free` and
//! `realloc`, `freeaddrinfo`) forward it in their bodies.

mod entropy;
mod fs;
mod io;
mod mem;
mod net;
mod process;
mod sync;
mod thread;
mod time;
mod unsupported;

use eremite_interface::errno::Errno;

use super::{exported, user};

/// Map a result to the ABI's return form: the value, or `-errno`.
trait AbiReturn {
    type Raw;
    fn ret(self) -> Self::Raw;
}

/// A failure also sets the thread's `errno` (`sys_get_errno`): std reads
/// the negative return, code written for libc (mio) reads `errno`.
fn failed(e: Errno) -> i32 {
    crate::sched::set_errno(e.0);
    e.negated()
}

impl AbiReturn for Result<i32, Errno> {
    type Raw = i32;
    fn ret(self) -> i32 {
        self.unwrap_or_else(failed)
    }
}

impl AbiReturn for Result<usize, Errno> {
    type Raw = isize;
    fn ret(self) -> isize {
        match self {
            Ok(n) => isize::try_from(n).unwrap_or(isize::MAX),
            Err(e) => failed(e) as isize,
        }
    }
}

/// `result.ret()` as a function, for brevity at call sites.
fn ret<R: AbiReturn>(result: R) -> R::Raw {
    result.ret()
}
