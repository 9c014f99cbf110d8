//! TCP sockets: `connect`, `listen`/`accept`, byte streams, `shutdown`,
//! `close`, and the bookkeeping that smoltcp leaves to its user.
//!
//! smoltcp has no backlog: one smoltcp socket in LISTEN takes one
//! connection. A listening [`Listener`] therefore keeps up to `backlog`
//! smoltcp sockets; one that completes its handshake moves to the accept
//! queue and another takes its place. On the loopback interface the
//! listening sockets are made on demand, when a local `connect` needs one,
//! so a listener costs nothing there until it is used.
//!
//! smoltcp reports a connection's end only as the CLOSED state; the
//! [`Stream`] watches the state after every poll and turns it into Linux's
//! errors: a connection attempt that ends in CLOSED was refused, one that
//! outlives `connect_timeout` timed out, and an open connection that ends
//! in CLOSED without both FINs was reset (or timed out, when nothing came
//! from the peer for the armed timeout). A closed socket becomes an
//! [`Orphan`] that finishes its exchange with the peer before it is freed.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::SocketAddrV4;

use eremite_interface::errno::{
    EADDRNOTAVAIL, EAGAIN, EALREADY, ECONNREFUSED, ECONNRESET, EINPROGRESS, EINVAL, EISCONN,
    ENETUNREACH, ENFILE, ENOBUFS, ENOTCONN, EPIPE, ETIMEDOUT, Errno,
};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};

use crate::nets::{Handle, Nets};
use crate::route::{Addressing, Path};
use crate::{
    Kind, Limits, Protocol, Readiness, RecvMode, Shutdown, Socket, SocketId, SocketOptions, Stack,
    earliest, endpoint, later, listen_endpoint, to_v4,
};

/// A TCP socket's state beyond what every socket has.
pub(crate) enum Tcp {
    /// Neither connected nor listening (new, bound, or after a failed
    /// connection attempt).
    Idle,
    Listening(Listener),
    Stream(Stream),
}

/// A listening socket's smoltcp sockets.
pub(crate) struct Listener {
    backlog: usize,
    /// In LISTEN or in their handshake.
    pending: Vec<Handle>,
    /// Connected, waiting for `accept`.
    ready: VecDeque<Handle>,
    /// The card's sockets of `pending` in their handshake (SYN-RECEIVED),
    /// with when that was first seen.
    half_open: Vec<(Handle, Instant)>,
}

/// A connection, from `connect` or `accept`.
pub(crate) struct Stream {
    handle: Handle,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    phase: Phase,
    is_read_shut: bool,
    is_write_shut: bool,
    has_peer_fin: bool,
    /// The timeout armed in smoltcp (see [`Stream::arm_timeout`]).
    timeout: Option<Duration>,
    activity: Activity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting {
        since: Instant,
    },
    Connected,
    /// smoltcp's socket is CLOSED: reset, timed out, or both sides done.
    Finished,
}

/// The last time the peer visibly did something: acknowledged data, sent
/// some, or moved the connection's state.
#[derive(Clone, Copy)]
struct Activity {
    send_queue: usize,
    recv_queue: usize,
    state: State,
    at: Instant,
}

/// A closed socket's smoltcp socket, still sending what was queued, its
/// FIN, or its RST.
pub(crate) struct Orphan {
    handle: Handle,
    bound: SocketAddrV4,
    deadline: Instant,
    send_queue: usize,
    is_aborted: bool,
}

/// What [`Stream::sync`] saw.
pub(crate) enum StreamEvent {
    None,
    /// The connection was established or ended in order.
    Changed,
    /// The connection attempt failed.
    ConnectFailed(Errno),
    /// The open connection failed.
    Failed(Errno),
}

/// How long an incoming connection may take to finish its handshake
/// (Linux: about a minute, from `tcp_synack_retries` = 5).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(63);

/// A half-open connection this old gives its listening socket up to a
/// client that answered a SYN cookie (and so exists): a real client
/// finishes its handshake within a round trip, even on a guest busy with
/// hundreds of connections (a first version with a quarter of a second
/// cut some of passt's 200 concurrent handshakes short), a spoofed SYN
/// never does. While a listener's are all younger, a burst of real
/// clients is likely under way: SYNs wait in the gate for them to finish,
/// as before, unless the hold is full.
const EVICT_AFTER: Duration = Duration::from_secs(1);

/// How long an aborted orphan may take to send its RST.
const ABORT_GRACE: Duration = Duration::from_secs(1);

