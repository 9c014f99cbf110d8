//! The program as a whole: how it ends. Both ABIs end here.
//!
//! A normal exit is a host process's exit: every descriptor is closed (so
//! connections end cleanly, see `net::finish`), the console is flushed,
//! then the VM stops with the code. An abort stops at once.
//!
//! ABI-neutral; above `fd` and `net`, below the ABI layers.

use eremite_interface::hypercall::ExitKind;

use crate::{console, fd, hypervisor, net};

/// End the program with exit status `code`.
pub(crate) fn exit(code: i32) -> ! {
    fd::close_all();
    net::finish();
    console::flush();
    hypervisor::exit(ExitKind::Exit, code)
}

/// End the program at once, as `abort(3)` does (exit code 134).
pub(crate) fn abort() -> ! {
    console::flush();
    hypervisor::exit(ExitKind::Abort, 0)
}
