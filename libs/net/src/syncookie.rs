//! SYN cookies: a listener keeps answering while a SYN flood holds every
//! listening socket it has.
//!
//! smoltcp needs a socket in LISTEN for each connection attempt, and one
//! that gets a SYN stays half open until the handshake ends or times out
//! (63 s). A flood of SYNs from addresses that never answer (spoofed ones)
//! takes them all, and the [`crate::gate`] can then only hold or drop the
//! SYNs of real clients. So when the gate's hold is full, a SYN is
//! answered here, with no state kept: a SYN-ACK whose sequence number is a
//! cookie, a keyed hash of the connection's addresses and ports, the
//! client's sequence number and the time, with the time and an MSS class
//! in its top bits (RFC 4987 §3.6). Only a client that really sent the SYN
//! can answer with the cookie plus one.
//!
//! Such an answer (an ACK that no socket expects, with a valid cookie)
//! makes a [`Conn`]: once a listening socket is free (the stack makes one
//! by aborting the listener's oldest half-open connection, see
//! `tcp::Listener`), a SYN like the client's first is handed to smoltcp;
//! smoltcp's SYN-ACK, with its own initial sequence number, is caught on
//! its way out and turned into a plain ACK in the cookie's numbering, and
//! the client's answer is handed to smoltcp, which is then connected. From
//! then on the two numberings differ by a constant, `delta`: every
//! segment of the connection has its sequence number (outgoing) or
//! acknowledgment number (incoming) moved by it, with the checksum mended
//! incrementally (RFC 1624).
//!
//! What a cookie connection lacks, as with Linux's cookies without TCP
//! timestamps: window scaling and selective acknowledgments (the cookie
//! cannot carry them), so its window is at most 64 KiB. Its translation
//! is forgotten after [`IDLE_TIMEOUT`] without a segment, or once it has
//! been reset or closed both ways.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::SocketAddrV4;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

/// Cookie connections (being set up or translated) at most; past it the
/// least recently used is forgotten.
pub(crate) const MAX_CONNS: usize = 1024;
/// Of those, connections being set up at most (each keeps the client's
/// answer and up to [`MAX_EARLY`] segments: about 10 KiB); past it a valid
/// answer is dropped and the client sends it again.
const MAX_SETUP: usize = 64;
/// Cookie SYN-ACKs waiting for room on the device at most; past it a SYN
/// gets no answer (its client sends it again).
const MAX_OUTBOX: usize = 64;
/// How long a cookie stays valid: its time counts in these periods, and
/// the current and the previous period's are accepted.
const PERIOD: Duration = Duration::from_secs(64);
/// How long a cookie connection may wait for a listening socket and for
/// smoltcp's SYN-ACK; past it, it is dropped (the client's next segment
/// gets a reset).
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
/// A translated connection with no segment either way for this long is
/// forgotten.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a closed or reset connection keeps its translation, for the
/// last retransmissions.
const CLOSED_LINGER: Duration = Duration::from_secs(60);
/// After the last cookie was sent, incoming ACKs are checked as cookies
/// for this long (two periods: as long as one stays valid).
const CHECK_WINDOW: Duration = Duration::from_secs(128);

/// The MSS classes a cookie can name (3 bits); a client gets the largest
/// not above what it asked for.
const MSS_CLASSES: [u16; 8] = [536, 1220, 1300, 1360, 1400, 1440, 1460, 8960];

/// A connection from `client` to `local`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    client: SocketAddrV4,
    local: SocketAddrV4,
}

/// One connection a cookie let in.
#[derive(Debug)]
struct Conn {
    key: Key,
    /// The cookie: our initial sequence number as the client knows it.
    cookie: u32,
    /// The client's initial sequence number.
    client_isn: u32,
    mss: u16,
    state: ConnState,
    /// Segments the client sent after its answer while the connection was
    /// set up (its request, say), handed to smoltcp after the answer.
    early: Vec<Vec<u8>>,
    /// The last segment either way, or the start of the set-up.
    seen: Instant,
}

/// Early segments kept per connection at most, and their largest size;
/// others are dropped (the client sends them again).
const MAX_EARLY: usize = 4;
const MAX_EARLY_BYTES: usize = 2048;

