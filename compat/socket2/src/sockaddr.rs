//! Socket addresses in hermit-abi's layout. hermit's `sockaddr_in` and
//! `sockaddr_in6` start, as BSD's do, with a length byte and a family
//! byte; their field offsets come from hermit-abi's own structs. Addresses
//! are built and read byte by byte, so this file needs no `unsafe` and its
//! tests run on the host.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::offset_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hermit_abi::{sockaddr, sockaddr_in, sockaddr_in6};

use crate::Domain;

/// hermit's `socklen_t`.
#[allow(non_camel_case_types)]
pub type socklen_t = hermit_abi::socklen_t;
/// hermit's `sa_family_t` (one byte, after the length byte).
#[allow(non_camel_case_types)]
pub type sa_family_t = hermit_abi::sa_family_t;

const STORAGE_BYTES: usize = size_of::<hermit_abi::sockaddr_storage>();
const IN_BYTES: usize = size_of::<sockaddr_in>();
const IN6_BYTES: usize = size_of::<sockaddr_in6>();
// hermit-abi's families fit its one-byte `sa_family_t`.
const FAMILY_INET: sa_family_t = hermit_abi::AF_INET as sa_family_t;
const FAMILY_INET6: sa_family_t = hermit_abi::AF_INET6 as sa_family_t;

/// Room for any socket address: the size and alignment of hermit-abi's
/// `sockaddr_storage`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct SockAddrStorage {
    bytes: [u8; STORAGE_BYTES],
}

const _: () = assert!(align_of::<SockAddrStorage>() >= align_of::<hermit_abi::sockaddr_storage>());
const _: () = assert!(IN_BYTES <= STORAGE_BYTES && IN6_BYTES <= STORAGE_BYTES);

impl SockAddrStorage {
    /// Storage with every byte zero (no address).
    pub fn zeroed() -> Self {
        Self {
            bytes: [0; STORAGE_BYTES],
        }
    }

    /// Its size, as the socket calls take lengths.
    pub fn size_of(&self) -> socklen_t {
        STORAGE_BYTES as socklen_t
    }

    /// Where the kernel writes an address it returns.
    #[cfg_attr(not(target_os = "hermit"), allow(dead_code))]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut sockaddr {
        (&raw mut self.bytes).cast()
    }

    fn put(&mut self, offset: usize, value: &[u8]) {
        self.bytes[offset..offset + value.len()].copy_from_slice(value);
    }

    fn get<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut value = [0; N];
        value.copy_from_slice(&self.bytes[offset..offset + N]);
        value
    }
}

impl fmt::Debug for SockAddrStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockAddrStorage")
            .field("family", &self.bytes[offset_of!(sockaddr, sa_family)])
            .finish_non_exhaustive()
    }
}

/// A socket address as the kernel takes and returns it: storage and the
/// length of the address in it.
#[derive(Clone)]
pub struct SockAddr {
    storage: SockAddrStorage,
    len: socklen_t,
}

impl SockAddr {
    /// An address the kernel wrote into `storage`, `len` bytes long as it
    /// said (more than the storage holds is cut to the storage).
    pub(crate) fn from_kernel(storage: SockAddrStorage, len: socklen_t) -> Self {
        Self {
            storage,
            len: len.min(STORAGE_BYTES as socklen_t),
        }
    }

    /// An address of `family`, `len` bytes long, with only the length
    /// and family bytes that every hermit address starts with filled in.
    fn blank(len: usize, family: sa_family_t) -> Self {
        let mut storage = SockAddrStorage::zeroed();
        storage.put(offset_of!(sockaddr, sa_len), &[len as u8]);
        storage.put(offset_of!(sockaddr, sa_family), &[family]);
        Self {
            storage,
            len: len as socklen_t,
        }
    }

    /// The address family (`AF_INET` or `AF_INET6` in hermit's numbering).
    pub const fn family(&self) -> sa_family_t {
        self.storage.bytes[offset_of!(sockaddr, sa_family)]
    }

    /// The address family as a [`Domain`].
    pub const fn domain(&self) -> Domain {
        Domain::from_family(self.family())
    }

    /// The length of the address in bytes.
    #[allow(
        clippy::len_without_is_empty,
        reason = "socket2's API: an address, not a collection"
    )]
    pub const fn len(&self) -> socklen_t {
        self.len
    }

    /// The address for the socket calls.
    pub const fn as_ptr(&self) -> *const SockAddrStorage {
        &raw const self.storage
    }

    /// The storage, with the address in it.
    pub const fn as_storage(self) -> SockAddrStorage {
        self.storage
    }

    /// Whether it is an IPv4 address.
    pub const fn is_ipv4(&self) -> bool {
        self.family() == FAMILY_INET
    }

    /// Whether it is an IPv6 address.
    pub const fn is_ipv6(&self) -> bool {
        self.family() == FAMILY_INET6
    }

    /// The IPv4 or IPv6 address; `None` for another family or a length
    /// too short for its family.
    pub fn as_socket(&self) -> Option<SocketAddr> {
        self.as_socket_ipv4()
            .map(SocketAddr::V4)
            .or_else(|| self.as_socket_ipv6().map(SocketAddr::V6))
    }

    /// The address if it is a whole IPv4 address.
    pub fn as_socket_ipv4(&self) -> Option<SocketAddrV4> {
        let s = self.whole(FAMILY_INET, IN_BYTES)?;
        Some(SocketAddrV4::new(
            Ipv4Addr::from(s.get::<4>(offset_of!(sockaddr_in, sin_addr))),
            u16::from_be_bytes(s.get(offset_of!(sockaddr_in, sin_port))),
        ))
    }

    /// The address if it is a whole IPv6 address.
    pub fn as_socket_ipv6(&self) -> Option<SocketAddrV6> {
        let s = self.whole(FAMILY_INET6, IN6_BYTES)?;
        Some(SocketAddrV6::new(
            Ipv6Addr::from(s.get::<16>(offset_of!(sockaddr_in6, sin6_addr))),
            u16::from_be_bytes(s.get(offset_of!(sockaddr_in6, sin6_port))),
            u32::from_ne_bytes(s.get(offset_of!(sockaddr_in6, sin6_flowinfo))),
            u32::from_ne_bytes(s.get(offset_of!(sockaddr_in6, sin6_scope_id))),
        ))
    }

    /// The storage if it holds a whole address of `family`, which takes
    /// `len` bytes.
    fn whole(&self, family: sa_family_t, len: usize) -> Option<&SockAddrStorage> {
        (self.family() == family && self.len as usize >= len).then_some(&self.storage)
    }

    /// The address bytes that count.
    fn bytes(&self) -> &[u8] {
        &self.storage.bytes[..self.len as usize]
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(addr) => addr.into(),
            SocketAddr::V6(addr) => addr.into(),
        }
    }
}

