//! `epoll`: an interest list of descriptors and the events waiting on
//! them, level- or edge-triggered, optionally one-shot.
//!
//! A wait looks at every watched descriptor (all sockets in one pass over
//! the network stack, as `poll` does) and waits for a change (`events`)
//! until one has an event to report. Level-triggered: a descriptor is
//! reported while it is ready. Edge-triggered: it is reported when it
//! becomes ready for something it was not ready for at the last report,
//! or when its progress moves ([`FileObject::progress`]: more data, a
//! datagram, a connection, freed room), so a descriptor that stays
//! readable is still reported once per arrival, as Linux's wake-ups do.
//! One-shot: reported once, then disarmed until `EPOLL_CTL_MOD`.
//!
//! Registrations hold the open file description weakly: closing its last
//! descriptor removes it from every interest list, as on Linux. An
//! `epoll` instance cannot watch another (Linux can; nothing we run
//! needs it).
//!
//! ABI-neutral: events are [`PollEvents`], the ABI maps its bits.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::FileStat;

use super::poll::events_of;
use super::{FileObject, OpenFile, PollEvents};
use crate::events;
use crate::net::{self, Readiness};
use crate::sync::Lock;

bitflags::bitflags! {
    /// How a registration reports.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub(crate) struct Trigger: u8 {
        /// `EPOLLET`: on changes, not while ready.
        const EDGE = 1;
        /// `EPOLLONESHOT`: once, then disarmed until modified.
        const ONESHOT = 2;
    }
}

/// `epoll_ctl`'s operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EpollOp {
    /// `EPOLL_CTL_ADD`: `EEXIST` if watched already.
    Add,
    /// `EPOLL_CTL_MOD`: `ENOENT` if not watched; re-arms a one-shot.
    Modify,
    /// `EPOLL_CTL_DEL`: `ENOENT` if not watched.
    Delete,
}

/// How `epoll_ctl` watches a descriptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watch {
    pub(crate) wanted: PollEvents,
    pub(crate) trigger: Trigger,
    /// The program's word, given back with each event.
    pub(crate) data: u64,
    /// The events in the ABI's own bits (see [`EpollEvent::asked`]).
    pub(crate) asked: u32,
}

/// One event `epoll_wait` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EpollEvent {
    pub(crate) events: PollEvents,
    /// The program's word from the registration.
    pub(crate) data: u64,
    /// The registration's events in the ABI's own bits, as given: the
    /// ABI reports only the bits that were asked for.
    pub(crate) asked: u32,
}

/// One watched descriptor.
struct Interest {
    file: Weak<OpenFile>,
    wanted: PollEvents,
    trigger: Trigger,
    data: u64,
    asked: u32,
    /// A one-shot that reported, until modified.
    is_disarmed: bool,
    /// Edge-triggered: what was ready at the last look (cleared by a
    /// look that found it not ready), and its progress at the last
    /// report (`None`: never reported).
    seen: PollEvents,
    reported_progress: Option<u64>,
}

/// The interest list, by descriptor number.
#[derive(Default)]
struct Interests {
    entries: BTreeMap<i32, Interest>,
    /// Where the next look starts, so that with more events than room
    /// every descriptor gets its turn.
    next_fd: i32,
}

/// An `epoll` instance.
pub(crate) struct Epoll {
    interests: Lock<Interests>,
}

impl Epoll {
    pub(super) fn new() -> Self {
        Self {
            interests: Lock::new(Interests::default()),
        }
    }

    /// `epoll_ctl` for descriptor `fd`, open as `file`.
    pub(crate) fn control(
        &self,
        op: EpollOp,
        fd: i32,
        file: &Arc<OpenFile>,
        how: Watch,
    ) -> Result<(), Errno> {
        if file.object.as_epoll().is_some() {
            return Err(errno::EINVAL);
        }
        if !file.object.can_epoll() {
            return Err(errno::EPERM);
        }
        let mut interests = self.interests.lock();
        // A registration whose description is gone (or another one now
        // behind the same number) no longer counts.
        let is_watched = interests
            .entries
            .get(&fd)
            .is_some_and(|i| i.file.upgrade().is_some_and(|f| Arc::ptr_eq(&f, file)));
        let fresh = Interest {
            file: Arc::downgrade(file),
            wanted: how.wanted,
            trigger: how.trigger,
            data: how.data,
            asked: how.asked,
            is_disarmed: false,
            seen: PollEvents::empty(),
            reported_progress: None,
        };
        match op {
            EpollOp::Add if is_watched => Err(errno::EEXIST),
            EpollOp::Add => {
                interests.entries.insert(fd, fresh);
                Ok(())
            }
            EpollOp::Modify | EpollOp::Delete if !is_watched => Err(errno::ENOENT),
            EpollOp::Modify => {
                interests.entries.insert(fd, fresh);
                Ok(())
            }
            EpollOp::Delete => {
                interests.entries.remove(&fd);
                Ok(())
            }
        }
    }

