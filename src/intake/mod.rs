//! Intake: the handler every kind of mail goes through before the final
//! reply to DATA (or `submit`'s exit code). This file: the `Intake` handler
//! (a snapshot pinned per mail, the same submission again, sealing, one
//! commit-to-reply); the decision itself is `examine.rs`, its kinds of mail
//! are `commands.rs`, `posts.rs`, and rejections are counted in `tally.rs`.

mod bounces;
mod commands;
pub mod dsn;
mod examine;
pub mod mime;
mod posts;
mod rejection;
mod roster_edit;
mod router;
mod tally;
pub(crate) mod verify;

pub use examine::*;
pub use rejection::Rejection;
pub use router::Router;
use tally::*;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::context::{Directory, Relay, Snapshot};
use crate::crypto::random_hex;
use crate::embargo::{PstCommand, TermsError};
use crate::mail::{Envelope, MailHandler, Reply};
use crate::quote::Quoted;
use crate::record::Record;
use crate::spool::{NewMessage, SpoolError};

/// An address from the envelope, fit for the audit trail and a terminal:
/// control characters become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if crate::lines::unseen(c) { '?' } else { c })
        .collect()
}

/// SHA-256 over the envelope (sender, recipients in any case or order) and
/// the bytes (line ends at the very end aside): what makes a submission the
/// same one again.
fn submission_digest(envelope: &Envelope, raw: &[u8]) -> String {
    let mut rcpts: Vec<String> = envelope
        .rcpt_to
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    rcpts.sort();
    let mut input = envelope.mail_from.to_ascii_lowercase().into_bytes();
    input.push(0);
    input.extend_from_slice(rcpts.join(",").as_bytes());
    input.push(0);
    // The end of the data: SMTP's DATA always ends a line, a pipe need not.
    let end = raw
        .iter()
        .rposition(|b| *b != b'\r' && *b != b'\n')
        .map_or(0, |i| i + 1);
    input.extend_from_slice(&raw[..end]);
    crate::crypto::sha256_hex(&input)
}

/// What a peer is counted by (rejections, join requests): its address
/// without the port, an IPv6 address as its /64 (`inbound::peer_key`);
/// `submit`'s peer is the client address Postfix passes.
fn peer_host(peer: &str) -> String {
    let peer = peer.strip_suffix(" (submit)").unwrap_or(peer);
    if let Ok(addr) = peer.parse::<std::net::SocketAddr>() {
        return crate::mail::peer_key_label(addr.ip());
    }
    if let Ok(ip) = peer.parse::<std::net::IpAddr>() {
        return crate::mail::peer_key_label(ip);
    }
    match peer.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_matches(['[', ']']).to_owned()
        }
        _ => peer.to_owned(),
    }
}

/// The answer when the spool cannot take a message now.
fn try_later() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "local error while storing the message; try again later",
    )
}

/// The daemon's mail handler: what the SMTP listener, the IMAP poller and
/// `submit` hand each mail to.
#[derive(Clone)]
pub struct Intake {
    relay: Arc<Relay>,
    /// Shared by the clones, so the whole daemon counts in one window;
    /// `None` in a process that lives for one mail (`submit`), which counts
    /// in the spool instead ([`Spool::tally`]).
    tally: Option<Arc<std::sync::Mutex<Tally>>>,
    /// The configuration and roster this mail is handled under, taken once
    /// when its handling begins ([`Intake::process_fetched`]).
    pinned: Option<Snapshot>,
    /// Where rejections are recorded when they concern no list (a peer the
    /// SMTP listener refused before its mail named one): the daemon's own
    /// audit records. `None`: this list's.
    daemon: Option<crate::spool::Spool>,
}

impl Intake {
    pub fn new(relay: Arc<Relay>) -> Self {
        Self {
            relay,
            tally: Some(Arc::default()),
            pinned: None,
            daemon: None,
        }
    }

