//! Outbound: assembles each member's RFC 3156 `multipart/encrypted` copy
//! (real Subject only inside, as a protected header) and sends it through
//! the smarthost, one SMTP envelope per member, over kept connections
//! that pipeline ([`smtp`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::message::header::{self, Headers};
use lettre::message::{Mailbox, Mailboxes};

use crate::config::OutboundConfig;
use crate::crypto::random_hex;
use crate::secret::Secret;

mod smtp;

/// The outer Subject of every member copy: it says nothing about the content.
pub(crate) const PLACEHOLDER_SUBJECT: &str = "[embargoed announcement]";

/// The outer Subject of a member's post relayed to the list.
pub(crate) const POST_SUBJECT: &str = "[embargoed list post]";

/// The outer Subject of a receipt to the PST.
pub(crate) const RECEIPT_SUBJECT: &str = "[embargo-relay receipt]";

/// The outer Subject of a reminder to the PST before an embargo lifts.
pub(crate) const REMINDER_SUBJECT: &str = "[embargo-relay reminder]";

/// Outer Subject of a member's reminder to acknowledge an embargo.
pub(crate) const ACK_REMINDER_SUBJECT: &str = "[embargo-relay acknowledgement reminder]";

/// The outer Subject of a refusal sent to the PST.
pub(crate) const REFUSAL_SUBJECT: &str = "[embargo-relay refusal]";

/// The outer Subject of a notice from the list (the weekly key check).
pub(crate) const NOTICE_SUBJECT: &str = "[embargo-relay notice]";

/// The outer Subject of a member's notice that an embargo has lifted.
pub(crate) const LIFTED_SUBJECT: &str = "[embargo lifted]";

/// The headers one member copy carries, inside and out.
#[derive(Debug, Clone)]
pub(crate) struct CopyHeaders<'a> {
    pub list: &'a str,
    pub member: &'a str,
    /// Without angle brackets; stable across retries of the same copy.
    pub message_id: &'a str,
    pub date: DateTime<Utc>,
}

fn mailbox(addr: &str) -> Result<Mailbox, lettre::address::AddressError> {
    Ok(Mailbox::new(None, addr.parse()?))
}

/// The plaintext that is signed and encrypted for one member: a
/// `multipart/mixed; protected-headers="v1"` entity whose headers carry the
/// real Subject (as Thunderbird reads it) around the PST's signed entity, verbatim.
///
/// `acknowledge`: the embargo id a member copy asks the member to
/// acknowledge (the notice says how).
pub(crate) fn protected_inner(
    h: &CopyHeaders<'_>,
    subject: &str,
    embargo: Option<Notice<'_>>,
    acknowledge: Option<&str>,
    entity: &[u8],
) -> Result<Secret, lettre::address::AddressError> {
    let boundary = loop {
        let b = format!("er-{}", random_hex(12));
        if memchr::memmem::find(entity, b.as_bytes()).is_none() {
            break b;
        }
    };
    let mut headers = Headers::new();
    headers.set(header::From::from(Mailboxes::from(mailbox(h.list)?)));
    headers.set(header::To::from(Mailboxes::from(mailbox(h.member)?)));
    headers.set(header::Subject::from(subject.to_owned()));
    headers.set(header::Date::new(SystemTime::from(h.date)));
    headers.set(header::MessageId::from(format!("<{}>", h.message_id)));
    let mut out = Vec::with_capacity(entity.len() + 1024);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"; protected-headers=\"v1\"\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(headers.to_string().as_bytes());
    if let Some(notice) = embargo {
        let stamp = notice.until.format("%Y-%m-%dT%H:%M:%SZ");
        out.extend_from_slice(format!("Embargo-Until: {stamp}\r\n").as_bytes());
        out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&embargo_notice(&notice, acknowledge));
    }
    out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    out.extend_from_slice(entity);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Secret::new(out))
}

/// What the part that opens a copy says: when the embargo lifts, and for a
/// member's copy of an announcement, the PST's terms and the digests of
/// its attachments.
#[derive(Clone, Copy)]
pub(crate) struct Notice<'a> {
    pub until: DateTime<Utc>,
    /// The announcement whose copy this is (`None`: the PST's receipts and
    /// reminders, which carry no terms or attachments of their own).
    pub announcement: Option<&'a crate::record::Record>,
}

