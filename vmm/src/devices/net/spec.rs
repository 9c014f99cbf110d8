//! `--net tap:NAME[,mac=MAC]` or `--net user[,mac=MAC]`: what the user asks
//! for, checked for form before the VM is built (whether the tap device
//! exists is found out when it is opened, as `--mount` leaves the host
//! directory to `Mount::open`).
//!
//! [`MacAddr`] is the card's Ethernet address: given by the user, or chosen
//! by the VMM with [`MacAddr::local`] (locally administered, unicast).

use std::fmt;
use std::str::FromStr;

/// Longest interface name Linux accepts: `IFNAMSIZ` (16) less the NUL.
pub(crate) const MAX_INTERFACE_NAME_BYTES: usize = 15;

/// One network card for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// Where its frames go.
    pub link: Link,
    /// The guest's Ethernet address, if the user chose one.
    pub mac: Option<MacAddr>,
}

/// Where a card's frames go on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// An existing tap interface (`tap:NAME`): full control and speed,
    /// set up by root beforehand.
    Tap(String),
    /// User-mode networking (`user`): a `passt` process the VMM starts,
    /// which makes the guest's connections with the host's own sockets
    /// and forwards published ports; no privileges needed.
    User,
    /// A port on eremite's switch `NAME` (`switch:NAME`), shared with the
    /// other VMs on it; no privileges needed.
    Switch(String),
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tap(name) => write!(f, "tap {name}"),
            Self::User => f.write_str("user-mode networking through passt"),
            Self::Switch(name) => write!(f, "switch {name}"),
        }
    }
}

/// A `--net` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetSpecError {
    /// Not `tap:NAME[,mac=MAC]`, `user[,mac=MAC]` or `switch:NAME[,mac=MAC]`.
    #[error("{0:?} is not user[,mac=MAC], tap:NAME[,mac=MAC] or switch:NAME[,mac=MAC]")]
    Format(String),
    /// An interface name Linux would refuse.
    #[error("tap interface name {name:?} {reason}")]
    InterfaceName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A switch name that cannot be a file name.
    #[error(
        "switch name {0:?} must be 1 to 64 letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    SwitchName(String),
    /// Not six hexadecimal bytes separated by colons.
    #[error("{0:?} is not a MAC address like 02:00:00:00:00:01")]
    Mac(String),
    /// A group (multicast) address cannot be a card's address.
    #[error("{0} is a multicast address; a card needs a unicast one (even first byte)")]
    MulticastMac(MacAddr),
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The VMM's choice when the user gives none: `02:65:72` (locally
    /// administered, unicast; "er" for eremite) then the low 24 bits of
    /// `seed`, which the caller makes differ between VMs on one host (the
    /// process ID, say).
    pub fn local(seed: u32) -> Self {
        let [_, a, b, c] = seed.to_be_bytes();
        Self([0x02, 0x65, 0x72, a, b, c])
    }

    /// Bit 0 of the first byte: a group address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = NetSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetSpecError::Mac(s.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            // from_str_radix alone would take a sign ("+2").
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(bytes))
    }
}

/// Parse a `--net` value, `tap:NAME[,mac=MAC]` or `user[,mac=MAC]`.
pub fn parse_net_spec(spec: &str) -> Result<NetSpec, NetSpecError> {
    let format = || NetSpecError::Format(spec.to_owned());
    let mut fields = spec.split(',');
    let link = match fields.next().unwrap_or_default() {
        "user" => Link::User,
        first if first.starts_with("switch:") => {
            let name = &first["switch:".len()..];
            super::switch::check_switch_name(name)
                .map_err(|_| NetSpecError::SwitchName(name.to_owned()))?;
            Link::Switch(name.to_owned())
        }
        first => {
            let tap = first.strip_prefix("tap:").ok_or_else(format)?;
            check_interface_name(tap)?;
            Link::Tap(tap.to_owned())
        }
    };
    let mut mac = None;
    for field in fields {
        match field.split_once('=') {
            Some(("mac", value)) if mac.is_none() => {
                let addr: MacAddr = value.parse()?;
                if addr.is_multicast() {
                    return Err(NetSpecError::MulticastMac(addr));
                }
                mac = Some(addr);
            }
            _ => return Err(format()),
        }
    }
    Ok(NetSpec { link, mac })
}

