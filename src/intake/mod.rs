//! Intake: decides, before the final reply to DATA, whether a mail is a PST
//! announcement; if it is, commits it sealed to the spool and wakes the fanout.

pub mod mime;
mod rejection;
pub mod verify;

pub use rejection::Rejection;

use verify::Role;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;

use crate::config::{Config, MemberPosts, PolicyConfig};
use crate::context::{Directory, Relay, Snapshot};
use crate::crypto::{ListKey, random_hex};
use crate::embargo::{self, Command, Request, TermsError};
use crate::inbound::smtp::{Envelope, MailHandler, Reply};
use crate::quote::Quoted;
use crate::record::Record;
use crate::secret::Secret;
use crate::spool::{NewMessage, NewPost, Origin, SpoolError};

/// Parses and authorizes a raw mail. Pure: no I/O, no clock of its own.
/// What a mail is checked against.
pub struct Gate<'a> {
    /// Decrypts mail encrypted to the list.
    pub list: &'a ListKey,
    /// The certificates allowed to announce.
    pub pst: &'a [Cert],
    /// Every certificate whose signature is checked: the PST's and the
    /// other members' (whose posts are relayed under `policy.member_posts`).
    pub known: &'a [Cert],
    pub policy: &'a PolicyConfig,
    /// The largest decrypted content accepted (the message size limit).
    pub max_size: usize,
}

pub fn examine(
    raw: &[u8],
    gate: &Gate<'_>,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<Examined, Rejection> {
    let policy = gate.policy;
    // What SMTP refuses in DATA is refused from a pipe or a mailbox too: a
    // bare CR can make the relayed entity parse differently from what a
    // text-mode signature covered.
    if raw
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\r' && raw.get(i + 1) != Some(&b'\n'))
    {
        return Err(Rejection::Malformed(
            "bare CR in the message; lines must end in CRLF",
        ));
    }
    let mail = mime::parse(raw, &policy.mime)?;
    let (from, outer_subject) = (mail.from.clone(), mail.outer_subject.clone());
    let (auth, signed_part, encrypted) = verify::authorize(mail, gate, p, now)?;
    let subject = relayed_subject(mime::protected_subject(signed_part.expose()), outer_subject);
    if auth.role == Role::Member {
        if policy.member_posts == MemberPosts::Reject {
            return Err(Rejection::MemberPost(
                "this list does not relay member posts (policy.member_posts = \"reject\")",
            ));
        }
        if !encrypted {
            return Err(Rejection::MemberPost(
                "a member post must be encrypted to the list key, not only signed",
            ));
        }
        verify::fresh(&auth, now, policy.signature_max_age)?;
        let post = Post {
            signer: auth.signer,
            from,
            subject,
            entity: signed_part,
        };
        return Ok(Examined::MemberPost(post, auth.signature_digests));
    }
    let freshness = verify::fresh(&auth, now, policy.signature_max_age);
    let sender = Sender {
        signer: auth.signer,
        from,
        subject,
        digests: auth.signature_digests,
    };
    let refused = |rejection, sender| Ok(Examined::Refused { rejection, sender });
    if let Err(stale) = freshness {
        return refused(stale, sender);
    }
    let entity = signed_part.expose();
    let terms = match embargo::request(entity, now, policy.max_embargo) {
        Ok(Request::Announce(terms)) => terms,
        Ok(Request::Command(command)) => {
            let keys = match command {
                Command::RosterAdd { .. } => mime::attached_keys(entity),
                _ => None,
            };
            return Ok(Examined::Command {
                command,
                sender,
                keys,
            });
        }
        Err(e) => return refused(Rejection::Embargo(e), sender),
    };
    let public_to = match embargo::public_advisory(entity) {
        None => Vec::new(),
        Some(_) if !terms.public_to.is_empty() => terms.public_to.clone(),
        Some(_) if !policy.public_recipients.is_empty() => policy.public_recipients.clone(),
        Some(_) => return refused(Rejection::Embargo(TermsError::NoPublicRecipients), sender),
    };
    let announcement = Record {
        signer: sender.signer,
        from: sender.from,
        subject: sender.subject,
        terms,
        public_to,
        entity: signed_part,
    };
    Ok(Examined::Announcement(announcement, sender.digests))
}

