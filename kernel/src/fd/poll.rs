//! `poll`: which descriptors are ready, waiting for a change (`events`)
//! until one is or the deadline passes. Linux's `poll`, `ppoll`, `select`
//! and `epoll_wait` are all this loop with another way of naming what to
//! watch.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{OpenFile, file};
use eremite_interface::errno::Errno;

use crate::events;
use crate::net::{self, Readiness};

bitflags::bitflags! {
    /// What a descriptor is watched for and what it reports (each ABI
    /// maps its own `POLL*` bits to these).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub(crate) struct PollEvents: u8 {
        /// Readable (or a listener has a connection, or end of file).
        const IN = 1;
        /// Writable.
        const OUT = 2;
        /// An error is pending (always reported).
        const ERR = 4;
        /// The peer hung up (always reported).
        const HUP = 8;
        /// The descriptor is not open (always reported).
        const INVALID = 16;
        /// The peer shut its side down (`EPOLLRDHUP`; only when wanted).
        /// Reported with a hang-up: readiness does not tell a half-closed
        /// stream from one that simply has data.
        const PEER_CLOSED = 32;
    }
}

/// One descriptor to watch: `wanted` in, `ready` out. A negative `fd` is
/// skipped (`ready` stays empty), as `poll(2)` says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollEntry {
    pub(crate) fd: i32,
    pub(crate) wanted: PollEvents,
    pub(crate) ready: PollEvents,
}

/// What `ready` means to a watcher that wants `wanted` (errors and
/// hang-ups are always reported).
pub(super) fn events_of(wanted: PollEvents, ready: Readiness) -> PollEvents {
    let mut events = PollEvents::empty();
    events.set(PollEvents::IN, ready.is_readable);
    events.set(PollEvents::OUT, ready.is_writable);
    events.set(PollEvents::PEER_CLOSED, ready.has_hangup);
    events &= wanted;
    events.set(PollEvents::ERR, ready.has_error);
    events.set(PollEvents::HUP, ready.has_hangup);
    events
}

/// Fill in each entry's `ready` once one is ready or `deadline_ns`
/// (monotonic; `None`: never) passes; the number of ready entries.
pub(crate) fn poll(entries: &mut [PollEntry], deadline_ns: Option<u64>) -> Result<usize, Errno> {
    // Hold every open file for the whole call, so a descriptor closed
    // meanwhile is still answered for.
    let held: Vec<Option<Arc<OpenFile>>> = entries
        .iter()
        .map(|e| if e.fd < 0 { None } else { file(e.fd).ok() })
        .collect();
    let sockets: Vec<&net::Socket> = held
        .iter()
        .flatten()
        .filter_map(|f| f.object.as_socket())
        .collect();
    let look = || {
        // One look at the network stack for every socket.
        let mut socket_readiness = net::readiness(&sockets).into_iter();
        let mut count = 0;
        for (entry, held) in entries.iter_mut().zip(&held) {
            entry.ready = match held {
                _ if entry.fd < 0 => PollEvents::empty(),
                None => PollEvents::INVALID,
                Some(file) => {
                    let readiness = match file.object.as_socket() {
                        Some(_) => socket_readiness.next().unwrap_or_default().0,
                        None => file.object.readiness(),
                    };
                    events_of(entry.wanted, readiness)
                }
            };
            count += usize::from(!entry.ready.is_empty());
        }
        (count > 0).then_some(count)
    };
    Ok(events::wait_until(deadline_ns, look)?.unwrap_or(0))
}
