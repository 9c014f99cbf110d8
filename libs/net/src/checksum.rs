//! The TCP or UDP checksum of a received frame, for a card whose device
//! vouches for the checksums it has checked (virtio's `GUEST_CSUM` and
//! `DATA_VALID`): the stack is then told not to check them, and the
//! driver checks only the frames the device did not vouch for.

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

/// Whether `frame` may go on to a stack that does not check TCP and UDP
/// checksums: `false` only for an IPv4 TCP or UDP packet whose checksum
/// is wrong. Frames smoltcp cannot parse pass (it drops them itself), as
/// do fragments (smoltcp, without reassembly, drops those too).
pub fn is_transport_checksum_right(frame: &[u8]) -> bool {
    let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
        return true;
    };
    if ethernet.ethertype() != EthernetProtocol::Ipv4 {
        return true;
    }
    let Ok(ip) = Ipv4Packet::new_checked(ethernet.payload()) else {
        return true;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return true;
    }
    let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
    match ip.next_header() {
        IpProtocol::Tcp => {
            TcpPacket::new_checked(ip.payload()).map_or(true, |tcp| tcp.verify_checksum(&src, &dst))
        }
        IpProtocol::Udp => {
            UdpPacket::new_checked(ip.payload()).map_or(true, |udp| udp.verify_checksum(&src, &dst))
        }
        _ => true,
    }
}

// Tested with the frames of `tests/udp.rs`.
