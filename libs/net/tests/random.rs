//! Random sequences of socket calls on two stacks, with random frames
//! thrown onto the wire: nothing may panic, and once every socket is
//! closed and time has passed, both stacks hold nothing.

mod common;

use std::net::Ipv4Addr;

use common::*;
use eremite_net::{Duration, Protocol, Shutdown, SocketId, SocketOption, Stack, Stats};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const ADDRESSES: [Ipv4Addr; 8] = [
    Ipv4Addr::LOCALHOST,
    A_IP,
    B_IP,
    Ipv4Addr::UNSPECIFIED,
    NOBODY_IP,
    Ipv4Addr::new(10, 0, 0, 255),
    Ipv4Addr::new(8, 8, 8, 8),
    Ipv4Addr::new(224, 0, 0, 1),
];
const PORTS: [u16; 5] = [0, 80, 81, 1, 65535];

#[derive(Clone, Debug)]
enum Call {
    Socket(Protocol),
    /// socket, bind to port 80 of an address, listen.
    Server(usize, u32),
    /// socket, connect to port 80 of an address.
    Client(Protocol, usize),
    Bind(usize, usize),
    Listen(u32),
    AcceptAll,
    Connect(usize, usize),
    Send(usize),
    /// send on every socket.
    SendAll(usize),
    SendTo(usize, usize, usize),
    Recv(usize),
    /// recv on every socket.
    RecvAll(usize),
    Peek(usize),
    Shutdown(Shutdown),
    Close,
    SetOption(SocketOption),
    Query,
}

#[derive(Clone, Debug)]
enum Op {
    /// A call on stack A (`true`) or B, on the socket `pick` selects
    /// (mostly an open one; sometimes a closed or made-up id).
    Call {
        on_a: bool,
        pick: usize,
        call: Call,
    },
    Tick(u64),
    /// Raw bytes onto A's wire, after an Ethernet header to A.
    Frame {
        is_ipv4: bool,
        bytes: Vec<u8>,
    },
}

fn address() -> impl Strategy<Value = usize> {
    // Mostly the addresses where something may listen.
    prop_oneof![4 => 0usize..4, 1 => 0..ADDRESSES.len()]
}

fn port() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(2usize), 1 => 0..PORTS.len()]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![3 => Just(Protocol::Tcp), 1 => Just(Protocol::Udp)]
}

fn call() -> impl Strategy<Value = Call> {
    let len = || prop_oneof![0usize..100, 0usize..100_000];
    prop_oneof![
        1 => protocol().prop_map(Call::Socket),
        2 => (address(), 0u32..10).prop_map(|(a, backlog)| Call::Server(a, backlog)),
        3 => (protocol(), address()).prop_map(|(protocol, a)| Call::Client(protocol, a)),
        1 => (address(), port()).prop_map(|(a, p)| Call::Bind(a, p)),
        1 => (0u32..20).prop_map(Call::Listen),
        3 => Just(Call::AcceptAll),
        1 => (address(), port()).prop_map(|(a, p)| Call::Connect(a, p)),
        2 => len().prop_map(Call::Send),
        2 => len().prop_map(Call::SendAll),
        2 => (address(), port(), len()).prop_map(|(a, p, len)| Call::SendTo(a, p, len)),
        2 => len().prop_map(Call::Recv),
        2 => len().prop_map(Call::RecvAll),
        1 => (0usize..100).prop_map(Call::Peek),
        1 => prop_oneof![Just(Shutdown::Read), Just(Shutdown::Write), Just(Shutdown::Both)]
            .prop_map(Call::Shutdown),
        2 => Just(Call::Close),
        1 => option().prop_map(Call::SetOption),
        1 => Just(Call::Query),
    ]
}

fn option() -> impl Strategy<Value = SocketOption> {
    prop_oneof![
        any::<bool>().prop_map(SocketOption::ReuseAddr),
        any::<bool>().prop_map(SocketOption::KeepAlive),
        any::<bool>().prop_map(SocketOption::NoDelay),
        any::<bool>().prop_map(SocketOption::Broadcast),
        proptest::option::of(0u32..3).prop_map(SocketOption::Linger),
        any::<u8>().prop_map(SocketOption::Ttl),
        any::<usize>().prop_map(SocketOption::RecvBufferBytes),
        any::<usize>().prop_map(SocketOption::SendBufferBytes),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (any::<bool>(), any::<usize>(), call())
            .prop_map(|(on_a, pick, call)| Op::Call { on_a, pick, call }),
        3 => prop_oneof![0u64..20, 0u64..200_000].prop_map(Op::Tick),
        1 => (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(is_ipv4, bytes)| Op::Frame { is_ipv4, bytes }),
    ]
}

/// The ids a stack handed out.
#[derive(Default)]
struct Ids {
    open: Vec<SocketId>,
    closed: Vec<SocketId>,
}

impl Ids {
    fn pick(&self, pick: usize) -> SocketId {
        match (pick % 10, self.open.is_empty(), self.closed.is_empty()) {
            (_, true, _) | (0, _, _) => SocketId::from_raw(pick as u64 >> 4),
            (1, _, false) => self.closed[pick % self.closed.len()],
            _ => self.open[pick % self.open.len()],
        }
    }