/// The part every copy opens with: when the embargo lifts, in UTC; the
/// PST's terms (deployment, sharing) and each attachment's SHA-256, so a
/// member can check a patch it passed on; how to acknowledge it.
fn embargo_notice(notice: &Notice<'_>, acknowledge: Option<&str>) -> Vec<u8> {
    let until = notice.until;
    let mut terms = String::new();
    if let Some(a) = notice.announcement {
        if let Some(d) = &a.terms.deployment {
            terms.push_str(&format!("\n{}\n", d.describe()));
        }
        if let Some(tlp) = a.terms.tlp {
            terms.push_str(&format!("\n{}\n", tlp.describe()));
        }
        let digests = a.attachment_digests();
        if !digests.is_empty() {
            terms.push_str(
                "\nAttachments, with their SHA-256 (check a file you pass on with `sha256sum`):\n",
            );
            for (name, digest) in digests {
                terms.push_str(&format!("  {digest}  {name}\n"));
            }
        }
    }
    let ack = acknowledge.map_or_else(String::new, |id| {
        format!(
            "\nPlease acknowledge that you received it and accept the embargo: reply to this message, signed and encrypted as for a post, with this as the first line of your text:\n\nAcknowledge: {id}\n\nThe list records it and tells the security team; it is not sent to the other members.\n"
        )
    });
    crate::entity::text_plain_with(
        &[("Content-Description", "embargo notice")],
        &format!(
            "EMBARGOED until {} UTC ({}).\nDo not share this beyond need-to-know until then.\n{terms}{ack}",
            until.format("%Y-%m-%d %H:%M"),
            until.format("%Y-%m-%dT%H:%M:%SZ"),
        ),
    )
}

/// A message as it goes on the wire, in three parts: its own head and
/// tail around a middle that many messages share (a copy's armor lines of
/// the announcement's ciphertext, [`crate::crypto::ArmoredCopy`]), sent
/// from where it is, never copied into each message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wire {
    pub head: Vec<u8>,
    pub shared: Arc<Vec<u8>>,
    pub tail: Vec<u8>,
}

impl Wire {
    pub(crate) fn parts(&self) -> [&[u8]; 3] {
        [&self.head, &self.shared, &self.tail]
    }