/// Linux's rules for interface names (`dev_valid_name` in
/// net/core/dev.c): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or white
/// space.
pub(crate) fn check_interface_name(name: &str) -> Result<(), NetSpecError> {
    let bad = |reason| NetSpecError::InterfaceName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_INTERFACE_NAME_BYTES {
        return Err(bad("is longer than 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." {
        return Err(bad("must not be . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(bad("must not contain /, :, NUL or white space"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn specs_are_parsed() {
        assert_eq!(
            parse_net_spec("tap:tap0").unwrap(),
            NetSpec {
                link: Link::Tap("tap0".into()),
                mac: None
            }
        );
        let spec = parse_net_spec("tap:eremite-tap15,mac=02:AB:cd:00:00:01").unwrap();
        assert_eq!(spec.link, Link::Tap("eremite-tap15".into()));
        assert_eq!(spec.mac, Some(MacAddr([2, 0xab, 0xcd, 0, 0, 1])));
        assert_eq!(spec.mac.unwrap().to_string(), "02:ab:cd:00:00:01");
        assert_eq!(parse_net_spec("user").unwrap().link, Link::User);
        assert_eq!(
            parse_net_spec("switch:lab-1").unwrap().link,
            Link::Switch("lab-1".into())
        );
        assert!(parse_net_spec("switch:a/b").is_err());
        assert!(parse_net_spec("switch:").is_err());
        let spec = parse_net_spec("user,mac=02:00:00:00:00:07").unwrap();
        assert_eq!(
            (spec.link, spec.mac),
            (Link::User, Some(MacAddr([2, 0, 0, 0, 0, 7])))
        );
    }

    #[test]
    fn bad_specs_are_refused_naming_the_problem() {
        let err = |s: &str| parse_net_spec(s).unwrap_err().to_string();
        assert!(err("tap0").contains("tap:NAME"));
        assert!(err("user:tap0").contains("tap:NAME"));
        assert!(err("users").contains("user[,mac=MAC]"));
        assert!(err("user,tap0").contains("user[,mac=MAC]"));
        assert!(err("tap:tap0,ip=10.0.0.1").contains("tap:NAME"));
        assert!(err("tap:tap0,mac=02:00:00:00:00:01,mac=02:00:00:00:00:02").contains("tap:NAME"));
        assert!(err("tap:").contains("is empty"));
        assert!(err("tap:,mac=02:00:00:00:00:01").contains("is empty"));
        assert!(err("tap:sixteen-bytes-xx").contains("IFNAMSIZ"));
        assert!(err("tap:..").contains(".."));
        assert!(err("tap:a/b").contains("must not contain"));
        assert!(err("tap:a b").contains("must not contain"));
        for mac in [
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00:00:00:00:0g",
            "2:00:00:00:00:01",
            "02-00-00-00-00-01",
            "",
            "+2:00:00:00:00:01",
        ] {
            assert!(
                err(&format!("tap:t,mac={mac}")).contains("MAC address"),
                "{mac}"
            );
        }
        assert!(err("tap:t,mac=01:00:5e:00:00:01").contains("multicast"));
    }

    #[test]
    fn chosen_addresses_are_local_unicast_and_differ_by_seed() {
        let a = MacAddr::local(1);
        let b = MacAddr::local(0x0102_0304);
        assert_eq!(a.to_string(), "02:65:72:00:00:01");
        assert_eq!(b.to_string(), "02:65:72:02:03:04");
        assert!(!a.is_multicast());
        assert_eq!(a.0[0] & 2, 2, "locally administered");
    }
}