    fn close(&mut self, id: SocketId) {
        self.open.retain(|&open| open != id);
        self.closed.push(id);
    }
}

/// What the calls achieved, to check that the generator reaches the
/// interesting states.
#[derive(Default)]
struct Reached {
    accepted: usize,
    received: usize,
}

fn run(stack: &mut Stack, ids: &mut Ids, reached: &mut Reached, pick: usize, call: &Call) {
    let id = ids.pick(pick);
    let at = |a: usize, p: usize| addr(ADDRESSES[a], PORTS[p]);
    let mut buf = vec![0; 100_000];
    match *call {
        Call::Socket(protocol) => ids.open.extend(stack.socket(protocol)),
        Call::Server(a, backlog) => {
            if let Ok(id) = stack.socket(Protocol::Tcp) {
                ids.open.push(id);
                let _ = stack.bind(id, at(a, 2));
                let _ = stack.listen(id, backlog);
            }
        }
        Call::Client(protocol, a) => {
            if let Ok(id) = stack.socket(protocol) {
                ids.open.push(id);
                let _ = stack.connect(id, at(a, 2));
            }
        }
        Call::Bind(a, p) => drop(stack.bind(id, at(a, p))),
        Call::Listen(backlog) => drop(stack.listen(id, backlog)),
        // On every listener, so that accepts do happen.
        Call::AcceptAll => {
            for listener in ids.open.clone() {
                if let Ok((id, _)) = stack.accept(listener) {
                    ids.open.push(id);
                    reached.accepted += 1;
                }
            }
        }
        Call::Connect(a, p) => drop(stack.connect(id, at(a, p))),
        Call::Send(len) => drop(stack.send(id, &buf[..len])),
        Call::SendAll(len) => {
            for &id in &ids.open {
                let _ = stack.send(id, &buf[..len]);
            }
        }
        Call::SendTo(a, p, len) => drop(stack.send_to(id, &buf[..len], at(a, p))),
        Call::Recv(len) => drop(stack.recv_from(id, &mut buf[..len])),
        Call::RecvAll(len) => {
            for &id in &ids.open {
                if stack.recv(id, &mut buf[..len]).is_ok_and(|n| n > 0) {
                    reached.received += 1;
                }
            }
        }
        Call::Peek(len) => drop(stack.peek(id, &mut buf[..len])),
        Call::Shutdown(how) => drop(stack.shutdown(id, how)),
        Call::Close => {
            if stack.close(id).is_ok() {
                ids.close(id);
            }
        }
        Call::SetOption(option) => drop(stack.set_option(id, option)),
        Call::Query => {
            let _ = (stack.readiness(id), stack.take_error(id), stack.options(id));
            let _ = (
                stack.local_addr(id),
                stack.peer_addr(id),
                stack.protocol(id),
            );
        }
    }
}

fn frame(is_ipv4: bool, bytes: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(if is_ipv4 {
        &[0x08, 0x00]
    } else {
        &[0x08, 0x06]
    });
    frame.extend_from_slice(bytes);
    frame
}

/// Runs `ops`, closes everything, lets time pass; returns what the calls
/// reached and the stacks' final stats.
fn run_ops(ops: &[Op]) -> (Reached, Stats, Stats) {
    let mut net = Net::pair();
    let (mut ids_a, mut ids_b) = (Ids::default(), Ids::default());
    let mut reached = Reached::default();
    for op in ops {
        match op {
            Op::Call {
                on_a: true,
                pick,
                call,
            } => run(net.a(), &mut ids_a, &mut reached, *pick, call),
            Op::Call {
                on_a: false,
                pick,
                call,
            } => run(net.b(), &mut ids_b, &mut reached, *pick, call),
            Op::Tick(micros) => net.tick(Duration::from_micros(*micros)),
            Op::Frame { is_ipv4, bytes } => net.a.device.inject(frame(*is_ipv4, bytes)),
        }
        net.poll();
    }
    for id in ids_a.open {
        net.a().close(id).unwrap();
    }
    for id in ids_b.open {
        net.b().close(id).unwrap();
    }
    net.run_for(SECOND, Duration::from_secs(100));
    (reached, net.a().stats(), net.b().stats())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_calls_never_panic_and_leak_nothing(ops in proptest::collection::vec(op(), 1..100)) {
        let (_, a, b) = run_ops(&ops);
        prop_assert_eq!(a, Stats::default());
        prop_assert_eq!(b, Stats::default());
    }
}

/// The generator must reach accepted connections and received data, or
/// the test above proves little.
#[test]
fn random_calls_reach_connections_and_data() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(op(), 50..100);
    let mut total = Reached::default();
    for _ in 0..100 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let (reached, _, _) = run_ops(&ops);
        total.accepted += reached.accepted;
        total.received += reached.received;
    }
    assert!(
        total.accepted >= 20,
        "{} connections accepted",
        total.accepted
    );
    assert!(
        total.received >= 20,
        "{} receives with data",
        total.received
    );
}
