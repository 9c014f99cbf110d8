//! Connection attempts a full listener cannot take wait, and are dropped
//! rather than refused.
//!
//! smoltcp answers a SYN with a reset when no socket in LISTEN matches it,
//! so a burst of clients larger than a listener's free listening sockets
//! would see "connection refused". The [`SynGate`] stands between the
//! card and smoltcp: before each poll it learns how many listening sockets
//! each listener has free, and the [`Gated`] device holds each SYN beyond
//! that (smoltcp is handed an empty frame, which it discards as
//! truncated). Held SYNs are handed to smoltcp again at the start of the
//! next poll, after the stack has made new listening sockets, so a burst
//! of 50 clients on a listener with 16 is served in a few polls instead of
//! waiting for the clients to retransmit a second later. The hold is
//! bounded ([`MAX_HELD`] frames of at most [`MAX_HELD_BYTES`], each for at
//! most [`HOLD_TIMEOUT`], a frame held already not held twice); past it a
//! SYN is dropped, as Linux drops one
//! when the accept queue is full, and the client sends it again (RFC 6298's
//! retransmission). Only held frames are copied.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::SocketAddrV4;

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

use crate::syncookie::{Cookies, Inbound};

/// SYNs held at most at once; past it they are dropped.
pub(crate) const MAX_HELD: usize = 256;
/// The longest SYN frame held (options included, no data); longer ones
/// (a SYN carrying data) are dropped.
pub(crate) const MAX_HELD_BYTES: usize = 128;
/// A SYN held this long is dropped: well before the client sends it
/// again (its first retransmission comes after a second, RFC 6298), so a
/// held SYN and its retransmission never both reach smoltcp (each could
/// take a listening socket, and one would be left half open).
pub(crate) const HOLD_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(500);

/// Listeners, how many more connection attempts each can take, and the
/// attempts that wait for room.
#[derive(Debug)]
pub(crate) struct SynGate {
    /// (bound address, free listening sockets); an unspecified address
    /// listens on every address.
    open: Vec<(SocketAddrV4, usize)>,
    /// Listeners with no free socket and a half-open connection older
    /// than a real handshake takes (a flood's): a SYN for them is answered
    /// with a cookie at once (a held one when it is replayed), as holding
    /// it would only wait for such connections to time out.
    stuck: Vec<SocketAddrV4>,
    /// SYNs that found no free socket in this poll, with when they came.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// Held SYNs handed to smoltcp again in this poll, before the card's
    /// new frames.
    replay: VecDeque<(Instant, Vec<u8>)>,
    /// The time of the poll under way.
    now: Instant,
    /// SYNs dropped so far.
    dropped: u64,
}

impl Default for SynGate {
    fn default() -> Self {
        Self {
            open: Vec::new(),
            stuck: Vec::new(),
            held: VecDeque::new(),
            replay: VecDeque::new(),
            now: Instant::ZERO,
            dropped: 0,
        }
    }
}

impl SynGate {
    /// Start a poll at `now`: the SYNs held so far are replayed first,
    /// those older than [`HOLD_TIMEOUT`] dropped.
    pub(crate) fn start_poll(&mut self, now: Instant) {
        self.now = now;
        self.replay.append(&mut self.held);
        let before = self.replay.len();
        self.replay.retain(|(since, _)| now < *since + HOLD_TIMEOUT);
        self.dropped += (before - self.replay.len()) as u64;
    }

    /// Whether a held SYN could be taken now (by the counts of the last
    /// [`SynGate::add`]s): then the stack should poll again at once.
    pub(crate) fn has_admissible(&self) -> bool {
        self.held.iter().any(|(_, frame)| {
            syn_destination(frame)
                .and_then(|to| self.listener(to))
                .is_some_and(|(_, free)| *free > 0)
        })
    }

    /// When the oldest held SYN is to be dropped.
    pub(crate) fn oldest_expiry(&self) -> Option<Instant> {
        self.held.front().map(|(since, _)| *since + HOLD_TIMEOUT)
    }

    /// The listeners and their free sockets, as last counted.
    pub(crate) fn open(&self) -> &[(SocketAddrV4, usize)] {
        &self.open
    }

