//! The network: one `eremite-net` [`Stack`] (BSD-socket semantics over
//! smoltcp) on the network card, the thread that keeps it moving, and the
//! blocking that socket calls and `poll` add on top of it.
//!
//! - **The card** ([`Nic`]): the virtio-net device the VMM announced on
//!   the command line, or, without one, a card that drops every frame, so
//!   that sockets on 127.0.0.1 work in every VM.
//! - **Socket calls** lock the stack, make their call, then poll it at
//!   once, so queued data leaves (and loopback data arrives) before the
//!   call returns; unless the call changed nothing (`EAGAIN`), or another
//!   caller that polls is already on its way to the lock: then its poll,
//!   right after, serves both (a poll looks at every socket, and with hundreds of
//!   connections those looks were most of the lock's time).
//! - **The network thread** ([`run`], started with the first socket)
//!   polls the stack when the card interrupts and when the stack's own
//!   timers (retransmissions, delayed ACKs, timeouts) come due, and sleeps
//!   otherwise: no polling while nothing happens.
//! - **Blocking**: a call blocked on a socket registers what it waits for
//!   (the socket, receiving or sending) and futex-waits on one of
//!   [`SLOTS`] channels (the socket's, by hash). Whenever a poll reports
//!   that sockets may have changed, the registered sockets' readiness is
//!   looked at under the stack's lock and only the channels of those that
//!   are ready are woken, so a change wakes the threads it concerns, not
//!   every thread blocked on a socket (with hundreds of idle keep-alive
//!   connections, waking all of them at every packet cost more than the
//!   packets). `poll`, `select` and `epoll` wait on the kernel-wide
//!   change counter, bumped at the same time ([`events::changed`]). A
//!   change between a look and the wait is never missed: the wait is on
//!   the channel's value from before the look.
//!
//! The card's interrupt reaches [`interrupt`] from the scheduler's upcall,
//! with no lock held; it only wakes the network thread.
//!
//! ABI-neutral: addresses are `core::net` types, errors [`Errno`]s; the
//! `abi` layer converts hermit-abi's structs, and file descriptors (with
//! `O_NONBLOCK`) live in `fs`.

mod nic;
mod option;

use core::net::{Ipv4Addr, SocketAddrV4};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use eremite_interface::errno::{self, Errno};
pub(crate) use eremite_net::Readiness;
pub(crate) use eremite_net::{Protocol, Shutdown};
use eremite_net::{SocketId, Stack, StackConfig};
pub(crate) use option::{
    OptionName, OptionValue, Shape, get_option, set_option, timeout_from_timeval,
    timeval_from_timeout,
};

use crate::console::klog;
use crate::events::{self, Blocking};
use crate::sync::{Lock, LockGuard};
use crate::{sched, time};

use nic::Nic;

/// The stack and its card, made by the first socket call.
struct Net {
    stack: Stack,
    nic: Nic,
    /// A call changed the stack and left its poll to a caller on its way
    /// to the lock that polls (see `with_stack`).
    is_poll_owed: bool,
}

static NET: Lock<Option<Net>> = Lock::new(None);
/// Set once the network thread runs.
static IS_THREAD_STARTED: AtomicBool = AtomicBool::new(false);
/// Bumped to wake the network thread: a card interrupt, or a socket call
/// that needs the stack polled sooner than the thread planned.
static KICKS: AtomicU32 = AtomicU32::new(0);
/// When the network thread polls next (monotonic ns; `u64::MAX`: only
/// when kicked).
static NEXT_POLL_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Stack for the network thread.
const THREAD_STACK_BYTES: usize = 64 << 10;

/// smoltcp's clock: the monotonic clock in microseconds.
fn now() -> eremite_net::Instant {
    eremite_net::Instant::from_micros(
        i64::try_from(time::monotonic_ns() / 1000).unwrap_or(i64::MAX),
    )
}

/// The stack's configuration from the command line; with no card, a
/// link-local address that no route leaves.
fn config(nic: &Nic) -> StackConfig {
    let settings = nic::settings();
    let mut config = match settings.address {
        Some((address, prefix_len)) => StackConfig::new(nic.mac(), address, prefix_len),
        None => StackConfig::new(nic.mac(), Ipv4Addr::new(169, 254, 0, 1), 16),
    };
    config.gateway = settings.gateway;
    config.random_seed = crate::random::next_u64();
    scale_buffers(&mut config.limits, crate::mm::ram_bytes());
    config
}