/// An authenticated PST sender and its mail's identity.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Fingerprint of the PST certificate that signed.
    pub signer: String,
    /// The From address (a user ID of that certificate).
    pub from: String,
    /// The Subject the relay would use.
    pub subject: String,
    /// Identities of the mail's signatures (replay cache).
    pub digests: Vec<String>,
}

/// A member's verified post (a reply to an announcement).
#[derive(Debug)]
pub struct Post {
    /// Fingerprint of the member's certificate.
    pub signer: String,
    pub from: String,
    pub subject: String,
    /// The signed entity, verbatim.
    pub entity: Secret,
}

/// What an authorized mail turned out to be.
#[derive(Debug)]
pub enum Examined {
    /// A member's post, with its signature identities.
    MemberPost(Post, Vec<String>),
    /// A new announcement, with its signature identities.
    Announcement(Record, Vec<String>),
    /// A command on an existing embargo.
    Command {
        command: Command,
        sender: Sender,
        /// A certificate attached to the signed entity (for `Roster-Add`).
        keys: Option<Vec<u8>>,
    },
    /// Authenticated, but invalid: the PST is told why, signed and encrypted.
    Refused {
        rejection: Rejection,
        sender: Sender,
    },
}

/// Marks an outer Subject that no signature covers before the list re-signs it.
pub const UNVERIFIED_SUBJECT: &str = "[unverified subject]";

/// The Subject members see: the signed (protected) one; failing that the
/// outer one, marked as unverified, since the list's signature must not
/// vouch for what the PST did not sign.
fn relayed_subject(protected: Option<String>, outer: Option<String>) -> String {
    match (protected, outer) {
        (Some(signed), _) if !signed.is_empty() => signed,
        (_, Some(outer)) if !outer.is_empty() => format!("{UNVERIFIED_SUBJECT} {outer}"),
        _ => "(no subject)".to_owned(),
    }
}

/// Checks a `Roster-Add` and writes it to the roster file; the receipt text.
#[allow(clippy::too_many_arguments)]
fn add_member(
    path: &std::path::Path,
    roster: &crate::roster::Roster,
    keys: Option<&[u8]>,
    email: &str,
    organization: &str,
    fingerprint: &str,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<String, String> {
    use sequoia_openpgp::parse::Parse;
    if roster.find(email).is_some() {
        return Err("the address is already a member".to_owned());
    }
    let organization = crate::address::check_organization(organization)
        .map_err(|p| format!("the organization {p}"))?;
    let keys =
        keys.ok_or("attach the member's certificate (application/pgp-keys) to the signed mail")?;
    let cert = Cert::from_bytes(keys)
        .map_err(|_| "the attached certificate cannot be read".to_owned())?
        .strip_secret_key_material();
    let fpr = cert.fingerprint().to_hex();
    if fpr != fingerprint {
        return Err(format!(
            "the attached certificate is {fpr}, not the fingerprint given"
        ));
    }
    if !crate::crypto::valid_emails(&cert, p, now)
        .iter()
        .any(|e| e.eq_ignore_ascii_case(email))
    {
        return Err(format!("the address is not a user ID of certificate {fpr}"));
    }
    crate::crypto::usable_for_encryption(&cert, p, now)?;
    crate::roster::file::add(path, email, organization, &cert)?;
    Ok(format!(
        "Added {email} ({organization}) with certificate {fpr}. They receive every announcement from now on."
    ))
}

/// Removes a member that a `Roster-Add` added; the receipt text.
fn remove_member(
    path: &std::path::Path,
    roster: &crate::roster::Roster,
    email: &str,
) -> Result<String, String> {
    let member = roster
        .find(email)
        .ok_or_else(|| "the address is not a member".to_owned())?;
    if !member.added {
        return Err(
            "the address is a member of the configuration file, not the roster file; remove it there"
                .to_owned(),
        );
    }
    if !crate::roster::file::remove(path, email)? {
        return Err("the address is not in the roster file".to_owned());
    }
    Ok(format!(
        "Removed {email} ({}). They receive nothing from now on; copies already queued for them are skipped.",
        member.organization
    ))
}

/// `entity` preceded by a plain-text note, as one `multipart/mixed` entity.
fn with_note(note: &str, entity: &[u8]) -> Secret {
    let boundary = loop {
        let b = format!("note-{}", random_hex(12));
        if memchr::memmem::find(entity, b.as_bytes()).is_none() {
            break b;
        }
    };
    let mut out = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Description: list note\r\n\r\n{note}\r\n--{boundary}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(entity);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Secret::new(out)
}

/// The answer when the spool cannot take a message now.
/// An address from the envelope, fit for the audit trail and a terminal:
/// control characters become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
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

/// Join requests a sender may make in an hour.
const JOIN_PER_SENDER_HOUR: u64 = 3;
/// Join requests one host (the peer's address) may bring in an hour.
const JOIN_PER_PEER_HOUR: u64 = 10;

/// What a peer is counted by (rejections, join requests): its address
/// without the port, an IPv6 address as its /64 (`inbound::peer_key`);
/// `submit`'s peer is the client address Postfix passes.
fn peer_host(peer: &str) -> String {
    let peer = peer.strip_suffix(" (submit)").unwrap_or(peer);
    if let Ok(addr) = peer.parse::<std::net::SocketAddr>() {
        return crate::inbound::peer_key_label(addr.ip());
    }
    if let Ok(ip) = peer.parse::<std::net::IpAddr>() {
        return crate::inbound::peer_key_label(ip);
    }
    match peer.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_matches(['[', ']']).to_owned()
        }
        _ => peer.to_owned(),
    }
}

