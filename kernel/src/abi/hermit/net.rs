//! Sockets, `poll`, `eventfd` and name lookup (hermit-abi's network
//! family, as std::net and mio call it): convert hermit-abi's structs and
//! flags, call `net` (sockets) and `fd` (descriptors, `poll`, event
//! counters), map the errors.
//!
//! Addresses are IPv4 only (`AF_INET`, which hermit-abi numbers 3);
//! `AF_INET6` gets `EAFNOSUPPORT`. Name lookup is `resolve`'s: numeric
//! addresses, `/etc/hosts`, then DNS.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::ptr;

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::OpenFlags;

use super::super::pollfd::{POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM, revents};
use super::{exported, ret, user};
use crate::net::{self, OptionName, OptionValue, Protocol, Receive, Shape};
use crate::resolve::{self, Unresolved};
use crate::{fd, time};

const AF_INET: u8 = 3;
const AF_INET6: u8 = 1;
const AF_UNSPEC: i32 = 0;
const SOCK_STREAM: i32 = 1;
const SOCK_DGRAM: i32 = 2;
const SOCK_NONBLOCK: i32 = 0o4000;
const SOCK_CLOEXEC: i32 = 0o40000;
const IPPROTO_IP: i32 = 0;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const SOL_SOCKET: i32 = 4095;
const SO_REUSEADDR: i32 = 0x0004;
const SO_KEEPALIVE: i32 = 0x0008;
const SO_BROADCAST: i32 = 0x0020;
const SO_LINGER: i32 = 0x0080;
const SO_SNDBUF: i32 = 0x1001;
const SO_RCVBUF: i32 = 0x1002;
const SO_SNDTIMEO: i32 = 0x1005;
const SO_RCVTIMEO: i32 = 0x1006;
const SO_ERROR: i32 = 0x1007;
const TCP_NODELAY: i32 = 1;
const IP_TTL: i32 = 2;
const MSG_PEEK: i32 = 1;
const FIONBIO: i32 = 0x8008_667e_u32 as i32;
const SHUT_RD: i32 = 0;
const SHUT_WR: i32 = 1;
const SHUT_RDWR: i32 = 2;
const EFD_SEMAPHORE: i16 = 0o1;
const EFD_NONBLOCK: i16 = 0o4000;
const EFD_CLOEXEC: i16 = 0o40000;
const EAI_AGAIN: i32 = 2;
const EAI_FAMILY: i32 = 5;
const EAI_NONAME: i32 = 8;
const EAI_SERVICE: i32 = 9;
const EAI_SOCKTYPE: i32 = 10;
/// Most descriptors one `poll` takes (Linux: `RLIMIT_NOFILE`).
const MAX_POLL_FDS: usize = 65536;

/// hermit-abi's `sockaddr_in`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct SockAddrIn {
    len: u8,
    family: u8,
    /// Network byte order.
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

/// `sizeof(struct sockaddr_in)`, also its `sin_len`.
const SOCKADDR_IN_BYTES: u8 = 16;
const _: () = assert!(size_of::<SockAddrIn>() == SOCKADDR_IN_BYTES as usize);
const SOCKADDR_IN_LEN: u32 = SOCKADDR_IN_BYTES as u32;

impl SockAddrIn {
    fn new(addr: SocketAddrV4) -> Self {
        Self {
            len: SOCKADDR_IN_BYTES,
            family: AF_INET,
            port: addr.port().to_be_bytes(),
            addr: addr.ip().octets(),
            zero: [0; 8],
        }
    }
}

/// hermit-abi's `timeval`.
#[derive(Clone, Copy)]
#[repr(C)]
struct TimeVal {
    sec: i64,
    usec: i32,
}

/// hermit-abi's `linger`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Linger {
    on: i32,
    secs: i32,
}

/// hermit-abi's `pollfd`.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

