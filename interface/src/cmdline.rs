//! The kernel command-line parameters that the VMM passes and the kernel
//! reads: their keys, their value syntax and their limits, in one place.
//!
//! [`crate::BootInfo::cmdline`] is a list of tokens, one string each. The
//! user's `--cmdline` text comes first (split at white space), then the
//! VMM's own parameters:
//!
//! | token | meaning |
//! |---|---|
//! | `virtio_mmio.device=4K@0xd0000000:34` | a virtio-MMIO device ([`VirtioMmio`]) |
//! | `net.ip=10.0.0.2/24` | the network card's IPv4 address and prefix ([`NetAddress`]) |
//! | `net.gateway=10.0.0.1` | the default IPv4 gateway ([`NetGateway`]) |
//!
//! `virtio_mmio.device` has the syntax of Linux's virtio-MMIO command-line
//! devices (`drivers/virtio/virtio_mmio.c`, `SIZE@BASE:IRQ`), which QEMU
//! `-M microvm` and Firecracker use too, so one kernel parser serves all
//! three. On our VMM the number after the colon is the local APIC vector
//! of the device's interrupt, an MSI the VMM routes to CPU 0. QEMU's
//! number is an interrupt line (an I/O APIC pin): the PVH boot path reads
//! it with [`VirtioMmioLine::parse`] and hands the kernel the same token
//! with the vector it routed the line to.
//!
//! [`parse_param`] reads one token. Keys it does not know are the user's
//! and are left alone (`None`); a known key with a bad value is an error,
//! never a panic. Every type's [`Display`](core::fmt::Display) writes the
//! token that [`parse_param`] reads back.

use core::fmt;
use core::ops::RangeInclusive;

use crate::layout::{DEVICE_VECTOR, SPURIOUS_VECTOR};

/// Key of a virtio-MMIO device.
pub const VIRTIO_MMIO_KEY: &str = "virtio_mmio.device";
/// Key of the network card's address.
pub const NET_ADDRESS_KEY: &str = "net.ip";
/// Key of the default gateway.
pub const NET_GATEWAY_KEY: &str = "net.gateway";

/// The interrupt vectors a device may use: from [`DEVICE_VECTOR`] (those
/// below are the CPU's exceptions and the kernel's timer and wake-up
/// vectors) up to, not including, [`SPURIOUS_VECTOR`].
pub const DEVICE_VECTORS: RangeInclusive<u8> = DEVICE_VECTOR..=SPURIOUS_VECTOR - 1;

/// The alignment of a virtio-MMIO register window: QEMU `-M microvm`
/// places its windows 512 bytes apart (`hw/i386/microvm.c`); our VMM's
/// are page aligned.
pub const VIRTIO_MMIO_ALIGN: u64 = 0x200;

/// A virtio-MMIO device: `virtio_mmio.device=SIZE@ADDR:VECTOR`.
///
/// `SIZE` and `ADDR` are decimal or `0x` hexadecimal numbers, optionally
/// followed by `K`, `M` or `G` (binary multiples, either case); `VECTOR` is
/// a decimal or `0x` hexadecimal number. Written with the largest suffix
/// that divides the size, the address in hexadecimal and the vector in
/// decimal: `virtio_mmio.device=4K@0xd0000000:34`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtioMmio {
    /// Guest-physical address of the register window (aligned to
    /// [`VIRTIO_MMIO_ALIGN`]).
    pub addr: u64,
    /// Size of the register window in bytes (not zero).
    pub size: u64,
    /// The local APIC vector of the device's interrupt, in
    /// [`DEVICE_VECTORS`].
    pub vector: u8,
}

/// The network card's IPv4 address and prefix length:
/// `net.ip=10.0.0.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetAddress {
    /// A unicast address (not `0.0.0.0`, `255.255.255.255` or multicast).
    pub address: [u8; 4],
    /// Length of the network prefix, 0 to 32.
    pub prefix_len: u8,
}

