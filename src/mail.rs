//! The contract between the ways mail arrives (`inbound`) and what decides
//! on it (`intake`): an SMTP reply, a transaction's envelope, the handler
//! trait, and how peers are counted. Below both, so neither imports the
//! other.

use std::future::Future;

/// An SMTP reply: code, enhanced status code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `code enhanced text` on one line, for keeping (see [`Reply::from_line`]).
    pub fn line(&self) -> String {
        format!("{} {} {}", self.code, self.enhanced, self.text).replace(['\r', '\n'], " ")
    }

    /// The reply [`Reply::line`] wrote.
    pub fn from_line(line: &str) -> Option<Reply> {
        const ENHANCED: [&str; 13] = [
            "2.0.0", "4.3.0", "4.3.1", "4.3.2", "4.4.2", "4.7.0", "4.7.1", "5.1.1", "5.3.4",
            "5.6.0", "5.7.0", "5.7.1", "5.7.5",
        ];
        let mut words = line.splitn(3, ' ');
        let code: u16 = words.next()?.parse().ok()?;
        let enhanced = words.next()?;
        let text = words.next().unwrap_or("");
        let enhanced = ENHANCED
            .iter()
            .find(|e| **e == enhanced)
            .copied()
            .unwrap_or(match code {
                200..=299 => "2.0.0",
                400..=499 => "4.0.0",
                _ => "5.0.0",
            });
        (200..600)
            .contains(&code)
            .then(|| Reply::new(code, enhanced, text))
    }

    pub(crate) fn to_wire(&self) -> String {
        // Reply text never carries a line break, whatever a handler put in it.
        let text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("{} {} {}\r\n", self.code, self.enhanced, text)
    }
}

/// The envelope of one transaction.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub peer: String,
}

/// What the server does with recipients and messages.
pub trait MailHandler: Send + Sync + 'static {
    /// Accepts or refuses one recipient, given the ones this transaction
    /// already has (`earlier`).
    fn check_rcpt(&self, rcpt: &str, earlier: &[String]) -> Result<(), Reply>;
    /// Takes a complete message (CRLF line endings, dot-unstuffed) and
    /// returns the final reply to DATA: a 2xx only once it is durably kept.
    fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> impl Future<Output = Reply> + Send;
    /// Hears of a mail or session the server itself refused (a smuggling
    /// attempt, an overlong line, a message over the size limit, a client
    /// that broke the protocol or fell silent), for the audit trail. Called
    /// at most `inbound::smtp::MAX_AUDITED` times a session, and for connections over
    /// `max_sessions` at most once a minute; the reply carries no mail
    /// content. It must not block: the caller is an async task.
    fn refused(&self, _peer: &str, _mail_from: Option<&str>, _reply: &Reply) {}
}

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
