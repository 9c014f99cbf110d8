//! Test harness: stacks joined by an in-memory Ethernet wire, and a clock
//! that only moves when the test says so.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;

use eremite_interface::errno::{EAGAIN, Errno};
use eremite_net::smoltcp::phy::{self, DeviceCapabilities, Medium};
use eremite_net::{Duration, Instant, Limits, SocketId, Stack, StackConfig};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// Frames one direction of the wire holds before the sender is told the
/// device is full.
const WIRE_FRAMES: usize = 256;

/// One end of a wire: what it transmits, the other end receives.
pub struct WireEnd {
    rx: Queue,
    tx: Queue,
    is_cut: Rc<Cell<bool>>,
}

/// Two connected wire ends.
pub fn wire() -> (WireEnd, WireEnd) {
    let (a_to_b, b_to_a) = (Queue::default(), Queue::default());
    let is_cut = Rc::new(Cell::new(false));
    let a = WireEnd {
        rx: b_to_a.clone(),
        tx: a_to_b.clone(),
        is_cut: is_cut.clone(),
    };
    let b = WireEnd {
        rx: a_to_b,
        tx: b_to_a,
        is_cut,
    };
    (a, b)
}

impl WireEnd {
    /// From now on, frames vanish in both directions.
    pub fn cut(&self) {
        self.is_cut.set(true);
        self.rx.borrow_mut().clear();
        self.tx.borrow_mut().clear();
    }
}

impl WireEnd {
    /// Delivers `frame` to this end as if the other had sent it.
    pub fn inject(&self, frame: Vec<u8>) {
        self.rx.borrow_mut().push_back(frame);
    }
}

impl phy::Device for WireEnd {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((RxToken(frame), self.tx_token()))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken> {
        (self.tx.borrow().len() < WIRE_FRAMES).then(|| self.tx_token())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

impl WireEnd {
    fn tx_token(&self) -> TxToken {
        TxToken {
            queue: self.tx.clone(),
            is_cut: self.is_cut.clone(),
        }
    }
}

pub struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

pub struct TxToken {
    queue: Queue,
    is_cut: Rc<Cell<bool>>,
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        if !self.is_cut.get() {
            self.queue.borrow_mut().push_back(frame);
        }
        result
    }
}

pub const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
/// In the subnet, but nobody has it.
pub const NOBODY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);

pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

pub fn config(last_mac_byte: u8, ip: Ipv4Addr, limits: Limits) -> StackConfig {
    let mut config = StackConfig::new([0x02, 0, 0, 0, 0, last_mac_byte], ip, 24);
    config.random_seed = u64::from(last_mac_byte) * 7919;
    config.limits = limits;
    config
}

/// A stack, its device and the time.
pub struct Host {
    pub stack: Stack,
    pub device: WireEnd,
}

/// Two stacks on one wire (A at 10.0.0.2, B at 10.0.0.3), or one stack
/// alone with an unconnected wire.
pub struct Net {
    pub a: Host,
    pub b: Option<Host>,
    pub now: Instant,
}

impl Net {
    pub fn pair() -> Self {
        Self::pair_with(Limits::default())
    }

    pub fn pair_with(limits: Limits) -> Self {
        let (mut wire_a, mut wire_b) = wire();
        let now = Instant::from_secs(1);
        let a = Stack::new(config(1, A_IP, limits.clone()), &mut wire_a, now).unwrap();
        let b = Stack::new(config(2, B_IP, limits), &mut wire_b, now).unwrap();
        Self {
            a: Host {
                stack: a,
                device: wire_a,
            },
            b: Some(Host {
                stack: b,
                device: wire_b,
            }),
            now,
        }
    }

    /// One stack; its wire leads nowhere.
    pub fn solo() -> Self {
        let mut net = Self::pair();
        net.b = None;
        net.a.device.cut();
        net
    }

    pub fn a(&mut self) -> &mut Stack {
        &mut self.a.stack
    }

    pub fn b(&mut self) -> &mut Stack {
        &mut self.b.as_mut().expect("no stack B").stack
    }

    /// Polls every stack at the current time, as often as they ask to be
    /// polled now.
    pub fn poll(&mut self) {
        for _ in 0..16 {
            let now = self.now;
            for host in self.hosts() {
                host.stack.poll(now, &mut host.device);
            }
            let is_busy = self.hosts().any(|host| {
                host.stack.poll_at(now).is_some_and(|at| at <= now)
                    || !host.device.rx.borrow().is_empty()
            });
            if !is_busy {
                break;
            }
        }
    }

    /// Lets `step` pass, then polls.
    pub fn tick(&mut self, step: Duration) {
        self.now += step;
        self.poll();
    }

    /// Ticks by `step` until `done` holds; panics after `max` of time.
    pub fn run_until(
        &mut self,
        step: Duration,
        max: Duration,
        mut done: impl FnMut(&mut Net) -> bool,
    ) {
        let end = self.now + max;
        self.poll();
        while !done(self) {
            assert!(self.now < end, "condition not reached within {max}");
            self.tick(step);
        }
    }

    /// Lets `duration` pass in steps of `step`.
    pub fn run_for(&mut self, step: Duration, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.tick(step);
        }
    }

    /// Cuts the wire and forgets stack B, as if its host had vanished.
    pub fn drop_b(&mut self) {
        self.a.device.cut();
        self.b = None;
    }

    fn hosts(&mut self) -> impl Iterator<Item = &mut Host> {
        std::iter::once(&mut self.a).chain(self.b.as_mut())
    }
}

pub const MS: Duration = Duration::from_millis(1);
pub const SECOND: Duration = Duration::from_secs(1);

/// `recv` until `len` bytes arrived or the call says something other than
/// data (`Ok(0)` or an error other than `EAGAIN`), ticking in between.
pub fn pump_recv(
    net: &mut Net,
    on_b: bool,
    id: SocketId,
    out: &mut Vec<u8>,
    len: usize,
) -> Result<usize, Errno> {
    let mut buf = vec![0; 16 << 10];
    let end = net.now + Duration::from_secs(600);
    while out.len() < len {
        let stack = if on_b { net.b() } else { net.a() };
        match stack.recv(id, &mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(EAGAIN) => {
                assert!(net.now < end, "no data for 600 s");
                net.tick(MS);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(out.len())
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// FNV-1a, to compare large transfers.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}