impl Stack {
    pub(crate) fn tcp_connect(&mut self, id: SocketId, dst: SocketAddrV4) -> Result<(), Errno> {
        let (common, tcp) = self.table.tcp(id)?;
        match tcp {
            Tcp::Listening(_) => return Err(EINVAL),
            Tcp::Stream(stream) if stream.phase.is_connecting() => return Err(EALREADY),
            Tcp::Stream(_) => return Err(EISCONN),
            Tcp::Idle => {}
        }
        // The result of the last attempt is reported once (as Linux).
        if let Some(error) = common.error.take() {
            return Err(error);
        }
        let dst = self.addressing.stream_destination(dst)?;
        let path = self.addressing.path_to(*dst.ip());
        let bound = self.bind_ephemeral(id)?;
        if !self.addressing.serves(*bound.ip(), path) {
            return Err(ENETUNREACH);
        }
        let local = self.local_for(bound, *dst.ip());
        if self.is_connection(local, dst) {
            return Err(EADDRNOTAVAIL);
        }
        if path == Path::Loopback {
            self.prepare_local_listener(dst);
        }
        let (common, tcp) = self.table.tcp(id)?;
        let handle = new_socket(&mut self.nets, path, &common.options, &self.limits)?;
        if self
            .nets
            .tcp_connect(handle, endpoint(dst), endpoint(local))
            .is_err()
        {
            self.nets.remove(handle);
            return Err(EINVAL);
        }
        *tcp = Tcp::Stream(Stream::connecting(handle, local, dst, self.now));
        self.arm_timer(later(self.now, self.limits.connect_timeout));
        Err(EINPROGRESS)
    }

    pub(crate) fn tcp_listen(&mut self, id: SocketId, backlog: u32) -> Result<(), Errno> {
        let backlog = usize::try_from(backlog)
            .unwrap_or(usize::MAX)
            .clamp(1, self.limits.max_backlog);
        match self.table.tcp(id)?.1 {
            Tcp::Stream(_) => return Err(EINVAL),
            Tcp::Listening(listener) => listener.backlog = backlog,
            Tcp::Idle => {
                let bound = self.bind_ephemeral(id)?;
                self.check_listen(id, bound)?;
                *self.table.tcp(id)?.1 = Tcp::Listening(Listener::new(backlog));
            }
        }
        let (common, tcp) = self.table.tcp(id)?;
        let (Tcp::Listening(listener), Some(bound)) = (&mut *tcp, common.bound) else {
            return Err(EINVAL);
        };
        listener.refill(
            &mut self.nets,
            bound,
            &common.options,
            &self.limits,
            self.addressing,
        );
        let wants_external = self.addressing.serves(*bound.ip(), Path::External);
        if wants_external && listener.pending.is_empty() && listener.ready.is_empty() {
            *tcp = Tcp::Idle;
            return Err(ENOBUFS);
        }
        Ok(())
    }

