//! Sockets: Linux's `socket` family over the core's network stack (`net`)
//! and descriptors (`fd`): IPv4 TCP and UDP. IPv6 and Unix sockets are
//! `EAFNOSUPPORT`.

use core::net::{Ipv4Addr, SocketAddrV4};

use eremite_interface::errno::{self, Errno};
use eremite_interface::fs::OpenFlags;

use super::{SysResult, fd_value, ptr, size, user, value};
use crate::fd;
use crate::net::{self, OptionName, OptionValue, Protocol, Receive, Shape};

const AF_UNIX: u32 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u32 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const SOCK_NONBLOCK: u32 = 0o4000;
const SOCK_CLOEXEC: u32 = 0o2000000;
const IPPROTO_IP: i32 = 0;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const SOL_SOCKET: i32 = 1;
const SO_REUSEADDR: i32 = 2;
const SO_TYPE: i32 = 3;
const SO_ERROR: i32 = 4;
const SO_BROADCAST: i32 = 6;
const SO_SNDBUF: i32 = 7;
const SO_RCVBUF: i32 = 8;
const SO_KEEPALIVE: i32 = 9;
const SO_LINGER: i32 = 13;
const SO_REUSEPORT: i32 = 15;
const SO_RCVTIMEO: i32 = 20;
const SO_SNDTIMEO: i32 = 21;
const TCP_NODELAY: i32 = 1;
const IP_TTL: i32 = 2;
const MSG_PEEK: u32 = 0x2;
const MSG_DONTWAIT: u32 = 0x40;
const MSG_WAITALL: u32 = 0x100;
const MSG_NOSIGNAL: u32 = 0x4000;

/// `struct sockaddr_in`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct SockAddrIn {
    family: u16,
    /// Network byte order.
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

const SOCKADDR_IN_BYTES: u32 = 16;
const _: () = assert!(size_of::<SockAddrIn>() == SOCKADDR_IN_BYTES as usize);

fn read_addr(addr: u64, len: u32) -> Result<SocketAddrV4, Errno> {
    if len < 2 {
        return Err(errno::EINVAL);
    }
    let family = user::read(ptr::<u16>(addr))?;
    if family != AF_INET {
        return Err(errno::EAFNOSUPPORT);
    }
    if len < SOCKADDR_IN_BYTES {
        return Err(errno::EINVAL);
    }
    let raw = user::read(ptr::<SockAddrIn>(addr))?;
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(raw.addr),
        u16::from_be_bytes(raw.port),
    ))
}

/// Give an address back through `addr` and `*len` (truncated to the room
/// `*len` says there is; `*len` becomes the full length).
fn write_addr(value: SocketAddrV4, addr: u64, len: u64) -> Result<(), Errno> {
    if addr == 0 {
        return Ok(());
    }
    let room = user::read(ptr::<u32>(len))?;
    let raw = SockAddrIn {
        family: AF_INET,
        port: value.port().to_be_bytes(),
        addr: value.ip().octets(),
        zero: [0; 8],
    };
    let mut bytes = [0u8; SOCKADDR_IN_BYTES as usize];
    bytes[0..2].copy_from_slice(&raw.family.to_ne_bytes());
    bytes[2..4].copy_from_slice(&raw.port);
    bytes[4..8].copy_from_slice(&raw.addr);
    let n = size(u64::from(room)).min(bytes.len());
    user::slice_mut(ptr(addr), n)?.copy_from_slice(&bytes[..n]);
    user::write(ptr::<u32>(len), SOCKADDR_IN_BYTES)
}

fn flags_of(kind: u32) -> OpenFlags {
    if kind & SOCK_NONBLOCK != 0 {
        OpenFlags::NONBLOCK
    } else {
        OpenFlags::empty()
    }
}