    /// SYNs waiting for room.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    fn listener(&self, to: SocketAddrV4) -> Option<&(SocketAddrV4, usize)> {
        self.open.iter().find(|(bound, _)| {
            bound.port() == to.port() && (bound.ip().is_unspecified() || bound.ip() == to.ip())
        })
    }

    /// Forget the listeners (before they are counted again; the memory
    /// stays).
    pub(crate) fn clear(&mut self) {
        self.open.clear();
        self.stuck.clear();
    }

    /// The listener on `bound` is stuck (see [`SynGate::stuck`]).
    pub(crate) fn add_stuck(&mut self, bound: SocketAddrV4) {
        self.stuck.push(bound);
    }

    /// A listener on `bound` with `free` sockets in LISTEN.
    pub(crate) fn add(&mut self, bound: SocketAddrV4, free: usize) {
        self.open.push((bound, free));
    }

    /// SYNs dropped since the stack was made.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether `frame`, which came at `since`, may go on to smoltcp:
    /// anything but a SYN (without ACK) to a listener with no free
    /// listening socket. A SYN that is let through takes one; one that is
    /// not is held (or dropped, when the hold is full).
    pub(crate) fn admits(
        &mut self,
        frame: &[u8],
        since: Instant,
        cookies: &RefCell<Cookies>,
    ) -> bool {
        let Some(to) = syn_destination(frame) else {
            return true;
        };
        let listener = self.open.iter_mut().find(|(bound, _)| {
            bound.port() == to.port() && (bound.ip().is_unspecified() || bound.ip() == to.ip())
        });
        match listener {
            // No listener: smoltcp's reset is the right answer.
            None => true,
            Some((bound, 0)) if self.stuck.contains(bound) => {
                if !cookies.borrow_mut().answer(frame, self.now) {
                    self.dropped += 1;
                }
                false
            }
            Some((_, 0)) => {
                let is_repeat = self.held.iter().any(|(_, held)| held.as_slice() == frame);
                if !is_repeat
                    && self.held.len() + self.replay.len() < MAX_HELD
                    && frame.len() <= MAX_HELD_BYTES
                {
                    self.held.push_back((since, frame.to_vec()));
                } else if is_repeat || !cookies.borrow_mut().answer(frame, self.now) {
                    // The hold is full (a flood): a cookie answers, unless
                    // even its queue is.
                    self.dropped += 1;
                }
                false
            }
            Some((_, free)) => {
                *free -= 1;
                true
            }
        }
    }
}

/// What the gate does with a frame from the card.
enum Verdict {
    Pass,
    Replace(Vec<u8>),
    Drop,
}

impl SynGate {
    /// A frame from the card: a SYN passes the gate ([`SynGate::admits`]);
    /// anything else passes the cookies ([`Cookies::inbound`]), which
    /// translate their connections' segments and take the answers to
    /// their SYN-ACKs (a listening socket is found for each as soon as
    /// one is free).
    fn inspect(&mut self, frame: &[u8], since: Instant, cookies: &RefCell<Cookies>) -> Verdict {
        if syn_destination(frame).is_some() {
            return if self.admits(frame, since, cookies) {
                Verdict::Pass
            } else {
                Verdict::Drop
            };
        }
        let mut cookies = cookies.borrow_mut();
        match cookies.inbound(frame, self.now, |to| self.listener(to).is_some()) {
            Inbound::Pass => Verdict::Pass,
            Inbound::Translated(frame) => Verdict::Replace(frame),
            Inbound::Taken => {
                cookies.admit(&mut self.open, self.now);
                Verdict::Drop
            }
        }
    }

    /// Let the cookie connections that wait take free listening sockets
    /// (before held SYNs do): call after the listeners were counted.
    pub(crate) fn admit_cookies(&mut self, cookies: &RefCell<Cookies>) {
        cookies.borrow_mut().admit(&mut self.open, self.now);
    }
}

/// Where a TCP SYN (without ACK) in an Ethernet frame goes, if `frame`
/// is one; `None` for everything else, malformed frames included (smoltcp
/// judges those).
fn syn_destination(frame: &[u8]) -> Option<SocketAddrV4> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
    // Only a first (or only) fragment holds the TCP header.
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (tcp.syn() && !tcp.ack()).then(|| SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()))
}

/// Send the cookies' SYN-ACKs while `device` has room.
pub(crate) fn flush_cookies<D: Device + ?Sized>(
    device: &mut D,
    cookies: &RefCell<Cookies>,
    now: Instant,
) -> bool {
    let mut has_sent = false;
    loop {
        let Some(frame) = cookies.borrow_mut().take_outbox() else {
            return has_sent;
        };
        let Some(token) = device.transmit(now) else {
            cookies.borrow_mut().return_outbox(frame);
            return has_sent;
        };
        phy::TxToken::consume(token, frame.len(), |buf| buf.copy_from_slice(&frame));
        has_sent = true;
    }
}