/// hermit-abi's `addrinfo`.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct AddrInfo {
    flags: i32,
    family: i32,
    socktype: i32,
    protocol: i32,
    addrlen: u32,
    canonname: *mut u8,
    addr: *mut SockAddrIn,
    next: *mut AddrInfo,
}

/// What `sys_getaddrinfo` hands out: the entry and its address in one
/// allocation (so `sys_freeaddrinfo` frees both at once).
#[repr(C)]
struct AddrInfoBlock {
    info: AddrInfo,
    addr: SockAddrIn,
}

/// An IPv4 socket address the application passed.
fn read_addr(addr: *const c_void, len: u32) -> Result<SocketAddrV4, Errno> {
    if len < SOCKADDR_IN_LEN {
        return Err(errno::EINVAL);
    }
    let raw = user::read(addr.cast::<SockAddrIn>())?;
    match raw.family {
        AF_INET => Ok(SocketAddrV4::new(
            Ipv4Addr::from(raw.addr),
            u16::from_be_bytes(raw.port),
        )),
        _ => Err(errno::EAFNOSUPPORT),
    }
}

/// Give an address back through `addr` and `*len` (truncated to the room
/// `*len` says there is, which becomes the full length); nothing if
/// `addr` is null.
fn write_addr(value: SocketAddrV4, addr: *mut c_void, len: *mut u32) -> Result<(), Errno> {
    if addr.is_null() {
        return Ok(());
    }
    let room = usize::try_from(user::read(len)?).map_err(|_| errno::EINVAL)?;
    let raw = SockAddrIn::new(value);
    let mut bytes = [0u8; SOCKADDR_IN_LEN as usize];
    bytes[0] = raw.len;
    bytes[1] = raw.family;
    bytes[2..4].copy_from_slice(&raw.port);
    bytes[4..8].copy_from_slice(&raw.addr);
    let n = room.min(bytes.len());
    user::slice_mut(addr.cast::<u8>(), n)?.copy_from_slice(&bytes[..n]);
    user::write(len, SOCKADDR_IN_LEN)
}

fn socket(domain: i32, kind: i32, protocol: i32) -> Result<i32, Errno> {
    match u8::try_from(domain) {
        Ok(AF_INET) => {}
        Ok(AF_INET6) => return Err(errno::EAFNOSUPPORT),
        _ => return Err(errno::EAFNOSUPPORT),
    }
    if kind & !(SOCK_NONBLOCK | SOCK_CLOEXEC | 0xf) != 0 {
        return Err(errno::EINVAL);
    }
    let protocol = match (kind & 0xf, protocol) {
        (SOCK_STREAM, 0 | IPPROTO_TCP) => Protocol::Tcp,
        (SOCK_DGRAM, 0 | IPPROTO_UDP) => Protocol::Udp,
        (SOCK_STREAM | SOCK_DGRAM, _) => return Err(errno::EPROTONOSUPPORT),
        _ => return Err(errno::ESOCKTNOSUPPORT),
    };
    let flags = if kind & SOCK_NONBLOCK != 0 {
        OpenFlags::NONBLOCK
    } else {
        OpenFlags::empty()
    };
    fd::open_socket(net::socket(protocol)?, flags)
}

exported! {
    fn sys_socket(domain: i32, kind: i32, protocol: i32) -> i32 {
        ret(socket(domain, kind, protocol))
    }
}

exported! {
    fn sys_bind(fd: i32, addr: *const c_void, len: u32) -> i32 {
        ret(read_addr(addr, len)
            .and_then(|addr| fd::with_socket(fd, |s, _| net::bind(s, addr)))
            .map(|()| 0))
    }
}

exported! {
    fn sys_listen(fd: i32, backlog: i32) -> i32 {
        // A negative backlog asks for the most, as on Linux.
        let backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
        ret(fd::with_socket(fd, |s, _| net::listen(s, backlog)).map(|()| 0))
    }
}

