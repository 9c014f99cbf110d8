//! Unit tests of the pieces: the table, the port allocator, the routing
//! rules, configuration checks. The stack as a whole is tested in
//! `tests/`.

use core::net::{Ipv4Addr, SocketAddrV4};

use eremite_interface::errno::{EADDRNOTAVAIL, EBADF, ECONNREFUSED, EINVAL, ENETUNREACH, ENFILE};
use smoltcp::wire::Ipv4Cidr;

use super::*;
use crate::ports::EPHEMERAL;
use crate::route::{Addressing, Path};

const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn addressing(gateway: Option<Ipv4Addr>) -> Addressing {
    Addressing {
        cidr: Ipv4Cidr::new(OWN, 24),
        gateway,
    }
}

#[test]
fn table_ids_go_stale_when_their_slot_is_reused() {
    let mut table = Table::new(2);
    let a = table.insert("a").unwrap();
    let b = table.insert("b").unwrap();
    assert_eq!(table.insert("c"), Err(ENFILE));
    assert_eq!(table.remove(a), Ok("a"));
    assert_eq!(table.remove(a), Err(EBADF));
    let c = table.insert("c").unwrap();
    assert_ne!(a, c, "same slot, new generation");
    assert_eq!(table.get(a), Err(EBADF));
    assert_eq!(table.get(c), Ok(&"c"));
    assert_eq!(table.get(b), Ok(&"b"));
    assert_eq!(table.len(), 2);
    assert_eq!(table.get(SocketId::from_raw(u64::MAX)), Err(EBADF));
    let ids: alloc::vec::Vec<_> = table.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&b) && ids.contains(&c));
}

#[test]
fn ephemeral_ports_wrap_round_and_run_out() {
    let mut ports = Ports::new(u64::from(EPHEMERAL.end() - EPHEMERAL.start()));
    assert_eq!(ports.hold_ephemeral(Protocol::Tcp), Ok(*EPHEMERAL.end()));
    assert_eq!(ports.hold_ephemeral(Protocol::Tcp), Ok(*EPHEMERAL.start()));
    // Another protocol has its own ports.
    ports.hold(Protocol::Udp, *EPHEMERAL.start() + 1);
    assert_eq!(
        ports.hold_ephemeral(Protocol::Tcp),
        Ok(*EPHEMERAL.start() + 1)
    );
    while ports.hold_ephemeral(Protocol::Tcp).is_ok() {}
    assert_eq!(ports.hold_ephemeral(Protocol::Tcp), Err(EADDRNOTAVAIL));
    ports.release(Protocol::Tcp, 40000);
    assert_eq!(ports.hold_ephemeral(Protocol::Tcp), Ok(40000));
}

#[test]
fn ports_count_their_holders() {
    let mut ports = Ports::new(0);
    ports.hold(Protocol::Tcp, 80);
    ports.hold(Protocol::Tcp, 80);
    ports.release(Protocol::Tcp, 80);
    assert!(ports.is_taken(Protocol::Tcp, 80));
    ports.release(Protocol::Tcp, 80);
    assert!(!ports.is_taken(Protocol::Tcp, 80));
    // Releasing a port nobody holds changes nothing.
    ports.release(Protocol::Tcp, 80);
    assert_eq!(ports.len(), 0);
}

#[test]
fn local_destinations_take_the_loopback_path() {
    let routes = addressing(None);
    for ip in [
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(127, 1, 2, 3),
        OWN,
        Ipv4Addr::UNSPECIFIED,
    ] {
        assert_eq!(routes.path_to(ip), Path::Loopback, "{ip}");
    }
    assert_eq!(routes.path_to(Ipv4Addr::new(10, 0, 0, 3)), Path::External);
    assert!(routes.serves(Ipv4Addr::UNSPECIFIED, Path::External));
    assert!(routes.serves(OWN, Path::External));
    assert!(routes.serves(Ipv4Addr::LOCALHOST, Path::Loopback));
    assert!(!routes.serves(Ipv4Addr::LOCALHOST, Path::External));
}

