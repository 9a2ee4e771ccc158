//! Delivery status notifications (RFC 3464): whether a mail is one, and
//! what its per-recipient fields say. Only the `message/delivery-status`
//! part is read; the returned message or its header (`text/rfc822-headers`,
//! `message/rfc822`) is never looked at, logged or kept.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// One recipient's report in a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub action: String,
    /// The status code (`5.1.1`).
    pub status: String,
    /// The remote server's answer (`smtp; 550 5.1.1 no such user`), unfolded.
    pub diagnostic: String,
}

/// Lines of the status part read at most; fields of one block at most.
const MAX_LINES: usize = 1000;

/// The recipients' reports of `raw` when it is a delivery status
/// notification (`multipart/report; report-type=delivery-status` with a
/// `message/delivery-status` part); `None` when it is not one.
pub fn read(raw: &[u8]) -> Option<Vec<Status>> {
    let msg = MessageParser::new().parse(raw)?;
    let root = msg.root_part();
    let report = root.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("multipart")
            && c.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && c.attribute("report-type").is_some_and(|t| {
                t.eq_ignore_ascii_case("delivery-status")
                    || t.eq_ignore_ascii_case("global-delivery-status")
            })
    });
    if !report {
        return None;
    }
    let PartType::Multipart(children) = &root.body else {
        return None;
    };
    let status_part = children.iter().filter_map(|i| msg.part(*i)).find(|p| {
        p.content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("message")
                && c.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("delivery-status")
                        || s.eq_ignore_ascii_case("global-delivery-status")
                })
        })
    })?;
    let body = msg
        .raw_message()
        .get(status_part.raw_body_offset() as usize..status_part.raw_end_offset() as usize)?;
    Some(fields(&String::from_utf8_lossy(body)))
}

/// The per-recipient blocks of a `message/delivery-status` body: blocks
/// of header-like fields separated by blank lines, the first the message's.
fn fields(body: &str) -> Vec<Status> {
    let mut blocks: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in body.lines().take(MAX_LINES) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !blocks.last().is_some_and(Vec::is_empty) {
                blocks.push(Vec::new());
            }
            continue;
        }
        let block = blocks.last_mut().expect("one block at least");
        if line.starts_with([' ', '\t']) {
            // A folded line continues the field before it.
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let get = |block: &[(String, String)], name: &str| {
        block
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    blocks
        .iter()
        .skip(1)
        .filter(|b| b.iter().any(|(n, _)| n == "action"))
        .map(|b| Status {
            action: get(b, "action").to_ascii_lowercase(),
            status: get(b, "status"),
            diagnostic: get(b, "diagnostic-code"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounce as Postfix writes it (`bounce_size_limit = 1`: the header
    /// of the returned message only).
    const POSTFIX: &str = "From: MAILER-DAEMON@mx.example (Mail Delivery System)\r\n\
To: list+bounce-0123456789abcdef01234567@lists.example.org\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"8A5B1C0.1733320000/mx.example\"\r\n\
\r\n\
This is a MIME-encapsulated message.\r\n\
\r\n\
--8A5B1C0.1733320000/mx.example\r\n\
Content-Description: Notification\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not\r\n\
be delivered to one or more recipients.\r\n\
\r\n\
--8A5B1C0.1733320000/mx.example\r\n\
Content-Description: Delivery report\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example\r\n\
X-Postfix-Queue-ID: 8A5B1C0\r\n\
Arrival-Date: Wed,  4 Dec 2026 14:00:00 +0000 (UTC)\r\n\
\r\n\
Final-Recipient: rfc822; gone@distro.example\r\n\
Original-Recipient: rfc822;gone@distro.example\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; mail.distro.example\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <gone@distro.example>: Recipient address\r\n\
\x20   rejected: User unknown\r\n\
\r\n\
--8A5B1C0.1733320000/mx.example\r\n\
Content-Description: Undelivered Message Headers\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Subject: [embargoed announcement]\r\n\
\r\n\
--8A5B1C0.1733320000/mx.example--\r\n";

    #[test]
    fn a_postfix_bounce_is_read_field_by_field() {
        let got = read(POSTFIX.as_bytes()).expect("a DSN");
        assert_eq!(
            got,
            [Status {
                action: "failed".into(),
                status: "5.1.1".into(),
                diagnostic: "smtp; 550 5.1.1 <gone@distro.example>: Recipient address rejected: User unknown".into(),
            }]
        );
    }

    #[test]
    fn what_is_no_notification_is_not_read_as_one() {
        for raw in [
            "Subject: hi\r\n\r\nAction: failed\r\n".to_owned(),
            POSTFIX.replace(
                "report-type=delivery-status",
                "report-type=disposition-notification",
            ),
            POSTFIX.replace("message/delivery-status", "text/plain"),
        ] {
            assert_eq!(read(raw.as_bytes()), None, "{raw}");
        }
        // A delay is reported as such, not as a failure.
        let delayed = POSTFIX.replace("Action: failed", "Action: Delayed");
        assert_eq!(read(delayed.as_bytes()).unwrap()[0].action, "delayed");
    }
}