fn accept(fd: i32, addr: *mut c_void, len: *mut u32) -> Result<i32, Errno> {
    let (socket, peer) = fd::with_socket(fd, net::accept)?;
    write_addr(peer, addr, len)?;
    fd::open_socket(socket, OpenFlags::empty())
}

exported! {
    fn sys_accept(fd: i32, addr: *mut c_void, len: *mut u32) -> i32 {
        ret(accept(fd, addr, len))
    }
}

exported! {
    fn sys_connect(fd: i32, addr: *const c_void, len: u32) -> i32 {
        ret(read_addr(addr, len)
            .and_then(|addr| fd::with_socket(fd, |s, mode| net::connect(s, addr, mode)))
            .map(|()| 0))
    }
}

fn receive_flags(flags: i32) -> Result<Receive, Errno> {
    match flags {
        0 => Ok(Receive::Take),
        MSG_PEEK => Ok(Receive::Peek),
        _ => Err(errno::EOPNOTSUPP),
    }
}

exported! {
    fn sys_recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize {
        ret((|| {
            let how = receive_flags(flags)?;
            let buf = user::slice_mut(buf, len)?;
            fd::with_socket(fd, |s, mode| net::recv(s, buf, how, mode))
        })())
    }
}

exported! {
    fn sys_recvfrom(
        fd: i32,
        buf: *mut u8,
        len: usize,
        flags: i32,
        addr: *mut c_void,
        addr_len: *mut u32,
    ) -> isize {
        ret((|| {
            let how = receive_flags(flags)?;
            let buf = user::slice_mut(buf, len)?;
            let (n, from) = fd::with_socket(fd, |s, mode| net::recv_from(s, buf, how, mode))?;
            write_addr(from, addr, addr_len)?;
            Ok(n)
        })())
    }
}

exported! {
    fn sys_send(fd: i32, buf: *const c_void, len: usize, _flags: i32) -> isize {
        ret(user::slice(buf.cast(), len)
            .and_then(|data| fd::with_socket(fd, |s, mode| net::send(s, data, None, mode))))
    }
}

exported! {
    fn sys_sendto(
        fd: i32,
        buf: *const c_void,
        len: usize,
        _flags: i32,
        addr: *const c_void,
        addr_len: u32,
    ) -> isize {
        ret((|| {
            let data = user::slice(buf.cast(), len)?;
            let to = if addr.is_null() {
                None
            } else {
                Some(read_addr(addr, addr_len)?)
            };
            fd::with_socket(fd, |s, mode| net::send(s, data, to, mode))
        })())
    }
}

fn shutdown(fd: i32, how: i32) -> Result<i32, Errno> {
    let how = match how {
        SHUT_RD => net::Shutdown::Read,
        SHUT_WR => net::Shutdown::Write,
        SHUT_RDWR => net::Shutdown::Both,
        _ => return Err(errno::EINVAL),
    };
    fd::with_socket(fd, |s, _| net::shutdown(s, how)).map(|()| 0)
}

exported! {
    fn sys_shutdown(fd: i32, how: i32) -> i32 {
        ret(shutdown(fd, how))
    }
}

exported! {
    fn sys_shutdown_socket(fd: i32, how: i32) -> i32 {
        ret(shutdown(fd, how))
    }
}

exported! {
    fn sys_getsockname(fd: i32, addr: *mut c_void, len: *mut u32) -> i32 {
        ret(fd::with_socket(fd, |s, _| net::local_addr(s))
            .and_then(|local| write_addr(local, addr, len))
            .map(|()| 0))
    }
}

exported! {
    fn sys_getpeername(fd: i32, addr: *mut c_void, len: *mut u32) -> i32 {
        ret(fd::with_socket(fd, |s, _| net::peer_addr(s))
            .and_then(|peer| write_addr(peer, addr, len))
            .map(|()| 0))
    }
}

