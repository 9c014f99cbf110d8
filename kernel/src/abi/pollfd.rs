//! `struct pollfd`'s event bits, which hermit-abi and Linux x86_64 spell
//! the same, and the conversion of what the core reports back into them.

use crate::fd;

pub(super) const POLLIN: i16 = 0x1;
pub(super) const POLLPRI: i16 = 0x2;
pub(super) const POLLOUT: i16 = 0x4;
pub(super) const POLLERR: i16 = 0x8;
pub(super) const POLLHUP: i16 = 0x10;
pub(super) const POLLNVAL: i16 = 0x20;
pub(super) const POLLRDNORM: i16 = 0x40;
pub(super) const POLLWRNORM: i16 = 0x100;

/// `revents` for what the core reported, in the spelling the program
/// asked for (`events`: `POLLIN` or `POLLRDNORM`, `POLLOUT` or
/// `POLLWRNORM`); errors, hang-ups and bad descriptors whether asked or
/// not.
pub(super) fn revents(events: i16, ready: fd::PollEvents) -> i16 {
    let mut revents = 0;
    if ready.contains(fd::PollEvents::IN) {
        revents |= events & (POLLIN | POLLRDNORM);
    }
    if ready.contains(fd::PollEvents::OUT) {
        revents |= events & (POLLOUT | POLLWRNORM);
    }
    for (event, bit) in [
        (fd::PollEvents::ERR, POLLERR),
        (fd::PollEvents::HUP, POLLHUP),
        (fd::PollEvents::INVALID, POLLNVAL),
    ] {
        if ready.contains(event) {
            revents |= bit;
        }
    }
    revents
}