    /// `epoll_wait`: up to `max` events, waiting until there is one or
    /// `deadline_ns` (monotonic; `Some(0)`: do not wait; `None`: for
    /// ever) passes (then none).
    pub(crate) fn wait(
        &self,
        max: usize,
        deadline_ns: Option<u64>,
    ) -> Result<Vec<EpollEvent>, Errno> {
        Ok(events::wait_until(deadline_ns, || {
            let found = self.look(max);
            (!found.is_empty()).then_some(found)
        })?
        .unwrap_or_default())
    }

    /// One look at every watched descriptor: the events to report now.
    fn look(&self, max: usize) -> Vec<EpollEvent> {
        let mut interests = self.interests.lock();
        interests.entries.retain(|_, i| i.file.strong_count() > 0);
        let start = interests.next_fd;
        // Round robin: from `next_fd` to the end, then from the start.
        let order: Vec<i32> = interests
            .entries
            .range(start..)
            .chain(interests.entries.range(..start))
            .filter(|(_, i)| !i.is_disarmed)
            .map(|(&fd, _)| fd)
            .collect();
        let files: Vec<Arc<OpenFile>> = order
            .iter()
            .filter_map(|fd| interests.entries.get(fd)?.file.upgrade())
            .collect();
        if files.len() != order.len() {
            // A description went away between the two lines above: look
            // again next time.
            return Vec::new();
        }
        let states = states_of(&files);
        let mut found = Vec::new();
        for (fd, (readiness, progress)) in order.into_iter().zip(states) {
            if found.len() == max {
                interests.next_fd = fd;
                return found;
            }
            let Some(interest) = interests.entries.get_mut(&fd) else {
                continue;
            };
            let ready = events_of(interest.wanted, readiness);
            if let Some(event) = interest.report(ready, progress) {
                found.push(event);
            }
        }
        interests.next_fd = 0;
        found
    }
}

impl Interest {
    /// What to report for this look, if anything, given what is `ready`
    /// and the descriptor's `progress`; updates the edge state.
    fn report(&mut self, ready: PollEvents, progress: u64) -> Option<EpollEvent> {
        if ready.is_empty() {
            self.seen = PollEvents::empty();
            return None;
        }
        let is_news = !(ready - self.seen).is_empty() || self.reported_progress != Some(progress);
        self.seen = ready;
        if self.trigger.contains(Trigger::EDGE) && !is_news {
            return None;
        }
        self.reported_progress = Some(progress);
        self.is_disarmed = self.trigger.contains(Trigger::ONESHOT);
        Some(EpollEvent {
            events: ready,
            data: self.data,
            asked: self.asked,
        })
    }
}

/// Each file's readiness and progress, the sockets' from one pass over
/// the network stack.
fn states_of(files: &[Arc<OpenFile>]) -> Vec<(Readiness, u64)> {
    let sockets: Vec<&net::Socket> = files.iter().filter_map(|f| f.object.as_socket()).collect();
    let mut socket_states = net::readiness(&sockets).into_iter();
    files
        .iter()
        .map(|file| match file.object.as_socket() {
            Some(_) => socket_states.next().unwrap_or_default(),
            None => (file.object.readiness(), file.object.progress()),
        })
        .collect()
}

impl FileObject for Epoll {
    /// Linux shows an anonymous inode, mode 0600 and no type bits.
    fn stat(&self) -> Result<FileStat, Errno> {
        Ok(FileStat {
            mode: 0o600,
            nlink: 1,
            ..FileStat::default()
        })
    }

    /// Never ready: an `epoll` instance is not watched by `poll` here.
    fn readiness(&self) -> Readiness {
        Readiness::default()
    }

    fn as_epoll(&self) -> Option<&Epoll> {
        Some(self)
    }
}
