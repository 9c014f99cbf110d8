//! [`Socket`]: an owned socket descriptor with socket2's methods, each one
//! hermit-abi call (see `sys`) or a few.

use std::ffi::c_int;
use std::fmt;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{self, Shutdown};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use hermit_abi as abi;

use crate::sys;
use crate::{Domain, Protocol, SockAddr, TcpKeepalive, Type};

/// A socket: a descriptor the kernel gave out, closed when dropped.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// `socket(2)`: a new socket of `domain` and `ty` (the protocol the
    /// type implies if `protocol` is `None`).
    pub fn new(domain: Domain, ty: Type, protocol: Option<Protocol>) -> io::Result<Socket> {
        let protocol = protocol.map_or(0, c_int::from);
        sys::socket(domain.into(), ty.into(), protocol).map(Socket::from)
    }

    /// The same as [`Socket::new`]: hermit has no flags that `new` would
    /// add.
    pub fn new_raw(domain: Domain, ty: Type, protocol: Option<Protocol>) -> io::Result<Socket> {
        Socket::new(domain, ty, protocol)
    }

    /// `bind(2)`.
    pub fn bind(&self, address: &SockAddr) -> io::Result<()> {
        sys::bind(self.as_fd(), address)
    }

    /// `connect(2)`. On a non-blocking socket a connection under way fails
    /// with `EINPROGRESS` (`raw_os_error()`); it is done when the socket
    /// polls writable, and [`Socket::take_error`] then tells how it went.
    pub fn connect(&self, address: &SockAddr) -> io::Result<()> {
        sys::connect(self.as_fd(), address)
    }

    /// Connect, waiting at most `timeout` (a blocking socket stays
    /// blocking afterwards).
    pub fn connect_timeout(&self, address: &SockAddr, timeout: Duration) -> io::Result<()> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot connect with a zero timeout",
            ));
        }
        let was_nonblocking = self.nonblocking()?;
        self.set_nonblocking(true)?;
        let started = self.connect(address);
        if !was_nonblocking {
            self.set_nonblocking(false)?;
        }
        match started {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(abi::errno::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                ));
            }
            // Round up, so a wait never ends before the deadline.
            let ms = left.as_nanos().div_ceil(1_000_000);
            let ms = c_int::try_from(ms).unwrap_or(c_int::MAX);
            match sys::poll(self.as_fd(), abi::POLLOUT, ms) {
                Ok(0) => {}
                Ok(_) => {
                    return match self.take_error()? {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `listen(2)`.
    pub fn listen(&self, backlog: c_int) -> io::Result<()> {
        sys::listen(self.as_fd(), backlog)
    }

    /// `accept(2)`: the new connection and its peer's address.
    pub fn accept(&self) -> io::Result<(Socket, SockAddr)> {
        sys::accept(self.as_fd()).map(|(fd, addr)| (Socket::from(fd), addr))
    }

    /// The same as [`Socket::accept`].
    pub fn accept_raw(&self) -> io::Result<(Socket, SockAddr)> {
        self.accept()
    }

    /// `getsockname(2)`.
    pub fn local_addr(&self) -> io::Result<SockAddr> {
        sys::local_addr(self.as_fd())
    }

    /// `getpeername(2)`.
    pub fn peer_addr(&self) -> io::Result<SockAddr> {
        sys::peer_addr(self.as_fd())
    }

    /// A second descriptor for the same socket (`dup(2)`).
    pub fn try_clone(&self) -> io::Result<Socket> {
        sys::dup(self.as_fd()).map(Socket::from)
    }

    /// Whether the descriptor is in non-blocking mode.
    pub fn nonblocking(&self) -> io::Result<bool> {
        Ok(sys::status_flags(self.as_fd())? & abi::O_NONBLOCK != 0)
    }

    /// Switch non-blocking mode on or off (`FIONBIO`).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        sys::set_nonblocking(self.as_fd(), nonblocking)
    }

    /// `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => abi::SHUT_RD,
            Shutdown::Write => abi::SHUT_WR,
            Shutdown::Both => abi::SHUT_RDWR,
        };
        sys::shutdown(self.as_fd(), how)
    }

    /// `recv(2)` into `buf`; the kernel initialises the bytes it reports.
    pub fn recv(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.recv_with_flags(buf, 0)
    }

    /// `recv(2)` with `flags` (hermit knows `MSG_PEEK`).
    pub fn recv_with_flags(&self, buf: &mut [MaybeUninit<u8>], flags: c_int) -> io::Result<usize> {
        sys::recv(self.as_fd(), buf, flags)
    }

    /// Receive without taking the bytes from the socket.
    pub fn peek(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.recv_with_flags(buf, abi::MSG_PEEK)
    }

    /// `recvfrom(2)`: the bytes and the sender's address.
    pub fn recv_from(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, SockAddr)> {
        self.recv_from_with_flags(buf, 0)
    }

    /// `recvfrom(2)` with `flags`.
    pub fn recv_from_with_flags(
        &self,
        buf: &mut [MaybeUninit<u8>],
        flags: c_int,
    ) -> io::Result<(usize, SockAddr)> {
        sys::recv_from(self.as_fd(), buf, flags)
    }

    /// [`Socket::recv_from`] without taking the datagram.
    pub fn peek_from(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, SockAddr)> {
        self.recv_from_with_flags(buf, abi::MSG_PEEK)
    }

    /// The sender of the next datagram, which stays queued.
    pub fn peek_sender(&self) -> io::Result<SockAddr> {
        self.peek_from(&mut []).map(|(_, sender)| sender)
    }

    /// `send(2)`.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_with_flags(buf, 0)
    }

    /// `send(2)` with `flags` (eremite's kernel ignores them).
    pub fn send_with_flags(&self, buf: &[u8], flags: c_int) -> io::Result<usize> {
        sys::send(self.as_fd(), buf, flags)
    }

    /// `sendto(2)`.
    pub fn send_to(&self, buf: &[u8], addr: &SockAddr) -> io::Result<usize> {
        self.send_to_with_flags(buf, addr, 0)
    }

    /// `sendto(2)` with `flags`.
    pub fn send_to_with_flags(
        &self,
        buf: &[u8],
        addr: &SockAddr,
        flags: c_int,
    ) -> io::Result<usize> {
        sys::send_to(self.as_fd(), buf, flags, addr)
    }
}