    pub(crate) fn tcp_accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddrV4), Errno> {
        if self.table.is_full() {
            return Err(ENFILE);
        }
        let (common, tcp) = self.table.tcp(id)?;
        let Tcp::Listening(listener) = tcp else {
            return Err(EINVAL);
        };
        let (handle, local, peer) = listener.next_ready(&mut self.nets)?;
        common.taken += 1;
        let options = common.options;
        if let Some(bound) = common.bound {
            listener.refill(
                &mut self.nets,
                bound,
                &options,
                &self.limits,
                self.addressing,
            );
        }
        let stream = Tcp::Stream(Stream::accepted(handle, local, peer, self.now));
        match self
            .table
            .insert(Socket::bound(options, local, Kind::Tcp(stream)))
        {
            Ok(new_id) => {
                self.ports.hold(Protocol::Tcp, local.port());
                Ok((new_id, peer))
            }
            Err(error) => {
                self.nets.remove(handle);
                Err(error)
            }
        }
    }

    pub(crate) fn tcp_send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, Errno> {
        let (common, tcp) = self.table.tcp(id)?;
        if let Some(error) = common.error.take() {
            return Err(error);
        }
        let Tcp::Stream(stream) = tcp else {
            // Linux's tcp_sendmsg: EPIPE on a socket that never connected.
            return Err(EPIPE);
        };
        match stream.phase {
            Phase::Connecting { .. } => return Err(EAGAIN),
            Phase::Finished => return Err(EPIPE),
            Phase::Connected => {}
        }
        let socket = self.nets.tcp(stream.handle);
        if stream.is_write_shut || !socket.may_send() {
            return Err(EPIPE);
        }
        if data.is_empty() {
            return Ok(0);
        }
        match socket.send_slice(data) {
            Ok(0) => Err(EAGAIN),
            Ok(sent) => {
                common.given += sent as u64;
                Ok(sent)
            }
            Err(tcp::SendError::InvalidState) => Err(EPIPE),
        }
    }

    pub(crate) fn tcp_recv(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        mode: RecvMode,
    ) -> Result<(usize, SocketAddrV4), Errno> {
        let (common, tcp) = self.table.tcp(id)?;
        let Tcp::Stream(stream) = tcp else {
            return Err(common.error.take().unwrap_or(ENOTCONN));
        };
        if stream.phase.is_connecting() {
            return Err(EAGAIN);
        }
        if stream.is_read_shut || buf.is_empty() {
            return Ok((0, stream.peer));
        }
        let socket = self.nets.tcp(stream.handle);
        let received = match mode {
            RecvMode::Consume => socket.recv_slice(buf),
            RecvMode::Peek => socket.peek_slice(buf),
        };
        // Data first, then a pending error, then end of file (as Linux).
        match received {
            Ok(0) | Err(_) => {}
            Ok(len) => {
                if mode == RecvMode::Consume {
                    common.taken += len as u64;
                }
                return Ok((len, stream.peer));
            }
        }
        if let Some(error) = common.error.take() {
            return Err(error);
        }
        if stream.is_at_eof(socket.state()) {
            Ok((0, stream.peer))
        } else {
            Err(EAGAIN)
        }
    }

    pub(crate) fn tcp_shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<(), Errno> {
        let (_, tcp) = self.table.tcp(id)?;
        match tcp {
            Tcp::Idle => Err(ENOTCONN),
            // Linux stops listening on SHUT_RD and ignores SHUT_WR.
            Tcp::Listening(_) if how == Shutdown::Write => Ok(()),
            Tcp::Listening(_) => {
                self.stop_listening(id);
                Ok(())
            }
            // Shutting down a connection attempt abandons it.
            Tcp::Stream(stream) if stream.phase.is_connecting() => {
                self.nets.remove(stream.handle);
                *tcp = Tcp::Idle;
                Ok(())
            }
            Tcp::Stream(stream) if stream.phase == Phase::Finished => Err(ENOTCONN),
            Tcp::Stream(stream) => {
                stream.shutdown(self.nets.tcp(stream.handle), how);
                Ok(())
            }
        }
    }

    /// Frees what a closed TCP socket held: a connection becomes an
    /// orphan that finishes with its peer, gracefully (FIN after the queued
    /// data) or, with `SO_LINGER` 0 or unread data (RFC 2525 §2.17, as
    /// Linux), by a reset.
    pub(crate) fn tcp_close(&mut self, tcp: Tcp, options: &SocketOptions) {
        match tcp {
            Tcp::Idle => {}
            Tcp::Listening(listener) => self.drop_listener(listener),
            // An attempt that is abandoned needs no word to the peer.
            Tcp::Stream(stream) if stream.phase.is_connecting() => self.nets.remove(stream.handle),
            Tcp::Stream(stream) => {
                let has_unread = self.nets.tcp(stream.handle).recv_queue() > 0;
                let ending = if options.linger_secs == Some(0) || has_unread {
                    Ending::Reset
                } else {
                    Ending::Graceful
                };
                self.orphan(stream.handle, ending);
            }
        }
    }

    pub(crate) fn tcp_readiness(&mut self, id: SocketId) -> Result<Readiness, Errno> {
        let (common, tcp) = self.table.tcp(id)?;
        let has_error = common.error.is_some();
        let readiness = match tcp {
            // Linux's tcp_poll: a closed socket hangs up; an error makes
            // every call return at once.
            Tcp::Idle => Readiness {
                is_readable: has_error,
                is_writable: has_error,
                has_hangup: true,
                has_error,
            },
            Tcp::Listening(listener) => Readiness {
                is_readable: !listener.ready.is_empty(),
                ..Readiness::default()
            },
            Tcp::Stream(stream) => stream.readiness(self.nets.tcp(stream.handle), has_error),
        };
        Ok(readiness)
    }

    pub(crate) fn tcp_available(&mut self, id: SocketId) -> Result<usize, Errno> {
        Ok(match self.table.tcp(id)?.1 {
            Tcp::Stream(stream) => self.nets.tcp(stream.handle).recv_queue(),
            Tcp::Idle | Tcp::Listening(_) => 0,
        })
    }

    pub(crate) fn tcp_progress(&mut self, id: SocketId) -> Result<u64, Errno> {
        let (common, tcp) = self.table.tcp(id)?;
        let done = common.taken.wrapping_add(common.given);
        Ok(match tcp {
            Tcp::Idle => done,
            Tcp::Listening(listener) => done.wrapping_add(listener.ready.len() as u64),
            Tcp::Stream(stream) => {
                let socket = self.nets.tcp(stream.handle);
                // Everything received (taken + queued), plus everything
                // sent and acknowledged (given - queued), plus the FIN.
                done.wrapping_add(socket.recv_queue() as u64)
                    .wrapping_sub(socket.send_queue() as u64)
                    .wrapping_add(u64::from(stream.is_at_eof(socket.state())))
            }
        })
    }

    pub(crate) fn tcp_peer(&self, id: SocketId) -> Result<SocketAddrV4, Errno> {
        match self.table.get(id)?.tcp() {
            Some(Tcp::Stream(stream)) if stream.phase == Phase::Connected => Ok(stream.peer),
            _ => Err(ENOTCONN),
        }
    }

    /// Applies the options to the smoltcp sockets the TCP socket has now
    /// (later ones get them when they are made). A listener's sockets that
    /// still wait for a connection are made again if the buffer sizes
    /// changed; a connection keeps the buffers it has.
    pub(crate) fn tcp_apply_options(&mut self, id: SocketId) -> Result<(), Errno> {
        let (common, tcp) = self.table.tcp(id)?;
        let handles: &[Handle] = match tcp {
            Tcp::Idle => &[],
            Tcp::Listening(listener) => {
                if let Some(bound) = common.bound {
                    let (nets, limits) = (&mut self.nets, &self.limits);
                    listener.renew_idle(nets, bound, &common.options, limits, self.addressing);
                }
                &listener.pending
            }
            Tcp::Stream(stream) => core::slice::from_ref(&stream.handle),
        };
        for &handle in handles {
            let socket = self.nets.tcp(handle);
            apply_options(socket, handle.path, &common.options, &self.limits);
        }
        Ok(())
    }

    /// Brings every TCP socket up to date after smoltcp ran: failed and
    /// finished connections, listeners' accept queues, orphans. Returns
    /// whether a socket changed in a way smoltcp did not report, and when
    /// to look again at the latest.
    pub(crate) fn tcp_maintain(&mut self) -> (bool, Option<Instant>) {
        let now = self.now;
        let mut is_changed = false;
        let mut timer_at = None;
        for socket in self.table.values_mut() {
            let crate::Socket { common, kind } = socket;
            let crate::Kind::Tcp(tcp) = kind else {
                continue;
            };
            match tcp {
                Tcp::Idle => {}
                Tcp::Listening(listener) => {
                    let Some(bound) = common.bound else { continue };
                    is_changed |= listener.service(
                        &mut self.nets,
                        bound,
                        &common.options,
                        &self.limits,
                        self.addressing,
                        now,
                    );
                }
                Tcp::Stream(stream) => {
                    let socket = self.nets.tcp(stream.handle);
                    match stream.sync(socket, now, &self.limits, common.options.keep_alive) {
                        StreamEvent::None => {}
                        StreamEvent::Changed => is_changed = true,
                        StreamEvent::Failed(error) => {
                            common.error = Some(error);
                            is_changed = true;
                        }
                        StreamEvent::ConnectFailed(error) => {
                            self.nets.remove(stream.handle);
                            *tcp = Tcp::Idle;
                            common.error = Some(error);
                            is_changed = true;
                            continue;
                        }
                    }
                    timer_at = earliest(timer_at, stream.deadline(&self.limits));
                }
            }
        }
        self.reap_orphans();
        let orphans_at = self.orphans.iter().map(|orphan| orphan.deadline).min();
        (is_changed, earliest(timer_at, orphans_at))
    }

    /// Tells the SYN gate how many more connection attempts each listener
    /// can take on the card's interface (its sockets still in LISTEN).
    pub(crate) fn count_free_listeners(&mut self) {
        self.gate.clear();
        for socket in self.table.values_mut() {
            let crate::Socket { common, kind } = socket;
            let (crate::Kind::Tcp(Tcp::Listening(listener)), Some(bound)) = (kind, common.bound)
            else {
                continue;
            };
            let mut free = listener
                .pending
                .iter()
                .filter(|handle| {
                    handle.path == Path::External
                        && self.nets.tcp(**handle).state() == State::Listen
                })
                .count();
            if free == 0 {
                // Only a client that answered a cookie (and so exists) may
                // take a socket from a stale half-open connection.
                let waiting = self.cookies.get_mut().waiting_for(bound);
                if waiting > 0 {
                    free = listener.evict_half_open(&mut self.nets, bound, self.now, waiting);
                }
                if free == 0 && listener.is_stuck(self.now) {
                    self.gate.add_stuck(bound);
                }
            }
            self.gate.add(bound, free);
        }
    }

    /// Makes sure a listener on `dst` can take one more local connection.
    fn prepare_local_listener(&mut self, dst: SocketAddrV4) {
        let Some(id) = self.find_receiver(Protocol::Tcp, dst) else {
            return;
        };
        let Ok((common, Tcp::Listening(listener))) = self.table.tcp(id) else {
            return;
        };
        if let Some(bound) = common.bound {
            listener.prepare_loopback(&mut self.nets, bound, &common.options, &self.limits);
        }
    }

    fn stop_listening(&mut self, id: SocketId) {
        let Ok((_, tcp)) = self.table.tcp(id) else {
            return;
        };
        if let Tcp::Listening(listener) = core::mem::replace(tcp, Tcp::Idle) {
            self.drop_listener(listener);
        }
    }

    /// Resets the connections in the listener's queue and frees its
    /// listening sockets.
    fn drop_listener(&mut self, listener: Listener) {
        for handle in listener.pending.into_iter().chain(listener.ready) {
            self.orphan(handle, Ending::Reset);
        }
    }

    /// Whether a connection from `local` to `peer` exists already (two
    /// sockets bound to one port with `SO_REUSEADDR` may try).
    fn is_connection(&mut self, local: SocketAddrV4, peer: SocketAddrV4) -> bool {
        let in_table = self.table.iter().any(|(_, socket)| {
            matches!(socket.tcp(), Some(Tcp::Stream(stream)) if stream.local == local && stream.peer == peer)
        });
        in_table
            || self.orphans.iter().any(|orphan| {
                let socket = self.nets.tcp(orphan.handle);
                let endpoints = (socket.local_endpoint(), socket.remote_endpoint());
                endpoints == (Some(endpoint(local)), Some(endpoint(peer)))
            })
    }

    /// Ends the connection and keeps its socket until the peer has heard.
    fn orphan(&mut self, handle: Handle, ending: Ending) {
        let socket = self.nets.tcp(handle);
        match ending {
            Ending::Graceful => socket.close(),
            Ending::Reset => socket.abort(),
        }
        let send_queue = socket.send_queue();
        let Some(bound) = socket.local_endpoint().and_then(to_v4) else {
            // Never connected, or already gone: nothing to finish.
            self.nets.remove(handle);
            return;
        };
        if self.orphans.len() >= self.limits.max_orphans {
            let oldest = self.orphans.remove(0);
            self.free_orphan(&oldest);
        }
        let (deadline, is_aborted) = match ending {
            Ending::Reset => (later(self.now, ABORT_GRACE), true),
            Ending::Graceful => (later(self.now, self.limits.orphan_timeout), false),
        };
        self.ports.hold(Protocol::Tcp, bound.port());
        self.orphans.push(Orphan {
            handle,
            bound,
            deadline,
            send_queue,
            is_aborted,
        });
        self.arm_timer(deadline);
    }

    fn reap_orphans(&mut self) {
        let mut index = 0;
        while let Some(orphan) = self.orphans.get_mut(index) {
            if orphan.is_done(self.nets.tcp(orphan.handle), self.now, &self.limits) {
                // `remove`, not `swap_remove`: the oldest stays first.
                let orphan = self.orphans.remove(index);
                self.free_orphan(&orphan);
            } else {
                index += 1;
            }
        }
    }

    fn free_orphan(&mut self, orphan: &Orphan) {
        self.nets.remove(orphan.handle);
        self.ports.release(Protocol::Tcp, orphan.bound.port());
    }

    /// The orphans' local addresses, for bind's conflict check.
    pub(crate) fn orphan_addresses(&self) -> impl Iterator<Item = SocketAddrV4> + '_ {
        self.orphans.iter().map(|orphan| orphan.bound)
    }

    pub(crate) fn tcp_orphan_count(&self) -> usize {
        self.orphans.len()
    }
}

