//! Name lookup as a C library's stub resolver does it, without the I/O:
//! the lines of `/etc/hosts` (hosts(5)), the `nameserver` lines of
//! `/etc/resolv.conf` (resolv.conf(5)), and a DNS query for a name's IPv4
//! address and its answer (RFC 1035 §4.1), built and read with smoltcp's
//! `wire::dns`. The kernel reads the files and carries the datagrams;
//! everything here is host-tested, and the answer parser takes whatever
//! the network sends.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::{
    DnsFlags as Flags, DnsOpcode as Opcode, DnsPacket as Packet, DnsQueryType as Type,
    DnsQuestion as Question, DnsRcode as Rcode, DnsRecord as Record, DnsRecordData as RecordData,
    DnsRepr as Repr,
};

/// Most name servers `resolv.conf` may list that are used (`MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// Longest name in text form (RFC 1035 §2.3.4, less the root's dot).
const MAX_NAME_BYTES: usize = 253;
/// Longest label.
const MAX_LABEL_BYTES: usize = 63;

/// Why a name has no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// Not a name DNS can carry (empty label, too long, odd bytes).
    BadName,
    /// The name does not exist, or has no IPv4 address.
    NotFound,
    /// The server failed or refused; another may know.
    ServerFailure,
    /// The reply is not an answer to our query (wrong ID or question) or
    /// is malformed: ignore it and keep waiting.
    NotOurs,
}

/// The address `/etc/hosts` (`text`) gives `name`: the first line that
/// lists it, as its canonical name or an alias, with an IPv4 address.
/// Names compare without regard to ASCII case; `#` starts a comment.
pub fn find_in_hosts(text: &[u8], name: &[u8]) -> Option<Ipv4Addr> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        let mut fields = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        let addr: Ipv4Addr = core::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
        fields
            .any(|field| field.eq_ignore_ascii_case(name))
            .then_some(addr)
    })
}

/// The IPv4 name servers `/etc/resolv.conf` (`text`) lists, in order, at
/// most [`MAX_NAMESERVERS`].
pub fn nameservers(text: &[u8]) -> Vec<Ipv4Addr> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty());
            if fields.next()? != b"nameserver" {
                return None;
            }
            core::str::from_utf8(fields.next()?).ok()?.parse().ok()
        })
        .take(MAX_NAMESERVERS)
        .collect()
}

/// A query (recursion desired) with `id` for the IPv4 address of `name`
/// (dotted text, an optional final dot).
pub fn query(id: u16, name: &[u8]) -> Result<Vec<u8>, LookupError> {
    let wire_name = encode_name(name)?;
    let repr = Repr {
        transaction_id: id,
        opcode: Opcode::Query,
        flags: Flags::RECURSION_DESIRED,
        question: Question {
            name: &wire_name,
            type_: Type::A,
        },
    };
    let mut bytes = alloc::vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
    Ok(bytes)
}

/// The address a reply to query `id` for `name` gives: the first A record
/// of its answer section (a server that follows a CNAME lists the
/// target's records after it).
pub fn answer(id: u16, name: &[u8], reply: &[u8]) -> Result<Ipv4Addr, LookupError> {
    let packet = Packet::new_checked(reply).map_err(|_| LookupError::NotOurs)?;
    if packet.transaction_id() != id || !packet.flags().contains(Flags::RESPONSE) {
        return Err(LookupError::NotOurs);
    }
    if packet.question_count() != 1 {
        return Err(LookupError::NotOurs);
    }
    let (mut rest, question) =
        Question::parse(packet.payload()).map_err(|_| LookupError::NotOurs)?;
    let wire_name = encode_name(name)?;
    if question.type_ != Type::A || !question.name.eq_ignore_ascii_case(&wire_name) {
        return Err(LookupError::NotOurs);
    }
    match packet.rcode() {
        Rcode::NoError => {}
        Rcode::NXDomain => return Err(LookupError::NotFound),
        _ => return Err(LookupError::ServerFailure),
    }
    for _ in 0..packet.answer_record_count() {
        let (next, record) = Record::parse(rest).map_err(|_| LookupError::NotOurs)?;
        if let RecordData::A(addr) = record.data {
            return Ok(addr);
        }
        rest = next;
    }
    Err(LookupError::NotFound)
}