#[derive(Debug)]
enum ConnState {
    /// The client's answer (kept, to hand to smoltcp later) waits for a
    /// listening socket.
    Waiting { answer: Vec<u8> },
    /// A SYN went to smoltcp; its SYN-ACK is awaited.
    Opening { answer: Vec<u8> },
    /// Connected: smoltcp's numbering is the cookie's minus `delta`.
    Translating {
        delta: u32,
        /// FINs seen from the client and from us (`FIN_FROM_*` bits).
        fins: u8,
        /// Reset, or closed both ways: forgotten `CLOSED_LINGER` later.
        closed_at: Option<Instant>,
    },
}

/// What to do with a frame from the card.
pub(crate) enum Inbound {
    /// Not ours: it goes on as it is.
    Pass,
    /// A cookie connection's segment, translated.
    Translated(Vec<u8>),
    /// Taken (a cookie answer kept for later) or dropped.
    Taken,
}

/// The SYN cookies of one interface and the connections they let in.
#[derive(Debug)]
pub(crate) struct Cookies {
    secret: [u64; 2],
    /// When the last cookie was sent.
    last_sent: Option<Instant>,
    conns: Vec<Conn>,
    /// Cookie SYN-ACKs to send.
    outbox: VecDeque<Vec<u8>>,
    /// Frames for smoltcp (synthetic SYNs, translated answers), in order.
    inject: VecDeque<Vec<u8>>,
    /// Our MAC address and the MSS we announce.
    mac: EthernetAddress,
    own_mss: u16,
    /// Cookies sent, and connections they let in, since the start.
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
}

impl Cookies {
    /// Cookies keyed from `seed` (the stack's random seed) for an
    /// interface with address `mac` whose IP packets are at most
    /// `ip_mtu` bytes.
    pub(crate) fn new(seed: u64, mac: EthernetAddress, ip_mtu: usize) -> Self {
        Self {
            secret: [
                mix(seed ^ 0x5bd1_e995_6b3c_2f17),
                mix(seed.rotate_left(17) ^ 0x27d4_eb2f),
            ],
            last_sent: None,
            conns: Vec::new(),
            outbox: VecDeque::new(),
            inject: VecDeque::new(),
            mac,
            own_mss: u16::try_from(ip_mtu.saturating_sub(40)).unwrap_or(u16::MAX),
            sent: 0,
            accepted: 0,
        }
    }

    /// The cookie for a SYN with sequence number `client_isn` from
    /// `key.client`, in time period `period`, with MSS class `class`.
    fn cookie(&self, key: Key, client_isn: u32, period: u64, class: u32) -> u32 {
        let hash = self.hash(key, client_isn, period);
        ((period as u32 & 0x1f) << 27) | (class << 24) | (hash & 0x00ff_ffff)
    }

    fn hash(&self, key: Key, client_isn: u32, period: u64) -> u32 {
        let addresses =
            u64::from(key.client.ip().to_bits()) << 32 | u64::from(key.local.ip().to_bits());
        let ports = u64::from(key.client.port()) << 48
            | u64::from(key.local.port()) << 32
            | u64::from(client_isn);
        let h = mix(self.secret[0] ^ addresses);
        let h = mix(h ^ ports ^ self.secret[1]);
        (mix(h ^ period) >> 32) as u32
    }

    /// The MSS class of a cookie if it is valid for `key` and the client's
    /// sequence number `client_isn` at `now`.
    fn check(&self, key: Key, client_isn: u32, cookie: u32, now: Instant) -> Option<u32> {
        let period = period_of(now);
        let class = (cookie >> 24) & 0x7;
        [period, period.wrapping_sub(1)]
            .into_iter()
            .find(|&p| {
                (p as u32 & 0x1f) == cookie >> 27
                    && self.cookie(key, client_isn, p, class) == cookie
            })
            .map(|_| class)
    }