/// The default IPv4 gateway: `net.gateway=10.0.0.1`. A unicast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetGateway(pub [u8; 4]);

/// One parameter of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// `virtio_mmio.device=…`
    VirtioMmio(VirtioMmio),
    /// `net.ip=…`
    NetAddress(NetAddress),
    /// `net.gateway=…`
    NetGateway(NetGateway),
}

/// A parameter of ours with a value that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    /// The value does not have the key's form (or does not fit its type).
    Format {
        /// The parameter's key.
        key: &'static str,
        /// The form it should have.
        expected: &'static str,
    },
    /// A virtio-MMIO window of zero bytes.
    ZeroSize,
    /// A virtio-MMIO window that is not aligned to [`VIRTIO_MMIO_ALIGN`].
    UnalignedAddress(u64),
    /// A virtio-MMIO window that runs past the end of the address space.
    AddressOverflow {
        /// Its start.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// A vector outside [`DEVICE_VECTORS`].
    VectorOutOfRange(u64),
    /// A prefix longer than 32 bits.
    PrefixTooLong(u64),
    /// An address that cannot be a host's: `0.0.0.0`, `255.255.255.255`
    /// or multicast (`224.0.0.0/4`).
    NotUnicast {
        /// The parameter's key.
        key: &'static str,
        /// The address.
        address: [u8; 4],
    },
}

impl CmdlineError {
    /// The key of the parameter that was wrong.
    pub fn key(&self) -> &'static str {
        match self {
            CmdlineError::Format { key, .. } | CmdlineError::NotUnicast { key, .. } => key,
            CmdlineError::ZeroSize
            | CmdlineError::UnalignedAddress(_)
            | CmdlineError::AddressOverflow { .. }
            | CmdlineError::VectorOutOfRange(_) => VIRTIO_MMIO_KEY,
            CmdlineError::PrefixTooLong(_) => NET_ADDRESS_KEY,
        }
    }
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.key())?;
        match self {
            CmdlineError::Format { expected, .. } => write!(f, "expected {expected}"),
            CmdlineError::ZeroSize => write!(f, "the window size is zero"),
            CmdlineError::UnalignedAddress(addr) => {
                write!(
                    f,
                    "address {addr:#x} is not {VIRTIO_MMIO_ALIGN}-byte aligned"
                )
            }
            CmdlineError::AddressOverflow { addr, size } => write!(
                f,
                "a window of {size:#x} bytes at {addr:#x} runs past the end of the address space"
            ),
            CmdlineError::VectorOutOfRange(vector) => write!(
                f,
                "vector {vector} is not one a device may use ({} to {})",
                DEVICE_VECTORS.start(),
                DEVICE_VECTORS.end()
            ),
            CmdlineError::PrefixTooLong(len) => {
                write!(f, "prefix length {len} is longer than 32")
            }
            CmdlineError::NotUnicast { address, .. } => {
                write!(f, "{} is not a unicast address", Ipv4(*address))
            }
        }
    }
}

impl core::error::Error for CmdlineError {}

const VIRTIO_MMIO_FORM: &str = "SIZE@ADDRESS:VECTOR, like 4K@0xd0000000:34";
const NET_ADDRESS_FORM: &str = "ADDRESS/PREFIX, like 10.0.0.2/24";
const NET_GATEWAY_FORM: &str = "an IPv4 address, like 10.0.0.1";

/// Parse one command-line token: `None` if it is not one of ours (its key
/// is not one of ours), `Some(Err)` if it is ours but its value is bad.
/// A key of ours without `=` is ours and bad.
pub fn parse_param(token: &str) -> Option<Result<Param, CmdlineError>> {
    let (key, value) = token.split_once('=').unwrap_or((token, ""));
    Some(match key {
        VIRTIO_MMIO_KEY => VirtioMmio::parse(value).map(Param::VirtioMmio),
        NET_ADDRESS_KEY => NetAddress::parse(value).map(Param::NetAddress),
        NET_GATEWAY_KEY => NetGateway::parse(value).map(Param::NetGateway),
        _ => return None,
    })
}