/// Size TCP buffers and the budget of all socket buffers to guest RAM: a
/// connection's throughput is bounded by its window over the round trip
/// (64 KiB / 250 µs is about 260 MB/s here), so bigger guests get bigger
/// windows, up to 256 KiB (a 1/1024 of RAM each way), and a quarter of
/// their RAM for socket buffers in all (the program needs the rest: with
/// half, 256 clients of a 64 MiB guest's server took so much that the
/// server itself could not allocate); a 64 MiB guest keeps 64 KiB and
/// 16 MiB, room for 128 connections with full buffers, and a connection
/// past the budget waits for one to close.
fn scale_buffers(limits: &mut eremite_net::Limits, ram_bytes: u64) {
    let ram = usize::try_from(ram_bytes).unwrap_or(usize::MAX);
    limits.tcp_buffer_bytes = (ram / 1024).clamp(limits.tcp_buffer_bytes, 256 << 10);
    limits.buffer_budget_bytes = ram / 4;
}

/// Channels that blocked socket calls wait on, by socket (hashed): as
/// many as the stack has sockets, so no two sockets share one and a
/// wake-up reaches only the threads of the socket that is ready (with
/// 64, 256 connections woke four threads for every one that could go on).
const SLOTS: usize = 1024;
static CHANNELS: [events::Channel; SLOTS] = [const { events::Channel::new() }; SLOTS];

/// A set of [`CHANNELS`], by index.
#[derive(Default)]
struct Slots([u64; SLOTS / 64]);

impl Slots {
    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    /// Wake every channel in the set.
    fn wake(&self) {
        for (word_index, &word) in self.0.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                CHANNELS[word_index * 64 + bit].wake();
            }
        }
    }
}

/// A socket call that waits, and for what.
struct Waiter {
    id: SocketId,
    direction: Direction,
    /// Calls waiting so (several threads may block on one socket).
    count: u32,
}

/// Every socket call that waits now. Locked after [`NET`], never before.
static WAITERS: Lock<alloc::vec::Vec<Waiter>> = Lock::new(alloc::vec::Vec::new());

/// Which of [`CHANNELS`] a socket's blocked calls wait on (the low bits
/// of its table index).
fn slot_index(id: SocketId) -> usize {
    (id.to_raw() as u32 as usize) % SLOTS
}

fn slot(id: SocketId) -> &'static events::Channel {
    &CHANNELS[slot_index(id)]
}

/// The channels of the waiting calls that can go on now (or whose socket
/// is gone), as a bit mask; under the stack's lock.
fn ready_slots(stack: &mut Stack) -> Slots {
    let waiters = WAITERS.lock();
    let mut ready = Slots::default();
    for waiter in waiters.iter() {
        let is_ready = stack.readiness(waiter.id).map_or(true, |r| {
            r.has_error
                || r.has_hangup
                || match waiter.direction {
                    Direction::Receive => r.is_readable,
                    Direction::Send => r.is_writable,
                }
        });
        if is_ready {
            ready.insert(slot_index(waiter.id));
        }
    }
    ready
}

/// Wake the channels in `ready`, and everyone waiting on the kernel-wide
/// counter (`poll`, `select`, `epoll`, pipes).
fn wake(ready: &Slots) {
    events::changed();
    ready.wake();
}

/// A signal: every blocked socket call looks again (and sees it).
fn wake_all_channels() {
    for channel in &CHANNELS {
        channel.wake();
    }
}