/// How a closed connection ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The queued data, then FIN.
    Graceful,
    /// RST at once.
    Reset,
}

impl Phase {
    fn is_connecting(self) -> bool {
        matches!(self, Phase::Connecting { .. })
    }
}

impl Tcp {
    pub(crate) fn is_listening(&self) -> bool {
        matches!(self, Tcp::Listening(_))
    }

    /// The local address of the connection, if there is one.
    pub(crate) fn local(&self) -> Option<SocketAddrV4> {
        match self {
            Tcp::Stream(stream) => Some(stream.local),
            _ => None,
        }
    }
}

impl Listener {
    fn new(backlog: usize) -> Self {
        Self {
            backlog,
            pending: Vec::new(),
            ready: VecDeque::new(),
            half_open: Vec::new(),
        }
    }

    /// Whether a half-open connection is older than [`EVICT_AFTER`]: not a
    /// real client's handshake, so a SYN is better answered with a cookie
    /// than held until that one times out.
    fn is_stuck(&self, now: Instant) -> bool {
        self.half_open
            .iter()
            .any(|&(_, since)| now >= since + EVICT_AFTER)
    }

    /// Abort up to `count` of the card's half-open connections older than
    /// [`EVICT_AFTER`], oldest first, and listen again on their sockets.
    /// Returns how many listen again.
    fn evict_half_open(
        &mut self,
        nets: &mut Nets,
        bound: SocketAddrV4,
        now: Instant,
        count: usize,
    ) -> usize {
        let mut listening = 0;
        while listening < count {
            let oldest = (0..self.half_open.len())
                .filter(|&i| {
                    let (handle, since) = self.half_open[i];
                    now >= since + EVICT_AFTER && nets.tcp(handle).state() == State::SynReceived
                })
                .min_by_key(|&i| self.half_open[i].1);
            let Some(oldest) = oldest else {
                break;
            };
            let (handle, _) = self.half_open.swap_remove(oldest);
            let socket = nets.tcp(handle);
            socket.abort();
            // A socket that cannot listen again stays CLOSED; `service`
            // frees it.
            if socket.listen(listen_endpoint(bound)).is_ok() {
                listening += 1;
            }
        }
        listening
    }