    /// Answer the SYN `frame` with a cookie SYN-ACK (queued for the
    /// device). `false` if the frame is no SYN or the outbox is full.
    pub(crate) fn answer(&mut self, frame: &[u8], now: Instant) -> bool {
        let Some(segment) = Segment::parse(frame) else {
            return false;
        };
        if !segment.syn || segment.ack || self.outbox.len() >= MAX_OUTBOX {
            return false;
        }
        let asked = segment.mss.unwrap_or(536);
        let class = MSS_CLASSES
            .iter()
            .rposition(|&mss| mss <= asked)
            .unwrap_or(0) as u32;
        let key = segment.key();
        let cookie = self.cookie(key, segment.seq, period_of(now), class);
        let reply = TcpRepr {
            src_port: key.local.port(),
            dst_port: key.client.port(),
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(cookie as i32),
            ack_number: Some(TcpSeqNumber(segment.seq.wrapping_add(1) as i32)),
            window_len: u16::MAX,
            window_scale: None,
            max_seg_size: Some(self.own_mss),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        self.outbox.push_back(emit(
            self.mac,
            segment.src_mac,
            key.local,
            key.client,
            &reply,
        ));
        self.last_sent = Some(now);
        self.sent += 1;
        true
    }

    /// Look at a frame from the card: a cookie connection's segment is
    /// translated, a valid cookie answer to `is_listener`'s port starts
    /// one, anything else passes.
    pub(crate) fn inbound(
        &mut self,
        frame: &[u8],
        now: Instant,
        is_listener: impl Fn(SocketAddrV4) -> bool,
    ) -> Inbound {
        let is_checking = self.last_sent.is_some_and(|at| now < at + CHECK_WINDOW);
        if self.conns.is_empty() && !is_checking {
            return Inbound::Pass;
        }
        let Some(segment) = Segment::parse(frame) else {
            return Inbound::Pass;
        };
        let key = segment.key();
        if let Some(index) = self.conns.iter().position(|c| c.key == key) {
            if segment.syn && !segment.ack {
                // A new connection on the same ports: the old one is over.
                self.conns.remove(index);
                return Inbound::Pass;
            }
            let conn = &mut self.conns[index];
            conn.seen = now;
            return match &mut conn.state {
                // The client goes on while we set up: keep a little of it
                // for smoltcp; the rest it sends again.
                ConnState::Waiting { .. } | ConnState::Opening { .. } => {
                    if conn.early.len() < MAX_EARLY && frame.len() <= MAX_EARLY_BYTES {
                        conn.early.push(frame.to_vec());
                    }
                    Inbound::Taken
                }
                ConnState::Translating {
                    delta,
                    fins,
                    closed_at,
                } => {
                    note_ending(&segment, FIN_FROM_CLIENT, fins, closed_at, now);
                    let mut copy = frame.to_vec();
                    if segment.ack {
                        shift_ack(&mut copy, delta.wrapping_neg());
                    }
                    Inbound::Translated(copy)
                }
            };
        }
        if !is_checking || segment.syn || segment.rst || !segment.ack || !is_listener(key.local) {
            return Inbound::Pass;
        }
        let client_isn = segment.seq.wrapping_sub(1);
        let cookie = segment.ack_number.wrapping_sub(1);
        let Some(class) = self.check(key, client_isn, cookie, now) else {
            return Inbound::Pass;
        };
        let setting_up = self
            .conns
            .iter()
            .filter(|c| !matches!(c.state, ConnState::Translating { .. }))
            .count();
        if setting_up >= MAX_SETUP {
            return Inbound::Taken;
        }
        if self.conns.len() >= MAX_CONNS {
            let oldest = (0..self.conns.len()).min_by_key(|&i| self.conns[i].seen);
            if let Some(oldest) = oldest {
                self.conns.remove(oldest);
            }
        }
        self.conns.push(Conn {
            key,
            cookie,
            client_isn,
            mss: MSS_CLASSES[class as usize],
            state: ConnState::Waiting {
                answer: frame.to_vec(),
            },
            early: Vec::new(),
            seen: now,
        });
        self.accepted += 1;
        Inbound::Taken
    }

    /// Cookie connections that wait for a listening socket on `bound`'s
    /// port (an unspecified address: any).
    pub(crate) fn waiting_for(&self, bound: SocketAddrV4) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.state, ConnState::Waiting { .. }) && listens(bound, c.key.local))
            .count()
    }

    /// Give waiting connections the listening sockets `open` has free
    /// (`(bound, free)` pairs, counted down): each gets a SYN for smoltcp
    /// in [`Cookies::take_inject`]. Forgets connections whose set-up or
    /// translation has expired.
    pub(crate) fn admit(&mut self, open: &mut [(SocketAddrV4, usize)], now: Instant) {
        self.conns.retain(|c| match &c.state {
            ConnState::Waiting { .. } | ConnState::Opening { .. } => now < c.seen + SETUP_TIMEOUT,
            ConnState::Translating { closed_at, .. } => {
                now < c.seen + IDLE_TIMEOUT && closed_at.is_none_or(|at| now < at + CLOSED_LINGER)
            }
        });
        for conn in &mut self.conns {
            let ConnState::Waiting { answer } = &mut conn.state else {
                continue;
            };
            let Some((_, free)) = open
                .iter_mut()
                .find(|(bound, free)| *free > 0 && listens(*bound, conn.key.local))
            else {
                continue;
            };
            *free -= 1;
            let Some((client_mac, window)) = Segment::parse(answer).map(|s| (s.src_mac, s.window))
            else {
                continue;
            };
            let syn = TcpRepr {
                src_port: conn.key.client.port(),
                dst_port: conn.key.local.port(),
                control: TcpControl::Syn,
                seq_number: TcpSeqNumber(conn.client_isn as i32),
                ack_number: None,
                window_len: window,
                window_scale: None,
                max_seg_size: Some(conn.mss),
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload: &[],
            };
            self.inject.push_back(emit(
                client_mac,
                self.mac,
                conn.key.client,
                conn.key.local,
                &syn,
            ));
            let answer = core::mem::take(answer);
            conn.state = ConnState::Opening { answer };
            conn.seen = now;
        }
    }

    /// A frame smoltcp is sending: smoltcp's SYN-ACK to a connection being
    /// opened becomes a plain ACK in the cookie's numbering (and the
    /// client's kept answer goes to smoltcp next); a translated
    /// connection's segment gets the cookie's numbering.
    pub(crate) fn outbound(&mut self, frame: &mut [u8], now: Instant) {
        if self.conns.is_empty() {
            return;
        }
        let Some(segment) = Segment::parse(frame) else {
            return;
        };
        // Outgoing: the client is the destination.
        let key = Key {
            client: segment.dst,
            local: segment.src,
        };
        let Some(conn) = self.conns.iter_mut().find(|c| c.key == key) else {
            return;
        };
        conn.seen = now;
        match &mut conn.state {
            ConnState::Waiting { .. } => {}
            ConnState::Opening { answer } => {
                if !(segment.syn && segment.ack) {
                    return;
                }
                let delta = conn.cookie.wrapping_sub(segment.seq);
                // The client already has our SYN (the cookie's): what it
                // gets instead is a duplicate ACK, harmless.
                set_flags(frame, segment.flags & !FLAG_SYN);
                shift_seq(frame, delta.wrapping_add(1));
                let answer = core::mem::take(answer);
                for mut frame in core::iter::once(answer).chain(conn.early.drain(..)) {
                    shift_ack(&mut frame, delta.wrapping_neg());
                    self.inject.push_back(frame);
                }
                conn.state = ConnState::Translating {
                    delta,
                    fins: 0,
                    closed_at: None,
                };
            }
            ConnState::Translating {
                delta,
                fins,
                closed_at,
            } => {
                note_ending(&segment, FIN_FROM_US, fins, closed_at, now);
                shift_seq(frame, *delta);
            }
        }
    }

    /// A cookie SYN-ACK to send, if any.
    pub(crate) fn take_outbox(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// Put back a SYN-ACK the device had no room for.
    pub(crate) fn return_outbox(&mut self, frame: Vec<u8>) {
        self.outbox.push_front(frame);
    }

    /// A frame to hand to smoltcp before the card's, if any.
    pub(crate) fn take_inject(&mut self) -> Option<Vec<u8>> {
        self.inject.pop_front()
    }

    /// Put back a frame smoltcp could not take (the device had no room
    /// to answer).
    pub(crate) fn return_inject(&mut self, frame: Vec<u8>) {
        self.inject.push_front(frame);
    }

    /// Whether frames wait to be handed to smoltcp or sent.
    pub(crate) fn has_work(&self) -> bool {
        !self.inject.is_empty() || !self.outbox.is_empty()
    }

    /// Whether a connection waits for a listener that has a free socket
    /// (`open`: `(bound, free)` pairs).
    pub(crate) fn has_admissible(&self, open: &[(SocketAddrV4, usize)]) -> bool {
        self.conns.iter().any(|c| {
            matches!(c.state, ConnState::Waiting { .. })
                && open
                    .iter()
                    .any(|(bound, free)| *free > 0 && listens(*bound, c.key.local))
        })
    }

    /// When the next connection waiting for a socket gives up.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    ConnState::Waiting { .. } | ConnState::Opening { .. }
                )
            })
            .map(|c| c.seen + SETUP_TIMEOUT)
            .min()
    }
}