/// An option by hermit-abi's numbers.
fn option_name(level: i32, name: i32) -> Result<OptionName, Errno> {
    Ok(match (level, name) {
        (SOL_SOCKET, SO_REUSEADDR) => OptionName::ReuseAddr,
        (SOL_SOCKET, SO_KEEPALIVE) => OptionName::KeepAlive,
        (SOL_SOCKET, SO_BROADCAST) => OptionName::Broadcast,
        (SOL_SOCKET, SO_LINGER) => OptionName::Linger,
        (SOL_SOCKET, SO_RCVBUF) => OptionName::RecvBuffer,
        (SOL_SOCKET, SO_SNDBUF) => OptionName::SendBuffer,
        (SOL_SOCKET, SO_RCVTIMEO) => OptionName::RecvTimeout,
        (SOL_SOCKET, SO_SNDTIMEO) => OptionName::SendTimeout,
        (SOL_SOCKET, SO_ERROR) => OptionName::Error,
        (IPPROTO_TCP, TCP_NODELAY) => OptionName::NoDelay,
        (IPPROTO_IP, IP_TTL) => OptionName::Ttl,
        _ => return Err(errno::ENOPROTOOPT),
    })
}

/// An option value the application passed: an `int` or a struct.
fn read_value<T: Copy>(value: *const c_void, len: u32) -> Result<T, Errno> {
    if (len as usize) < size_of::<T>() {
        return Err(errno::EINVAL);
    }
    user::read(value.cast::<T>())
}

fn setsockopt(
    fd: i32,
    level: i32,
    name: i32,
    value: *const c_void,
    len: u32,
) -> Result<i32, Errno> {
    let name = option_name(level, name)?;
    let value = match name.shape() {
        Shape::Flag => OptionValue::Flag(read_value::<i32>(value, len)? != 0),
        Shape::Count => {
            let n = read_value::<i32>(value, len)?;
            OptionValue::Count(usize::try_from(n).unwrap_or(0))
        }
        Shape::Linger => {
            let linger = read_value::<Linger>(value, len)?;
            OptionValue::Linger((linger.on != 0).then(|| u32::try_from(linger.secs).unwrap_or(0)))
        }
        Shape::Timeout => {
            let tv = read_value::<TimeVal>(value, len)?;
            OptionValue::Timeout(net::timeout_from_timeval(tv.sec, tv.usec.into())?)
        }
        Shape::ReadOnly => return Err(errno::ENOPROTOOPT),
    };
    fd::with_socket(fd, |s, _| net::set_option(s, name, value)).map(|()| 0)
}

exported! {
    fn sys_setsockopt(
        fd: i32,
        level: i32,
        name: i32,
        value: *const c_void,
        len: u32,
    ) -> i32 {
        ret(setsockopt(fd, level, name, value, len))
    }
}

/// Give an option's value back through `value` and `*len`.
fn write_value<T: Copy>(out: T, value: *mut c_void, len: *mut u32) -> Result<(), Errno> {
    let room = user::read(len)? as usize;
    if room < size_of::<T>() {
        return Err(errno::EINVAL);
    }
    user::write(value.cast::<T>(), out)?;
    user::write(
        len,
        u32::try_from(size_of::<T>()).map_err(|_| errno::EINVAL)?,
    )
}

fn getsockopt(
    fd: i32,
    level: i32,
    name: i32,
    value: *mut c_void,
    len: *mut u32,
) -> Result<i32, Errno> {
    let name = option_name(level, name)?;
    let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    match fd::with_socket(fd, |s, _| net::get_option(s, name))? {
        OptionValue::Flag(on) => write_value(i32::from(on), value, len),
        OptionValue::Count(n) => write_value(int(n), value, len),
        OptionValue::Linger(secs) => {
            let linger = Linger {
                on: i32::from(secs.is_some()),
                secs: secs.map_or(0, |s| i32::try_from(s).unwrap_or(i32::MAX)),
            };
            write_value(linger, value, len)
        }
        OptionValue::Timeout(ns) => {
            let (sec, usec) = net::timeval_from_timeout(ns);
            let usec = i32::try_from(usec).unwrap_or(0);
            write_value(TimeVal { sec, usec }, value, len)
        }
        OptionValue::Error(error) => write_value(error.map_or(0, |e| e.0), value, len),
        OptionValue::Type(protocol) => {
            let kind = match protocol {
                Protocol::Tcp => SOCK_STREAM,
                Protocol::Udp => SOCK_DGRAM,
            };
            write_value(kind, value, len)
        }
    }
    .map(|()| 0)
}