pub(super) fn socket(domain: u32, kind: u32, protocol: i32) -> SysResult {
    match domain {
        d if d == u32::from(AF_INET) => {}
        AF_INET6 | AF_UNIX => return Err(errno::EAFNOSUPPORT),
        _ => return Err(errno::EAFNOSUPPORT),
    }
    if kind & !(SOCK_NONBLOCK | SOCK_CLOEXEC | 0xf) != 0 {
        return Err(errno::EINVAL);
    }
    let protocol = match (kind & 0xf, protocol) {
        (SOCK_STREAM, IPPROTO_IP | IPPROTO_TCP) => Protocol::Tcp,
        (SOCK_DGRAM, IPPROTO_IP | IPPROTO_UDP) => Protocol::Udp,
        (SOCK_STREAM | SOCK_DGRAM, _) => return Err(errno::EPROTONOSUPPORT),
        _ => return Err(errno::ESOCKTNOSUPPORT),
    };
    fd::open_socket(net::socket(protocol)?, flags_of(kind)).map(fd_value)
}

/// A send on a `socketpair` end: a write, `EPIPE` (and `SIGPIPE` unless
/// `MSG_NOSIGNAL`) once the other end is closed.
fn pair_send(fd: i32, data: &[u8], flags: u32) -> SysResult {
    let result = pair_io(fd, flags, |fd| fd::write(fd, data)).map(value);
    if flags & MSG_NOSIGNAL != 0 {
        result
    } else {
        super::signal::on_broken_pipe(result)
    }
}

/// Run `io` on a `socketpair` end, non-blocking for this call with
/// `MSG_DONTWAIT`.
fn pair_io(
    fd: i32,
    flags: u32,
    io: impl FnOnce(i32) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    if flags & MSG_DONTWAIT == 0 {
        return io(fd);
    }
    let status = fd::status_flags(fd)?;
    if status.contains(OpenFlags::NONBLOCK) {
        return io(fd);
    }
    fd::set_status_flags(fd, status | OpenFlags::NONBLOCK)?;
    let result = io(fd);
    let _ = fd::set_status_flags(fd, status);
    result
}

/// `socketpair(2)`: `AF_UNIX` stream pairs (a pipe each way); datagram
/// and sequenced-packet pairs are `EOPNOTSUPP` for now.
pub(super) fn socketpair(domain: u32, kind: u32, protocol: i32, out: u64) -> SysResult {
    if domain != AF_UNIX {
        return Err(if domain == u32::from(AF_INET) {
            errno::EOPNOTSUPP
        } else {
            errno::EAFNOSUPPORT
        });
    }
    if kind & !(SOCK_NONBLOCK | SOCK_CLOEXEC | 0xf) != 0 || protocol != 0 {
        return Err(errno::EINVAL);
    }
    if kind & 0xf != SOCK_STREAM {
        return Err(errno::EOPNOTSUPP);
    }
    // Check the output first: a pair made for nobody would leak.
    user::write(ptr::<[i32; 2]>(out), [-1, -1])?;
    let pair = fd::open_socket_pair(flags_of(kind))?;
    user::write(ptr::<[i32; 2]>(out), pair).map(|()| 0)
}

pub(super) fn bind(fd: i32, addr: u64, len: u32) -> SysResult {
    let addr = read_addr(addr, len)?;
    fd::with_socket(fd, |s, _| net::bind(s, addr)).map(|()| 0)
}

pub(super) fn listen(fd: i32, backlog: i32) -> SysResult {
    let backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
    fd::with_socket(fd, |s, _| net::listen(s, backlog)).map(|()| 0)
}

pub(super) fn accept4(fd: i32, addr: u64, len: u64, flags: u32) -> SysResult {
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(errno::EINVAL);
    }
    let (socket, peer) = fd::with_socket(fd, net::accept)?;
    write_addr(peer, addr, len)?;
    fd::open_socket(socket, flags_of(flags)).map(fd_value)
}

pub(super) fn connect(fd: i32, addr: u64, len: u32) -> SysResult {
    let addr = read_addr(addr, len)?;
    fd::with_socket(fd, |s, mode| net::connect(s, addr, mode)).map(|()| 0)
}

/// The descriptor's mode, made non-blocking by `MSG_DONTWAIT`.
fn mode_for(mode: net::Mode, flags: u32) -> net::Mode {
    if flags & MSG_DONTWAIT != 0 {
        net::Mode::NonBlocking
    } else {
        mode
    }
}