/// Run `op` on the stack (made on first use), then poll it; wake the
/// waiters if sockets changed and the network thread if the stack needs
/// it sooner than planned.
fn with_stack<T>(op: impl FnOnce(&mut Stack) -> Result<T, Errno>) -> Result<T, Errno> {
    let mut guard = lock_to_poll();
    if guard.is_none() {
        let mut nic = Nic::probe();
        let config = config(&nic);
        let mut stack = Stack::new(config, &mut nic, now()).inspect_err(|e| {
            klog!("net: cannot start the stack: errno {}", e.0);
        })?;
        if nic.is_card() {
            // A client that tried the address before the program made its
            // first socket learns the card at once, not at its next ARP
            // retry a second later.
            stack.announce(now(), &mut nic);
            events::set_device_present();
            sched::register_device(&CardWatch);
        }
        // A signal must end blocked socket calls too.
        events::set_channel_interrupt(wake_all_channels);
        *guard = Some(Net {
            stack,
            nic,
            is_poll_owed: false,
        });
    }
    let Some(net) = guard.as_mut() else {
        unreachable!("made above");
    };
    let result = op(&mut net.stack);
    // A call that cannot go on yet changed nothing, so there is nothing to
    // send or deliver: no poll (each costs a look at every socket, under
    // the lock every socket call needs; a blocked `recv` looks once before
    // it waits and once after each wake-up).
    let is_unchanged = result.as_ref().is_err_and(|e| *e == errno::EAGAIN);
    // Another caller that will poll is on its way to the lock: leave the
    // poll to it, so that one look at every socket serves both calls
    // (with hundreds of connections the looks, not the calls, filled the
    // lock's time). Only such callers count (`lock_to_poll`): the idle
    // loop's card watch takes the lock too, and never polls.
    if (is_unchanged && !net.is_poll_owed) || POLLERS_WAITING.load(Ordering::SeqCst) > 0 {
        net.is_poll_owed |= !is_unchanged;
        drop(guard);
        start_thread();
        return result;
    }
    settle(guard);
    start_thread();
    result
}

/// Callers on their way to the stack's lock that will poll the stack once
/// they have it if a poll is owed ([`with_stack`] and the network thread).
static POLLERS_WAITING: AtomicU32 = AtomicU32::new(0);

/// Lock the stack, counted in [`POLLERS_WAITING`] until the lock is ours:
/// for callers that poll whenever a poll is owed.
fn lock_to_poll() -> LockGuard<'static, Option<Net>> {
    POLLERS_WAITING.fetch_add(1, Ordering::SeqCst);
    let guard = NET.lock();
    POLLERS_WAITING.fetch_sub(1, Ordering::SeqCst);
    guard
}

/// Poll the stack in `guard`, then, with the lock dropped, wake the
/// waiters whose sockets changed, and the network thread if the stack
/// needs it sooner than planned.
fn settle(mut guard: LockGuard<'_, Option<Net>>) {
    let Some(net) = guard.as_mut() else {
        return;
    };
    let now = now();
    let is_changed = net.poll(now);
    let ready = if is_changed {
        ready_slots(&mut net.stack)
    } else {
        Slots::default()
    };
    // Polling takes frames with the card's interrupts off: ask for the
    // next one, and leave frames that came meanwhile to the thread.
    let has_more = net.nic.enable_interrupts();
    // Under the lock, so the thread's plan is not being changed meanwhile.
    let needs_thread =
        has_more || deadline_ns(net.stack.poll_delay(now)) < NEXT_POLL_NS.load(Ordering::SeqCst);
    drop(guard);
    if is_changed {
        wake(&ready);
    }
    if needs_thread {
        kick();
    }
}

impl Net {
    /// Move frames and bring the sockets up to date; whether sockets may
    /// have changed. The card hears of the round's frames once, at the
    /// end (each notification is an exit).
    fn poll(&mut self, now: eremite_net::Instant) -> bool {
        self.is_poll_owed = false;
        let is_changed = self.stack.poll(now, &mut self.nic);
        self.nic.flush();
        is_changed
    }
}

/// The monotonic time `delay` from now (`u64::MAX` for none).
fn deadline_ns(delay: Option<eremite_net::Duration>) -> u64 {
    delay.map_or(u64::MAX, |d| {
        time::monotonic_ns().saturating_add(d.total_micros().saturating_mul(1000))
    })
}

/// Wake the network thread.
fn kick() {
    KICKS.fetch_add(1, Ordering::SeqCst);
    sched::futex_wake(&KICKS, 1);
}

/// The CPU that takes the card's interrupts and runs the network thread.
const CARD_CPU: usize = 0;

