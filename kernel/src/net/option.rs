//! Socket options by meaning, not by any ABI's numbers: each ABI maps its
//! `(level, name)` pair to an [`OptionName`] and its C structs to and from
//! an [`OptionValue`]; what an option does, and which values it takes,
//! is decided here once.

use eremite_interface::errno::{self, Errno};
use eremite_net::SocketOption;

use super::{Direction, Protocol, Socket, with_stack};

/// A socket option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OptionName {
    /// `SO_REUSEADDR`.
    ReuseAddr,
    /// `SO_REUSEPORT`: accepted and reported as set; with one program
    /// per VM nothing else could share the port.
    ReusePort,
    /// `SO_KEEPALIVE`.
    KeepAlive,
    /// `SO_BROADCAST`.
    Broadcast,
    /// `SO_LINGER`.
    Linger,
    /// `SO_RCVBUF`.
    RecvBuffer,
    /// `SO_SNDBUF`.
    SendBuffer,
    /// `SO_RCVTIMEO`.
    RecvTimeout,
    /// `SO_SNDTIMEO`.
    SendTimeout,
    /// `SO_ERROR`: read-only, and reading it clears it.
    Error,
    /// `SO_TYPE`: read-only.
    Type,
    /// `TCP_NODELAY`: TCP sockets only.
    NoDelay,
    /// `IP_TTL`.
    Ttl,
}

/// The C shape of an option's value, for the ABI to read it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// An `int`, non-zero for on.
    Flag,
    /// An `int` count (bytes, hops).
    Count,
    /// `struct linger`.
    Linger,
    /// `struct timeval`.
    Timeout,
    /// Cannot be set (`ENOPROTOOPT`).
    ReadOnly,
}

/// An option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OptionValue {
    /// On or off.
    Flag(bool),
    /// A count (negative counts from the program arrive as 0).
    Count(usize),
    /// `SO_LINGER`: on for some seconds, or off.
    Linger(Option<u32>),
    /// A timeout in ns; `None` (or 0 when set): wait for ever.
    Timeout(Option<u64>),
    /// `SO_ERROR`: the pending error, if any.
    Error(Option<Errno>),
    /// `SO_TYPE`.
    Type(Protocol),
}

impl OptionName {
    /// The shape of the value `setsockopt` gives for this option.
    pub(crate) fn shape(self) -> Shape {
        match self {
            Self::ReuseAddr | Self::ReusePort | Self::KeepAlive | Self::Broadcast => Shape::Flag,
            Self::NoDelay => Shape::Flag,
            Self::RecvBuffer | Self::SendBuffer | Self::Ttl => Shape::Count,
            Self::Linger => Shape::Linger,
            Self::RecvTimeout | Self::SendTimeout => Shape::Timeout,
            Self::Error | Self::Type => Shape::ReadOnly,
        }
    }
}

/// `getsockopt(2)`.
pub(crate) fn get_option(socket: &Socket, name: OptionName) -> Result<OptionValue, Errno> {
    let options = || with_stack(|stack| stack.options(socket.id));
    Ok(match name {
        OptionName::ReuseAddr => OptionValue::Flag(options()?.reuse_addr),
        OptionName::ReusePort => OptionValue::Flag(true),
        OptionName::KeepAlive => OptionValue::Flag(options()?.keep_alive),
        OptionName::Broadcast => OptionValue::Flag(options()?.broadcast),
        OptionName::Linger => OptionValue::Linger(options()?.linger_secs),
        OptionName::RecvBuffer => OptionValue::Count(options()?.recv_buffer_bytes),
        OptionName::SendBuffer => OptionValue::Count(options()?.send_buffer_bytes),
        OptionName::RecvTimeout => OptionValue::Timeout(socket.timeout_ns(Direction::Receive)),
        OptionName::SendTimeout => OptionValue::Timeout(socket.timeout_ns(Direction::Send)),
        OptionName::Error => OptionValue::Error(with_stack(|stack| stack.take_error(socket.id))?),
        OptionName::Type => OptionValue::Type(with_stack(|stack| stack.protocol(socket.id))?),
        OptionName::NoDelay => {
            if with_stack(|stack| stack.protocol(socket.id))? != Protocol::Tcp {
                return Err(errno::ENOPROTOOPT);
            }
            OptionValue::Flag(options()?.no_delay)
        }
        OptionName::Ttl => OptionValue::Count(usize::from(options()?.ttl)),
    })
}

/// `setsockopt(2)`: `EINVAL` for a value of the wrong kind or out of
/// range, `ENOPROTOOPT` for a read-only option.
pub(crate) fn set_option(
    socket: &Socket,
    name: OptionName,
    value: OptionValue,
) -> Result<(), Errno> {
    let option = match (name, value) {
        (OptionName::ReuseAddr, OptionValue::Flag(on)) => SocketOption::ReuseAddr(on),
        (OptionName::ReusePort, OptionValue::Flag(_)) => {
            // Still a socket call: a closed socket fails as any other.
            return with_stack(|stack| stack.protocol(socket.id)).map(|_| ());
        }
        (OptionName::KeepAlive, OptionValue::Flag(on)) => SocketOption::KeepAlive(on),
        (OptionName::Broadcast, OptionValue::Flag(on)) => SocketOption::Broadcast(on),
        (OptionName::NoDelay, OptionValue::Flag(on)) => SocketOption::NoDelay(on),
        (OptionName::Linger, OptionValue::Linger(secs)) => SocketOption::Linger(secs),
        (OptionName::RecvBuffer, OptionValue::Count(n)) => SocketOption::RecvBufferBytes(n),
        (OptionName::SendBuffer, OptionValue::Count(n)) => SocketOption::SendBufferBytes(n),
        (OptionName::Ttl, OptionValue::Count(n)) => {
            SocketOption::Ttl(u8::try_from(n).map_err(|_| errno::EINVAL)?)
        }
        (OptionName::RecvTimeout, OptionValue::Timeout(ns)) => {
            socket.set_timeout_ns(Direction::Receive, ns);
            return Ok(());
        }
        (OptionName::SendTimeout, OptionValue::Timeout(ns)) => {
            socket.set_timeout_ns(Direction::Send, ns);
            return Ok(());
        }
        (OptionName::Error | OptionName::Type, _) => return Err(errno::ENOPROTOOPT),
        _ => return Err(errno::EINVAL),
    };
    with_stack(|stack| stack.set_option(socket.id, option))
}

/// A `struct timeval`'s seconds and microseconds as a timeout: `EDOM`
/// for negative or out-of-range microseconds, as Linux.
pub(crate) fn timeout_from_timeval(seconds: i64, micros: i64) -> Result<Option<u64>, Errno> {
    let (Ok(seconds), Ok(micros)) = (u64::try_from(seconds), u64::try_from(micros)) else {
        return Err(errno::EDOM);
    };
    if micros >= 1_000_000 {
        return Err(errno::EDOM);
    }
    let ns = seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(micros * 1000);
    Ok((ns > 0).then_some(ns))
}

/// A timeout as a `struct timeval`'s seconds and microseconds.
pub(crate) fn timeval_from_timeout(ns: Option<u64>) -> (i64, i64) {
    let ns = ns.unwrap_or(0);
    (
        i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
        i64::try_from((ns % 1_000_000_000) / 1000).unwrap_or(0),
    )
}