/// `fins` bits: a FIN seen from the client, from us.
const FIN_FROM_CLIENT: u8 = 1;
const FIN_FROM_US: u8 = 2;

/// Record what `segment` (going the way `fin_bit` names) says of the
/// connection's end: a reset, or a FIN, closes it when both sides sent
/// theirs.
fn note_ending(
    segment: &Segment,
    fin_bit: u8,
    fins: &mut u8,
    closed_at: &mut Option<Instant>,
    now: Instant,
) {
    if segment.fin {
        *fins |= fin_bit;
    }
    if segment.rst || *fins == FIN_FROM_CLIENT | FIN_FROM_US {
        closed_at.get_or_insert(now);
    }
}

/// Whether a listener bound to `bound` takes connections to `to`.
fn listens(bound: SocketAddrV4, to: SocketAddrV4) -> bool {
    bound.port() == to.port() && (bound.ip().is_unspecified() || bound.ip() == to.ip())
}

/// The cookie time period of `now`.
fn period_of(now: Instant) -> u64 {
    (now.total_millis().max(0) as u64) / PERIOD.total_millis()
}

/// A 64-bit mixing function (the finaliser of SplitMix64).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const FLAG_SYN: u16 = 0x002;
#[cfg(test)]
const FLAG_ACK: u16 = 0x010;