/// The card as the idle loop of [`CARD_CPU`] sees it (registered with the
/// scheduler when the stack finds a card): while that CPU spins idle it
/// watches the receive ring with the card's receive interrupts off, so a
/// frame that arrives meanwhile costs no interrupt (on PVM an injection
/// and an emulated CPL0 entry, tens of µs).
struct CardWatch;

impl sched::DeviceWatch for CardWatch {
    fn cpu(&self) -> usize {
        CARD_CPU
    }

    fn begin(&self) -> bool {
        if !IS_THREAD_STARTED.load(Ordering::Relaxed) {
            return false;
        }
        let Some(mut guard) = NET.try_lock() else {
            return false; // its holder polls, and asks for interrupts after
        };
        guard.as_mut().is_some_and(|net| {
            net.nic.disable_receive_interrupts();
            true
        })
    }

    /// Whether received frames wait for the network thread (`false` while
    /// another CPU holds the stack: it polls them itself).
    fn has_work(&self) -> bool {
        NET.try_lock()
            .is_some_and(|guard| guard.as_ref().is_some_and(|net| net.nic.has_frames()))
    }

    fn end(&self) -> bool {
        NET.lock()
            .as_mut()
            .is_some_and(|net| net.nic.enable_interrupts())
    }

    /// Wake the network thread.
    fn interrupt(&self) {
        if IS_THREAD_STARTED.load(Ordering::SeqCst) {
            kick();
        }
    }
}

fn start_thread() {
    if IS_THREAD_STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    // Core 0 takes the card's interrupts, so waking it costs no IPI.
    if let Err(e) = sched::spawn_kernel_thread(b"network", run, THREAD_STACK_BYTES, CARD_CPU) {
        klog!("net: cannot start the network thread: errno {}", e.0);
        IS_THREAD_STARTED.store(false, Ordering::SeqCst);
    }
}

/// The network thread: poll when kicked or when the stack's timers are
/// due, sleep otherwise.
extern "C" fn run(_: usize) {
    loop {
        let kicks = KICKS.load(Ordering::SeqCst);
        let mut guard = lock_to_poll();
        let Some(net) = guard.as_mut() else {
            unreachable!("the thread starts after the stack");
        };
        let mut is_changed = false;
        // Frames that arrive while interrupts are being re-enabled are
        // taken now rather than after another interrupt.
        loop {
            is_changed |= net.poll(now());
            if !net.nic.enable_interrupts() {
                break;
            }
        }
        let delay = net.stack.poll_delay(now());
        let timeout_ns = delay.map(|d| d.total_micros().saturating_mul(1000));
        NEXT_POLL_NS.store(deadline_ns(delay), Ordering::SeqCst);
        let ready = if is_changed {
            ready_slots(&mut net.stack)
        } else {
            Slots::default()
        };
        drop(guard);
        if is_changed {
            wake(&ready);
        }
        if timeout_ns == Some(0) {
            continue;
        }
        // Ends at the timeout, a kick, or at once if kicked since the look.
        let _ = events::wait_word(&KICKS, kicks, timeout_ns);
    }
}

/// Longest the VM's exit waits for closed connections to finish.
const FINISH_NS: u64 = 200_000_000;

/// Before the VM ends (after every descriptor was closed): give closed
/// connections a moment to send what they hold and their FIN, as a host
/// kernel does after a process exits, so a peer sees the end of the
/// stream rather than silence.
pub(crate) fn finish() {
    let has_orphans = || {
        NET.lock()
            .as_mut()
            .is_some_and(|net| {
                net.poll(now());
                net.nic.enable_interrupts();
                net.stack.stats().orphans > 0
            })
            .then_some(())
    };
    let deadline = time::monotonic_ns().saturating_add(FINISH_NS);
    // Wakes at every change (packets from the peer), or at the deadline.
    let _ = events::wait_until_uninterrupted(Some(deadline), || match has_orphans() {
        Some(()) => {
            kick();
            None
        }
        None => Some(()),
    });
}