impl VirtioMmio {
    /// Whether the values are ones [`parse_param`] accepts.
    pub fn validate(&self) -> Result<(), CmdlineError> {
        if self.size == 0 {
            return Err(CmdlineError::ZeroSize);
        }
        if !self.addr.is_multiple_of(VIRTIO_MMIO_ALIGN) {
            return Err(CmdlineError::UnalignedAddress(self.addr));
        }
        // The window's last byte must be addressable.
        if self.addr.checked_add(self.size - 1).is_none() {
            return Err(CmdlineError::AddressOverflow {
                addr: self.addr,
                size: self.size,
            });
        }
        if !DEVICE_VECTORS.contains(&self.vector) {
            return Err(CmdlineError::VectorOutOfRange(u64::from(self.vector)));
        }
        Ok(())
    }

    fn parse(value: &str) -> Result<Self, CmdlineError> {
        let (size, addr, vector) = split_device(value, VIRTIO_MMIO_FORM)?;
        let vector = u8::try_from(vector).map_err(|_| CmdlineError::VectorOutOfRange(vector))?;
        let device = Self { addr, size, vector };
        device.validate()?;
        Ok(device)
    }
}

/// A virtio-MMIO device as QEMU `-M microvm` announces it (with
/// `auto-kernel-cmdline=on`): `virtio_mmio.device=SIZE@ADDR:IRQ`, the
/// number after the colon an interrupt line (a GSI: an I/O APIC pin), as
/// Linux reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtioMmioLine {
    /// Guest-physical address of the register window.
    pub addr: u64,
    /// Size of the register window in bytes.
    pub size: u64,
    /// The interrupt line.
    pub line: u32,
}

const VIRTIO_MMIO_LINE_FORM: &str = "SIZE@ADDRESS:IRQ, like 512@0xfeb00e00:12";

impl VirtioMmioLine {
    /// Read the value of a `virtio_mmio.device=` token (after the `=`);
    /// the window is checked as [`VirtioMmio::validate`] checks it.
    pub fn parse(value: &str) -> Result<Self, CmdlineError> {
        let (size, addr, line) = split_device(value, VIRTIO_MMIO_LINE_FORM)?;
        let format = CmdlineError::Format {
            key: VIRTIO_MMIO_KEY,
            expected: VIRTIO_MMIO_LINE_FORM,
        };
        let line = u32::try_from(line).map_err(|_| format)?;
        VirtioMmio {
            addr,
            size,
            vector: DEVICE_VECTOR,
        }
        .validate()?;
        Ok(Self { addr, size, line })
    }

    /// The same device with its interrupt delivered on `vector`, as the
    /// kernel's driver reads it.
    pub fn with_vector(&self, vector: u8) -> VirtioMmio {
        VirtioMmio {
            addr: self.addr,
            size: self.size,
            vector,
        }
    }
}

/// `SIZE@ADDR:NUMBER` as three numbers.
fn split_device(value: &str, expected: &'static str) -> Result<(u64, u64, u64), CmdlineError> {
    let format = CmdlineError::Format {
        key: VIRTIO_MMIO_KEY,
        expected,
    };
    let (size, rest) = value.split_once('@').ok_or(format)?;
    let (addr, number) = rest.split_once(':').ok_or(format)?;
    let size = parse_size(size).ok_or(format)?;
    let addr = parse_size(addr).ok_or(format)?;
    let number = parse_number(number).ok_or(format)?;
    Ok((size, addr, number))
}