    fn pending_on(&self, path: Path) -> usize {
        self.pending
            .iter()
            .filter(|handle| handle.path == path)
            .count()
    }

    /// Whether another socket may take a connection on `path`: fewer
    /// than `slots` in their handshake, and the backlog not full.
    fn has_room(&self, path: Path, slots: usize) -> bool {
        let pending = self.pending_on(path);
        pending < slots && pending + self.ready.len() < self.backlog
    }

    /// Keeps the device's side full: as many listening sockets as the
    /// backlog has room for (fewer if the buffer budget is spent).
    fn refill(
        &mut self,
        nets: &mut Nets,
        bound: SocketAddrV4,
        options: &SocketOptions,
        limits: &Limits,
        addressing: Addressing,
    ) {
        if !addressing.serves(*bound.ip(), Path::External) {
            return;
        }
        while self.has_room(Path::External, limits.listen_slots) {
            match listening_socket(nets, Path::External, bound, options, limits) {
                Ok(handle) => self.pending.push(handle),
                Err(_) => break,
            }
        }
    }

    /// Adds a loopback listening socket for one local connection attempt
    /// (one each, as several may be made before the stack polls).
    fn prepare_loopback(
        &mut self,
        nets: &mut Nets,
        bound: SocketAddrV4,
        options: &SocketOptions,
        limits: &Limits,
    ) {
        if self.has_room(Path::Loopback, limits.listen_slots)
            && let Ok(handle) = listening_socket(nets, Path::Loopback, bound, options, limits)
        {
            self.pending.push(handle);
        }
    }

