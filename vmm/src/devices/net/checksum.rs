//! Checking a received frame's TCP or UDP checksum, so the driver need
//! not (`VIRTIO_NET_F_GUEST_CSUM`: the device then sets
//! `VIRTIO_NET_HDR_F_DATA_VALID`, §5.1.6.4).
//!
//! The check runs on the device's thread, beside the vCPU, instead of in
//! the guest's network stack, which would otherwise make one more pass
//! over every byte it receives. Only what is certain is vouched for: an
//! Ethernet frame carrying a whole (unfragmented) IPv4 packet with a
//! well-formed header whose TCP or UDP checksum is right (a UDP checksum
//! of zero, "none", included). Anything else goes without the flag and
//! the guest checks it itself. The IPv4 header checksum stays the
//! guest's (RFC 791; 20 bytes).

/// Ethernet header bytes and the IPv4 EtherType (IEEE 802.3).
const ETHERNET_HEADER_BYTES: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol numbers (IANA).
const PROTOCOL_TCP: u8 = 6;
const PROTOCOL_UDP: u8 = 17;

/// Whether `frame` carries an IPv4 TCP or UDP packet whose transport
/// checksum (RFC 793 §3.1, RFC 768) is right.
pub(super) fn is_transport_checksum_valid(frame: &[u8]) -> bool {
    let Some(ip) = frame.get(ETHERNET_HEADER_BYTES..) else {
        return false;
    };
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 || ip.len() < 20 {
        return false;
    }
    let (version, header_bytes) = (ip[0] >> 4, usize::from(ip[0] & 0xf) * 4);
    let total_bytes = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // More fragments, or a fragment offset: not the whole segment.
    let is_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if version != 4
        || header_bytes < 20
        || total_bytes < header_bytes
        || total_bytes > ip.len()
        || is_fragment
    {
        return false;
    }
    let protocol = ip[9];
    let segment = &ip[header_bytes..total_bytes];
    match protocol {
        PROTOCOL_TCP if segment.len() >= 20 => {}
        // A UDP checksum of zero: the sender computed none.
        PROTOCOL_UDP if segment.len() >= 8 && segment[6..8] == [0, 0] => return true,
        PROTOCOL_UDP if segment.len() >= 8 => {}
        _ => return false,
    }
    // Over the pseudo-header (source, destination, protocol, length) and
    // the segment with its checksum, a right sum is all ones.
    let length = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    let pseudo = sum_words(&ip[12..20]) + u64::from(protocol) + u64::from(length);
    fold(pseudo + sum_words(segment)) == 0xffff
}

/// The sum of `bytes` as big-endian 16-bit words (an odd last byte is
/// padded with zero), not yet folded. At most 64 KiB: no overflow.
fn sum_words(bytes: &[u8]) -> u64 {
    let (pairs, rest) = bytes.as_chunks::<2>();
    let sum: u64 = pairs
        .iter()
        .map(|&pair| u64::from(u16::from_be_bytes(pair)))
        .sum();
    sum + rest.first().map_or(0, |&last| u64::from(last) << 8)
}

/// The ones'-complement sum folded into 16 bits.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // At most 0xffff after the loop.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4 packet of `protocol` from 10.0.0.1
    /// to 10.0.0.2 around `segment`, with the transport checksum at
    /// `checksum_offset` computed.
    fn frame(protocol: u8, mut segment: Vec<u8>, checksum_offset: usize) -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let total = u16::try_from(20 + segment.len()).unwrap();
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let length = u16::try_from(segment.len()).unwrap();
        let sum =
            sum_words(&ip[12..20]) + u64::from(protocol) + u64::from(length) + sum_words(&segment);
        let checksum = !fold(sum);
        segment[checksum_offset..checksum_offset + 2].copy_from_slice(&checksum.to_be_bytes());
        let mut bytes = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        bytes.extend_from_slice(&ip);
        bytes.extend_from_slice(&segment);
        bytes
    }

    fn tcp(payload_len: usize) -> Vec<u8> {
        let mut segment = vec![0u8; 20 + payload_len];
        segment[0..4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        segment[12] = 5 << 4;
        for (i, byte) in segment[20..].iter_mut().enumerate() {
            *byte = (i * 7 + 3) as u8;
        }
        frame(PROTOCOL_TCP, segment, 16)
    }

    #[test]
    fn right_tcp_and_udp_checksums_are_vouched_for() {
        for len in [0, 1, 2, 1459, 1460, 65_000] {
            assert!(is_transport_checksum_valid(&tcp(len)), "{len}");
        }
        let udp = frame(
            PROTOCOL_UDP,
            vec![0x1f, 0x90, 0x1b, 0x58, 0, 11, 0, 0, 1, 2, 3],
            6,
        );
        assert!(is_transport_checksum_valid(&udp));
    }

    #[test]
    fn a_changed_byte_or_a_doubtful_frame_is_left_to_the_guest() {
        let good = tcp(100);
        for at in [14 + 12, 14 + 19, 14 + 20, 14 + 36, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(!is_transport_checksum_valid(&bad), "byte {at}");
        }
        let with = |at: usize, value: u8| {
            let mut f = good.clone();
            f[at] = value;
            f
        };
        assert!(!is_transport_checksum_valid(&with(12, 0x86)), "not IPv4");
        assert!(
            !is_transport_checksum_valid(&with(14, 0x65)),
            "IPv6 version"
        );
        assert!(
            !is_transport_checksum_valid(&with(14, 0x44)),
            "header too short"
        );
        assert!(
            !is_transport_checksum_valid(&with(14 + 6, 0x20)),
            "more fragments"
        );
        assert!(!is_transport_checksum_valid(&with(14 + 9, 1)), "ICMP");
        assert!(
            !is_transport_checksum_valid(&with(14 + 2, 0xff)),
            "longer than the frame"
        );
        assert!(!is_transport_checksum_valid(&good[..30]), "truncated");
        assert!(!is_transport_checksum_valid(&[]));
        // UDP without a checksum (zero): nothing to check.
        let mut udp = frame(PROTOCOL_UDP, vec![0x1f, 0x90, 0x1b, 0x58, 0, 9, 0, 0, 7], 6);
        udp[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
        assert!(is_transport_checksum_valid(&udp));
    }
}
