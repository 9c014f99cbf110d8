//! The tap backend: an existing host tap interface, opened through
//! `/dev/net/tun` (Linux Documentation/networking/tuntap.rst) with
//! `IFF_TAP | IFF_NO_PI`. Each read returns one Ethernet frame and each
//! write sends one, with no packet-information prefix and no virtio-net
//! header (`IFF_VNET_HDR` is off: the device offers no offloads yet). The
//! descriptor is non-blocking, for the worker's epoll loop.
//!
//! The interface must exist already (`ip tuntap add NAME mode tap`):
//! `TUNSETIFF` would otherwise create a new, unconfigured one that leads
//! nowhere. Both the check and the open act in the calling thread's network
//! namespace.
//!
//! The interface's MTU (`SIOCGIFMTU`, read once at open) is offered to
//! the guest (`VIRTIO_NET_F_MTU`): give a host-only tap a jumbo MTU
//! (`ip link set NAME mtu 65521`) and the guest sends frames of up to
//! 64 KiB.
//!
//! `unsafe` here: the `TUNSETIFF`, `TUNSETOFFLOAD` and `SIOCGIFMTU` ioctls, which no
//! dependency of ours wraps (listed in `docs/safety.md`).

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use rustix::net::{AddressFamily, SocketType, netdevice, socket};

use super::NetBackend;
use super::spec::{NetSpecError, check_interface_name};

/// A tap interface that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A name Linux would refuse.
    #[error(transparent)]
    Name(#[from] NetSpecError),
    /// No interface of that name.
    #[error(
        "cannot open tap device {name}: no such interface (create it with `ip tuntap add {name} mode tap`)"
    )]
    Missing {
        /// The interface name.
        name: String,
    },
    /// `/dev/net/tun` or `TUNSETIFF` failed (`EINVAL`: the interface is
    /// not a tap; `EPERM`: it belongs to another user).
    #[error("cannot open tap device {name}: {source}")]
    Open {
        /// The interface name.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// `struct ifreq` (netdevice(7)) with the `ifr_flags` member of its union:
/// 16 bytes of name, then a 24-byte union on 64-bit Linux.
#[repr(C, align(8))]
struct InterfaceRequest {
    name: [u8; 16],
    flags: libc::c_short,
    _rest_of_union: [u8; 22],
}

const _: () = assert!(size_of::<InterfaceRequest>() == size_of::<libc::ifreq>());

/// `struct ifreq` with the `ifr_mtu` member of its union.
#[repr(C, align(8))]
struct MtuRequest {
    name: [u8; 16],
    mtu: libc::c_int,
    _rest_of_union: [u8; 20],
}

const _: () = assert!(size_of::<MtuRequest>() == size_of::<libc::ifreq>());

/// `IFF_TAP | IFF_NO_PI` (0x0002 | 0x1000) for the 16-bit `ifr_flags`.
#[allow(clippy::cast_possible_truncation)]
const TAP_FLAGS: libc::c_short = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;

/// An open tap interface.
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    /// The interface's MTU when it was opened.
    mtu: u16,
}

impl Tap {
    /// Open the tap interface `name`, which must exist in the calling
    /// thread's network namespace.
    pub(crate) fn open(name: &str) -> Result<Self, TapError> {
        check_interface_name(name)?;
        let open_error = |source: io::Error| TapError::Open {
            name: name.to_owned(),
            source,
        };
        let probe = socket(AddressFamily::INET, SocketType::DGRAM, None)
            .map_err(|e| open_error(e.into()))?;
        match netdevice::name_to_index(&probe, name) {
            Ok(_) => {}
            Err(rustix::io::Errno::NODEV) => {
                return Err(TapError::Missing {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(open_error(e.into())),
        }
        let mut mtu_request = MtuRequest {
            name: [0; 16],
            mtu: 0,
            _rest_of_union: [0; 20],
        };
        // `check_interface_name` allowed at most 15 bytes, so the name
        // keeps its NUL terminator.
        mtu_request.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: SIOCGIFMTU reads the name from and writes `ifr_mtu` into
        // one `struct ifreq` through the pointer (netdevice(7)). The
        // request is a live, exclusively borrowed value with the layout and
        // size of `struct ifreq` (asserted above), its name NUL-terminated,
        // and it outlives the call. The descriptor is an open socket.
        let result =
            unsafe { libc::ioctl(probe.as_raw_fd(), libc::SIOCGIFMTU, &raw mut mtu_request) };
        if result < 0 {
            return Err(open_error(io::Error::last_os_error()));
        }
        // A tap's MTU is at most 65521; anything odd is clamped into what
        // virtio's 16-bit field holds.
        let mtu = u16::try_from(mtu_request.mtu.max(0)).unwrap_or(u16::MAX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(open_error)?;
        let mut request = InterfaceRequest {
            name: [0; 16],
            flags: TAP_FLAGS,
            _rest_of_union: [0; 22],
        };
        // `check_interface_name` allowed at most 15 bytes, so the name
        // keeps its NUL terminator.
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq` through the
        // pointer (drivers/net/tun.c, `__tun_chr_ioctl`). `request` is a
        // live, exclusively borrowed value with the layout and size of
        // `struct ifreq` (asserted above), its name NUL-terminated, and it
        // outlives the call. The descriptor is an open `/dev/net/tun`.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut request) };
        if result < 0 {
            return Err(open_error(io::Error::last_os_error()));
        }
        // No offloads: a tap keeps the ones its last user turned on (QEMU
        // asks for checksum and segmentation offloads), and with them the
        // host would hand this reader, which has no virtio-net header to
        // say so, frames with unfinished checksums that the guest drops.
        // SAFETY: TUNSETOFFLOAD takes its argument by value, an unsigned
        // set of `TUN_F_*` flags (drivers/net/tun.c, `set_offload`); 0
        // asks for none. It touches no memory of ours. The descriptor is
        // the `/dev/net/tun` just attached to the interface.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, 0) };
        if result < 0 {
            return Err(open_error(io::Error::last_os_error()));
        }
        Ok(Self { file, mtu })
    }
}

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        // A tap takes a frame whole or not at all.
        let written = self.file.write(frame)?;
        if written != frame.len() {
            return Err(io::Error::other("tap took part of a frame"));
        }
        Ok(())
    }

    fn ready_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn mtu(&self) -> u16 {
        self.mtu
    }
}
