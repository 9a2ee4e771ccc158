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
    // Held to the bounds before its header is read (else it goes on to
    // the intake's checks, which refuse it for them).
    super::mime::check_entity(raw, &config.policy.mime).ok()?;
    let message = mail_parser::MessageParser::new().parse_headers(raw)?;
    message.headers().iter().find_map(|h| {
        let name = h.name.as_str();
        if !["to", "delivered-to", "x-original-to"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        super::mime::header_addresses(&h.value)
            .iter()
            .find_map(|a| config.bounce_token(a))
    })
}

impl Intake {
    /// Records a delivery status notification for the delivery `token`
    /// names: a failure marks it bounced (and, for a copy, the PST gets a
    /// fresh receipt); anything else is noted. One that names no delivery
    /// of this list is dropped with a record. Answered 250 in each case: a
    /// sender learns nothing of which tokens exist. Held to the MIME
    /// bounds and the bare-CR rule of any mail; a parser panic refuses it.
    pub(super) fn bounce(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        token: &str,
        now: DateTime<Utc>,
    ) -> Reply {
        if crate::lines::has_bare_cr(raw) {
            return self.reject(
                envelope,
                &Rejection::Malformed("bare CR in the message; lines must end in CRLF"),
                now,
            );
        }
        let limits = self.config().policy.mime;
        let read = std::panic::catch_unwind(|| {
            super::mime::check_entity(raw, &limits).map(|()| dsn::read(raw))
        });
        let reports = match read {
            Ok(Ok(Some(reports))) => reports,
            Ok(Err(rejection)) => return self.reject(envelope, &rejection, now),
            Ok(Ok(None)) => {
                return self.reject(
                    envelope,
                    &Rejection::Malformed(
                        "a bounce address takes delivery status notifications (multipart/report) only",
                    ),
                    now,
                );
            }
            Err(_) => {
                tracing::error!("reading a delivery status notification panicked; refusing it");
                return self.reject(
                    envelope,
                    &Rejection::Malformed("the notification could not be read (internal error)"),
                    now,
                );
            }
        };
        let peer = format!(
            "from peer {} envelope sender <{}>",
            envelope.peer,
            printable(&envelope.mail_from)
        );
        let noted = || Reply::new(250, "2.0.0", "delivery status notification noted");
        // Counted like rejections, so junk cannot grow the trail.
        let record = |event: &str, detail: String| {
            self.tally_or_audit(
                now,
                (event, &super::peer_host(&envelope.peer), event),
                None,
                &detail,
            );
        };
        let failed = reports.iter().find(|r| r.action == "failed");
        let diagnostic: String = failed
            .map(|f| printable(&format!("{} {}", f.status, f.diagnostic)))
            .unwrap_or_default()
            .trim()
            .chars()
            .take(DIAGNOSTIC_CHARS)
            .collect();
        let spool = &self.relay().spool;
        let outcome = if failed.is_some() {
            spool.bounced(token, &diagnostic, now)
        } else {
            // Not a failure: only whether the token is this list's.
            spool
                .bounce_target(token)
                .map(|found| found.map(|(m, to, k)| (m, to, k, false)))
        };
        match outcome {
            Ok(Some((message_id, member, kind, true))) => {
                tracing::warn!(%message_id, %member, kind = ?kind, "a delivery bounced after the smarthost took it");
                // A receipt may be due now.
                self.relay().wake.notify_one();
                Reply::new(250, "2.0.0", "delivery status notification recorded")
            }
            Ok(Some((message_id, _, _, false))) => {
                // Named by the RFC 3464 words alone, never as the mail wrote them.
                let actions: Vec<&str> = reports
                    .iter()
                    .map(|r| match r.action.as_str() {
                        a @ ("failed" | "delayed" | "delivered" | "relayed" | "expanded") => a,
                        _ => "other",
                    })
                    .take(8)
                    .collect();
                let actions = actions.join(", ");
                record(
                    "dsn",
                    format!(
                        "{peer}: a delivery status notification for message {message_id} ({actions}): nothing more to record"
                    ),
                );
                noted()
            }
            Ok(None) => {
                tracing::warn!(peer = %envelope.peer, "a notification for no delivery of this list; dropped");
                record(
                    "dsn-dropped",
                    format!(
                        "{peer}: a delivery status notification whose bounce address names no delivery of this list: dropped"
                    ),
                );
                noted()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record a bounce; answering 451");
                try_later()
            }
        }
    }
}