fn try_later() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "local error while storing the message; try again later",
    )
}

/// The SMTP handler of the daemon.
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
}

/// Rejections counted rather than each written out: the first
/// [`RECORDED_EACH`] of a reason from a peer host in a window get their own
/// audit records at once; the others are counted and written as one record
/// when the window ends ([`Intake::flush_tally`], every minute and at
/// shutdown). Junk at 1,500 mails a second then adds a few records a
/// minute, not 0.5 GB an hour.
#[derive(Default)]
struct Tally {
    since: Option<DateTime<Utc>>,
    /// (event, peer host, reason) → how many in this window.
    seen: std::collections::HashMap<(String, String, String), u64>,
    /// (event, peer host, reason) → how many beyond the ones recorded.
    more: std::collections::HashMap<(String, String, String), u64>,
    /// Records written one by one in this window, all keys together.
    recorded: u64,
}

/// Rejections of one reason from one host recorded one by one in a window.
const RECORDED_EACH: u64 = 8;

/// The tally's window.
const TALLY_WINDOW: chrono::Duration = chrono::Duration::minutes(1);

impl Intake {
    pub fn new(relay: Arc<Relay>) -> Self {
        Self {
            relay,
            tally: Some(Arc::default()),
            pinned: None,
        }
    }

    /// For a process that takes one mail and exits (`submit`): rejections
    /// are counted in the spool, where every such process sees them.
    pub fn for_one_mail(relay: Arc<Relay>) -> Self {
        Self {
            relay,
            tally: None,
            pinned: None,
        }
    }