    /// Replaces the listening sockets whose buffers no longer have the
    /// sizes the options ask for.
    fn renew_idle(
        &mut self,
        nets: &mut Nets,
        bound: SocketAddrV4,
        options: &SocketOptions,
        limits: &Limits,
        addressing: Addressing,
    ) {
        self.pending.retain(|&handle| {
            let socket = nets.tcp(handle);
            let is_stale = socket.state() == State::Listen
                && (socket.recv_capacity(), socket.send_capacity())
                    != (options.recv_buffer_bytes, options.send_buffer_bytes);
            if is_stale {
                nets.remove(handle);
            }
            !is_stale
        });
        self.refill(nets, bound, options, limits, addressing);
    }

    /// Moves connected sockets to the accept queue and puts new listening
    /// sockets in their place. Returns whether the queue grew.
    fn service(
        &mut self,
        nets: &mut Nets,
        bound: SocketAddrV4,
        options: &SocketOptions,
        limits: &Limits,
        addressing: Addressing,
        now: Instant,
    ) -> bool {
        let mut has_grown = false;
        let mut index = 0;
        while let Some(&handle) = self.pending.get(index) {
            let socket = nets.tcp(handle);
            match socket.state() {
                State::Listen => index += 1,
                State::SynReceived => {
                    if handle.path == Path::External
                        && !self.half_open.iter().any(|(h, _)| *h == handle)
                    {
                        self.half_open.push((handle, now));
                    }
                    index += 1;
                }
                // The handshake timed out: listen again, on the device;
                // loopback sockets are made again when needed.
                State::Closed => {
                    if handle.path == Path::External
                        && socket.listen(listen_endpoint(bound)).is_ok()
                    {
                        index += 1;
                    } else {
                        nets.remove(self.pending.swap_remove(index));
                    }
                }
                _ if is_from_martian(socket, handle.path, addressing) => {
                    socket.abort();
                    if socket.listen(listen_endpoint(bound)).is_err() {
                        nets.remove(self.pending.swap_remove(index));
                    }
                }
                _ => {
                    socket.set_timeout(None);
                    self.ready.push_back(self.pending.swap_remove(index));
                    has_grown = true;
                }
            }
        }
        self.half_open.retain(|&(handle, _)| {
            self.pending.contains(&handle) && nets.tcp(handle).state() == State::SynReceived
        });
        self.refill(nets, bound, options, limits, addressing);
        has_grown
    }

    /// The next connection to accept, with its local and peer addresses;
    /// connections reset before they were accepted are dropped.
    fn next_ready(
        &mut self,
        nets: &mut Nets,
    ) -> Result<(Handle, SocketAddrV4, SocketAddrV4), Errno> {
        while let Some(handle) = self.ready.pop_front() {
            let socket = nets.tcp(handle);
            let local = socket.local_endpoint().and_then(to_v4);
            let peer = socket.remote_endpoint().and_then(to_v4);
            if let (Some(local), Some(peer)) = (local, peer) {
                return Ok((handle, local, peer));
            }
            nets.remove(handle);
        }
        Err(EAGAIN)
    }
}

