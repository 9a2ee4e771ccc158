//! Delivery status notifications that come back to a delivery's own
//! envelope sender (`<list>+bounce-<copy id>@<domain>`): recorded against
//! that delivery, never relayed, never answered, their returned content
//! never read.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::mail::{Envelope, Reply};

use super::rejection::Rejection;
use super::{Intake, dsn, printable, try_later};

/// The remote diagnostic as kept: printable, at most this many characters.
const DIAGNOSTIC_CHARS: usize = 300;

/// The copy id a mail is a bounce for: its envelope recipient's, or, for a
/// mail fetched from a mailbox (whose envelope is the list's address), the
/// bounce address its header names (`To`, `Delivered-To`, `X-Original-To`).
pub(super) fn bounce_token(config: &Config, envelope: &Envelope, raw: &[u8]) -> Option<String> {
    if let Some(token) = envelope.rcpt_to.iter().find_map(|r| config.bounce_token(r)) {
        return Some(token);
    }
    // Cheap first: no "+bounce-" in the header, no bounce.
    let header_end = memchr::memmem::find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    memchr::memmem::find(&raw[..header_end], b"+bounce-")?;
    let message = mail_parser::MessageParser::new().parse_headers(raw)?;
    message.headers().iter().find_map(|h| {
        let name = h.name.as_str();
        if !["to", "delivered-to", "x-original-to"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        let addresses: Vec<String> = match &h.value {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::Address(a) => a
                .iter()
                .filter_map(|a| a.address.as_deref().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        addresses
            .iter()
            .find_map(|a| config.bounce_token(a.trim().trim_matches(['<', '>'])))
    })
}

impl Intake {
    /// Records a delivery status notification for the delivery `token`
    /// names: a failure marks it bounced (and the PST gets a fresh
    /// receipt); a delay or success is noted; one that names no delivery
    /// of this list is dropped with a record. Answered 250 in each case: a
    /// sender learns nothing of which tokens exist.
    pub(super) fn bounce(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        token: &str,
        now: DateTime<Utc>,
    ) -> Reply {
        // The same bounds on its structure as any mail, before it is read.
        if let Err(rejection) = super::mime::check_entity(raw, &self.config().policy.mime) {
            return self.reject(envelope, &rejection, now);
        }
        let Some(reports) = dsn::read(raw) else {
            return self.reject(
                envelope,
                &Rejection::Malformed(
                    "a bounce address takes delivery status notifications (multipart/report) only",
                ),
                now,
            );
        };
        let peer = format!(
            "from peer {} envelope sender <{}>",
            envelope.peer,
            printable(&envelope.mail_from)
        );
        let spool = &self.relay().spool;
        let Some(failed) = reports.iter().find(|r| r.action == "failed") else {
            let actions: Vec<&str> = reports.iter().map(|r| r.action.as_str()).collect();
            let detail = format!(
                "{peer}: a delivery status notification for copy {token} ({}): nothing to record",
                printable(&actions.join(", "))
            );
            if let Err(e) = spool.audit(now, "dsn", None, None, &detail) {
                tracing::error!(error = %e, "cannot write the audit record of a notification");
                return try_later();
            }
            return Reply::new(250, "2.0.0", "delivery status notification noted");
        };
        let diagnostic: String = printable(&format!("{} {}", failed.status, failed.diagnostic))
            .trim()
            .chars()
            .take(DIAGNOSTIC_CHARS)
            .collect();
        match spool.bounced(token, &diagnostic, now) {
            Ok(Some((message_id, member, kind))) => {
                tracing::warn!(%message_id, %member, kind = ?kind, "a delivery bounced after the smarthost took it");
                // A receipt may be due now.
                self.relay().wake.notify_one();
                Reply::new(250, "2.0.0", "delivery status notification recorded")
            }
            Ok(None) => {
                let detail = format!(
                    "{peer}: a delivery status notification for copy {token}, which names no delivery of this list: dropped"
                );
                tracing::warn!(peer = %envelope.peer, "a notification for no delivery of this list; dropped");
                if let Err(e) = spool.audit(now, "dsn-dropped", None, None, &detail) {
                    tracing::error!(error = %e, "cannot write the audit record of a notification");
                    return try_later();
                }
                Reply::new(250, "2.0.0", "delivery status notification noted")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record a bounce; answering 451");
                try_later()
            }
        }
    }
}
