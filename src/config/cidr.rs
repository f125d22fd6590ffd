//! Networks written as CIDR (`192.0.2.0/24`, `2001:db8::/32`, or a bare address), for trusted-network lists.

use std::fmt;
use std::net::IpAddr;

/// A network, parsed and matched by ipnet (the well-kept crate for this); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => ipnet::IpNet::from(s.parse::<IpAddr>().ok()?),
        };
        Some(Cidr(net.trunc()))
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, ipnet::IpNet::V4(_))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket is compared as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    #[test]
    fn contains() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
    }
}