    /// This intake's relay: what it records in, and whose list it is.
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }

    /// An intake for what concerns no list: its rejections go to the
    /// daemon's own audit records, counted in a tally of its own.
    pub fn daemon_wide(&self) -> Intake {
        Intake {
            tally: Some(Arc::default()),
            daemon: Some(self.relay.spool.for_list("")),
            ..self.clone()
        }
    }

    /// Where this intake's rejections are recorded.
    fn records(&self) -> &crate::spool::Spool {
        self.daemon.as_ref().unwrap_or(&self.relay.spool)
    }

    /// For a process that takes one mail and exits (`submit`): rejections
    /// are counted in the spool, where every such process sees them.
    pub fn for_one_mail(relay: Arc<Relay>) -> Self {
        Self {
            relay,
            tally: None,
            pinned: None,
            daemon: None,
        }
    }

    /// The configuration this mail is handled under.
    fn config(&self) -> Arc<Config> {
        match &self.pinned {
            Some(snapshot) => snapshot.config.clone(),
            None => self.relay.config(),
        }
    }

    /// The roster this mail is handled under.
    fn directory(&self) -> Arc<Directory> {
        match &self.pinned {
            Some(snapshot) => snapshot.directory.clone(),
            None => self.relay.directory(),
        }
    }

    /// Seals what the spool keeps to the list key (signed and encrypted);
    /// `None`, logged, if that fails.
    fn seal(&self, a: &Record) -> Option<Vec<u8>> {
        a.seal(&self.config().list_key)
            .map_err(|e| tracing::error!(error = %e, "sealing to the list key failed"))
            .ok()
    }

    /// Verifies, seals and commits; the returned reply is the final answer
    /// to DATA (or, through `submit`, the exit code).
    pub fn process(&self, envelope: &Envelope, raw: &[u8]) -> Reply {
        self.process_fetched(envelope, raw, None)
    }

    /// [`Intake::process`] for a mail fetched from a mailbox: `fetched` (the
    /// raw mail's digest) is committed with an accepted announcement.
    pub fn process_fetched(&self, envelope: &Envelope, raw: &[u8], fetched: Option<&str>) -> Reply {
        self.process_under(self.relay.snapshot(), envelope, raw, fetched)
    }

    /// [`Intake::process_fetched`] under `snapshot`, the configuration and
    /// roster the caller already read for this mail (its size limit, its
    /// recipient): one for the whole mail, whatever a SIGHUP does meanwhile.
    pub fn process_under(
        &self,
        snapshot: Snapshot,
        envelope: &Envelope,
        raw: &[u8],
        fetched: Option<&str>,
    ) -> Reply {
        let this = Intake {
            pinned: Some(snapshot),
            ..self.clone()
        };
        this.process_pinned(envelope, raw, fetched)
    }

    fn process_pinned(&self, envelope: &Envelope, raw: &[u8], fetched: Option<&str>) -> Reply {
        let relay = &self.relay;
        // A reload removing this list waits for the mails it is taking.
        let Some(_taking) = relay.taking.enter() else {
            return Reply::new(
                451,
                "4.3.0",
                "this list is being removed from this server; try again later",
            );
        };
        if relay.spool.damaged() {
            // Nothing can be committed safely: the sender keeps the mail.
            return Reply::new(
                451,
                "4.3.0",
                "the list's spool is damaged; the operator must restore it. Try again later",
            );
        }
        let now = relay.clock.now();
        // The same submission again (an MTA that lost our answer and sent
        // it once more): the same answer, nothing relayed twice, no alarm.
        // Anything else that repeats a signature is still a replay.
        let submission = submission_digest(envelope, raw);
        match relay.spool.submitted(&submission) {
            Ok(Some((previous, refused))) => {
                let detail = format!(
                    "the same submission again (envelope and bytes) from peer {} envelope sender <{}>: answered as before, nothing relayed twice",
                    envelope.peer,
                    printable(&envelope.mail_from)
                );
                // Counted like rejections: a captured PST mail sent again
                // and again adds a few records a minute, not one each.
                let reason = format!("the same submission again, answered as for {previous}");
                self.tally_or_audit(
                    now,
                    ("duplicate", &peer_host(&envelope.peer), &reason),
                    Some(&previous),
                    &detail,
                );
                tracing::info!(message_id = %previous, peer = %envelope.peer, "duplicate submission answered as before");
                return match refused.as_deref().and_then(Reply::from_line) {
                    Some(reply) => reply,
                    None => Reply::new(250, "2.0.0", format!("already accepted as {previous}")),
                };
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "spool unreadable; answering 451");
                return try_later();
            }
        }
        let request = &self.config().request_address;
        let for_request = |r: &String| r.eq_ignore_ascii_case(request);
        if envelope.rcpt_to.iter().any(for_request) {
            if !envelope.rcpt_to.iter().all(for_request) {
                let why = Rejection::Malformed(
                    "a join request goes to the request address alone, not with list mail",
                );
                return self.reject(envelope, &why, now);
            }
            return self.join_request(envelope, raw, now, &submission);
        }
        if let Some(token) = bounces::bounce_token(&self.config(), envelope, raw) {
            return self.bounce(envelope, raw, &token, now);
        }
        let p = crate::crypto::policy();
        let directory = self.directory();
        let config = self.config();
        let addresses = [
            config.list_address.as_str(),
            config.request_address.as_str(),
        ];
        let shared_keys = self.relay.shared_keys(&directory);
        let gate = Gate {
            list: &config.list_key,
            pst: &directory.pst,
            pst_smime: &directory.pst_smime,
            member_smime: &directory.member_smime,
            list_smime: config.smime.as_ref(),
            known: &directory.known,
            policy: &config.policy,
            max_size: config.smtp.max_message_size,
            addresses: &addresses,
            others: &config.neighbours.addresses,
            shared_keys: &shared_keys,
        };
        // `examine` has no side effects: should a parser panic on some
        // input, that input is refused (and audited) like any bad mail,
        // instead of a 451 that the sender would retry for ever.
        let examined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            examine(raw, &gate, &p, now)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("examining a mail panicked; refusing it");
            Err(Rejection::Malformed(
                "the mail could not be examined (internal error); it was refused",
            ))
        });
        crate::failpoint::hit("examined");
        let (announcement, digests, references) = match examined {
            Ok(Examined::Announcement(a, digests, references)) => (a, digests, references),
            Ok(Examined::PstCommand {
                command,
                sender,
                keys,
            }) => {
                if matches!(
                    command,
                    PstCommand::RosterAdd { .. } | PstCommand::RosterRemove { .. }
                ) {
                    return self.roster_command(
                        envelope,
                        &command,
                        keys.as_deref(),
                        &sender,
                        now,
                        &submission,
                    );
                }
                return self.command(envelope, &command, &sender, now, &submission);
            }
            Ok(Examined::MemberPost(post, digests)) => {
                return self.post(envelope, post, &digests, now, fetched, &submission);
            }
            Ok(Examined::Acknowledgement {
                signer,
                from,
                embargo,
                digests,
            }) => {
                return self.acknowledge(envelope, (&signer, &from), &embargo, &digests, now);
            }
            Ok(Examined::Refused { rejection, sender }) => {
                return self.refuse(envelope, &rejection, &sender, now, Some(&submission));
            }
            Err(rejection) => return self.reject(envelope, &rejection, now),
        };
        // Its scope (`Recipients:`), from this mail's roster snapshot: a
        // name that is no member's is refused, by position in the clear and
        // by name in the encrypted refusal.
        let sender = || Sender {
            signer: announcement.signer.clone(),
            from: announcement.from.clone(),
            subject: announcement.subject.clone(),
            digests: digests.clone(),
        };
        let members: Vec<String> = match directory.roster.scope(&announcement.terms.recipients) {
            Ok(members) => members.iter().map(|m| m.email.clone()).collect(),
            Err((position, name)) => {
                let rejection = Rejection::Embargo(TermsError::UnknownRecipient {
                    position,
                    name: Quoted::new(&name),
                });
                return self.refuse(envelope, &rejection, &sender(), now, Some(&submission));
            }
        };
        // A reply into a thread that went to part of the roster only (a
        // scoped announcement's) would quote it to every member: it must
        // name its recipients.
        if announcement.terms.recipients.is_empty() {
            let thread = match self.thread(&references) {
                Ok(thread) => thread,
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up the thread of an announcement");
                    return try_later();
                }
            };
            let outside = |t: &[String]| {
                directory
                    .roster
                    .members()
                    .iter()
                    .any(|m| !m.pst && !t.iter().any(|e| e.eq_ignore_ascii_case(&m.email)))
            };
            if thread.as_deref().is_some_and(outside) {
                let rejection = Rejection::Embargo(TermsError::ScopedThread);
                return self.refuse(envelope, &rejection, &sender(), now, Some(&submission));
            }
        }
        let id = random_hex(8);
        let Some(sealed) = self.seal(&announcement) else {
            return try_later();
        };
        // Members are reminded to acknowledge; the PST (who gets its own
        // reminder) is not.
        let ack_reminded: Vec<String> = members
            .iter()
            .filter(|m| {
                !m.eq_ignore_ascii_case(&announcement.from)
                    && !directory.roster.find(m).is_some_and(|m| m.pst)
            })
            .cloned()
            .collect();
        let hooks = self
            .config()
            .lift_hook_rows(!announcement.terms.github.is_empty());
        let new = NewMessage {
            hooks: &hooks,
            id: &id,
            signer: &announcement.signer,
            embargo_until: announcement.terms.until,
            sig_digests: &digests,
            sealed: &sealed,
            members: &members,
            public_to: &announcement.public_to,
            reminder: Some((
                announcement.from.as_str(),
                announcement.terms.until - self.config().policy.reminder_before,
            ))
            .filter(|(_, at)| *at > now),
            ack_reminders: Some((
                announcement.terms.until - self.config().policy.ack_reminder_before,
                &ack_reminded[..],
            ))
            .filter(|(at, _)| *at > now),
            fetched,
            submission: Some(&submission),
        };
        let result = relay.spool.accept(&new, now);
        self.answer(
            envelope,
            result,
            now,
            || {
                crate::failpoint::hit("accepted");
                tracing::info!(message_id = %id, signer = %announcement.signer, peer = %envelope.peer, embargo_until = %announcement.terms.until.to_rfc3339(), members = members.len(), "announcement accepted");
                Reply::new(250, "2.0.0", format!("announcement accepted as {id}"))
            },
            |previous| {
                let sender = Sender {
                    signer: announcement.signer.clone(),
                    from: announcement.from.clone(),
                    subject: announcement.subject.clone(),
                    digests: digests.clone(),
                };
                self.replayed(envelope, &previous, &sender, now)
            },
        )
    }

    /// The answer to a commit, the same for every kind of mail: `accepted`
    /// once it is durable (and the fan-out woken), `on_replay` for a
    /// signature seen before, a refusal when the spool's schema refuses the
    /// data as given (trying again cannot help), else 451.
    fn answer(
        &self,
        envelope: &Envelope,
        result: Result<(), SpoolError>,
        now: DateTime<Utc>,
        accepted: impl FnOnce() -> Reply,
        on_replay: impl FnOnce(String) -> Reply,
    ) -> Reply {
        match result {
            Ok(()) => {
                self.relay.wake.notify_one();
                accepted()
            }
            Err(SpoolError::Replay(previous)) => on_replay(previous),
            Err(e) if e.is_constraint() => {
                tracing::error!(error = %e, "the spool's schema refused the mail");
                self.reject(
                    envelope,
                    &Rejection::Malformed(
                        "the mail cannot be stored as given (it repeats a recipient or an id)",
                    ),
                    now,
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; answering 451");
                try_later()
            }
        }
    }

    fn reject(&self, envelope: &Envelope, rejection: &Rejection, now: DateTime<Utc>) -> Reply {
        tracing::warn!(peer = %envelope.peer, mail_from = %envelope.mail_from, reason = %rejection, "mail rejected");
        let detail = format!(
            "from peer {} envelope sender <{}>: {rejection}",
            envelope.peer,
            printable(&envelope.mail_from)
        );
        let reply = rejection.reply();
        self.relay
            .counters
            .rejected(&self.relay.config().list_address, rejection.kind());
        self.tally_or_audit(
            now,
            ("rejected", &peer_host(&envelope.peer), &reply.text),
            None,
            &detail,
        );
        reply
    }
}