/// Call `op` until it does not fail with `EAGAIN`, waiting in between (as
/// `socket`'s timeout for `direction` and `mode` say) until the socket
/// can go on in `direction`.
fn blocking<T>(
    socket: &Socket,
    mode: Mode,
    direction: Direction,
    mut op: impl FnMut(&mut Stack) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let blocking = socket.blocking(mode, direction);
    if blocking == Blocking::Never {
        return with_stack(op);
    }
    let id = socket.id;
    register(id, direction);
    let result = events::wait_until_on(slot(id), blocking.deadline_ns(), || {
        match with_stack(&mut op) {
            Err(e) if e == errno::EAGAIN => None,
            done => Some(done),
        }
    });
    unregister(id, direction);
    result?.unwrap_or(Err(errno::EAGAIN))
}

fn register(id: SocketId, direction: Direction) {
    let mut waiters = WAITERS.lock();
    match waiters
        .iter_mut()
        .find(|w| w.id == id && w.direction == direction)
    {
        Some(waiter) => waiter.count += 1,
        None => waiters.push(Waiter {
            id,
            direction,
            count: 1,
        }),
    }
}

fn unregister(id: SocketId, direction: Direction) {
    let mut waiters = WAITERS.lock();
    if let Some(index) = waiters
        .iter()
        .position(|w| w.id == id && w.direction == direction)
    {
        waiters[index].count -= 1;
        if waiters[index].count == 0 {
            waiters.swap_remove(index);
        }
    }
}

