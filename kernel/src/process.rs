//! The program as a whole: how it ends. Both ABIs end here.
//!
//! A normal exit is a host process's exit: every descriptor is closed (so
//! connections end cleanly, see `net::finish`), the console is flushed,
//! then the VM stops with the code. An abort stops at once.
//!
//! ABI-neutral; above `fd` and `net`, below the ABI layers.

use eremite_interface::hypercall::ExitKind;

use crate::{arch, console, fd, hypervisor, net};

/// End the program with exit status `code`.
pub(crate) fn exit(code: i32) -> ! {
    fd::close_all();
    net::finish();
    console::flush();
    hypervisor::exit(ExitKind::Exit, code)
}

/// What the ABI does with a signal the host sent (bit `n - 1` for signal
/// `n`); without one, the program ends as an unhandled signal ends a Linux
/// process.
static HOST_SIGNAL_HANDLER: spin::Once<fn(u64)> = spin::Once::new();

/// Let the ABI take the signals the host sends (the Linux ABI runs the
/// program's handlers); the first registration wins.
pub(crate) fn set_host_signal_handler(handler: fn(u64)) {
    HOST_SIGNAL_HANDLER.call_once(|| handler);
}

/// Signals the host sent (`SIGINT`, `SIGTERM` at the VMM): the ABI's
/// handler, or the end of the program with status 128 + the signal.
pub(crate) fn host_signals(signals: u64) {
    match HOST_SIGNAL_HANDLER.get() {
        Some(handler) => handler(signals),
        None if signals != 0 => exit(128 + signals.trailing_zeros().cast_signed() + 1),
        None => {}
    }
}

/// End the program at once, as `abort(3)` does (exit code 134). Under
/// GDB, stop there first (after a panic's message, with its backtrace).
pub(crate) fn abort() -> ! {
    console::flush();
    crate::fault::record_crash(abort as fn() -> ! as usize as u64, arch::stack_pointer());
    arch::debugger_break();
    hypervisor::exit(ExitKind::Abort, 0)
}