#[test]
fn destinations_follow_linux_rules() {
    let routes = addressing(None);
    let at = |ip, port| SocketAddrV4::new(ip, port);
    let outside = Ipv4Addr::new(192, 168, 0, 1);
    assert_eq!(routes.stream_destination(at(outside, 80)), Err(ENETUNREACH));
    assert_eq!(
        addressing(Some(Ipv4Addr::new(10, 0, 0, 1))).stream_destination(at(outside, 80)),
        Ok(at(outside, 80))
    );
    assert_eq!(
        routes.stream_destination(at(Ipv4Addr::UNSPECIFIED, 80)),
        Ok(at(Ipv4Addr::LOCALHOST, 80))
    );
    assert_eq!(routes.stream_destination(at(OWN, 0)), Err(ECONNREFUSED));
    let broadcast = Ipv4Addr::new(10, 0, 0, 255);
    assert_eq!(
        routes.stream_destination(at(broadcast, 80)),
        Err(ENETUNREACH)
    );
    assert_eq!(
        routes.datagram_destination(at(broadcast, 80)),
        Ok(at(broadcast, 80))
    );
    assert_eq!(routes.datagram_destination(at(OWN, 0)), Err(EINVAL));
    let multicast = Ipv4Addr::new(224, 0, 0, 1);
    assert_eq!(
        routes.datagram_destination(at(multicast, 80)),
        Err(ENETUNREACH)
    );
    assert_eq!(
        routes.check_bind(Ipv4Addr::new(10, 0, 0, 3)),
        Err(EADDRNOTAVAIL)
    );
    assert_eq!(
        routes.source_for(Ipv4Addr::new(127, 0, 0, 9)),
        Ipv4Addr::LOCALHOST
    );
    assert_eq!(routes.source_for(Ipv4Addr::new(10, 0, 0, 3)), OWN);
}

#[test]
fn nonsensical_configurations_are_refused() {
    let good = StackConfig::new([2, 0, 0, 0, 0, 1], OWN, 24);
    assert!(good.addressing().is_ok());
    let variants: [fn(&mut StackConfig); 8] = [
        |c| c.mac = [1, 0, 0, 0, 0, 1],
        |c| c.mac = [0; 6],
        |c| c.prefix_len = 33,
        |c| c.address = Ipv4Addr::new(10, 0, 0, 255),
        |c| c.address = Ipv4Addr::LOCALHOST,
        |c| c.gateway = Some(Ipv4Addr::new(192, 168, 0, 1)),
        |c| c.gateway = Some(OWN),
        |c| c.limits.max_sockets = 0,
    ];
    for change in variants {
        let mut config = good.clone();
        change(&mut config);
        let is_valid = config.addressing().is_ok() && config.limits.validate().is_ok();
        assert!(!is_valid, "{config:?}");
    }
    let mut huge = good.clone();
    huge.limits.max_buffer_bytes = 2 << 30;
    assert_eq!(huge.limits.validate(), Err(EINVAL));
}

#[test]
fn the_stack_needs_an_ethernet_device() {
    let config = StackConfig::new([2, 0, 0, 0, 0, 1], OWN, 24);
    let mut not_ethernet = loopback::LoopbackDevice::default();
    let result = Stack::new(config, &mut not_ethernet, Instant::ZERO);
    assert_eq!(result.err(), Some(EINVAL));
}

#[test]
fn later_saturates_instead_of_overflowing() {
    let end = Instant::from_micros(i64::MAX);
    assert_eq!(later(end, Duration::from_secs(1)), end);
    assert_eq!(later(Instant::ZERO, Duration::MAX), end);
    assert_eq!(earliest(None, Some(end)), Some(end));
    assert_eq!(
        earliest(Some(Instant::ZERO), Some(end)),
        Some(Instant::ZERO)
    );
}

#[test]
fn the_stack_can_live_behind_a_kernel_lock() {
    fn is_send<T: Send>() {}
    is_send::<Stack>();
}

#[test]
fn the_announcement_is_an_arp_request_for_the_own_address() {
    // smoltcp's own loopback device, as an Ethernet card: what the stack
    // sends comes back as received frames.
    let mut card = smoltcp::phy::Loopback::new(Medium::Ethernet);
    let mac = [2, 0, 0, 0, 0, 1];
    let mut stack = Stack::new(StackConfig::new(mac, OWN, 24), &mut card, Instant::ZERO).unwrap();
    assert!(stack.announce(Instant::ZERO, &mut card));
    let (rx, _) = smoltcp::phy::Device::receive(&mut card, Instant::ZERO).expect("a frame");
    let (ethernet, arp) = smoltcp::phy::RxToken::consume(rx, |bytes| {
        let frame = EthernetFrame::new_checked(bytes).unwrap();
        let ethernet = EthernetRepr::parse(&frame).unwrap();
        let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
        (ethernet, arp)
    });
    assert_eq!(ethernet.dst_addr, EthernetAddress::BROADCAST);
    assert_eq!(ethernet.src_addr, EthernetAddress(mac));
    assert_eq!(
        arp,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: OWN,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: OWN,
        }
    );
}