/// A socket option's value that travels as an `int`.
trait IntOption: Sized {
    fn from_int(value: c_int) -> Self;
    fn to_int(self) -> io::Result<c_int>;
}

impl IntOption for bool {
    fn from_int(value: c_int) -> Self {
        value != 0
    }

    fn to_int(self) -> io::Result<c_int> {
        Ok(c_int::from(self))
    }
}

impl IntOption for u32 {
    fn from_int(value: c_int) -> Self {
        u32::try_from(value).unwrap_or(0)
    }

    fn to_int(self) -> io::Result<c_int> {
        c_int::try_from(self)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option value out of range"))
    }
}

/// A getter and a setter for each `int` option, from lines `get, set:
/// type = LEVEL, NAME, note;` (the note tells what eremite's kernel does
/// with the option, when that is not the usual).
macro_rules! int_options {
    ($($get:ident, $set:ident: $ty:ty = $level:ident, $name:ident, $note:literal;)*) => {$(
        #[doc = concat!("`", stringify!($name), "`", $note, ".")]
        pub fn $get(&self) -> io::Result<$ty> {
            self.int_option(abi::$level, abi::$name)
        }

        #[doc = concat!("Set `", stringify!($name), "`", $note, ".")]
        pub fn $set(&self, value: $ty) -> io::Result<()> {
            self.set_int_option(abi::$level, abi::$name, value)
        }
    )*};
}

/// Socket options (`getsockopt(2)`, `setsockopt(2)`). An option eremite's
/// kernel does not implement fails with `ENOPROTOOPT`.
impl Socket {
    int_options! {
        broadcast, set_broadcast: bool = SOL_SOCKET, SO_BROADCAST, "";
        keepalive, set_keepalive: bool = SOL_SOCKET, SO_KEEPALIVE, "";
        reuse_address, set_reuse_address: bool = SOL_SOCKET, SO_REUSEADDR, "";
        ttl_v4, set_ttl_v4: u32 = IPPROTO_IP, IP_TTL, "";
        tos_v4, set_tos_v4: u32 = IPPROTO_IP, IP_TOS, " (eremite's kernel: `ENOPROTOOPT`)";
        only_v6, set_only_v6: bool = IPPROTO_IPV6, IPV6_V6ONLY,
            " (eremite's kernel has no IPv6 sockets)";
        tcp_nodelay, set_tcp_nodelay: bool = IPPROTO_TCP, TCP_NODELAY, "";
    }

    fn int_option<T: IntOption>(&self, level: c_int, name: c_int) -> io::Result<T> {
        sys::get_option::<c_int>(self.as_fd(), level, name).map(T::from_int)
    }

    fn set_int_option<T: IntOption>(&self, level: c_int, name: c_int, value: T) -> io::Result<()> {
        sys::set_option(self.as_fd(), level, name, value.to_int()?)
    }

    fn buffer_size(&self, name: c_int) -> io::Result<usize> {
        self.int_option::<u32>(abi::SOL_SOCKET, name)
            .map(|n| n as usize)
    }

    /// Ask for `size` bytes (more than an `int` holds asks for the most).
    fn set_buffer_size(&self, name: c_int, size: usize) -> io::Result<()> {
        let size = u32::try_from(size)
            .unwrap_or(u32::MAX)
            .min(c_int::MAX as u32);
        self.set_int_option(abi::SOL_SOCKET, name, size)
    }

    fn timeout(&self, name: c_int) -> io::Result<Option<Duration>> {
        let tv: abi::timeval = sys::get_option(self.as_fd(), abi::SOL_SOCKET, name)?;
        let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
        let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
        let timeout = Duration::from_secs(secs) + Duration::from_micros(micros.into());
        Ok((!timeout.is_zero()).then_some(timeout))
    }

