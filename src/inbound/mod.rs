//! Ways mail arrives. Each one commits a message durably before it says yes.

pub mod imap;
pub mod pipe;
pub mod smtp;

use std::net::{IpAddr, Ipv6Addr};

/// The address that limits and counts are kept by: an IPv4-mapped IPv6
/// address is its IPv4 address, and an IPv6 address stands for its /64
/// (one host is usually given a whole /64, so counting single IPv6
/// addresses would let one host be 2^64 peers).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// [`peer_key`] as text for records: `192.0.2.7`, `2001:db8:1:2::/64`.
pub fn peer_key_label(ip: IpAddr) -> String {
    match peer_key(ip) {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

/// Whether `ip` is one of the trusted peers (compared canonically, so a
/// trusted 127.0.0.1 is also ::ffff:127.0.0.1 on a dual-stack socket).
pub fn is_trusted(trusted: &[IpAddr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        let key = |s: &str| peer_key_label(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            key("2001:db8:1:2::5")
        );
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        let trusted = ["127.0.0.1".parse().unwrap()];
        assert!(is_trusted(&trusted, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_trusted(&trusted, "127.0.0.2".parse().unwrap()));
    }
}