impl From<SocketAddrV4> for SockAddr {
    fn from(addr: SocketAddrV4) -> Self {
        let mut raw = SockAddr::blank(IN_BYTES, FAMILY_INET);
        let port = addr.port().to_be_bytes();
        raw.storage.put(offset_of!(sockaddr_in, sin_port), &port);
        raw.storage
            .put(offset_of!(sockaddr_in, sin_addr), &addr.ip().octets());
        raw
    }
}

impl From<SocketAddrV6> for SockAddr {
    fn from(addr: SocketAddrV6) -> Self {
        let mut raw = SockAddr::blank(IN6_BYTES, FAMILY_INET6);
        let s = &mut raw.storage;
        s.put(
            offset_of!(sockaddr_in6, sin6_port),
            &addr.port().to_be_bytes(),
        );
        s.put(offset_of!(sockaddr_in6, sin6_addr), &addr.ip().octets());
        // In the machine's own byte order, as std passes them.
        s.put(
            offset_of!(sockaddr_in6, sin6_flowinfo),
            &addr.flowinfo().to_ne_bytes(),
        );
        s.put(
            offset_of!(sockaddr_in6, sin6_scope_id),
            &addr.scope_id().to_ne_bytes(),
        );
        raw
    }
}

impl fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("SockAddr");
        out.field("family", &self.domain()).field("len", &self.len);
        if let Some(addr) = self.as_socket() {
            out.field("addr", &addr);
        }
        out.finish()
    }
}

impl PartialEq for SockAddr {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for SockAddr {}

impl Hash for SockAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_have_hermits_layout_and_read_back() {
        let addr: SocketAddrV4 = "10.0.0.2:8080".parse().unwrap();
        let raw = SockAddr::from(addr);
        assert_eq!(raw.len(), 16);
        assert!(raw.is_ipv4() && !raw.is_ipv6());
        assert_eq!(raw.domain(), Domain::IPV4);
        // Length, family 3 (hermit's AF_INET), port big-endian, address.
        assert_eq!(
            raw.bytes(),
            [16, 3, 0x1f, 0x90, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(raw.as_socket(), Some(SocketAddr::V4(addr)));
        assert_eq!(raw.as_socket_ipv6(), None);
    }

    #[test]
    fn ipv6_addresses_read_back_with_flow_and_scope() {
        let addr = SocketAddrV6::new("fe80::1:2".parse().unwrap(), 443, 0x1234_5678, 7);
        let raw = SockAddr::from(SocketAddr::V6(addr));
        assert_eq!(raw.len(), 28);
        assert_eq!(raw.family(), 1, "hermit's AF_INET6");
        assert_eq!(raw.domain(), Domain::IPV6);
        assert_eq!(raw.as_socket_ipv6(), Some(addr));
        assert_eq!(raw.as_socket_ipv4(), None);
    }

    #[test]
    fn what_the_kernel_returns_is_read_within_its_length() {
        let full = SockAddr::from("127.0.0.1:1".parse::<SocketAddrV4>().unwrap()).as_storage();
        // Cut short: the family is there, the address is not whole.
        let short = SockAddr::from_kernel(full, 8);
        assert!(short.is_ipv4());
        assert_eq!(short.as_socket(), None);
        // A length beyond the storage is cut to it.
        let long = SockAddr::from_kernel(full, u32::MAX);
        assert_eq!(long.len() as usize, STORAGE_BYTES);
        assert_eq!(long.as_socket(), Some("127.0.0.1:1".parse().unwrap()));
        // Nothing at all, or an unknown family.
        let empty = SockAddr::from_kernel(SockAddrStorage::zeroed(), 0);
        assert_eq!(empty.as_socket(), None);
        assert_eq!(format!("{empty:?}"), "SockAddr { family: 0, len: 0 }");
    }

    #[test]
    fn equal_addresses_compare_and_hash_alike() {
        use std::collections::HashSet;
        let a = SockAddr::from("10.0.0.1:80".parse::<SocketAddr>().unwrap());
        let b = SockAddr::from_kernel(a.clone().as_storage(), a.len());
        let c = SockAddr::from("10.0.0.1:81".parse::<SocketAddr>().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let set: HashSet<SockAddr> = [a, b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
    }
}