exported! {
    fn sys_getsockopt(
        fd: i32,
        level: i32,
        name: i32,
        value: *mut c_void,
        len: *mut u32,
    ) -> i32 {
        ret(getsockopt(fd, level, name, value, len))
    }
}

fn ioctl(fd: i32, cmd: i32, arg: *mut c_void) -> Result<i32, Errno> {
    match cmd {
        FIONBIO => {
            let is_on = user::read(arg.cast::<i32>())? != 0;
            let mut flags = fd::status_flags(fd)?;
            flags.set(OpenFlags::NONBLOCK, is_on);
            fd::set_status_flags(fd, flags).map(|()| 0)
        }
        _ => Err(errno::ENOTTY),
    }
}

exported! {
    fn sys_ioctl(fd: i32, cmd: i32, arg: *mut c_void) -> i32 {
        ret(ioctl(fd, cmd, arg))
    }
}

fn eventfd(initial: u64, flags: i16) -> Result<i32, Errno> {
    if flags & !(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC) != 0 {
        return Err(errno::EINVAL);
    }
    let status = if flags & EFD_NONBLOCK != 0 {
        OpenFlags::NONBLOCK
    } else {
        OpenFlags::empty()
    };
    fd::open_eventfd(initial, flags & EFD_SEMAPHORE != 0, status)
}

exported! {
    fn sys_eventfd(initial: u64, flags: i16) -> i32 {
        ret(eventfd(initial, flags))
    }
}

/// The core's events for hermit-abi's `events` (`POLLRDNORM` and
/// `POLLWRNORM` are `POLLIN` and `POLLOUT`).
fn poll_events(events: i16) -> fd::PollEvents {
    let mut wanted = fd::PollEvents::empty();
    wanted.set(fd::PollEvents::IN, events & (POLLIN | POLLRDNORM) != 0);
    wanted.set(fd::PollEvents::OUT, events & (POLLOUT | POLLWRNORM) != 0);
    wanted
}

fn poll(fds: *mut PollFd, count: usize, timeout_ms: i32) -> Result<i32, Errno> {
    if count > MAX_POLL_FDS {
        return Err(errno::EINVAL);
    }
    let raw = (0..count)
        .map(|i| user::read(fds.wrapping_add(i)))
        .collect::<Result<Vec<PollFd>, Errno>>()?;
    let mut entries: Vec<fd::PollEntry> = raw
        .iter()
        .map(|e| fd::PollEntry {
            fd: e.fd,
            wanted: poll_events(e.events),
            ready: fd::PollEvents::empty(),
        })
        .collect();
    let deadline = u64::try_from(timeout_ms)
        .ok()
        .map(|ms| time::monotonic_ns().saturating_add(ms * 1_000_000));
    let ready = fd::poll(&mut entries, deadline)?;
    for (i, (raw, entry)) in raw.iter().zip(&entries).enumerate() {
        let revents = revents(raw.events, entry.ready);
        user::write(fds.wrapping_add(i), PollFd { revents, ..*raw })?;
    }
    Ok(i32::try_from(ready).unwrap_or(i32::MAX))
}

exported! {
    fn sys_poll(fds: *mut PollFd, count: usize, timeout_ms: i32) -> i32 {
        ret(poll(fds, count, timeout_ms))
    }
}