impl MailHandler for Intake {
    fn check_rcpt(&self, rcpt: &str, _earlier: &[String]) -> Result<(), Reply> {
        if self.relay.config().serves(rcpt) {
            Ok(())
        } else {
            Err(Reply::new(
                550,
                "5.1.1",
                "no such list here; only the list and its request address are accepted",
            ))
        }
    }

    fn refused(&self, peer: &str, mail_from: Option<&str>, reply: &Reply) {
        let detail = format!(
            "from peer {peer} envelope sender <{}>: refused in the SMTP session: {} {} {}",
            printable(mail_from.unwrap_or("")),
            reply.code,
            reply.enhanced,
            reply.text
        );
        // Counted like every other rejection (`tally_or_audit`, and the
        // `embargo_relay_rejections` metric).
        self.relay
            .counters
            .rejected(&self.relay.config().list_address, "session");
        let (this, host, reason) = (self.clone(), peer_host(peer), reply.text.clone());
        let now = self.relay.clock.now();
        let write = move || this.tally_or_audit(now, ("rejected", &host, &reason), None, &detail);
        // The caller is an SMTP session task: the fsync'd write goes to the
        // blocking pool, not onto the runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
    }

    async fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> Reply {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.process(&envelope, &raw)).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!(error = %e, "intake task failed");
                try_later()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MemberPosts, PolicyConfig};

    #[test]
    fn what_is_recorded_shows_no_hidden_characters() {
        assert_eq!(printable("a\r\nb"), "a??b");
        assert_eq!(printable("550 \u{202E}txe.exe"), "550 ?txe.exe");
        assert_eq!(printable("x\u{200B}y\u{2066}z\u{FEFF}"), "x?y?z?");
        assert_eq!(printable("Grüße"), "Grüße");
    }

    #[test]
    fn only_a_signed_subject_is_relayed_as_is() {
        let s = |p: Option<&str>, o: Option<&str>| {
            relayed_subject(p.map(Into::into), o.map(Into::into))
        };
        assert_eq!(s(Some("CVE-1: signed"), Some("outer")), "CVE-1: signed");
        assert_eq!(
            s(None, Some("CVE-1: outer")),
            "[unverified subject] CVE-1: outer"
        );
        assert_eq!(s(Some(""), None), "(no subject)");
    }

    #[test]
    fn thunderbird_style_mixed_entity_is_relayed_verbatim_with_its_protected_subject() {
        let p = crate::crypto::policy();
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
            .unwrap()
            .into();
        let pst = crate::crypto::generate_key(
            "PST <pst@example.org>",
            now - chrono::Duration::days(1),
            None,
        )
        .unwrap();
        // As Thunderbird signs it: multipart/mixed with protected headers, a
        // legacy-display-free text part in quoted-printable and an attachment.
        let part = b"Content-Type: multipart/mixed; boundary=\"------------tb1\";\r\n protected-headers=\"v1\"\r\n\
Subject: CVE-2026-9: signed subject\r\nFrom: PST <pst@example.org>\r\n\r\nThis is a multi-part message in MIME format.\r\n\
--------------tb1\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Embargo-Until: 2026-11-25T16:00:00Z\r\n\r\nDetails =C3=A9t=C3=A9 here.\r\n\r\n--------------tb1\r\n\
Content-Type: text/plain; charset=UTF-8; name=\"public-advisory.txt\"\r\nContent-Disposition: attachment; filename=\"public-advisory.txt\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nUHVibGljIGFkdmlzb3J5Lg==\r\n\r\n--------------tb1--\r\n";
        let sig = crate::crypto::sign_detached(&p, &pst, now, part).unwrap();
        let raw = crate::compose::multipart_signed(
            "PST <pst@example.org>",
            "list@example.org",
            "...",
            part,
            &sig,
        );
        let list = crate::crypto::ListKey::from_cert(
            crate::crypto::generate_key("List <list@example.org>", now, None).unwrap(),
        )
        .unwrap();
        let pst = std::sync::Arc::new(pst);
        let known = crate::crypto::Keyring::new(vec![pst.clone()]);
        let gate = Gate {
            list: &list,
            pst: std::slice::from_ref(&pst),
            pst_smime: &[],
            member_smime: &[],
            list_smime: None,
            known: &known,
            policy: &PolicyConfig {
                max_embargo: chrono::Duration::days(14),
                public_recipients: vec!["announce@example.org".into()],
                reminder_before: chrono::Duration::hours(24),
                ack_reminder_before: chrono::Duration::hours(24),
                late_after: chrono::Duration::seconds(60),
                signature_max_age: chrono::Duration::hours(72),
                member_posts: MemberPosts::List,
                inline_pgp: false,
                mime: mime::MimeLimits::default(),
                release: Default::default(),
            },
            max_size: 1 << 20,
            addresses: &["list@example.org"],
            others: &[],
            shared_keys: &[],
        };
        let Examined::Announcement(a, digests, _) = examine(&raw, &gate, &p, now).unwrap() else {
            panic!("an announcement")
        };
        assert_eq!(a.subject, "CVE-2026-9: signed subject");
        assert_eq!(
            a.entity.expose(),
            &part[..],
            "the signed entity, byte for byte"
        );
        assert_eq!(digests.len(), 1);
    }
}