    /// Audits a rejection (`event` "rejected") or a duplicate, or counts it
    /// if ones like it (same event, peer host and reason) were audited in
    /// this window.
    fn tally_or_audit(
        &self,
        now: DateTime<Utc>,
        key: (&str, &str, &str),
        message_id: Option<&str>,
        detail: &str,
    ) {
        let (event, host, reason) = key;
        let Some(tally) = &self.tally else {
            let key = crate::spool::TallyKey {
                event,
                host,
                reason,
                each: RECORDED_EACH,
                window: TALLY_WINDOW,
            };
            if let Err(e) = self.relay.spool.tally(now, &key, message_id, detail) {
                tracing::error!(error = %e, "could not write the audit record of a rejection");
            }
            return;
        };
        {
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            tally.since.get_or_insert(now);
            // Many hosts or reasons in one window share one count, so the
            // tally itself cannot grow without bound between flushes.
            let mut key = (event.to_owned(), host.to_owned(), reason.to_owned());
            if tally.seen.len() >= crate::spool::TALLY_KEYS && !tally.seen.contains_key(&key) {
                key = (
                    event.to_owned(),
                    "(many hosts)".to_owned(),
                    "(various reasons)".to_owned(),
                );
            }
            let seen = tally.seen.entry(key.clone()).or_insert(0);
            *seen += 1;
            if *seen > RECORDED_EACH || tally.recorded >= crate::spool::TALLY_RECORDED {
                *tally.more.entry(key).or_insert(0) += 1;
                return;
            }
            tally.recorded += 1;
        }
        if let Err(e) = self.relay.spool.audit(now, event, message_id, None, detail) {
            tracing::error!(error = %e, "could not write the audit record of a rejection");
        }
    }