/// A smoltcp socket with the socket's buffer sizes and options.
fn new_socket(
    nets: &mut Nets,
    path: Path,
    options: &SocketOptions,
    limits: &Limits,
) -> Result<Handle, Errno> {
    let handle = nets.add_tcp(path, options.recv_buffer_bytes, options.send_buffer_bytes)?;
    apply_options(nets.tcp(handle), path, options, limits);
    Ok(handle)
}

fn listening_socket(
    nets: &mut Nets,
    path: Path,
    bound: SocketAddrV4,
    options: &SocketOptions,
    limits: &Limits,
) -> Result<Handle, Errno> {
    let handle = new_socket(nets, path, options, limits)?;
    let socket = nets.tcp(handle);
    socket.set_timeout(Some(HANDSHAKE_TIMEOUT));
    if socket.listen(listen_endpoint(bound)).is_err() {
        nets.remove(handle);
        return Err(EINVAL);
    }
    Ok(handle)
}

fn apply_options(socket: &mut tcp::Socket, path: Path, options: &SocketOptions, limits: &Limits) {
    socket.set_nagle_enabled(!options.no_delay);
    socket.set_keep_alive(options.keep_alive.then_some(limits.keepalive_interval));
    // smoltcp panics on a hop limit of 0; set_option refuses it.
    socket.set_hop_limit(Some(options.ttl.max(1)));
    if path == Path::Loopback {
        // Delaying ACKs saves packets on a wire; on loopback it only adds
        // latency.
        socket.set_ack_delay(None);
    }
}

impl Stream {
    fn connecting(handle: Handle, local: SocketAddrV4, peer: SocketAddrV4, now: Instant) -> Self {
        Self::new(handle, local, peer, Phase::Connecting { since: now }, now)
    }

    fn accepted(handle: Handle, local: SocketAddrV4, peer: SocketAddrV4, now: Instant) -> Self {
        Self::new(handle, local, peer, Phase::Connected, now)
    }

    fn new(
        handle: Handle,
        local: SocketAddrV4,
        peer: SocketAddrV4,
        phase: Phase,
        now: Instant,
    ) -> Self {
        Self {
            handle,
            local,
            peer,
            phase,
            is_read_shut: false,
            is_write_shut: false,
            has_peer_fin: false,
            timeout: None,
            activity: Activity {
                send_queue: 0,
                recv_queue: 0,
                state: State::Closed,
                at: now,
            },
        }
    }

    /// Follows smoltcp's state after a poll.
    fn sync(
        &mut self,
        socket: &mut tcp::Socket,
        now: Instant,
        limits: &Limits,
        has_keep_alive: bool,
    ) -> StreamEvent {
        let state = socket.state();
        if has_received_fin(state) {
            self.has_peer_fin = true;
        }
        match self.phase {
            Phase::Connecting { since } => self.sync_connecting(socket, since, now, limits),
            Phase::Connected => self.sync_connected(socket, now, limits, has_keep_alive),
            Phase::Finished => StreamEvent::None,
        }
    }

    fn sync_connecting(
        &mut self,
        socket: &mut tcp::Socket,
        since: Instant,
        now: Instant,
        limits: &Limits,
    ) -> StreamEvent {
        match socket.state() {
            State::SynSent | State::SynReceived => {
                if now < later(since, limits.connect_timeout) {
                    return StreamEvent::None;
                }
                self.phase = Phase::Finished;
                StreamEvent::ConnectFailed(ETIMEDOUT)
            }
            // Only a reset ends an attempt before its timeout.
            State::Closed => {
                self.phase = Phase::Finished;
                StreamEvent::ConnectFailed(ECONNREFUSED)
            }
            _ => {
                self.phase = Phase::Connected;
                self.activity.update(socket, now);
                StreamEvent::Changed
            }
        }
    }

    fn sync_connected(
        &mut self,
        socket: &mut tcp::Socket,
        now: Instant,
        limits: &Limits,
        has_keep_alive: bool,
    ) -> StreamEvent {
        if socket.state() != State::Closed {
            self.activity.update(socket, now);
            self.arm_timeout(socket, limits, has_keep_alive);
            return StreamEvent::None;
        }
        self.phase = Phase::Finished;
        if self.has_peer_fin && self.is_write_shut {
            return StreamEvent::Changed;
        }
        // smoltcp's timeout closes a connection silently, as a reset from
        // the peer does; the peer's silence tells them apart.
        let is_timed_out = self
            .timeout
            .is_some_and(|timeout| now >= later(self.activity.at, timeout));
        StreamEvent::Failed(if is_timed_out { ETIMEDOUT } else { ECONNRESET })
    }