impl fmt::Display for VirtioMmio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VIRTIO_MMIO_KEY}=")?;
        let unit = [(30, "G"), (20, "M"), (10, "K")]
            .into_iter()
            .find(|&(shift, _)| self.size != 0 && self.size.trailing_zeros() >= shift);
        match unit {
            Some((shift, suffix)) => write!(f, "{}{suffix}", self.size >> shift)?,
            None => write!(f, "{}", self.size)?,
        }
        write!(f, "@{:#x}:{}", self.addr, self.vector)
    }
}

impl NetAddress {
    /// Whether the values are ones [`parse_param`] accepts.
    pub fn validate(&self) -> Result<(), CmdlineError> {
        if self.prefix_len > 32 {
            return Err(CmdlineError::PrefixTooLong(u64::from(self.prefix_len)));
        }
        check_unicast(NET_ADDRESS_KEY, self.address)
    }

    /// Whether `address` lies in this address's network (the first
    /// `prefix_len` bits match).
    pub fn contains(&self, address: [u8; 4]) -> bool {
        u32::from_be_bytes(address) & self.mask() == u32::from_be_bytes(self.network())
    }

    /// The network's own address: the first `prefix_len` bits, the rest
    /// zero.
    pub fn network(&self) -> [u8; 4] {
        (u32::from_be_bytes(self.address) & self.mask()).to_be_bytes()
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0)
    }

    fn parse(value: &str) -> Result<Self, CmdlineError> {
        let format = CmdlineError::Format {
            key: NET_ADDRESS_KEY,
            expected: NET_ADDRESS_FORM,
        };
        let (address, prefix_len) = value.split_once('/').ok_or(format)?;
        let address = parse_ipv4(address).ok_or(format)?;
        let prefix_len = parse_decimal(prefix_len).ok_or(format)?;
        let prefix_len =
            u8::try_from(prefix_len).map_err(|_| CmdlineError::PrefixTooLong(prefix_len))?;
        let net = Self {
            address,
            prefix_len,
        };
        net.validate()?;
        Ok(net)
    }
}

impl fmt::Display for NetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{NET_ADDRESS_KEY}={}/{}",
            Ipv4(self.address),
            self.prefix_len
        )
    }
}

impl NetGateway {
    /// Whether the value is one [`parse_param`] accepts.
    pub fn validate(&self) -> Result<(), CmdlineError> {
        check_unicast(NET_GATEWAY_KEY, self.0)
    }

    fn parse(value: &str) -> Result<Self, CmdlineError> {
        let address = parse_ipv4(value).ok_or(CmdlineError::Format {
            key: NET_GATEWAY_KEY,
            expected: NET_GATEWAY_FORM,
        })?;
        let gateway = Self(address);
        gateway.validate()?;
        Ok(gateway)
    }
}

impl fmt::Display for NetGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NET_GATEWAY_KEY}={}", Ipv4(self.0))
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::VirtioMmio(device) => device.fmt(f),
            Param::NetAddress(address) => address.fmt(f),
            Param::NetGateway(gateway) => gateway.fmt(f),
        }
    }
}

/// Dotted-quad display of an IPv4 address.
struct Ipv4([u8; 4]);

impl fmt::Display for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

fn check_unicast(key: &'static str, address: [u8; 4]) -> Result<(), CmdlineError> {
    let is_multicast = address[0] & 0xf0 == 0xe0;
    if address == [0; 4] || address == [255; 4] || is_multicast {
        return Err(CmdlineError::NotUnicast { key, address });
    }
    Ok(())
}

/// `a.b.c.d`, each part 0 to 255 in decimal without leading zeros (which
/// some parsers read as octal).
fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut address = [0u8; 4];
    let mut parts = s.split('.');
    for byte in &mut address {
        let part = parts.next()?;
        if part.len() > 1 && part.starts_with('0') {
            return None;
        }
        *byte = u8::try_from(parse_decimal(part)?).ok()?;
    }
    parts.next().is_none().then_some(address)
}

/// A non-empty string of decimal digits that fits in 64 bits (no sign, no
/// white space).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A decimal number or a `0x`/`0X` hexadecimal one that fits in 64 bits.
fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None => parse_decimal(s),
    }
}

