//! What user-mode networking is asked to do beyond the card itself:
//! `-p [ADDRESS:]HOST_PORT[:GUEST_PORT][/tcp|/udp]` publishes a guest port on
//! the host ([`Publish`]), as `docker run -p` does; `--add-host NAME:IP`
//! adds a line to the guest's `/etc/hosts` ([`HostEntry`]). Checked for
//! form here; whether a host port is free is found out when the VM starts
//! (`passt`).

use std::fmt;
use std::net::Ipv4Addr;

/// A transport protocol a port belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortProtocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// One published port: connections (or datagrams) to `host_addr:host_port`
/// on the host reach the guest's `guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Publish {
    /// TCP or UDP.
    pub protocol: PortProtocol,
    /// The host address to listen on: `127.0.0.1` unless given, so that a
    /// published port is not open to the network by surprise.
    pub host_addr: Ipv4Addr,
    /// The host port, 1 to 65535.
    pub host_port: u16,
    /// The guest port, 1 to 65535.
    pub guest_port: u16,
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_addr, self.host_port, self.guest_port, self.protocol
        )
    }
}

/// One `--add-host` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// A host name (letters, digits, `-` and `.`).
    pub name: String,
    /// Its address, or the gateway (the host itself) for `host-gateway`.
    pub addr: HostAddr,
}

/// The address of an `--add-host` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAddr {
    /// A fixed IPv4 address.
    Ip(Ipv4Addr),
    /// The guest's gateway, whatever it is (`host-gateway`, as docker
    /// writes it): under user-mode networking, the host.
    Gateway,
}

/// A `-p` or `--add-host` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not `[ADDRESS:]HOST_PORT[:GUEST_PORT][/tcp|/udp]`.
    #[error("{0:?} is not [ADDRESS:]HOST_PORT[:GUEST_PORT][/tcp|/udp] (e.g. 8080:80)")]
    Publish(String),
    /// A port outside 1..=65535.
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    /// Not `NAME:IP`.
    #[error("{0:?} is not NAME:IP (e.g. db.local:10.0.2.2, or NAME:host-gateway)")]
    HostEntry(String),
    /// A name `/etc/hosts` cannot hold.
    #[error(
        "host name {0:?} must be 1 to 253 letters, digits, '-' and '.', not starting with '-' or '.'"
    )]
    HostName(String),
}

/// Parse a `-p` value.
pub fn parse_publish(text: &str) -> Result<Publish, PublishError> {
    let format = || PublishError::Publish(text.to_owned());
    if text.is_empty() {
        return Err(format());
    }
    let (ports, protocol) = match text.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, PortProtocol::Tcp),
        Some((ports, "udp")) => (ports, PortProtocol::Udp),
        Some(_) => return Err(format()),
        None => (text, PortProtocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_addr, host_port, guest_port) = match parts[..] {
        [port] => (None, port, port),
        [host, guest] => (None, host, guest),
        [addr, host, guest] => (Some(addr), host, guest),
        _ => return Err(format()),
    };
    let host_addr = match host_addr {
        Some(addr) => addr.parse().map_err(|_| format())?,
        None => Ipv4Addr::LOCALHOST,
    };
    Ok(Publish {
        protocol,
        host_addr,
        host_port: port(host_port)?,
        guest_port: port(guest_port)?,
    })
}

fn port(text: &str) -> Result<u16, PublishError> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u16>().ok())
        .flatten()
        .filter(|&port| port != 0)
        .ok_or_else(|| PublishError::Port(text.to_owned()))
}

/// Parse an `--add-host` value, `NAME:IP` or `NAME:host-gateway`.
pub fn parse_host_entry(text: &str) -> Result<HostEntry, PublishError> {
    let (name, addr) = text
        .split_once(':')
        .ok_or_else(|| PublishError::HostEntry(text.to_owned()))?;
    let is_name = (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    if !is_name {
        return Err(PublishError::HostName(name.to_owned()));
    }
    let addr = match addr {
        "host-gateway" => HostAddr::Gateway,
        addr => HostAddr::Ip(
            addr.parse()
                .map_err(|_| PublishError::HostEntry(text.to_owned()))?,
        ),
    };
    Ok(HostEntry {
        name: name.to_owned(),
        addr,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tcp(host_addr: [u8; 4], host_port: u16, guest_port: u16) -> Publish {
        Publish {
            protocol: PortProtocol::Tcp,
            host_addr: Ipv4Addr::from(host_addr),
            host_port,
            guest_port,
        }
    }

    #[test]
    fn published_ports_are_parsed_as_docker_writes_them() {
        assert_eq!(
            parse_publish("8080").unwrap(),
            tcp([127, 0, 0, 1], 8080, 8080)
        );
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            tcp([127, 0, 0, 1], 8080, 80)
        );
        assert_eq!(
            parse_publish("0.0.0.0:9000:80/tcp").unwrap(),
            tcp([0, 0, 0, 0], 9000, 80)
        );
        let udp = parse_publish("5353:53/udp").unwrap();
        assert_eq!(
            (udp.protocol, udp.host_port, udp.guest_port),
            (PortProtocol::Udp, 5353, 53)
        );
        assert_eq!(udp.to_string(), "127.0.0.1:5353:53/udp");
    }

    #[test]
    fn bad_published_ports_are_refused_naming_the_problem() {
        let err = |s: &str| parse_publish(s).unwrap_err().to_string();
        for bad in [
            "",
            "8080/sctp",
            "a:b:c:d",
            "localhost:80:80",
            "1:2:3:4",
            "80/",
        ] {
            assert!(err(bad).contains("HOST_PORT"), "{bad}: {}", err(bad));
        }
        for bad in ["0", "65536", "80:0", "+80", "-1:80", "8080:http", "80:"] {
            assert!(err(bad).contains("1 to 65535"), "{bad}: {}", err(bad));
        }
    }

    #[test]
    fn host_entries_are_parsed_and_checked() {
        let entry = parse_host_entry("db.local:10.0.2.2").unwrap();
        assert_eq!(entry.name, "db.local");
        assert_eq!(entry.addr, HostAddr::Ip(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(
            parse_host_entry("host:host-gateway").unwrap().addr,
            HostAddr::Gateway
        );
        let err = |s: &str| parse_host_entry(s).unwrap_err().to_string();
        assert!(err("db.local").contains("NAME:IP"));
        assert!(err("db:10.0.2").contains("NAME:IP"));
        assert!(err("db:::1").contains("NAME:IP"));
        assert!(err(":10.0.0.1").contains("host name"));
        assert!(err("a b:10.0.0.1").contains("host name"));
        assert!(err("-a:10.0.0.1").contains("host name"));
        assert!(err(&format!("{}:10.0.0.1", "a".repeat(254))).contains("host name"));
    }
}