    /// Writes what [`Intake::tally_or_audit`] counted since the window
    /// began, one record per event, peer host and reason, and starts a new
    /// window; also the counts `submit` left in the spool whose window has
    /// passed (all of them when `all`, at shutdown).
    pub fn flush_tally(&self, now: DateTime<Utc>, all: bool) {
        let before = (!all).then(|| now - TALLY_WINDOW);
        if let Err(e) = self.relay.spool.flush_tally(now, before) {
            tracing::error!(error = %e, "could not write the count of rejections");
        }
        let Some(tally) = &self.tally else { return };
        let (since, more) = {
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            let since = tally.since.take();
            tally.seen.clear();
            tally.recorded = 0;
            (since, std::mem::take(&mut tally.more))
        };
        let Some(since) = since else { return };
        for ((event, host, reason), n) in more.into_iter().filter(|(_, n)| *n > 0) {
            let detail = crate::spool::tally_detail(n, &event, &host, since, &reason);
            if let Err(e) = self.relay.spool.audit(now, &event, None, None, &detail) {
                tracing::error!(error = %e, "could not write the count of rejections");
            }
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
        let p = crate::crypto::policy();
        self.config()
            .list_key
            .seal_to_self(&p, a.to_bytes().expose())
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
        // One configuration and roster for the whole mail, whatever a
        // SIGHUP does meanwhile.
        let this = Intake {
            pinned: Some(self.relay.snapshot()),
            ..self.clone()
        };
        this.process_pinned(envelope, raw, fetched)
    }

    fn process_pinned(&self, envelope: &Envelope, raw: &[u8], fetched: Option<&str>) -> Reply {
        let relay = &self.relay;
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
        let p = crate::crypto::policy();
        let directory = self.directory();
        let gate = Gate {
            list: &self.config().list_key,
            pst: &directory.pst,
            known: &directory.known,
            policy: &self.config().policy,
            max_size: self.config().smtp.max_message_size,
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
        let (announcement, digests) = match examined {
            Ok(Examined::Announcement(a, digests)) => (a, digests),
            Ok(Examined::Command {
                command,
                sender,
                keys,
            }) => {
                if matches!(
                    command,
                    Command::RosterAdd { .. } | Command::RosterRemove { .. }
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
            Ok(Examined::Refused { rejection, sender }) => {
                return self.refuse(envelope, &rejection, &sender, now, Some(&submission));
            }
            Err(rejection) => return self.reject(envelope, &rejection, now),
        };
        let id = random_hex(8);
        let Some(sealed) = self.seal(&announcement) else {
            return try_later();
        };
        let members: Vec<String> = self
            .directory()
            .roster
            .members()
            .iter()
            .map(|m| m.email.clone())
            .collect();
        let new = NewMessage {
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

    /// Relays a member's post, re-encrypted to every member or to the PST
    /// only (`policy.member_posts`), opening with a note naming who posted
    /// it and from which organization.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &self,
        envelope: &Envelope,
        post: Post,
        digests: &[String],
        now: DateTime<Utc>,
        fetched: Option<&str>,
        submission: &str,
    ) -> Reply {
        let relay = &self.relay;
        let directory = self.directory();
        let roster = &directory.roster;
        let Some(member) = roster.by_fingerprint(&post.signer) else {
            // The certificate came from the roster; it cannot vanish.
            return Reply::new(451, "4.3.0", "roster changed; try again later");
        };
        let recipients: Vec<String> = roster
            .members()
            .iter()
            .filter(|m| self.config().policy.member_posts == MemberPosts::List || m.pst)
            .map(|m| m.email.clone())
            .collect();
        let note = format!(
            "Posted to the list by {} ({}). The list verified their signature (key {}).",
            member.email, member.organization, post.signer
        );
        let entity = with_note(&note, post.entity.expose());
        let sealed_post = Record::unembargoed(
            post.signer.clone(),
            post.from.clone(),
            format!("[{}] {}", member.organization, post.subject),
            entity,
            now,
        );
        let Some(sealed) = self.seal(&sealed_post) else {
            return try_later();
        };
        let id = random_hex(8);
        let detail = format!(
            "from {} ({}), signed by {}; {} copies queued ({})",
            member.email,
            member.organization,
            post.signer,
            recipients.len(),
            match self.config().policy.member_posts {
                MemberPosts::Pst => "to the PST only",
                _ => "to every member",
            }
        );
        let new = NewPost {
            id: &id,
            signer: &post.signer,
            sig_digests: digests,
            sealed: &sealed,
            recipients: &recipients,
            fetched,
            event: "member-post",
            detail: &detail,
            submission: Some(submission),
            join_from: None,
        };
        let result = relay.spool.accept_post(&new, now);
        self.answer(
            envelope,
            result,
            now,
            || {
                tracing::info!(message_id = %id, member = %member.email, organization = %member.organization, recipients = recipients.len(), "member post accepted");
                Reply::new(250, "2.0.0", format!("member post accepted as {id}"))
            },
            |previous| self.reject(envelope, &Rejection::Replay(previous), now),
        )
    }

    /// Forwards a join request to the PST, encrypted, with a checklist of
    /// the membership criteria it answers. The request is not signed and
    /// may come from anyone; only the PST sees it. A byte-identical resend
    /// is refused as a replay.
    fn join_request(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let relay = &self.relay;
        // At most a few requests an hour from one sender or one peer: each
        // queues a signed, encrypted delivery per PST member, and one
        // changed byte makes a new request.
        let peer_host = peer_host(&envelope.peer);
        let hour_ago = now - chrono::Duration::hours(1);
        match relay
            .spool
            .join_requests_since(hour_ago, &envelope.mail_from, &peer_host)
        {
            Ok((from_sender, from_peer))
                if from_sender >= JOIN_PER_SENDER_HOUR || from_peer >= JOIN_PER_PEER_HOUR =>
            {
                let reply = Reply::new(
                    450,
                    "4.7.1",
                    format!(
                        "too many join requests from this sender or host (at most {JOIN_PER_SENDER_HOUR} a sender and {JOIN_PER_PEER_HOUR} a host an hour); try again later"
                    ),
                );
                let detail = format!(
                    "from peer {} envelope sender <{}>: {}",
                    envelope.peer,
                    printable(&envelope.mail_from),
                    reply.text
                );
                self.tally_or_audit(now, ("rejected", &peer_host, &reply.text), None, &detail);
                return reply;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "spool unreadable; answering 451");
                return try_later();
            }
        }
        // Parsing and reading the request touch untrusted input and have no
        // side effects: a panic there refuses the mail, as in `examine`.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::failpoint::hit("join-request");
            mime::plain_request(raw, &self.config().policy.mime)
                .map(|r| (crate::membership::checklist(&r.text), r))
        }))
        .unwrap_or_else(|_| {
            tracing::error!("reading a join request panicked; refusing it");
            Err(Rejection::Malformed(
                "the request could not be read (internal error); it was refused",
            ))
        });
        let (answered, request) = match parsed {
            Ok(r) => r,
            Err(why) => return self.reject(envelope, &why, now),
        };
        let text = format!(
            "A request to join the list reached {} on {} UTC.\n\n\
From: {}\nSubject: {}\nEnvelope sender: <{}>, via {}\n\n\
The sender is not authenticated: check the request with the distribution\n\
through a channel you trust before adding anyone.\n\n\
Membership criteria (policy: Membership Criteria), as the request answers them:\n\n{}\n\
---- the request's text follows ----\n\n{}\n",
            self.config().request_address,
            now.format("%Y-%m-%d %H:%M"),
            request.from,
            request.subject,
            envelope.mail_from,
            envelope.peer,
            crate::membership::checklist_text(&answered),
            request.text
        );
        let entity = format!(
            "Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
            text.lines().map(|l| format!("{l}\r\n")).collect::<String>()
        );
        let notice = Record::unembargoed(
            String::new(),
            request.from.clone(),
            format!("[join request] {}", request.subject),
            Secret::new(entity.into_bytes()),
            now,
        );
        let Some(sealed) = self.seal(&notice) else {
            return try_later();
        };
        let pst: Vec<String> = self
            .directory()
            .roster
            .members()
            .iter()
            .filter(|m| m.pst)
            .map(|m| m.email.clone())
            .collect();
        let id = random_hex(8);
        let digests = [format!("join-request:{}", crate::crypto::sha256_hex(raw))];
        let detail = format!(
            "from {} via {}; {} of {} criteria answered; forwarded to {} PST members",
            request.from,
            envelope.peer,
            answered.iter().filter(|a| **a).count(),
            answered.len(),
            pst.len()
        );
        let new = NewPost {
            id: &id,
            signer: "",
            sig_digests: &digests,
            sealed: &sealed,
            recipients: &pst,
            fetched: None,
            event: "join-request",
            detail: &detail,
            submission: Some(submission),
            join_from: Some((&envelope.mail_from, &peer_host)),
        };
        let result = relay.spool.accept_post(&new, now);
        self.answer(
            envelope,
            result,
            now,
            || {
                tracing::info!(message_id = %id, from = %request.from, "join request forwarded to the PST");
                Reply::new(
                    250,
                    "2.0.0",
                    format!("join request {id} forwarded to the list's security team"),
                )
            },
            |previous| self.reject(envelope, &Rejection::Replay(previous), now),
        )
    }

    /// Applies `Roster-Add` / `Roster-Remove`: the roster file is rewritten
    /// atomically, the new roster takes effect at once, and the PST gets a
    /// signed, encrypted receipt (which also records the command's
    /// signatures, so a replay is refused).
    #[allow(clippy::too_many_arguments)]
    fn roster_command(
        &self,
        envelope: &Envelope,
        command: &Command,
        keys: Option<&[u8]>,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let relay = &self.relay;
        let refuse = |problem: String| {
            self.refuse_command(
                envelope,
                (problem, ""),
                command.id(),
                sender,
                now,
                submission,
            )
        };
        let Some(path) = &self.config().roster_file else {
            return refuse(
                "roster changes by mail need `list.roster_file` in the configuration".into(),
            );
        };
        match relay.spool.replay_of(&sender.digests) {
            Ok(Some(previous)) => return self.replayed(envelope, &previous, sender, now),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "spool unreadable; answering 451");
                return Reply::new(451, "4.3.0", "local error; try again later");
            }
        }
        let directory = self.directory();
        let p = crate::crypto::policy();
        let changed = match command {
            Command::RosterAdd {
                email,
                organization,
                fingerprint,
            } => add_member(
                path,
                &directory.roster,
                keys,
                email,
                organization,
                fingerprint,
                &p,
                now,
            ),
            Command::RosterRemove { email } => remove_member(path, &directory.roster, email),
            _ => Err("not a roster command".to_owned()),
        };
        let text = match changed {
            Ok(text) => text,
            Err(why) => return refuse(why),
        };
        match crate::roster::file::load(path) {
            Ok(members) => relay.set_roster(directory.roster.with_file_members(members)),
            Err(e) => {
                tracing::error!(error = %e, "roster file unreadable after a change; restart to load it")
            }
        }
        let event = match command {
            Command::RosterAdd { .. } => "roster-add",
            _ => "roster-remove",
        };
        let detail = format!("by PST {}: {text}", sender.signer);
        if let Err(e) = relay
            .spool
            .audit(now, event, None, Some(command.id()), &detail)
        {
            tracing::error!(error = %e, "could not audit a roster change");
        }
        tracing::info!(member = %command.id(), %event, "roster changed by PST command");
        let receipt = format!(
            "{text}\n\nMembers now: {}.\n",
            // The roster just changed: the new count.
            self.relay.directory().roster.members().len()
        );
        let subject = format!("Roster changed: {}", command.id());
        let done = Reply::new(
            250,
            "2.0.0",
            // The member's address is in the PST's encrypted receipt, not
            // in this clear reply.
            format!("roster updated ({event}); a receipt follows"),
        );
        // The same submission again gets this same answer.
        let line = done.line();
        match self.notify_pst(
            &random_hex(8),
            sender,
            &subject,
            &receipt,
            &sender.digests,
            Some((submission, line.as_str())),
            now,
        ) {
            Err(SpoolError::Replay(previous)) => self.replayed(envelope, &previous, sender, now),
            _ => done,
        }
    }

    /// Applies a PST command; its receipt is queued in the same transaction.
    fn command(
        &self,
        envelope: &Envelope,
        command: &Command,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let spool = &self.relay.spool;
        let signer = &sender.signer;
        let origin = Origin {
            digests: &sender.digests,
            reply_to: &sender.from,
            submission: Some(submission),
        };
        let actor = format!("PST {signer}");
        let max = self.config().policy.max_embargo;
        let result = match command {
            Command::Extend { to, .. } if *to - now > max => Err(SpoolError::RefusedAt {
                reason: format!(
                    "the new time is more than the maximum of {} days ahead (policy.max_embargo)",
                    max.num_days()
                ),
                times: format!("asked for {}", to.to_rfc3339()),
            }),
            Command::Extend { id, to } => spool.extend(id, *to, now, &actor, Some(&origin)),
            Command::Cancel { id } => spool.cancel(id, now, &actor, Some(&origin)),
            Command::ReleaseNow { id } => spool.release_now(id, now, &actor, Some(&origin)),
            // Routed to `roster_command` before this.
            Command::RosterAdd { .. } | Command::RosterRemove { .. } => {
                Err(SpoolError::Refused("not an embargo command".to_owned()))
            }
        };
        let id = command.id();
        match result {
            Ok(()) => {
                tracing::info!(embargo = %id, %signer, command = command.name(), "PST command applied");
                self.relay.wake.notify_one();
                Reply::new(
                    250,
                    "2.0.0",
                    format!("command applied to embargo {id}; a receipt follows"),
                )
            }
            Err(SpoolError::Refused(problem)) => {
                self.refuse_command(envelope, (problem, ""), id, sender, now, submission)
            }
            Err(SpoolError::RefusedAt { reason, times }) => {
                self.refuse_command(envelope, (reason, &times), id, sender, now, submission)
            }
            Err(SpoolError::Replay(previous)) => self.replayed(envelope, &previous, sender, now),
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; answering 451");
                Reply::new(
                    451,
                    "4.3.0",
                    "local error while applying the command; try again later",
                )
            }
        }
    }

    /// Refuses an authenticated PST mail: the SMTP reply, the audit record,
    /// and the reason sent to the sender signed and encrypted. A replay of
    /// a refused mail is refused as a replay.
    fn refuse(
        &self,
        envelope: &Envelope,
        rejection: &Rejection,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: Option<&str>,
    ) -> Reply {
        // The one place the quoted text is shown: signed and encrypted to the PST.
        let text = crate::quote::revealed(|| {
            format!(
                "The list refused your mail.\n\nReason: {rejection}\n\nNothing was relayed. Fix the mail and send it again; \
a resent copy of this one counts as a replay.\n"
            )
        });
        let subject = format!("Refused: {}", sender.subject);
        // The same submission again gets this same refusal (and no new
        // notice); see `process_fetched`.
        let line = rejection.reply().line();
        match self.notify_pst(
            &random_hex(8),
            sender,
            &subject,
            &text,
            &sender.digests,
            submission.map(|digest| (digest, line.as_str())),
            now,
        ) {
            Err(SpoolError::Replay(previous)) => self.replayed(envelope, &previous, sender, now),
            _ => self.reject(envelope, rejection, now),
        }
    }

    /// Refuses a PST command that cannot be applied; `on` (the embargo id
    /// or member address it named) is quoted in the encrypted refusal only.
    fn refuse_command(
        &self,
        envelope: &Envelope,
        (problem, times): (String, &str),
        on: &str,
        sender: &Sender,
        now: DateTime<Utc>,
        submission: &str,
    ) -> Reply {
        let on = Quoted::new(on);
        let times = Quoted::new(times);
        self.refuse(
            envelope,
            &Rejection::Command { problem, times, on },
            sender,
            now,
            Some(submission),
        )
    }

    /// Rejects a replay of `previous` and tells the PST, once per replayed
    /// message (further replays of it are only audited): a replay the PST
    /// did not send means someone holds a copy of its mail.
    fn replayed(
        &self,
        envelope: &Envelope,
        previous: &str,
        sender: &Sender,
        now: DateTime<Utc>,
    ) -> Reply {
        let text = format!(
            "A mail carrying the signature of your message {previous} reached the list again, \
from {} (envelope sender <{}>), and was rejected as a replay. Nothing was relayed.\n\n\
If you did not resend it, someone holds a copy of your signed mail. Further replays of \
this message are rejected without another notice; `embargo-relay audit` on the list \
host lists them.\n",
            envelope.peer, envelope.mail_from
        );
        let subject = format!("Replay rejected: {}", sender.subject);
        let _ = self.notify_pst(
            &format!("{previous}-replay"),
            sender,
            &subject,
            &text,
            &[],
            None,
            now,
        );
        self.reject(envelope, &Rejection::Replay(previous.to_owned()), now)
    }

    /// Queues a signed, encrypted notice to the PST who sent a mail. A
    /// notice whose id is already queued is not queued again.
    #[allow(clippy::too_many_arguments)]
    fn notify_pst(
        &self,
        id: &str,
        sender: &Sender,
        subject: &str,
        text: &str,
        digests: &[String],
        submission: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        let relay = &self.relay;
        let notice = Record::unembargoed(
            sender.signer.clone(),
            sender.from.clone(),
            subject.to_owned(),
            Secret::new(text.as_bytes().to_vec()),
            now,
        );
        let Some(sealed) = self.seal(&notice) else {
            return Ok(());
        };
        match relay.spool.queue_refusal(
            id,
            &sender.signer,
            &sender.from,
            &sealed,
            digests,
            submission,
            now,
        ) {
            Ok(()) => {
                relay.wake.notify_one();
                Ok(())
            }
            Err(SpoolError::Replay(previous)) => Err(SpoolError::Replay(previous)),
            Err(e) => {
                tracing::error!(error = %e, "could not queue a notice to the PST");
                Ok(())
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
    fn check_rcpt(&self, rcpt: &str) -> Result<(), Reply> {
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
        // Counted like every other rejection (`tally_or_audit`).
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
                Reply::new(451, "4.3.0", "local error; try again later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let gate = Gate {
            list: &list,
            pst: std::slice::from_ref(&pst),
            known: std::slice::from_ref(&pst),
            policy: &PolicyConfig {
                max_embargo: chrono::Duration::days(14),
                public_recipients: vec!["announce@example.org".into()],
                reminder_before: chrono::Duration::hours(24),
                late_after: chrono::Duration::seconds(60),
                signature_max_age: chrono::Duration::hours(72),
                member_posts: MemberPosts::List,
                inline_pgp: false,
                mime: mime::MimeLimits::default(),
            },
            max_size: 1 << 20,
        };
        let Examined::Announcement(a, digests) = examine(&raw, &gate, &p, now).unwrap() else {
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