/// A device whose received frames pass a [`SynGate`] first.
pub(crate) struct Gated<'a, D: ?Sized> {
    pub(crate) device: &'a mut D,
    pub(crate) gate: &'a mut SynGate,
    pub(crate) cookies: &'a RefCell<Cookies>,
}

/// A received frame that the gate looks at when smoltcp takes it: one
/// from the card, or a held SYN replayed.
pub(crate) enum GatedRx<'a, T> {
    Card {
        token: T,
        gate: &'a mut SynGate,
        cookies: &'a RefCell<Cookies>,
    },
    Held {
        since: Instant,
        frame: Vec<u8>,
        gate: &'a mut SynGate,
        cookies: &'a RefCell<Cookies>,
    },
    /// A frame the cookies made for smoltcp (a SYN for a socket already
    /// set aside, or a translated answer): it goes straight on.
    Made { frame: Vec<u8> },
}

/// A frame smoltcp sends: the cookies translate their connections'.
pub(crate) struct GatedTx<'a, T> {
    token: T,
    cookies: &'a RefCell<Cookies>,
    now: Instant,
}

impl<T: phy::TxToken> phy::TxToken for GatedTx<'_, T> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let Self {
            token,
            cookies,
            now,
        } = self;
        token.consume(len, |buf| {
            let result = f(buf);
            cookies.borrow_mut().outbound(buf, now);
            result
        })
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.token.set_meta(meta);
    }
}

impl<T: phy::RxToken> phy::RxToken for GatedRx<'_, T> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        match self {
            Self::Card {
                token,
                gate,
                cookies,
            } => {
                let now = gate.now;
                token.consume(|frame| match gate.inspect(frame, now, cookies) {
                    Verdict::Pass => f(frame),
                    Verdict::Replace(made) => f(&made),
                    Verdict::Drop => f(&[]),
                })
            }
            Self::Held {
                since,
                frame,
                gate,
                cookies,
            } => {
                if gate.admits(&frame, since, cookies) {
                    f(&frame)
                } else {
                    f(&[])
                }
            }
            Self::Made { frame } => f(&frame),
        }
    }

    fn meta(&self) -> phy::PacketMeta {
        match self {
            Self::Card { token, .. } => token.meta(),
            Self::Held { .. } | Self::Made { .. } => phy::PacketMeta::default(),
        }
    }
}