    fn set_timeout(&self, name: c_int, timeout: Option<Duration>) -> io::Result<()> {
        let tv = match timeout {
            Some(t) if t.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a zero timeout would mean no timeout",
                ));
            }
            Some(t) => abi::timeval {
                tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
                // Under a microsecond counts as one, not as none.
                tv_usec: t.subsec_micros().max(u32::from(t.as_secs() == 0)) as i32,
            },
            None => abi::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        };
        sys::set_option(self.as_fd(), abi::SOL_SOCKET, name, tv)
    }

    /// `SO_ERROR`: the pending error, which reading clears.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let code = sys::get_option::<c_int>(self.as_fd(), abi::SOL_SOCKET, abi::SO_ERROR)?;
        Ok((code != 0).then(|| io::Error::from_raw_os_error(code)))
    }

    /// Turn keep-alive on. Only the system's timing is available: a
    /// time, interval or retry count fails with `Unsupported` and changes
    /// nothing.
    pub fn set_tcp_keepalive(&self, params: &TcpKeepalive) -> io::Result<()> {
        if params.has_timing() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "keep-alive time, interval and retries cannot be set on hermit",
            ));
        }
        self.set_keepalive(true)
    }

    /// `SO_LINGER`.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        let linger: abi::linger = sys::get_option(self.as_fd(), abi::SOL_SOCKET, abi::SO_LINGER)?;
        let secs = u64::try_from(linger.l_linger).unwrap_or(0);
        Ok((linger.l_onoff != 0).then(|| Duration::from_secs(secs)))
    }

    /// Set `SO_LINGER` (whole seconds).
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        let linger = abi::linger {
            l_onoff: c_int::from(linger.is_some()),
            l_linger: linger.map_or(0, |d| c_int::try_from(d.as_secs()).unwrap_or(c_int::MAX)),
        };
        sys::set_option(self.as_fd(), abi::SOL_SOCKET, abi::SO_LINGER, linger)
    }

    /// `SO_RCVBUF`.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.buffer_size(abi::SO_RCVBUF)
    }

    /// Set `SO_RCVBUF`.
    pub fn set_recv_buffer_size(&self, size: usize) -> io::Result<()> {
        self.set_buffer_size(abi::SO_RCVBUF, size)
    }

    /// `SO_SNDBUF`.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.buffer_size(abi::SO_SNDBUF)
    }

    /// Set `SO_SNDBUF`.
    pub fn set_send_buffer_size(&self, size: usize) -> io::Result<()> {
        self.set_buffer_size(abi::SO_SNDBUF, size)
    }

    /// `SO_RCVTIMEO`: `None` waits for ever.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.timeout(abi::SO_RCVTIMEO)
    }

    /// Set `SO_RCVTIMEO`; a zero duration is refused (`InvalidInput`).
    pub fn set_read_timeout(&self, duration: Option<Duration>) -> io::Result<()> {
        self.set_timeout(abi::SO_RCVTIMEO, duration)
    }

    /// `SO_SNDTIMEO`: `None` waits for ever.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.timeout(abi::SO_SNDTIMEO)
    }

    /// Set `SO_SNDTIMEO`; a zero duration is refused (`InvalidInput`).
    pub fn set_write_timeout(&self, duration: Option<Duration>) -> io::Result<()> {
        self.set_timeout(abi::SO_SNDTIMEO, duration)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.as_fd(), buf, 0)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Socket");
        out.field("fd", &self.fd.as_raw_fd());
        if let Some(addr) = self.local_addr().ok().and_then(|a| a.as_socket()) {
            out.field("local_addr", &addr);
        }
        if let Some(addr) = self.peer_addr().ok().and_then(|a| a.as_socket()) {
            out.field("peer_addr", &addr);
        }
        out.finish()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl FromRawFd for Socket {
    /// # Safety
    /// `fd` must be an open socket descriptor that nothing else owns (it
    /// is closed when the `Socket` is dropped).
    unsafe fn from_raw_fd(fd: RawFd) -> Socket {
        // SAFETY: the caller's contract is `OwnedFd::from_raw_fd`'s.
        Socket::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl IntoRawFd for Socket {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl From<OwnedFd> for Socket {
    fn from(fd: OwnedFd) -> Socket {
        Socket { fd }
    }
}

impl From<Socket> for OwnedFd {
    fn from(socket: Socket) -> OwnedFd {
        socket.fd
    }
}

/// Conversions between std's socket types and [`Socket`], which on
/// hermit are all owned descriptors.
macro_rules! std_conversions {
    ($($std:ty),*) => {$(
        impl From<$std> for Socket {
            fn from(socket: $std) -> Socket {
                Socket::from(OwnedFd::from(socket))
            }
        }

        impl From<Socket> for $std {
            fn from(socket: Socket) -> $std {
                <$std>::from(socket.fd)
            }
        }
    )*};
}

std_conversions!(net::TcpStream, net::TcpListener, net::UdpSocket);