/// `name` as DNS labels (RFC 1035 §3.1), ending with the root's.
fn encode_name(name: &[u8]) -> Result<Vec<u8>, LookupError> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(LookupError::BadName);
    }
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.split(|&b| b == b'.') {
        let is_label = (1..=MAX_LABEL_BYTES).contains(&label.len())
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !is_label {
            return Err(LookupError::BadName);
        }
        // At most 63.
        wire.push(label.len() as u8);
        wire.extend_from_slice(label);
    }
    wire.push(0);
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_give_the_first_address_of_a_name_or_alias() {
        let hosts = b"# comment\n127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n\
                      10.0.2.2 host.eremite.internal gw # the host\n\
                      192.168.1.5   db.local DB\n10.9.9.9 db.local\nnot-an-ip name\n";
        let find = |name: &[u8]| find_in_hosts(hosts, name);
        assert_eq!(find(b"localhost"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(find(b"gw"), Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(find(b"DB.local"), Some(Ipv4Addr::new(192, 168, 1, 5)));
        assert_eq!(find(b"db"), Some(Ipv4Addr::new(192, 168, 1, 5)));
        assert_eq!(find(b"the"), None, "comments are not names");
        assert_eq!(find(b"ip6-localhost"), None, "IPv4 only");
        assert_eq!(find(b"name"), None);
        assert_eq!(find_in_hosts(b"", b"x"), None);
    }

    #[test]
    fn nameservers_are_the_ipv4_ones_listed_up_to_three() {
        let conf = b"search example\nnameserver 10.0.2.2\nnameserver ::1\n\
                     options ndots:1\n nameserver\t10.0.2.3 \nnameserver 1.1.1.1\nnameserver 8.8.8.8\n";
        assert_eq!(
            nameservers(conf),
            [
                Ipv4Addr::new(10, 0, 2, 2),
                Ipv4Addr::new(10, 0, 2, 3),
                Ipv4Addr::new(1, 1, 1, 1)
            ]
        );
        assert!(nameservers(b"nameserverx 1.2.3.4\n").is_empty());
    }

    /// A reply to `query` with `rcode` and the records (type, data).
    fn reply(query: &[u8], rcode: u8, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut bytes = query.to_vec();
        bytes[2] |= 0x80; // response
        bytes[3] = 0x80 | rcode; // recursion available
        bytes[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (type_, data) in records {
            bytes.extend_from_slice(&[0xc0, 12]); // the question's name
            bytes.extend_from_slice(&type_.to_be_bytes());
            bytes.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            bytes.extend_from_slice(data);
        }
        bytes
    }

    #[test]
    fn a_query_asks_for_the_a_record_of_the_name() {
        let q = query(0x1234, b"Files.Example.").unwrap();
        assert_eq!(q[..4], [0x12, 0x34, 0x01, 0x00], "ID, RD");
        assert_eq!(q[4..12], [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x05Files\x07Example\x00\x00\x01\x00\x01");
        for bad in [&b""[..], b".", b"a..b", b"a b", &[b'a'; 64], &[b'a'; 254]] {
            assert_eq!(query(1, bad), Err(LookupError::BadName), "{bad:?}");
        }
    }

    #[test]
    fn answers_give_the_first_address_and_say_why_not() {
        let q = query(7, b"files.example").unwrap();
        let cname: &[u8] = b"\x03cdn\x00";
        let ok = reply(
            &q,
            0,
            &[(5, cname), (1, &[10, 0, 2, 9]), (1, &[10, 0, 2, 10])],
        );
        assert_eq!(
            answer(7, b"FILES.example", &ok),
            Ok(Ipv4Addr::new(10, 0, 2, 9))
        );
        assert_eq!(answer(8, b"files.example", &ok), Err(LookupError::NotOurs));
        assert_eq!(answer(7, b"other.example", &ok), Err(LookupError::NotOurs));
        assert_eq!(
            answer(7, b"files.example", &q),
            Err(LookupError::NotOurs),
            "a query"
        );
        let nx = reply(&q, 3, &[]);
        assert_eq!(answer(7, b"files.example", &nx), Err(LookupError::NotFound));
        let empty = reply(&q, 0, &[(5, cname)]);
        assert_eq!(
            answer(7, b"files.example", &empty),
            Err(LookupError::NotFound)
        );
        let servfail = reply(&q, 2, &[]);
        assert_eq!(
            answer(7, b"files.example", &servfail),
            Err(LookupError::ServerFailure)
        );
        // Cut anywhere: never a panic, never an address.
        for len in 0..ok.len() - 16 {
            assert!(answer(7, b"files.example", &ok[..len]).is_err(), "{len}");
        }
        let short_a = reply(&q, 0, &[(1, &[10, 0, 2])]);
        assert!(answer(7, b"files.example", &short_a).is_err());
    }
}