fn getaddrinfo(
    node: *const u8,
    service: *const u8,
    hints: *const AddrInfo,
    result: *mut *mut AddrInfo,
) -> Result<i32, i32> {
    let fault = |_| EAI_NONAME;
    let (family, socktype, protocol) = if hints.is_null() {
        (AF_UNSPEC, 0, 0)
    } else {
        let hints = user::read(hints).map_err(fault)?;
        (hints.family, hints.socktype, hints.protocol)
    };
    if family != AF_UNSPEC && family != i32::from(AF_INET) {
        return Err(EAI_FAMILY);
    }
    if !matches!(socktype, 0 | SOCK_STREAM | SOCK_DGRAM) {
        return Err(EAI_SOCKTYPE);
    }
    let address = if node.is_null() {
        Ipv4Addr::LOCALHOST
    } else {
        resolve::lookup(user::c_str(node, 256).map_err(fault)?).map_err(|e| match e {
            Unresolved::NotFound => EAI_NONAME,
            Unresolved::Again => EAI_AGAIN,
        })?
    };
    let port = if service.is_null() {
        0
    } else {
        let service = user::c_str(service, 32).map_err(fault)?;
        core::str::from_utf8(service)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or(EAI_SERVICE)?
    };
    // Check the output first: a list nobody can learn of would leak.
    user::write(result, ptr::null_mut()).map_err(fault)?;
    let mut block = Box::new(AddrInfoBlock {
        info: AddrInfo {
            flags: 0,
            family: i32::from(AF_INET),
            socktype,
            protocol,
            addrlen: SOCKADDR_IN_LEN,
            canonname: ptr::null_mut(),
            addr: ptr::null_mut(),
            next: ptr::null_mut(),
        },
        addr: SockAddrIn::new(SocketAddrV4::new(address, port)),
    });
    block.info.addr = &raw mut block.addr;
    let out = Box::into_raw(block).cast::<AddrInfo>();
    // Writable a moment ago; if another thread unmapped it since, the
    // entry leaks (it cannot be freed without `unsafe` here).
    user::write(result, out).map_err(fault)?;
    Ok(0)
}

exported! {
    /// `getaddrinfo(3)`: one IPv4 entry for a numeric address or `localhost`;
    /// 0 or an `EAI_*` code.
    fn sys_getaddrinfo(
        node: *const u8,
        service: *const u8,
        hints: *const AddrInfo,
        result: *mut *mut AddrInfo,
    ) -> i32 {
        getaddrinfo(node, service, hints, result).unwrap_or_else(|code| code)
    }
}

exported! {
    /// `freeaddrinfo(3)`.
    ///
    /// # Safety
    /// `info` must be null or a list [`sys_getaddrinfo`] returned, not freed
    /// before (the contract std upholds).
    unsafe fn sys_freeaddrinfo(info: *mut AddrInfo) {
        let mut next = info;
        while !next.is_null() {
            // SAFETY: by the caller's contract, `next` is an entry of a list
            // made by `sys_getaddrinfo`, which allocates each as the first
            // field of a boxed `AddrInfoBlock` (repr(C)), freed only here.
            let block = unsafe { Box::from_raw(next.cast::<AddrInfoBlock>()) };
            next = block.info.next;
        }
    }
}

exported! {
    /// `getaddrbyname`: the IPv4 address of `name` into `out` (at least 4
    /// bytes).
    fn sys_getaddrbyname(name: *const u8, out: *mut u8, len: usize) -> i32 {
        ret((|| {
            if len < 4 {
                return Err(errno::EINVAL);
            }
            let address = resolve::lookup(user::c_str(name, 256)?).map_err(|e| match e {
                Unresolved::NotFound => errno::ENOENT,
                Unresolved::Again => errno::EAGAIN,
            })?;
            user::slice_mut(out, 4)?.copy_from_slice(&address.octets());
            Ok(0)
        })())
    }
}

exported! {
    /// Nothing to start: the stack starts with the first socket.
    fn sys_network_init() -> i32 {
        0
    }
}
