//! IPv4 settings as users write them: `--ip 10.0.0.2/24`, `--gateway
//! 10.0.0.1`. What an address may be (unicast, a prefix of at most 32
//! bits) is the guest's rule, from `eremite_interface::cmdline`, so that
//! the VMM never passes a parameter the guest would refuse.

use std::net::Ipv4Addr;

use eremite_interface::cmdline::{CmdlineError, NetAddress, NetGateway};

/// An `--ip` or `--gateway` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetAddressError {
    /// Not `ADDRESS/PREFIX`.
    #[error("`{0}` is not ADDRESS/PREFIX (write e.g. 10.0.0.2/24)")]
    AddressPrefix(String),
    /// Not a dotted-quad IPv4 address.
    #[error("`{0}` is not an IPv4 address (write e.g. 10.0.0.1)")]
    Address(String),
    /// A prefix longer than the address.
    #[error("prefix length {0} is longer than 32")]
    PrefixTooLong(String),
    /// An address no host can have.
    #[error("{0} is not a unicast address")]
    NotUnicast(Ipv4Addr),
}

/// Parse an `--ip` value: an IPv4 address and a prefix length,
/// `10.0.0.2/24`.
pub fn parse_ip_prefix(text: &str) -> Result<(Ipv4Addr, u8), NetAddressError> {
    let format = || NetAddressError::AddressPrefix(text.to_owned());
    let (address, prefix) = text.split_once('/').ok_or_else(format)?;
    let address: Ipv4Addr = address.parse().map_err(|_| format())?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format());
    }
    let prefix_len = prefix
        .parse::<u8>()
        .map_err(|_| NetAddressError::PrefixTooLong(prefix.to_owned()))?;
    NetAddress {
        address: address.octets(),
        prefix_len,
    }
    .validate()
    .map_err(|e| explain(e, address, prefix))?;
    Ok((address, prefix_len))
}

/// Parse a `--gateway` value: an IPv4 address, `10.0.0.1`.
pub fn parse_gateway(text: &str) -> Result<Ipv4Addr, NetAddressError> {
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| NetAddressError::Address(text.to_owned()))?;
    NetGateway(address.octets())
        .validate()
        .map_err(|e| explain(e, address, ""))?;
    Ok(address)
}

fn explain(error: CmdlineError, address: Ipv4Addr, prefix: &str) -> NetAddressError {
    match error {
        CmdlineError::PrefixTooLong(_) => NetAddressError::PrefixTooLong(prefix.to_owned()),
        _ => NetAddressError::NotUnicast(address),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_with_prefixes_are_parsed() {
        assert_eq!(
            parse_ip_prefix("10.0.0.2/24").unwrap(),
            (Ipv4Addr::new(10, 0, 0, 2), 24)
        );
        assert_eq!(
            parse_ip_prefix("192.168.1.1/32").unwrap(),
            (Ipv4Addr::new(192, 168, 1, 1), 32)
        );
        assert_eq!(parse_ip_prefix("1.2.3.4/0").unwrap().1, 0);
        assert_eq!(
            parse_gateway("10.0.0.1").unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let ip = |s| parse_ip_prefix(s).unwrap_err().to_string();
        for bad in [
            "10.0.0.2",
            "10.0.0.2/",
            "/24",
            "10.0.0/24",
            "10.0.0.256/24",
            "10.0.0.02/24",
            "10.0.0.2/+24",
            "10.0.0.2/24/1",
            "::1/64",
            "",
        ] {
            assert!(
                ip(bad).contains("is not ADDRESS/PREFIX"),
                "{bad}: {}",
                ip(bad)
            );
        }
        assert_eq!(ip("10.0.0.2/33"), "prefix length 33 is longer than 32");
        assert_eq!(ip("10.0.0.2/300"), "prefix length 300 is longer than 32");
        assert_eq!(ip("0.0.0.0/8"), "0.0.0.0 is not a unicast address");
        assert_eq!(ip("239.1.1.1/8"), "239.1.1.1 is not a unicast address");
        let gateway = |s| parse_gateway(s).unwrap_err().to_string();
        assert!(gateway("10.0.0.1/24").contains("is not an IPv4 address"));
        assert!(gateway("gw").contains("is not an IPv4 address"));
        assert_eq!(
            gateway("255.255.255.255"),
            "255.255.255.255 is not a unicast address"
        );
    }
}