/// Send `data` (to `to`, if given) by `flags`; `EPIPE` raises `SIGPIPE`
/// unless `MSG_NOSIGNAL`.
fn send(fd: i32, data: &[u8], to: Option<SocketAddrV4>, flags: u32) -> SysResult {
    let sent = fd::with_socket(fd, |s, mode| net::send(s, data, to, mode_for(mode, flags)));
    if flags & MSG_NOSIGNAL != 0 {
        sent.map(value)
    } else {
        super::signal::on_broken_pipe(sent.map(value))
    }
}

pub(super) fn sendto(
    fd: i32,
    buf: u64,
    len: usize,
    flags: u32,
    addr: u64,
    addr_len: u32,
) -> SysResult {
    if flags & !(MSG_DONTWAIT | MSG_NOSIGNAL) != 0 {
        return Err(errno::EOPNOTSUPP);
    }
    let data = user::slice(ptr(buf), len)?;
    if fd::is_socket_pair(fd) {
        // A connected pair: a write (an address is ignored, as Linux
        // does for connected stream sockets).
        return pair_send(fd, data, flags);
    }
    let to = if addr == 0 {
        None
    } else {
        Some(read_addr(addr, addr_len)?)
    };
    send(fd, data, to, flags)
}

/// Receive into `out` by `flags` (`MSG_PEEK`, `MSG_DONTWAIT`,
/// `MSG_WAITALL`): the byte count and the sender.
fn receive(fd: i32, out: &mut [u8], flags: u32) -> Result<(usize, SocketAddrV4), Errno> {
    if flags & !(MSG_PEEK | MSG_DONTWAIT | MSG_NOSIGNAL | MSG_WAITALL) != 0 {
        return Err(errno::EOPNOTSUPP);
    }
    if fd::is_socket_pair(fd) {
        if flags & (MSG_PEEK | MSG_WAITALL) != 0 {
            return Err(errno::EOPNOTSUPP);
        }
        let n = pair_io(fd, flags, |fd| fd::read(fd, out))?;
        return Ok((n, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
    }
    let how = if flags & MSG_PEEK != 0 {
        Receive::Peek
    } else {
        Receive::Take
    };
    fd::with_socket(fd, |s, mode| {
        let mode = mode_for(mode, flags);
        let (mut n, from) = net::recv_from(s, out, how, mode)?;
        // MSG_WAITALL fills the buffer from a stream, unless it ends or
        // fails first (then what came is the result). Datagrams and peeks
        // are one read.
        let is_stream = net::get_option(s, OptionName::Type)? == OptionValue::Type(Protocol::Tcp);
        if flags & MSG_WAITALL != 0
            && is_stream
            && how == Receive::Take
            && mode == net::Mode::Blocking
        {
            while n > 0 && n < out.len() {
                match net::recv_from(s, &mut out[n..], how, mode) {
                    Ok((0, _)) | Err(_) => break,
                    Ok((more, _)) => n += more,
                }
            }
        }
        Ok((n, from))
    })
}

pub(super) fn recvfrom(
    fd: i32,
    buf: u64,
    len: usize,
    flags: u32,
    addr: u64,
    addr_len: u64,
) -> SysResult {
    let out = user::slice_mut(ptr(buf), len)?;
    let (n, from) = receive(fd, out, flags)?;
    write_addr(from, addr, addr_len)?;
    Ok(value(n))
}

/// The most one `recvmsg` takes at a time.
const RECVMSG_MAX_BYTES: usize = 1 << 20;

/// `struct msghdr`.
#[derive(Clone, Copy)]
#[repr(C)]
struct MsgHdr {
    name: u64,
    name_len: u32,
    pad: u32,
    iov: u64,
    iov_len: u64,
    control: u64,
    control_len: u64,
    flags: i32,
    pad2: u32,
}

/// `struct iovec`.
#[derive(Clone, Copy)]
#[repr(C)]
struct IoVec {
    base: u64,
    len: u64,
}

/// The message's buffers, gathered into one (a vectored send is one
/// send: one segment, not one per buffer).
fn gather(msg: &MsgHdr) -> Result<alloc::vec::Vec<u8>, Errno> {
    if msg.iov_len > 1024 {
        return Err(errno::EMSGSIZE);
    }
    let mut data = alloc::vec::Vec::new();
    for i in 0..size(msg.iov_len) {
        let v: IoVec = user::read(ptr::<IoVec>(msg.iov).wrapping_add(i))?;
        data.extend_from_slice(user::slice(ptr(v.base), size(v.len))?);
    }
    Ok(data)
}

pub(super) fn sendmsg(fd: i32, msg: u64, flags: u32) -> SysResult {
    let header = user::read(ptr::<MsgHdr>(msg))?;
    let data = gather(&header)?;
    let to = if header.name == 0 {
        None
    } else {
        Some(read_addr(header.name, header.name_len)?)
    };
    if flags & !(MSG_DONTWAIT | MSG_NOSIGNAL) != 0 {
        return Err(errno::EOPNOTSUPP);
    }
    send(fd, &data, to, flags)
}

pub(super) fn recvmsg(fd: i32, msg: u64, flags: u32) -> SysResult {
    let header = user::read(ptr::<MsgHdr>(msg))?;
    if header.iov_len > 1024 {
        return Err(errno::EMSGSIZE);
    }
    let mut total = 0u64;
    for i in 0..size(header.iov_len) {
        let v: IoVec = user::read(ptr::<IoVec>(header.iov).wrapping_add(i))?;
        total = total.saturating_add(v.len);
    }
    // Received through a kernel buffer of at most RECVMSG_MAX_BYTES: a
    // bigger request is a short read, as a stream allows (no datagram
    // is that big).
    let mut data = alloc::vec![0u8; size(total).min(RECVMSG_MAX_BYTES)];
    let (n, from) = receive(fd, &mut data, flags)?;
    let mut rest = &data[..n];
    for i in 0..size(header.iov_len) {
        if rest.is_empty() {
            break;
        }
        let v: IoVec = user::read(ptr::<IoVec>(header.iov).wrapping_add(i))?;
        let take = rest.len().min(size(v.len));
        user::slice_mut(ptr(v.base), take)?.copy_from_slice(&rest[..take]);
        rest = &rest[take..];
    }
    if header.name != 0 {
        let len_at = msg + core::mem::offset_of!(MsgHdr, name_len) as u64;
        write_addr(from, header.name, len_at)?;
    }
    let control_len_at = msg + core::mem::offset_of!(MsgHdr, control_len) as u64;
    user::write(ptr::<u64>(control_len_at), 0)?;
    let flags_at = msg + core::mem::offset_of!(MsgHdr, flags) as u64;
    user::write(ptr::<i32>(flags_at), 0)?;
    Ok(value(n))
}

pub(super) fn shutdown(fd: i32, how: i32) -> SysResult {
    let how = match how {
        0 => net::Shutdown::Read,
        1 => net::Shutdown::Write,
        2 => net::Shutdown::Both,
        _ => return Err(errno::EINVAL),
    };
    fd::with_socket(fd, |s, _| net::shutdown(s, how)).map(|()| 0)
}

pub(super) fn getsockname(fd: i32, addr: u64, len: u64) -> SysResult {
    let local = fd::with_socket(fd, |s, _| net::local_addr(s))?;
    write_addr(local, addr, len).map(|()| 0)
}

pub(super) fn getpeername(fd: i32, addr: u64, len: u64) -> SysResult {
    let peer = fd::with_socket(fd, |s, _| net::peer_addr(s))?;
    write_addr(peer, addr, len).map(|()| 0)
}

/// An option by Linux's numbers.
fn option_name(level: i32, name: i32) -> Result<OptionName, Errno> {
    Ok(match (level, name) {
        (SOL_SOCKET, SO_REUSEADDR) => OptionName::ReuseAddr,
        (SOL_SOCKET, SO_REUSEPORT) => OptionName::ReusePort,
        (SOL_SOCKET, SO_KEEPALIVE) => OptionName::KeepAlive,
        (SOL_SOCKET, SO_BROADCAST) => OptionName::Broadcast,
        (SOL_SOCKET, SO_LINGER) => OptionName::Linger,
        (SOL_SOCKET, SO_RCVBUF) => OptionName::RecvBuffer,
        (SOL_SOCKET, SO_SNDBUF) => OptionName::SendBuffer,
        (SOL_SOCKET, SO_RCVTIMEO) => OptionName::RecvTimeout,
        (SOL_SOCKET, SO_SNDTIMEO) => OptionName::SendTimeout,
        (SOL_SOCKET, SO_ERROR) => OptionName::Error,
        (SOL_SOCKET, SO_TYPE) => OptionName::Type,
        (IPPROTO_TCP, TCP_NODELAY) => OptionName::NoDelay,
        (IPPROTO_IP, IP_TTL) => OptionName::Ttl,
        _ => return Err(errno::ENOPROTOOPT),
    })
}

/// `struct timeval`.
#[derive(Clone, Copy)]
#[repr(C)]
struct TimeVal {
    seconds: i64,
    micros: i64,
}

/// `struct linger`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Linger {
    on: i32,
    seconds: i32,
}

/// An option value the program passed: an `int` or a struct.
fn read_option<T: Copy>(val: u64, len: u32) -> Result<T, Errno> {
    if (len as usize) < size_of::<T>() {
        return Err(errno::EINVAL);
    }
    user::read(ptr::<T>(val))
}

pub(super) fn setsockopt(fd: i32, level: i32, name: i32, val: u64, len: u32) -> SysResult {
    let name = option_name(level, name)?;
    let value = match name.shape() {
        Shape::Flag => OptionValue::Flag(read_option::<i32>(val, len)? != 0),
        Shape::Count => {
            OptionValue::Count(usize::try_from(read_option::<i32>(val, len)?).unwrap_or(0))
        }
        Shape::Linger => {
            let linger = read_option::<Linger>(val, len)?;
            OptionValue::Linger(
                (linger.on != 0).then(|| u32::try_from(linger.seconds).unwrap_or(0)),
            )
        }
        Shape::Timeout => {
            let tv = read_option::<TimeVal>(val, len)?;
            OptionValue::Timeout(net::timeout_from_timeval(tv.seconds, tv.micros)?)
        }
        Shape::ReadOnly => return Err(errno::ENOPROTOOPT),
    };
    fd::with_socket(fd, |s, _| net::set_option(s, name, value)).map(|()| 0)
}

/// Give an option's value back through `val` and `*len` (`EINVAL` when
/// `*len` leaves too little room).
fn write_option<T: Copy>(out: T, val: u64, len: u64) -> Result<(), Errno> {
    let room = user::read(ptr::<u32>(len))?;
    if size(u64::from(room)) < size_of::<T>() {
        return Err(errno::EINVAL);
    }
    user::write(ptr::<T>(val), out)?;
    user::write(ptr::<u32>(len), u32::try_from(size_of::<T>()).unwrap_or(0))
}

pub(super) fn getsockopt(fd: i32, level: i32, name: i32, val: u64, len: u64) -> SysResult {
    let name = option_name(level, name)?;
    let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    match fd::with_socket(fd, |s, _| net::get_option(s, name))? {
        OptionValue::Flag(on) => write_option(i32::from(on), val, len),
        OptionValue::Count(n) => write_option(int(n), val, len),
        OptionValue::Linger(seconds) => {
            let linger = Linger {
                on: i32::from(seconds.is_some()),
                seconds: seconds.map_or(0, |s| i32::try_from(s).unwrap_or(i32::MAX)),
            };
            write_option(linger, val, len)
        }
        OptionValue::Timeout(ns) => {
            let (seconds, micros) = net::timeval_from_timeout(ns);
            write_option(TimeVal { seconds, micros }, val, len)
        }
        OptionValue::Error(error) => write_option(error.map_or(0, |e| e.0), val, len),
        OptionValue::Type(protocol) => {
            let kind = match protocol {
                Protocol::Tcp => SOCK_STREAM,
                Protocol::Udp => SOCK_DGRAM,
            };
            write_option(kind.cast_signed(), val, len)
        }
    }
    .map(|()| 0)
}