    pub(crate) fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    /// The whole message in one buffer.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

impl From<Vec<u8>> for Wire {
    fn from(head: Vec<u8>) -> Wire {
        Wire {
            head,
            ..Wire::default()
        }
    }
}

/// The message that goes on the wire: RFC 3156 `multipart/encrypted` with
/// the neutral placeholder Subject and only this member as recipient.
pub(crate) fn encrypted_outer(
    h: &CopyHeaders<'_>,
    outer_subject: &str,
    armored: crate::crypto::ArmoredCopy,
) -> anyhow::Result<Wire> {
    // Built by hand around the armor, which is already 7-bit with CRLF
    // line ends: lettre's body handling copies and rescans a 1 MB armor
    // several times (and its line-end conversion is quadratic).
    // (Sequoia's armor, all in `head`, has bare LFs; the list's own is
    // CRLF already.)
    let crlf = |part: Vec<u8>| {
        if crate::lines::crlf_only(&part) {
            part
        } else {
            crate::entity::to_crlf(&part)
        }
    };
    let boundary = format!("er-{}", random_hex(12));
    let mut head = outer_headers(h, outer_subject)?;
    head.extend_from_slice(
        format!(
            "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{boundary}\"\r\n\r\n\
This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
--{boundary}\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n\
--{boundary}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n"
        )
        .as_bytes(),
    );
    head.extend_from_slice(&crlf(armored.head));
    let mut tail = crlf(armored.tail);
    let whole_ends_crlf = if !tail.is_empty() {
        tail.ends_with(b"\r\n")
    } else if !armored.shared.is_empty() {
        armored.shared.ends_with(b"\r\n")
    } else {
        head.ends_with(b"\r\n")
    };
    if !whole_ends_crlf {
        tail.extend_from_slice(b"\r\n");
    }
    tail.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(Wire {
        head,
        shared: armored.shared,
        tail,
    })
}

/// The neutral outer header of a member's copy: From the list, To that
/// member alone, the placeholder Subject, Date, Message-ID, MIME-Version.
fn outer_headers(h: &CopyHeaders<'_>, outer_subject: &str) -> anyhow::Result<Vec<u8>> {
    let mut headers = Headers::new();
    headers.set(header::From::from(Mailboxes::from(mailbox(h.list)?)));
    headers.set(header::To::from(Mailboxes::from(mailbox(h.member)?)));
    headers.set(header::Subject::from(outer_subject.to_owned()));
    headers.set(header::Date::new(SystemTime::from(h.date)));
    headers.set(header::MessageId::from(format!("<{}>", h.message_id)));
    headers.set(header::MIME_VERSION_1_0);
    Ok(headers.to_string().into_bytes())
}

/// An S/MIME member's message on the wire: `application/pkcs7-mime;
/// smime-type=enveloped-data` (`der`, to this member alone) under the
/// neutral placeholder Subject.
pub(crate) fn smime_outer(
    h: &CopyHeaders<'_>,
    outer_subject: &str,
    der: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut out = outer_headers(h, outer_subject)?;
    out.extend_from_slice(&crate::crypto::smime::enveloped_part(der));
    Ok(out)
}

/// The public advisory as it goes to a public list once the embargo lifts:
/// plaintext, RFC 3156 `multipart/signed` by the list key, the real Subject.
pub(crate) fn public_release(
    h: &CopyHeaders<'_>,
    subject: &str,
    advisory: &str,
    sign: impl FnOnce(&[u8]) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let part = crate::entity::text_plain_signable(advisory);
    let signature = sign(&part)?;
    let (content_type, body) = crate::entity::signed_body(&part, &signature);
    let mut headers = Headers::new();
    headers.set(header::From::from(Mailboxes::from(mailbox(h.list)?)));
    headers.set(header::To::from(Mailboxes::from(mailbox(h.member)?)));
    headers.set(header::Subject::from(public_subject(subject)));
    headers.set(header::Date::new(SystemTime::from(h.date)));
    headers.set(header::MessageId::from(format!("<{}>", h.message_id)));
    headers.set(header::MIME_VERSION_1_0);
    let mut out = headers.to_string().into_bytes();
    out.extend_from_slice(format!("Content-Type: {content_type}\r\n\r\n").as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The announcement's Subject without a leading `[EMBARGOED]` tag, which
/// is no longer true once the advisory is public.
fn public_subject(subject: &str) -> String {
    const TAG: &str = "[embargoed]";
    let trimmed = subject.trim_start();
    match trimmed.get(..TAG.len()) {
        Some(head) if head.eq_ignore_ascii_case(TAG) => {
            trimmed[TAG.len()..].trim_start().to_owned()
        }
        _ => subject.to_owned(),
    }
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub(crate) struct SendError {
    /// A 5xx answer: trying again will not help.
    pub permanent: bool,
    pub detail: String,
}

/// Connections to the smarthost, kept open between deliveries: a fan-out
/// to thousands of members does not pay a TCP and SMTP handshake per copy.
/// Each has `TCP_NODELAY`, and pipelines when the smarthost offers it
/// ([`smtp`]).
#[derive(Clone)]
pub(crate) struct Outbound {
    pool: Arc<Pool>,
}

struct Pool {
    host: String,
    port: u16,
    /// For each step (connect, greeting) and, with an allowance per
    /// megabyte, for a whole transaction.
    timeout: Duration,
    hello: String,
    idle: std::sync::Mutex<Vec<(smtp::Connection, std::time::Instant)>>,
    max_idle: usize,
}

/// An idle connection older than this is closed rather than reused.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

impl Outbound {
    pub(crate) fn new(cfg: &OutboundConfig, hostname: &str) -> Outbound {
        Outbound {
            pool: Arc::new(Pool {
                host: cfg.host.clone(),
                port: cfg.port,
                timeout: cfg.timeout,
                hello: hostname.to_owned(),
                idle: std::sync::Mutex::new(Vec::new()),
                // All three lanes (copies, lifted notices, releases).
                max_idle: cfg.concurrency * 3,
            }),
        }
    }

    /// Sends one message to one recipient; returns the server's final answer.
    pub(crate) async fn send(
        &self,
        from: &str,
        to: &str,
        message: &Wire,
    ) -> Result<String, SendError> {
        // Addresses go into SMTP commands: only well-formed ones.
        for (what, addr) in [("sender", from), ("recipient", to)] {
            addr.parse::<lettre::Address>().map_err(|e| SendError {
                permanent: true,
                detail: format!("bad {what} address: {e}"),
            })?;
        }
        let transient = |detail: String| SendError {
            permanent: false,
            detail,
        };
        // One deadline for finding a connection and the whole transaction,
        // so a stalled smarthost cannot hold a delivery (or a shutdown) for
        // ever: the per-step timeout twice, and a second per MiB.
        let allowance = self.pool.timeout * 2 + Duration::from_secs(message.len() as u64 >> 20);
        let deadline = tokio::time::Instant::now() + allowance;
        // A kept connection that breaks before the message is written has
        // delivered nothing: the copy goes at once on a fresh one.
        let mut fresh_only = false;
        loop {
            let (conn, reused) = tokio::time::timeout_at(deadline, async {
                match (!fresh_only).then(|| self.pool.take()).flatten() {
                    Some(conn) => Ok((conn, true)),
                    None => self.pool.connect().await.map(|c| (c, false)),
                }
            })
            .await
            .map_err(|_| transient("no connection to the smarthost in time".to_owned()))?
            .map_err(transient)?;
            let mut conn = conn;
            // Each step of the transaction ends by the deadline (the
            // client's own timers); a refusal is known even when ending
            // its transaction did not finish in time.
            match conn.send(from, to, message, deadline).await {
                Ok(reply) => {
                    self.pool.put(conn);
                    return Ok(reply.to_string());
                }
                Err(smtp::Failure::Refused(reply)) => {
                    self.pool.put(conn);
                    return Err(SendError {
                        permanent: reply.code >= 500,
                        detail: format!("the smarthost answered {reply}"),
                    });
                }
                Err(smtp::Failure::Broken { detail, unsent }) => {
                    // Not reused: the server's transaction state is unknown.
                    if unsent && reused && !fresh_only {
                        tracing::debug!(%detail, "a kept smarthost connection broke before the message: sending on a fresh one");
                        fresh_only = true;
                        continue;
                    }
                    return Err(transient(detail));
                }
            }
        }
    }
}

impl Pool {
    /// An idle connection the smarthost has not closed, if there is one:
    /// one it dropped (a 421, a restart) is never handed out, so it cannot
    /// turn a delivery, or a release, into a retry later. Asked of the
    /// socket ([`smtp::Connection::is_stale`]), not by a round trip.
    fn take(&self) -> Option<smtp::Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() <= IDLE_LIMIT && !conn.is_stale() {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    fn put(&self, conn: smtp::Connection) {
        if conn.is_stale() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, std::time::Instant::now()));
        } else {
            tokio::spawn(conn.quit());
        }
    }

    async fn connect(&self) -> Result<smtp::Connection, String> {
        smtp::Connection::open(&self.host, self.port, &self.hello, self.timeout).await
    }
}

/// Exponential backoff: `initial × 2^attempts`, at most `max`.
pub(crate) fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    initial.saturating_mul(1u32 << attempts.min(20)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every octet that is not printable text (each control octet, DEL,
    /// 8-bit) makes the advisory's part base64, never a raw octet under
    /// 7bit; printable ASCII stays 7bit. Either way it decodes to the text.
    #[test]
    fn an_advisory_with_a_control_octet_is_sent_base64() {
        use base64::Engine;
        let odd = (0u8..0x20)
            .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
            .chain([0x7f])
            .map(char::from)
            .chain(['é', '\u{80}']);
        let cases = odd
            .map(|c| (format!("Fixed in 1.2.{c}3.\n"), false))
            .chain([("Fixed in 1.2.3.\tUpgrade.\n".to_owned(), true)]);
        for (text, seven_bit) in cases {
            let part = String::from_utf8(crate::entity::text_plain_signable(&text)).unwrap();
            let (head, body) = part.split_once("\r\n\r\n").unwrap();
            assert!(
                body.bytes()
                    .all(|b| matches!(b, b'\t' | b'\r' | b'\n' | 0x20..=0x7e)),
                "{text:?}: a raw octet in {part:?}"
            );
            if seven_bit {
                assert!(head.ends_with("7bit"), "{part:?}");
                assert_eq!(body, text.replace('\n', "\r\n"));
            } else {
                assert!(head.ends_with("base64"), "{text:?}: {part:?}");
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(body.replace("\r\n", ""))
                    .unwrap();
                assert_eq!(decoded, text.replace('\n', "\r\n").into_bytes());
            }
        }
    }

    /// Sends go over one kept connection (counted by a forwarding proxy in
    /// front of the capture sink); one that the server dropped while idle
    /// is noticed and replaced, and nothing is lost.
    #[tokio::test(flavor = "multi_thread")]
    async fn connections_are_kept_reused_and_replaced_when_dropped() {
        use std::sync::atomic::Ordering;
        let sink = crate::sink::CaptureSink::start().await.unwrap();
        // Each connection is forwarded; `cut` drops the first one.
        let cut = tokio_util::sync::CancellationToken::new();
        let cutter = cut.clone();
        let (port, accepted) = counting_proxy(sink.addr(), move |first, mut client, mut server| {
            let cut = cutter.clone();
            async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut.cancelled(), if first => {}
                }
            }
        })
        .await;
        let (out, mail) = (outbound_to(port), Wire::from(MAIL.to_vec()));
        for _ in 0..5 {
            out.send("a@example.org", "b@example.org", &mail)
                .await
                .unwrap();
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for five mails"
        );
        // The server side goes away right after the last use.
        cut.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        out.send("a@example.org", "b@example.org", &mail)
            .await
            .unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a fresh connection replaced it"
        );
        assert_eq!(sink.count(), 6);
    }

