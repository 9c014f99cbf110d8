//! Function tracing (`eremite run --trace`): what the kernel records in
//! guest memory while an instrumented application runs, and the VMM reads
//! after the run (the kernel report's `trace_buffers` says where).
//!
//! Each CPU has one [`TraceBuffer`] of [`TraceEvent`]s, filled in order
//! and never wrapped: when it is full, later events are counted in
//! `dropped` and not kept (the oldest are kept).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One function entry or exit.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TraceEvent {
    /// The time-stamp counter when it happened.
    pub tsc: u64,
    /// An address inside the function (where it called `mcount`, just
    /// after its prologue), the same for its entry and its exit.
    pub site: u64,
    /// The thread ([`TraceEvent::tid`]), the kind ([`TraceEvent::is_exit`])
    /// and the nesting depth ([`TraceEvent::depth`]).
    pub info: u64,
}

impl TraceEvent {
    const EXIT: u64 = 1 << 63;
    const DEPTH_SHIFT: u32 = 32;
    const DEPTH_MASK: u64 = 0xffff;

    /// An entry (or, with `is_exit`, an exit) of the function at `site`
    /// by thread `tid` at nesting depth `depth` (0 for the outermost
    /// traced call).
    pub fn new(tsc: u64, site: u64, tid: u32, depth: u16, is_exit: bool) -> Self {
        let kind = if is_exit { Self::EXIT } else { 0 };
        Self {
            tsc,
            site,
            info: kind | u64::from(depth) << Self::DEPTH_SHIFT | u64::from(tid),
        }
    }

    /// The thread.
    pub fn tid(&self) -> u32 {
        self.info as u32
    }

    /// Whether this is an exit.
    pub fn is_exit(&self) -> bool {
        self.info & Self::EXIT != 0
    }

    /// How many traced calls of the thread were open around it.
    pub fn depth(&self) -> u16 {
        ((self.info >> Self::DEPTH_SHIFT) & Self::DEPTH_MASK) as u16
    }
}

/// One CPU's events.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TraceBuffer {
    /// Guest address of the first [`TraceEvent`].
    pub events: u64,
    /// Room, in events.
    pub capacity: u64,
    /// Events recorded (at most `capacity`).
    pub len: u64,
    /// Events not recorded because the buffer was full, and calls not
    /// traced because their thread's return stack was full.
    pub dropped: u64,
}

/// The kernel command-line key that turns tracing on: `ftrace=BYTES`,
/// the size of all buffers together.
pub const CMDLINE_KEY: &str = "ftrace";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_keeps_its_fields() {
        let event = TraceEvent::new(5, 0x20_1000, 7, 300, true);
        assert_eq!(
            (event.tid(), event.depth(), event.is_exit()),
            (7, 300, true)
        );
        let entry = TraceEvent::new(5, 0x20_1000, u32::MAX, 0, false);
        assert_eq!(
            (entry.tid(), entry.depth(), entry.is_exit()),
            (u32::MAX, 0, false)
        );
        assert_eq!(core::mem::size_of::<TraceEvent>(), 24);
    }
}