/// A number ([`parse_number`]), optionally followed by `K`, `M` or `G`
/// (either case) for 2^10, 2^20 or 2^30; `None` if it overflows.
fn parse_size(s: &str) -> Option<u64> {
    let (number, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    parse_number(number)?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    fn ok(token: &str) -> Param {
        match parse_param(token) {
            Some(Ok(param)) => param,
            other => panic!("{token:?}: {other:?}"),
        }
    }

    fn err(token: &str) -> CmdlineError {
        match parse_param(token) {
            Some(Err(e)) => e,
            other => panic!("{token:?} should be refused: {other:?}"),
        }
    }

    const DEVICE: VirtioMmio = VirtioMmio {
        addr: 0xD000_0000,
        size: 0x1000,
        vector: 34,
    };

    #[test]
    fn tokens_are_written_as_documented() {
        assert_eq!(DEVICE.to_string(), "virtio_mmio.device=4K@0xd0000000:34");
        let net = NetAddress {
            address: [10, 0, 0, 2],
            prefix_len: 24,
        };
        assert_eq!(net.to_string(), "net.ip=10.0.0.2/24");
        assert_eq!(
            NetGateway([10, 0, 0, 1]).to_string(),
            "net.gateway=10.0.0.1"
        );
        assert_eq!(
            Param::VirtioMmio(DEVICE).to_string(),
            "virtio_mmio.device=4K@0xd0000000:34"
        );
    }

    #[test]
    fn every_token_round_trips() {
        let params = [
            Param::VirtioMmio(DEVICE),
            Param::VirtioMmio(VirtioMmio {
                addr: 0x1000,
                size: 0x200,
                vector: 0xfe,
            }),
            Param::VirtioMmio(VirtioMmio {
                addr: 0xffff_ffff_ffff_f000,
                size: 0x1000,
                vector: 0x22,
            }),
            Param::VirtioMmio(VirtioMmio {
                addr: 0,
                size: 3 << 30,
                vector: 40,
            }),
            Param::VirtioMmio(VirtioMmio {
                addr: 1 << 40,
                size: 5 << 20,
                vector: 40,
            }),
            Param::VirtioMmio(VirtioMmio {
                addr: 0x2000,
                size: 1,
                vector: 40,
            }),
            Param::NetAddress(NetAddress {
                address: [192, 168, 100, 254],
                prefix_len: 0,
            }),
            Param::NetAddress(NetAddress {
                address: [1, 2, 3, 4],
                prefix_len: 32,
            }),
            Param::NetGateway(NetGateway([172, 16, 0, 1])),
        ];
        for param in params {
            let token = param.to_string();
            assert_eq!(ok(&token), param, "{token}");
        }
    }

    #[test]
    fn sizes_and_numbers_take_the_linux_forms() {
        for token in [
            "virtio_mmio.device=4K@0xd0000000:34",
            "virtio_mmio.device=4k@0xD0000000:34",
            "virtio_mmio.device=0x1000@3489660928:34",
            "virtio_mmio.device=4096@0XD0000000:0x22",
        ] {
            assert_eq!(ok(token), Param::VirtioMmio(DEVICE), "{token}");
        }
        let Param::VirtioMmio(big) = ok("virtio_mmio.device=2M@3G:200") else {
            panic!()
        };
        assert_eq!((big.size, big.addr, big.vector), (2 << 20, 3 << 30, 200));
    }

    #[test]
    fn qemu_microvm_devices_are_read_with_their_interrupt_line() {
        let device = VirtioMmioLine::parse("512@0xfeb00e00:12").unwrap();
        assert_eq!(
            device,
            VirtioMmioLine {
                addr: 0xfeb0_0e00,
                size: 512,
                line: 12
            }
        );
        assert_eq!(
            device.with_vector(DEVICE_VECTOR).to_string(),
            "virtio_mmio.device=512@0xfeb00e00:34"
        );
        assert_eq!(
            ok("virtio_mmio.device=512@0xfeb00e00:34"),
            Param::VirtioMmio(device.with_vector(34))
        );
        assert_eq!(
            VirtioMmioLine::parse("512@0xfeb00e10:12"),
            Err(CmdlineError::UnalignedAddress(0xfeb0_0e10))
        );
        for bad in ["512@0xfeb00e00", "512@0xfeb00e00:4294967296", "@0x1000:5"] {
            assert!(
                matches!(VirtioMmioLine::parse(bad), Err(CmdlineError::Format { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_keys_are_not_ours() {
        for token in [
            "",
            "quiet",
            "net.ipx=1",
            "virtio_mmio.device2=4K@0x1000:34",
            "NET.IP=10.0.0.2/24",
            "foo=net.ip=10.0.0.2/24",
        ] {
            assert_eq!(parse_param(token), None, "{token}");
        }
    }

    #[test]
    fn bad_devices_are_refused_saying_why() {
        let format = |token| {
            assert!(
                matches!(
                    err(token),
                    CmdlineError::Format {
                        key: VIRTIO_MMIO_KEY,
                        ..
                    }
                ),
                "{token}"
            );
        };
        for token in [
            "virtio_mmio.device",
            "virtio_mmio.device=",
            "virtio_mmio.device=4K",
            "virtio_mmio.device=4K@0xd0000000",
            "virtio_mmio.device=@0xd0000000:34",
            "virtio_mmio.device=4K@:34",
            "virtio_mmio.device=4K@0xd0000000:",
            "virtio_mmio.device=4K@0xd0000000:34:1",
            "virtio_mmio.device=4T@0xd0000000:34",
            "virtio_mmio.device=K@0xd0000000:34",
            "virtio_mmio.device=0x@0xd0000000:34",
            "virtio_mmio.device=+4K@0xd0000000:34",
            "virtio_mmio.device=-4K@0xd0000000:34",
            "virtio_mmio.device=4K @0xd0000000:34",
            "virtio_mmio.device=4K@0xd000_0000:34",
            "virtio_mmio.device=4K@0xg:34",
            "virtio_mmio.device=4K@0xd0000000:34K",
            "virtio_mmio.device=4K@0x10000000000000000:34",
            "virtio_mmio.device=17179869184G@0:34",
            "virtio_mmio.device=4K@0xd0000000:99999999999999999999",
        ] {
            format(token);
        }
        assert_eq!(
            err("virtio_mmio.device=0@0xd0000000:34"),
            CmdlineError::ZeroSize
        );
        assert_eq!(
            err("virtio_mmio.device=0K@0xd0000000:34"),
            CmdlineError::ZeroSize
        );
        assert_eq!(
            err("virtio_mmio.device=4K@0xd0000100:34"),
            CmdlineError::UnalignedAddress(0xd000_0100)
        );
        assert_eq!(
            err("virtio_mmio.device=8K@0xfffffffffffff000:34"),
            CmdlineError::AddressOverflow {
                addr: 0xffff_ffff_ffff_f000,
                size: 0x2000
            }
        );
        for (vector, value) in [("33", 33), ("0", 0), ("255", 255), ("256", 256), ("5", 5)] {
            assert_eq!(
                err(&std::format!("virtio_mmio.device=4K@0xd0000000:{vector}")),
                CmdlineError::VectorOutOfRange(value)
            );
        }
        let message = err("virtio_mmio.device=4K@0xd0000000:256").to_string();
        assert!(
            message.starts_with("virtio_mmio.device: vector 256 is not one a device may use"),
            "{message}"
        );
    }

    #[test]
    fn bad_addresses_are_refused_saying_why() {
        for token in [
            "net.ip",
            "net.ip=",
            "net.ip=10.0.0.2",
            "net.ip=10.0.0.2/",
            "net.ip=/24",
            "net.ip=10.0.0/24",
            "net.ip=10.0.0.2.1/24",
            "net.ip=10.0.0.256/24",
            "net.ip=10.0.0.02/24",
            "net.ip=10.0.0.-2/24",
            "net.ip=10.0.0.+2/24",
            "net.ip=10..0.2/24",
            "net.ip=10.0.0.2/+24",
            "net.ip=10.0.0.2/24/1",
            "net.ip=10.0.0.2 /24",
            "net.ip=::1/64",
            "net.ip=10.0.0.2/0x18",
        ] {
            assert!(
                matches!(
                    err(token),
                    CmdlineError::Format {
                        key: NET_ADDRESS_KEY,
                        ..
                    }
                ),
                "{token}"
            );
        }
        assert_eq!(err("net.ip=10.0.0.2/33"), CmdlineError::PrefixTooLong(33));
        assert_eq!(err("net.ip=10.0.0.2/300"), CmdlineError::PrefixTooLong(300));
        for (token, address) in [
            ("net.ip=0.0.0.0/0", [0; 4]),
            ("net.ip=255.255.255.255/32", [255; 4]),
            ("net.ip=224.0.0.1/4", [224, 0, 0, 1]),
        ] {
            assert_eq!(
                err(token),
                CmdlineError::NotUnicast {
                    key: NET_ADDRESS_KEY,
                    address
                }
            );
        }
        for token in [
            "net.gateway",
            "net.gateway=",
            "net.gateway=10.0.0.1/24",
            "net.gateway=x",
        ] {
            assert!(
                matches!(
                    err(token),
                    CmdlineError::Format {
                        key: NET_GATEWAY_KEY,
                        ..
                    }
                ),
                "{token}"
            );
        }
        assert_eq!(
            err("net.gateway=239.255.255.250"),
            CmdlineError::NotUnicast {
                key: NET_GATEWAY_KEY,
                address: [239, 255, 255, 250]
            }
        );
        assert_eq!(
            err("net.ip=10.0.0.2/33").to_string(),
            "net.ip: prefix length 33 is longer than 32"
        );
        assert_eq!(
            err("net.gateway=0.0.0.0").to_string(),
            "net.gateway: 0.0.0.0 is not a unicast address"
        );
        assert_eq!(
            err("net.ip=x").to_string(),
            "net.ip: expected ADDRESS/PREFIX, like 10.0.0.2/24"
        );
    }

    #[test]
    fn a_network_contains_its_addresses() {
        let net = NetAddress {
            address: [10, 0, 0, 2],
            prefix_len: 24,
        };
        assert!(net.contains([10, 0, 0, 1]));
        assert!(net.contains([10, 0, 0, 255]));
        assert!(!net.contains([10, 0, 1, 1]));
        let all = NetAddress {
            prefix_len: 0,
            ..net
        };
        assert!(all.contains([192, 168, 0, 1]));
        let host = NetAddress {
            prefix_len: 32,
            ..net
        };
        assert!(host.contains([10, 0, 0, 2]));
        assert!(!host.contains([10, 0, 0, 3]));
    }

    #[test]
    fn parsing_never_panics_on_junk() {
        // Every short token over an alphabet of the characters that matter.
        let alphabet = b"0x9fK@:./=-";
        let mut token = [0u8; 5];
        for n in 0..alphabet.len().pow(5) {
            let mut rest = n;
            for byte in &mut token {
                *byte = alphabet[rest % alphabet.len()];
                rest /= alphabet.len();
            }
            let value = core::str::from_utf8(&token).unwrap();
            for key in [VIRTIO_MMIO_KEY, NET_ADDRESS_KEY, NET_GATEWAY_KEY] {
                let token = std::format!("{key}={value}");
                if let Some(Ok(param)) = parse_param(&token) {
                    assert_eq!(ok(&param.to_string()), param, "{token}");
                }
            }
        }
    }
}
