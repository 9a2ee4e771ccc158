//! Issue 17, bounces: each delivery goes out with its own envelope sender
//! (`<list>+bounce-<copy id>@<domain>`); a delivery status notification
//! sent back there marks that delivery bounced, with the remote answer, in
//! `status`, `audit` and a fresh receipt to the PST. It is never relayed or
//! answered; one that names no delivery of the list is dropped with a
//! record; what it quotes of the returned message is never kept.

use std::net::SocketAddr;

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::common::*;

/// Sends `raw` from the null sender (as an MTA sends a notification) to `to`.
async fn send_null(addr: SocketAddr, to: &str, raw: &[u8]) -> Result<String, (u16, String)> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .build();
    let envelope = lettre::address::Envelope::new(None, vec![to.parse().unwrap()]).unwrap();
    match transport.send_raw(&envelope, raw).await {
        Ok(r) => Ok(r.message().collect::<Vec<_>>().join(" ")),
        Err(e) => Err((
            e.status().map_or(0, |c| c.to_string().parse().unwrap_or(0)),
            e.to_string(),
        )),
    }
}

/// A notification as Postfix writes one, to `to`, about `member`, quoting
/// `quoted` in the returned header.
pub fn dsn(to: &str, member: &str, quoted: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.distro.example (Mail Delivery System)\r\n\
To: {to}\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"B0UND\"\r\n\
\r\n\
--B0UND\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Your message could not be delivered.\r\n\
\r\n\
--B0UND\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.distro.example\r\n\
\r\n\
Final-Recipient: rfc822; {member}\r\n\
Action: failed\r\n\
Status: 5.2.2\r\n\
Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\
\r\n\
--B0UND\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
Subject: {quoted}\r\n\
\r\n\
--B0UND--\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_marks_its_delivery_and_tells_the_pst() {
    let f = Fixture::new();
    let d = f.start_in_process(&Tweaks::default()).await;
    let mail = f.gpg_signed(PST, "CVE-2026-172: bounce", &embargoed("x"));
    let reply = send(d.addr(), PST, &mail).await.expect("accepted");
    let id = reply.rsplit(' ').next().unwrap().to_owned();
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !receipts(g).is_empty())
        .await;
    // Each copy has its own envelope sender, naming that delivery.
    let copy = copies(&got)
        .into_iter()
        .find(|c| c.envelope.rcpt_to == [GPG_MEMBER])
        .unwrap()
        .clone();
    let sender = copy.envelope.mail_from.clone();
    assert!(from_list(&copy, LIST), "{sender}");
    let senders: std::collections::HashSet<_> = copies(&got)
        .iter()
        .map(|c| c.envelope.mail_from.clone())
        .collect();
    assert_eq!(senders.len(), copies(&got).len(), "one sender per copy");
    let before = d.sink.captured().len();

    // A notification for another token (forged) is dropped with a record.
    let at = sender.find("+bounce-").unwrap() + "+bounce-".len();
    let flipped = if &sender[at..at + 2] == "ff" {
        "00"
    } else {
        "ff"
    };
    let forged = format!("{}{flipped}{}", &sender[..at], &sender[at + 2..]);
    let quoted = "QUOTED-CANARY-77e1";
    let answer = send_null(d.addr(), &forged, &dsn(&forged, GPG_MEMBER, quoted))
        .await
        .expect("answered 250");
    assert!(answer.contains("noted"), "{answer}");
    // The real one marks the copy bounced.
    let answer = send_null(d.addr(), &sender, &dsn(&sender, GPG_MEMBER, quoted))
        .await
        .expect("answered 250");
    assert!(answer.contains("recorded"), "{answer}");
    // A fresh receipt names the member, its organization and the answer.
    let got = d
        .sink
        .wait_until(PATIENCE, |g| !receipts(&g[before..]).is_empty())
        .await;
    let receipt = receipt_texts(&f, &got[before..]).join("\n");
    assert!(
        receipt.contains("BOUNCED")
            && receipt.contains(&format!(
                "{GPG_MEMBER} (Org 1): 5.2.2 smtp; 552 5.2.2 mailbox full"
            )),
        "{receipt}"
    );
    f.wait_until_no_pending().await;
    // Nothing relayed or answered: what went out since is the receipt
    // (and the notices to the members skipped for their keys).
    let since = d.sink.captured();
    for c in &since[before..] {
        assert!(
            find(&c.raw, b"Subject: [embargo-relay receipt]").is_some()
                || find(
                    &c.raw,
                    b"Subject: A message of the list was not sent to you"
                )
                .is_some(),
            "{:?}",
            c.envelope
        );
    }
    let spool = f.spool();
    let row = spool
        .deliveries(Some(&id), Some(GPG_MEMBER))
        .unwrap()
        .into_iter()
        .find(|r| r.kind == embargo_relay::spool::Kind::Copy)
        .unwrap();
    assert_eq!(row.state, embargo_relay::spool::DeliveryState::Bounced);
    let audit = spool.audit_records().unwrap();
    assert!(audit.iter().any(|r| r.event == "bounced"
        && r.member.as_deref() == Some(GPG_MEMBER)
        && r.detail.contains("552 5.2.2 mailbox full")));
    assert!(audit.iter().any(|r| r.event == "dsn-dropped"));
    assert!(
        audit.iter().all(|r| !r.detail.contains(quoted)),
        "the returned header is never kept"
    );
    // status says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_embargo-relay"))
        .args(["status", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 bounced") && text.contains(GPG_MEMBER) && text.contains("bounced"),
        "{text}"
    );
    // A notification is held to the same MIME bounds as any mail.
    let mut many = String::from(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"M\"\r\n\r\n",
    );
    for _ in 0..100 {
        many.push_str("--M\r\nContent-Type: text/plain\r\n\r\nx\r\n");
    }
    many.push_str("--M--\r\n");
    let (code, text) = send_null(d.addr(), &sender, many.as_bytes())
        .await
        .unwrap_err();
    assert!(code == 554 && text.contains("mime_max_parts"), "{text}");
    // Mail to a bounce address that is no notification is refused.
    let (code, _) = send_to(d.addr(), PST, &sender, b"Subject: hi\r\n\r\nhello\r\n")
        .await
        .unwrap_err();
    assert_eq!(code, 554);
    d.stop().await;
}