impl<D: Device + ?Sized> Device for Gated<'_, D> {
    type RxToken<'a>
        = GatedRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = GatedTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let cookies = self.cookies;
        let now = self.gate.now;
        // Cookie SYN-ACKs go out between frames, so a flood's burst in
        // one poll gets them all (as far as the device has room).
        flush_cookies(&mut *self.device, cookies, timestamp);
        let made = cookies.borrow_mut().take_inject();
        if let Some(frame) = made {
            let Some(token) = self.device.transmit(timestamp) else {
                cookies.borrow_mut().return_inject(frame);
                return None;
            };
            return Some((
                GatedRx::Made { frame },
                GatedTx {
                    token,
                    cookies,
                    now,
                },
            ));
        }
        if !self.gate.replay.is_empty() {
            let token = self.device.transmit(timestamp)?;
            let (since, frame) = self.gate.replay.pop_front()?;
            let gate = &mut *self.gate;
            return Some((
                GatedRx::Held {
                    since,
                    frame,
                    gate,
                    cookies,
                },
                GatedTx {
                    token,
                    cookies,
                    now,
                },
            ));
        }
        let (token, tx) = self.device.receive(timestamp)?;
        Some((
            GatedRx::Card {
                token,
                gate: self.gate,
                cookies,
            },
            GatedTx {
                token: tx,
                cookies,
                now,
            },
        ))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let token = self.device.transmit(timestamp)?;
        Some(GatedTx {
            token,
            cookies: self.cookies,
            now: self.gate.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;
    use smoltcp::wire::{EthernetAddress, TcpControl, TcpRepr, TcpSeqNumber};

    /// An Ethernet frame with a TCP segment from 10.0.0.1:40000 to
    /// `to`, with `control` (SYN or none) and `ack`.
    fn segment(to: SocketAddrV4, control: TcpControl, ack: bool) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: to.port(),
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: ack.then_some(TcpSeqNumber(7)),
            window_len: 1024,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        crate::syncookie::emit(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000),
            to,
            &tcp,
        )
    }

    const HERE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);

    const T0: Instant = Instant::from_millis_const(1000);

    fn cookies() -> RefCell<Cookies> {
        RefCell::new(Cookies::new(1, EthernetAddress([2, 0, 0, 0, 0, 2]), 1500))
    }

    #[test]
    fn syns_beyond_the_free_sockets_are_held() {
        let mut gate = SynGate::default();
        let c = cookies();
        gate.start_poll(T0);
        gate.add(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 2);
        let syn = segment(HERE, TcpControl::Syn, false);
        assert!(gate.admits(&syn, T0, &c));
        assert!(gate.admits(&syn, T0, &c));
        assert!(!gate.admits(&syn, T0, &c), "the third finds no free socket");
        assert_eq!((gate.held(), gate.dropped()), (1, 0));
        assert!(!gate.has_admissible(), "no room yet");
        // Everything else passes: segments of connections, SYN-ACKs,
        // other ports (smoltcp resets those), other protocols, garbage.
        assert!(gate.admits(&segment(HERE, TcpControl::None, true), T0, &c));
        assert!(gate.admits(&segment(HERE, TcpControl::Syn, true), T0, &c));
        let elsewhere = SocketAddrV4::new(*HERE.ip(), 81);
        assert!(gate.admits(&segment(elsewhere, TcpControl::Syn, false), T0, &c));
        assert!(gate.admits(&[0; 10], T0, &c));
        assert!(gate.admits(&[], T0, &c));
        let mut arp = syn.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(gate.admits(&arp, T0, &c));
        assert_eq!(gate.held(), 1);
        // The next poll, with room again, replays the held SYN.
        gate.clear();
        gate.add(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 1);
        assert!(gate.has_admissible());
        gate.start_poll(T0 + smoltcp::time::Duration::from_millis(1));
        assert_eq!((gate.held(), gate.replay.len()), (0, 1));
        let (since, frame) = gate.replay.pop_front().unwrap();
        assert!(gate.admits(&frame, since, &c));
    }

    #[test]
    fn the_hold_is_bounded_in_size_and_time() {
        let mut gate = SynGate::default();
        let c = cookies();
        gate.start_poll(T0);
        gate.add(HERE, 0);
        let syn = segment(HERE, TcpControl::Syn, false);
        assert!(!gate.admits(&syn, T0, &c));
        assert!(!gate.admits(&syn, T0, &c), "a repeat is not held twice");
        assert_eq!((gate.held(), gate.dropped()), (1, 1));
        gate.held.clear();
        for i in 0..MAX_HELD + 10 {
            let mut other = syn.clone();
            // Another client: the source port differs.
            other[34..36].copy_from_slice(&u16::try_from(i).unwrap().to_be_bytes());
            assert!(!gate.admits(&other, T0, &c));
        }
        // Past the hold, cookies answer.
        assert_eq!((gate.held(), gate.dropped()), (MAX_HELD, 1));
        assert_eq!(c.borrow().sent, 10);
        let mut long = syn.clone();
        long.resize(MAX_HELD_BYTES + 1, 0);
        gate.held.clear();
        assert!(!gate.admits(&long, T0, &c));
        assert_eq!((gate.held(), gate.dropped()), (0, 1), "too long to hold");
        assert_eq!(c.borrow().sent, 11, "a cookie answers it");
        assert!(!gate.admits(&syn, T0, &c));
        gate.start_poll(T0 + HOLD_TIMEOUT);
        assert_eq!((gate.replay.len(), gate.dropped()), (0, 2), "held too long");
        // With the cookies' queue full too, SYNs are dropped.
        while c.borrow_mut().answer(&syn, T0) {}
        assert!(!gate.admits(&long, T0, &c));
        assert_eq!(gate.dropped(), 3);
    }

    #[test]
    fn a_listener_on_one_address_gates_only_that_address() {
        let mut gate = SynGate::default();
        let c = cookies();
        gate.add(HERE, 0);
        assert!(!gate.admits(&segment(HERE, TcpControl::Syn, false), T0, &c));
        let other = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 80);
        assert!(gate.admits(&segment(other, TcpControl::Syn, false), T0, &c));
        gate.clear();
        assert!(gate.admits(&segment(HERE, TcpControl::Syn, false), T0, &c));
    }
}