/// An Ethernet header's length: the IPv4 header follows.
const ETHERNET_BYTES: usize = 14;

/// The fields of a TCP segment in an Ethernet frame that this module
/// reads.
struct Segment {
    src_mac: EthernetAddress,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack_number: u32,
    flags: u16,
    syn: bool,
    ack: bool,
    rst: bool,
    fin: bool,
    window: u16,
    mss: Option<u16>,
}

impl Segment {
    /// The segment in `frame`, if it is an unfragmented IPv4 TCP one.
    fn parse(frame: &[u8]) -> Option<Self> {
        let ethernet = EthernetFrame::new_checked(frame).ok()?;
        if ethernet.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(ethernet.payload()).ok()?;
        if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let flags = u16::from_be_bytes([ip.payload()[12], ip.payload()[13]]) & 0x01ff;
        let mss = tcp.syn().then(|| {
            TcpRepr::parse(
                &tcp,
                &ip.src_addr().into(),
                &ip.dst_addr().into(),
                &ChecksumCapabilities::ignored(),
            )
            .ok()
            .and_then(|repr| repr.max_seg_size)
        });
        Some(Self {
            src_mac: ethernet.src_addr(),
            src: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
            dst: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()),
            seq: tcp.seq_number().0 as u32,
            ack_number: tcp.ack_number().0 as u32,
            flags,
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
            fin: tcp.fin(),
            window: tcp.window_len(),
            mss: mss.flatten(),
        })
    }

    /// The connection of an incoming segment (from the client).
    fn key(&self) -> Key {
        Key {
            client: self.src,
            local: self.dst,
        }
    }
}

/// Where the TCP header starts in `frame` (checked by a parse before).
fn tcp_start(frame: &[u8]) -> usize {
    ETHERNET_BYTES + usize::from(frame[ETHERNET_BYTES] & 0x0f) * 4
}