    /// A kept connection that looks open but breaks when the next copy's
    /// commands arrive (the smarthost died without closing it) has
    /// delivered nothing: the copy goes at once on a fresh connection, not
    /// into a retry minutes later, and arrives once.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_kept_connection_that_breaks_before_the_message_is_replaced_at_once() {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sink = crate::sink::CaptureSink::start().await.unwrap();
        // The first connection is cut, unanswered, at its second MAIL.
        let (port, accepted) = counting_proxy(sink.addr(), |first, client, server| async move {
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let back = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let mut mails = 0;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = cr.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                mails += memchr::memmem::find_iter(&buf[..n], b"MAIL FROM").count();
                if first && mails >= 2 {
                    back.abort();
                    return;
                }
                sw.write_all(&buf[..n]).await.unwrap();
            }
        })
        .await;
        let (out, mail) = (outbound_to(port), Wire::from(MAIL.to_vec()));
        for _ in 0..2 {
            out.send("a@example.org", "b@example.org", &mail)
                .await
                .unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a fresh connection");
        assert_eq!(sink.count(), 2, "each copy once");
    }

    /// A proxy on loopback in front of `target`: each connection it takes
    /// is counted, connected to `target`, and handed to `relay` with
    /// whether it is the first. Its port, and the count.
    async fn counting_proxy<F, Fut>(
        target: std::net::SocketAddr,
        relay: F,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>)
    where
        F: Fn(bool, tokio::net::TcpStream, tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = proxy.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = proxy.accept().await.unwrap();
                let first = count.fetch_add(1, Ordering::SeqCst) == 0;
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                tokio::spawn(relay(first, client, server));
            }
        });
        (port, accepted)
    }

    const MAIL: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n";

    /// The pool, in front of a smarthost on loopback at `port`.
    fn outbound_to(port: u16) -> Outbound {
        let cfg = OutboundConfig {
            host: "127.0.0.1".into(),
            port,
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            retry_lifetime: Duration::from_secs(60),
            concurrency: 2,
        };
        Outbound::new(&cfg, "relay.example.org")
    }

    fn headers() -> CopyHeaders<'static> {
        CopyHeaders {
            list: "list@example.org",
            member: "m@example.net",
            message_id: "abc.def@example.org",
            date: DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn outer_copy_is_rfc3156_with_a_neutral_subject() {
        let out = encrypted_outer(
            &headers(),
            PLACEHOLDER_SUBJECT,
            crate::crypto::ArmoredCopy::whole(
                b"-----BEGIN PGP MESSAGE-----\n\nwcBM\n-----END PGP MESSAGE-----\n".to_vec(),
            ),
        )
        .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains("Subject: [embargoed announcement]\r\n"),
            "{text}"
        );
        assert!(text.contains("multipart/encrypted"), "{text}");
        assert!(
            text.contains("protocol=\"application/pgp-encrypted\""),
            "{text}"
        );
        assert!(text.contains("Version: 1"), "{text}");
        assert!(text.contains("Message-ID: <abc.def@example.org>"), "{text}");
        assert!(text.contains("To: m@example.net"), "{text}");
    }

    #[test]
    fn inner_carries_the_real_subject_as_a_protected_header() {
        let until = DateTime::parse_from_rfc3339("2026-12-01T18:30:00+02:00")
            .unwrap()
            .into();
        let inner = protected_inner(
            &headers(),
            "CVE-2026-1234: kubelet ünïcode",
            Some(Notice {
                until,
                announcement: None,
            }),
            None,
            b"Content-Type: text/plain\r\n\r\nbody",
        )
        .unwrap();
        let text = String::from_utf8(inner.expose().to_vec()).unwrap();
        assert!(
            !text.contains("Deployment") && !text.contains("SHA-256"),
            "{text}"
        );
        let text = String::from_utf8(inner.expose().to_vec()).unwrap();
        assert!(
            text.contains("Embargo-Until: 2026-12-01T16:30:00Z\r\n"),
            "{text}"
        );
        assert!(
            text.contains("EMBARGOED until 2026-12-01 16:30 UTC"),
            "{text}"
        );
        assert!(
            text.starts_with("Content-Type: multipart/mixed; boundary=\"er-"),
            "{text}"
        );
        assert!(text.contains("protected-headers=\"v1\""));
        assert!(
            text.contains("kubelet =?utf-8?b?"),
            "non-ASCII subject must be RFC 2047 encoded: {text}"
        );
        assert!(text.contains("\r\n\r\n--er-"));
        assert!(text.contains("Content-Type: text/plain\r\n\r\nbody\r\n--er-"));
    }

    /// A member's copy opens with the PST's terms and each attachment's
    /// digest, whatever the terms: none, each kind, all together.
    #[test]
    fn the_notice_states_the_terms_and_the_attachments() {
        use crate::embargo::{Deployment, Tlp};
        let until: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-01T16:30:00Z")
            .unwrap()
            .into();
        let entity = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nEmbargo-Until: 2026-12-01T16:30:00Z\r\n\r\nx\r\n--b\r\nContent-Type: text/x-diff\r\nContent-Disposition: attachment; filename=\"fix.patch\"\r\n\r\n+fixed\r\n--b--\r\n";
        let digest = crate::crypto::sha256_hex(b"+fixed").to_ascii_lowercase();
        for (deployment, tlp, says) in [
            (None, None, vec![]),
            (Some(Deployment::Allowed), None, vec!["embargo: ALLOWED"]),
            (
                Some(Deployment::Forbidden),
                Some(Tlp::Red),
                vec!["embargo: FORBIDDEN", "Sharing: TLP:RED: for you alone"],
            ),
            (
                Some(Deployment::Terms("hosted providers may deploy".into())),
                Some(Tlp::AmberStrict),
                vec![
                    "states it: hosted providers may deploy",
                    "Sharing: TLP:AMBER+STRICT",
                ],
            ),
        ] {
            let mut a = crate::record::Record::unembargoed(
                "FPR".into(),
                "pst@example.org".into(),
                "s".into(),
                Secret::new(entity.to_vec()),
                until,
            );
            a.terms.deployment = deployment.clone();
            a.terms.tlp = tlp;
            let notice = Notice {
                until,
                announcement: Some(&a),
            };
            let inner =
                protected_inner(&headers(), "s", Some(notice), Some("id1"), entity).unwrap();
            let text = String::from_utf8(inner.expose().to_vec()).unwrap();
            assert!(
                text.contains("EMBARGOED until 2026-12-01 16:30 UTC"),
                "{text}"
            );
            for said in &says {
                assert!(
                    text.contains(said),
                    "{deployment:?} {tlp:?}: {said}: {text}"
                );
            }
            assert_eq!(text.contains("Deployment during"), deployment.is_some());
            assert_eq!(text.contains("Sharing: TLP"), tlp.is_some());
            assert!(
                text.contains(&format!("  {digest}  fix.patch\r\n")),
                "{text}"
            );
        }
    }

    #[test]
    fn public_subject_drops_the_embargo_tag_only() {
        assert_eq!(public_subject("[EMBARGOED] CVE-1: x"), "CVE-1: x");
        assert_eq!(public_subject("[Embargoed]CVE-1"), "CVE-1");
        assert_eq!(
            public_subject("CVE-1: [EMBARGOED] stays"),
            "CVE-1: [EMBARGOED] stays"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (i, m) = (Duration::from_secs(300), Duration::from_secs(3600));
        assert_eq!(backoff(i, m, 0), Duration::from_secs(300));
        assert_eq!(backoff(i, m, 1), Duration::from_secs(600));
        assert_eq!(backoff(i, m, 10), m);
        assert_eq!(backoff(i, m, 400), m);
    }
}