    /// smoltcp's timeout ends a connection after that long without a
    /// packet from the peer: right while sent data waits for its
    /// acknowledgement, or with keep-alive probes going unanswered; wrong
    /// for a connection that is merely idle, which Linux keeps forever.
    fn arm_timeout(&mut self, socket: &mut tcp::Socket, limits: &Limits, has_keep_alive: bool) {
        let timeout = if socket.send_queue() > 0 {
            Some(limits.user_timeout)
        } else if has_keep_alive {
            Some(limits.keepalive_timeout())
        } else {
            None
        };
        if timeout != self.timeout {
            socket.set_timeout(timeout);
            self.timeout = timeout;
        }
    }

    /// When the stack must look at this connection again on its own.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { since } => Some(later(since, limits.connect_timeout)),
            _ => None,
        }
    }

    fn shutdown(&mut self, socket: &mut tcp::Socket, how: Shutdown) {
        if how != Shutdown::Write {
            self.is_read_shut = true;
        }
        if how != Shutdown::Read && !self.is_write_shut {
            self.is_write_shut = true;
            // CLOSE-WAIT may pass through LAST-ACK to CLOSED within one
            // poll: remember the peer's FIN now.
            self.has_peer_fin |= has_received_fin(socket.state());
            socket.close();
        }
    }

    /// Whether reading would return end of file.
    fn is_at_eof(&self, state: State) -> bool {
        self.phase == Phase::Finished || has_received_fin(state)
    }

    fn readiness(&self, socket: &tcp::Socket, has_error: bool) -> Readiness {
        if self.phase.is_connecting() {
            return Readiness {
                has_error,
                ..Readiness::default()
            };
        }
        let is_read_closed = self.is_read_shut || self.is_at_eof(socket.state());
        let is_write_closed = self.is_write_shut || self.phase == Phase::Finished;
        Readiness {
            is_readable: is_read_closed || socket.can_recv() || has_error,
            // Linux reports a shut-down side writable: send fails at once.
            is_writable: is_write_closed || socket.can_send() || has_error,
            has_hangup: is_read_closed && is_write_closed,
            has_error,
        }
    }
}

/// Whether the connection's peer is one the network may not speak for
/// ([`Addressing::is_martian`]).
fn is_from_martian(socket: &tcp::Socket, path: Path, addressing: Addressing) -> bool {
    let peer = socket.remote_endpoint().and_then(to_v4);
    peer.is_some_and(|peer| addressing.is_martian(*peer.ip(), path))
}

/// Whether smoltcp's socket got the peer's FIN.
fn has_received_fin(state: State) -> bool {
    matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    )
}

impl Activity {
    /// Notes what the peer did since the last poll: acknowledged data,
    /// sent some, changed the state. Data queued for sending after a quiet
    /// spell restarts the clock, as it restarts smoltcp's timeout.
    fn update(&mut self, socket: &tcp::Socket, now: Instant) {
        let (send_queue, recv_queue, state) =
            (socket.send_queue(), socket.recv_queue(), socket.state());
        let is_progress = send_queue < self.send_queue
            || recv_queue > self.recv_queue
            || state != self.state
            || self.send_queue == 0 && send_queue > 0;
        if is_progress {
            self.at = now;
        }
        *self = Activity {
            send_queue,
            recv_queue,
            state,
            at: self.at,
        };
    }
}

impl Orphan {
    /// Whether the socket has finished (or must be given up).
    fn is_done(&mut self, socket: &mut tcp::Socket, now: Instant, limits: &Limits) -> bool {
        match socket.state() {
            // TIME-WAIT would keep the buffers for smoltcp's 10 s; a late
            // retransmitted FIN then gets a reset, which the peer (in
            // LAST-ACK) takes as the end it was waiting for.
            State::TimeWait => return true,
            State::Closed if socket.local_endpoint().is_none() => return true,
            _ => {}
        }
        // Data for a socket the program closed: nobody will read it, so
        // the peer gets a reset (Linux's tcp_rcv_state_process), and its
        // next send fails instead of vanishing.
        if socket.recv_queue() > 0 && !self.is_aborted {
            socket.abort();
            self.is_aborted = true;
            self.deadline = later(now, ABORT_GRACE);
            return false;
        }
        let send_queue = socket.send_queue();
        if send_queue != self.send_queue && !self.is_aborted {
            self.send_queue = send_queue;
            self.deadline = later(now, limits.orphan_timeout);
        }
        if now < self.deadline {
            return false;
        }
        if self.is_aborted {
            return true;
        }
        socket.abort();
        self.is_aborted = true;
        self.deadline = later(now, ABORT_GRACE);
        false
    }
}