/// A socket: its id in the stack and its timeouts. Closed when dropped
/// (the last descriptor for it was closed).
pub(crate) struct Socket {
    id: SocketId,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO` in ns; 0 for none.
    recv_timeout_ns: AtomicU64,
    send_timeout_ns: AtomicU64,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = with_stack(|stack| stack.close(self.id));
    }
}

/// Which direction a timeout applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `SO_RCVTIMEO`: receiving, accepting.
    Receive,
    /// `SO_SNDTIMEO`: sending, connecting.
    Send,
}

/// Whether a call on a descriptor may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The descriptor has `O_NONBLOCK`.
    NonBlocking,
    /// It does not.
    Blocking,
}

impl Socket {
    fn new(id: SocketId) -> Self {
        Self {
            id,
            recv_timeout_ns: AtomicU64::new(0),
            send_timeout_ns: AtomicU64::new(0),
        }
    }

    fn timeout(&self, direction: Direction) -> &AtomicU64 {
        match direction {
            Direction::Receive => &self.recv_timeout_ns,
            Direction::Send => &self.send_timeout_ns,
        }
    }

    fn blocking(&self, mode: Mode, direction: Direction) -> Blocking {
        match mode {
            Mode::NonBlocking => Blocking::Never,
            Mode::Blocking => Blocking::For(self.timeout_ns(direction)),
        }
    }

    /// The timeout for `direction` (`None`: wait for ever).
    pub(crate) fn timeout_ns(&self, direction: Direction) -> Option<u64> {
        match self.timeout(direction).load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns),
        }
    }

    /// Set the timeout for `direction` (`None` or zero: wait for ever).
    pub(crate) fn set_timeout_ns(&self, direction: Direction, timeout_ns: Option<u64>) {
        self.timeout(direction)
            .store(timeout_ns.unwrap_or(0), Ordering::Relaxed);
    }
}

/// `socket(2)`.
pub(crate) fn socket(protocol: Protocol) -> Result<Socket, Errno> {
    with_stack(|stack| stack.socket(protocol)).map(Socket::new)
}

/// `bind(2)`.
pub(crate) fn bind(socket: &Socket, addr: SocketAddrV4) -> Result<(), Errno> {
    with_stack(|stack| stack.bind(socket.id, addr))
}

/// `listen(2)`.
pub(crate) fn listen(socket: &Socket, backlog: u32) -> Result<(), Errno> {
    with_stack(|stack| stack.listen(socket.id, backlog))
}

/// `accept(2)`: a new connection and its peer.
pub(crate) fn accept(socket: &Socket, mode: Mode) -> Result<(Socket, SocketAddrV4), Errno> {
    blocking(socket, mode, Direction::Receive, |stack| {
        stack.accept(socket.id)
    })
    .map(|(id, peer)| (Socket::new(id), peer))
}

/// `connect(2)`: a blocking connect waits for the handshake's end and
/// reports its outcome; a non-blocking one fails with `EINPROGRESS`.
pub(crate) fn connect(socket: &Socket, addr: SocketAddrV4, mode: Mode) -> Result<(), Errno> {
    match with_stack(|stack| stack.connect(socket.id, addr)) {
        Err(e) if e == errno::EINPROGRESS && mode == Mode::Blocking => {}
        other => return other,
    }
    blocking(socket, mode, Direction::Send, |stack| {
        let ready = stack.readiness(socket.id)?;
        if !(ready.is_writable || ready.has_error || ready.has_hangup) {
            return Err(errno::EAGAIN);
        }
        match stack.take_error(socket.id)? {
            Some(error) => Err(error),
            None => Ok(()),
        }
    })
    // A timeout leaves the attempt running, as on Linux.
    .map_err(|e| {
        if e == errno::EAGAIN {
            errno::EINPROGRESS
        } else {
            e
        }
    })
}

/// `send(2)`, or `sendto(2)` with `to`.
pub(crate) fn send(
    socket: &Socket,
    data: &[u8],
    to: Option<SocketAddrV4>,
    mode: Mode,
) -> Result<usize, Errno> {
    blocking(socket, mode, Direction::Send, |stack| match to {
        Some(addr) => stack.send_to(socket.id, data, addr),
        None => stack.send(socket.id, data),
    })
}

/// Whether a receive consumes what it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receive {
    /// `recv`.
    Take,
    /// `MSG_PEEK`.
    Peek,
}

/// `recvfrom(2)`: bytes received and the sender.
pub(crate) fn recv_from(
    socket: &Socket,
    buf: &mut [u8],
    how: Receive,
    mode: Mode,
) -> Result<(usize, SocketAddrV4), Errno> {
    blocking(socket, mode, Direction::Receive, |stack| match how {
        Receive::Take => stack.recv_from(socket.id, buf),
        Receive::Peek => stack.peek_from(socket.id, buf),
    })
}

/// `recv(2)`.
pub(crate) fn recv(
    socket: &Socket,
    buf: &mut [u8],
    how: Receive,
    mode: Mode,
) -> Result<usize, Errno> {
    blocking(socket, mode, Direction::Receive, |stack| match how {
        Receive::Take => stack.recv(socket.id, buf),
        Receive::Peek => stack.peek(socket.id, buf),
    })
}

/// `shutdown(2)`.
pub(crate) fn shutdown(socket: &Socket, how: Shutdown) -> Result<(), Errno> {
    with_stack(|stack| stack.shutdown(socket.id, how))
}

/// `FIONREAD` on a socket.
pub(crate) fn available(socket: &Socket) -> Result<usize, Errno> {
    with_stack(|stack| stack.available(socket.id))
}

/// `getsockname(2)`.
pub(crate) fn local_addr(socket: &Socket) -> Result<SocketAddrV4, Errno> {
    with_stack(|stack| stack.local_addr(socket.id))
}

/// `getpeername(2)`.
pub(crate) fn peer_addr(socket: &Socket) -> Result<SocketAddrV4, Errno> {
    with_stack(|stack| stack.peer_addr(socket.id))
}

/// Open sockets, and closed connections still finishing (0 before the
/// first socket).
pub(crate) fn socket_counts() -> (usize, usize) {
    NET.lock().as_ref().map_or((0, 0), |net| {
        let stats = net.stack.stats();
        (stats.sockets, stats.orphans)
    })
}

/// What each of `sockets` would report to `poll(2)` now, with its
/// progress (`Stack::progress`, for edge-triggered `epoll`), from one
/// poll of the stack.
pub(crate) fn readiness(sockets: &[&Socket]) -> alloc::vec::Vec<(Readiness, u64)> {
    if sockets.is_empty() {
        return alloc::vec::Vec::new();
    }
    with_stack(|stack| {
        Ok(sockets
            .iter()
            .map(|socket| {
                let readiness = stack.readiness(socket.id).unwrap_or(Readiness {
                    has_error: true,
                    ..Readiness::default()
                });
                (readiness, stack.progress(socket.id).unwrap_or(0))
            })
            .collect())
    })
    .unwrap_or_default()
}