/// Add `delta` to a 32-bit field of the TCP header at `offset`, mending
/// the checksum.
fn shift_field(frame: &mut [u8], offset: usize, delta: u32) {
    let at = tcp_start(frame) + offset;
    let old = u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let new = old.wrapping_add(delta);
    frame[at..at + 4].copy_from_slice(&new.to_be_bytes());
    let words = [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)];
    mend_checksum(frame, &words.map(|(a, b)| (a as u16, b as u16)));
}

fn shift_seq(frame: &mut [u8], delta: u32) {
    shift_field(frame, 4, delta);
}

fn shift_ack(frame: &mut [u8], delta: u32) {
    shift_field(frame, 8, delta);
}

/// Set the TCP flags (the low 9 bits of bytes 12 and 13), mending the
/// checksum.
fn set_flags(frame: &mut [u8], flags: u16) {
    let at = tcp_start(frame) + 12;
    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let new = (old & !0x01ff) | (flags & 0x01ff);
    frame[at..at + 2].copy_from_slice(&new.to_be_bytes());
    mend_checksum(frame, &[(old, new)]);
}

/// RFC 1624's incremental update of the TCP checksum for 16-bit words
/// that changed from the first to the second value: `HC' = ~(~HC + ~m +
/// m')`.
fn mend_checksum(frame: &mut [u8], changes: &[(u16, u16)]) {
    let at = tcp_start(frame) + 16;
    let checksum = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let mut sum = u32::from(!checksum);
    for &(old, new) in changes {
        sum += u32::from(!old) + u32::from(new);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[at..at + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// An Ethernet frame from `src_mac`/`src` to `dst_mac`/`dst` carrying
/// `tcp`, with correct checksums.
pub(crate) fn emit(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    tcp: &TcpRepr<'_>,
) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let ethernet = EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut bytes = alloc::vec![0; ethernet.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
    ethernet.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut packet, &caps);
    let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
    tcp.emit(
        &mut segment,
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        &caps,
    );
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
    const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);
    const KEY: Key = Key {
        client: CLIENT,
        local: LOCAL,
    };
    const T0: Instant = Instant::from_millis_const(1_000_000);

    fn cookies() -> Cookies {
        Cookies::new(42, EthernetAddress([2, 0, 0, 0, 0, 2]), 1500)
    }

    #[test]
    fn a_cookie_is_valid_for_its_connection_for_two_periods() {
        let c = cookies();
        let cookie = c.cookie(KEY, 7, period_of(T0), 6);
        assert_eq!(c.check(KEY, 7, cookie, T0), Some(6));
        assert_eq!(c.check(KEY, 7, cookie, T0 + PERIOD), Some(6));
        assert_eq!(c.check(KEY, 7, cookie, T0 + PERIOD * 2), None);
        assert_eq!(c.check(KEY, 8, cookie, T0), None, "another client ISN");
        let other = Key {
            client: SocketAddrV4::new(*CLIENT.ip(), 40001),
            local: LOCAL,
        };
        assert_eq!(c.check(other, 7, cookie, T0), None, "another port");
        assert_eq!(cookies().check(KEY, 7, cookie ^ 1, T0), None);
        let other_secret = Cookies::new(43, EthernetAddress([2, 0, 0, 0, 0, 2]), 1500);
        assert_eq!(other_secret.check(KEY, 7, cookie, T0), None);
    }

    #[test]
    fn mended_checksums_are_the_recomputed_ones() {
        let tcp = TcpRepr {
            src_port: 80,
            dst_port: 40000,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(0x1234_5678),
            ack_number: Some(TcpSeqNumber(99)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: Some(1460),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let mut frame = emit(mac, mac, LOCAL, CLIENT, &tcp);
        shift_seq(&mut frame, 0xdead_beef);
        shift_ack(&mut frame, 0x8000_0001);
        set_flags(&mut frame, FLAG_ACK);
        let ethernet = EthernetFrame::new_checked(&frame[..]).unwrap();
        let ip = Ipv4Packet::new_checked(ethernet.payload()).unwrap();
        let segment = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(segment.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
        assert_eq!(
            segment.seq_number().0 as u32,
            0x1234_5678u32.wrapping_add(0xdead_beef)
        );
        assert!(!segment.syn() && segment.ack());
    }
}
