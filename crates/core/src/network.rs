//! Client networks: the prefix a baseline remembers instead of an address.

use std::fmt;
use std::net::IpAddr;

/// The network of a client address: its /24 for IPv4 and its /48 for IPv6.
/// IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl Network {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Self::V4([a, b, c])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of(IpAddr::V4(v4)),
                None => {
                    let [a, b, c, ..] = v6.segments();
                    Self::V6([a, b, c])
                }
            },
        }
    }

    /// Parses the form printed by `Display`, such as `192.0.2.0/24`.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, len) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let network = Self::of(addr);
        let expected = match network {
            Self::V4(_) => "24",
            Self::V6(_) => "48",
        };
        (len == expected && network.to_string() == text).then_some(network)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Self::V6([a, b, c]) => {
                let addr = std::net::Ipv6Addr::new(*a, *b, *c, 0, 0, 0, 0, 0);
                write!(f, "{addr}/48")
            }
        }
    }
}

impl serde::Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid network {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_groups_by_slash_24() {
        let a = Network::of("127.0.9.9".parse().unwrap());
        let b = Network::of("127.0.9.200".parse().unwrap());
        let c = Network::of("127.0.10.9".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "127.0.9.0/24");
    }

    #[test]
    fn ipv6_groups_by_slash_48() {
        let a = Network::of("2001:db8:cafe::17".parse().unwrap());
        let b = Network::of("2001:db8:cafe:1::1".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:cafe::/48");
        assert_eq!(Network::parse("2001:db8:cafe::/48"), Some(a));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped = Network::of("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped.to_string(), "192.0.2.0/24");
        assert_eq!(Network::parse("192.0.2.0/24"), Some(mapped));
        assert_eq!(Network::parse("192.0.2.1/24"), None);
    }
}
