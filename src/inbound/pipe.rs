//! `embargo-relay submit`: one message on standard input, as an MTA's pipe
//! transport (Postfix `pipe`, Exim `pipe`) hands it over. The message goes
//! through the same intake as SMTP, and the answer is a sysexits code the
//! MTA understands: it retries on 75 and bounces, without our content, on
//! 65 and 77.

use std::io::Read;
use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::context::Relay;
use crate::entity::to_crlf;
use crate::inbound::smtp::{Envelope, Reply};
use crate::intake::Intake;

/// Accepted and committed.
pub const EX_OK: u8 = 0;
/// Malformed or invalid mail (not PGP/MIME, bad embargo, too large).
pub const EX_DATAERR: u8 = 65;
/// Temporary local failure: the MTA keeps the mail and retries.
pub const EX_TEMPFAIL: u8 = 75;
/// Not authorized: bad or unknown signature, From not the signer, replay.
pub const EX_NOPERM: u8 = 77;
/// The recipient is neither the list nor its request address.
pub const EX_NOUSER: u8 = 67;

/// The outcome of one submission: the exit code and the reason, the one
/// line `submit` prints on stderr. An MTA puts that line into the bounce's
/// `Diagnostic-Code` (Postfix: `x-unix; embargo-relay: <reason>`), so it
/// is the reply's text alone: no SMTP codes (Postfix would take a leading
/// `5.7.1` for the bounce's status), no log prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u8,
    pub message: String,
}

impl Outcome {
    fn tempfail(message: impl Into<String>) -> Outcome {
        Outcome {
            code: EX_TEMPFAIL,
            message: message.into(),
        }
    }

    /// Maps the intake's SMTP answer to a sysexits code.
    pub fn from_reply(reply: &Reply) -> Outcome {
        let code = match reply.code {
            200..=399 => EX_OK,
            400..=499 => EX_TEMPFAIL,
            _ if reply.enhanced.starts_with("5.7.") => EX_NOPERM,
            _ => EX_DATAERR,
        };
        Outcome {
            code,
            message: reply.text.clone(),
        }
    }
}

/// Who handed the message over, for the audit record.
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// The envelope sender the MTA passes (Postfix `${sender}`).
    pub sender: Option<String>,
    /// The recipient the MTA delivers to (Postfix `${recipient}`): the
    /// request address makes it a join request. Default: the list.
    pub recipient: Option<String>,
    /// The address the MTA received the mail from (Postfix
    /// `${client_address}`; empty for local submission): rejections and
    /// join requests are counted per client.
    pub client: Option<String>,
}

/// Loads nothing itself: the file failing to load is the caller's
/// tempfail. The mail goes to the list of `lists` its recipient names (the
/// only list when none is named). Reads at most `max_message_size` octets;
/// a larger message is refused.
pub fn submit(
    lists: Vec<Config>,
    clock: SharedClock,
    origin: &Handoff,
    input: &mut dyn Read,
) -> Outcome {
    let names = |lists: &[Config]| {
        lists
            .iter()
            .map(|c| format!("{} or {}", c.list_address, c.request_address))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let chosen = match &origin.recipient {
        Some(rcpt) => match lists.iter().find(|c| c.serves(rcpt)) {
            Some(c) => c.list_address.clone(),
            None => {
                return Outcome {
                    code: EX_NOUSER,
                    message: format!("the recipient is not {}", names(&lists)),
                };
            }
        },
        None if lists.len() == 1 => lists[0].list_address.clone(),
        None => {
            // Wiring to fix, not a mail to bounce: the MTA keeps it.
            return Outcome::tempfail(format!(
                "the configuration serves {} lists: pass --recipient=${{recipient}} so each mail reaches its own",
                lists.len()
            ));
        }
    };
    let (config, others): (Config, Vec<Config>) = {
        let mut others = lists;
        let i = others
            .iter()
            .position(|c| c.list_address == chosen)
            .expect("chosen from the file");
        (others.remove(i), others)
    };
    let relay = match Relay::open_for_submit(config, clock) {
        Ok(relay) => Arc::new(relay),
        Err(e) => return Outcome::tempfail(format!("cannot open the spool: {e:#}")),
    };
    // The file's other lists, for whose keys they know (the binding).
    let mut peers = vec![relay.clone()];
    peers.extend(others.into_iter().map(|c| Arc::new(relay.beside(c))));
    relay.peers.set(peers);
    // One configuration for the whole mail, handed on to the intake.
    let snapshot = relay.snapshot();
    let config = snapshot.config.clone();
    let envelope = Envelope {
        helo: "submit".to_owned(),
        mail_from: origin.sender.clone().unwrap_or_default(),
        rcpt_to: vec![
            origin
                .recipient
                .clone()
                .unwrap_or_else(|| config.list_address.clone()),
        ],
        // Postfix's ${client_address}: the host the mail came from, which
        // limits and counts are kept by; empty for mail submitted locally.
        peer: match origin.client.as_deref().map(str::trim) {
            Some(client) if !client.is_empty() => format!("{} (submit)", printable_client(client)),
            _ => "stdin (submit)".to_owned(),
        },
    };
    let limit = config.smtp.max_message_size;
    let mut raw = Vec::new();
    if let Err(e) = input.take(limit as u64 + 1).read_to_end(&mut raw) {
        return Outcome::tempfail(format!("cannot read the message on stdin: {e}"));
    }
    if raw.len() > limit {
        let reply = Reply::new(
            552,
            "5.3.4",
            format!(
                "message larger than the limit of {limit} octets (inbound.smtp.max_message_size)"
            ),
        );
        let detail = format!(
            "from peer {} envelope sender <{}>: {}",
            envelope.peer, envelope.mail_from, reply.text
        );
        if let Err(e) = relay
            .spool
            .audit(relay.clock.now(), "rejected", None, None, &detail)
        {
            return Outcome::tempfail(format!("cannot write the audit record: {e}"));
        }
        return Outcome::from_reply(&reply);
    }
    let raw = to_crlf(strip_mbox_from(&raw));
    let reply = Intake::for_one_mail(relay).process_under(snapshot, &envelope, &raw, None);
    Outcome::from_reply(&reply)
}

/// The client address as given, if it is one (an IP address); otherwise
/// a mark that it was not, so no argument text reaches the audit trail.
fn printable_client(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => "(not an IP address)".to_owned(),
    }
}

/// Drops a leading mbox `From ` envelope line (Postfix `pipe` flag `F`).
fn strip_mbox_from(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match raw.iter().position(|b| *b == b'\n') {
            Some(end) => &raw[end + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_line_ends_become_crlf_once() {
        assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_crlf(b"a\r\n"), b"a\r\n");
        assert_eq!(strip_mbox_from(b"From x@y Mon\nFrom: a\n"), b"From: a\n");
        assert_eq!(strip_mbox_from(b"From: a\n"), b"From: a\n");
    }

    #[test]
    fn replies_map_to_sysexits() {
        let code = |c, e| Outcome::from_reply(&Reply::new(c, e, "x")).code;
        assert_eq!(code(250, "2.0.0"), EX_OK);
        assert_eq!(code(451, "4.3.0"), EX_TEMPFAIL);
        assert_eq!(code(550, "5.7.1"), EX_NOPERM);
        assert_eq!(code(554, "5.6.0"), EX_DATAERR);
    }
}
