//! Mail that is not an announcement but is relayed: members' posts and
//! join requests to the PST.

use chrono::{DateTime, Utc};

use crate::config::MemberPosts;
use crate::crypto::random_hex;
use crate::mail::{Envelope, Reply};
use crate::record::Record;
use crate::secret::Secret;
use crate::spool::{NewPost, SpoolError};

use super::examine::Post;
use super::mime;
use super::rejection::Rejection;
use super::{Intake, peer_host, printable, try_later};

/// `entity` preceded by a plain-text note, as one `multipart/mixed` entity.
pub(super) fn with_note(note: &str, entity: &[u8]) -> Secret {
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

/// Join requests a sender may make in an hour.
pub(super) const JOIN_PER_SENDER_HOUR: u64 = 3;

/// Join requests one host (the peer's address) may bring in an hour.
pub(super) const JOIN_PER_PEER_HOUR: u64 = 10;

impl Intake {
    /// The thread a mail replies into: the references that name a message
    /// of this list (Message-IDs at its host name, any case) each give who
    /// that message went to, and the thread is the members in all of them.
    /// It fails closed: a reference at this host that names nothing known
    /// (or a receipt or notice) gives no member. `None`: it names no
    /// message of this list.
    pub(super) fn thread(
        &self,
        references: &[String],
    ) -> Result<Option<Vec<String>>, crate::spool::SpoolError> {
        let host = format!("@{}", self.config().hostname.to_ascii_lowercase());
        let mut thread: Option<Vec<String>> = None;
        for reference in references {
            let reference = reference.to_ascii_lowercase();
            let Some(id) = reference.strip_suffix(host.as_str()) else {
                continue;
            };
            let audience = self.relay.spool.thread_of(id)?.unwrap_or_default();
            thread = Some(match thread {
                None => audience,
                Some(so_far) => so_far
                    .into_iter()
                    .filter(|m| audience.iter().any(|a| a.eq_ignore_ascii_case(m)))
                    .collect(),
            });
        }
        Ok(thread)
    }

    /// Records a member's acknowledgement of an embargo: never relayed.
    pub(super) fn acknowledge(
        &self,
        envelope: &Envelope,
        (signer, from): (&str, &str),
        embargo: &str,
        digests: &[String],
        now: DateTime<Utc>,
    ) -> Reply {
        let directory = self.directory();
        // The member is the one whose address is the From and whose
        // certificate signed (two entries may share a key).
        let member = directory
            .roster
            .members()
            .iter()
            .find(|m| m.email.eq_ignore_ascii_case(from) && m.signs_as(signer));
        let Some(member) = member else {
            return self.reject(
                envelope,
                &Rejection::MemberPost(
                    "an acknowledgement comes from the member whose address is its From and whose key signed it",
                ),
                now,
            );
        };
        match self
            .relay
            .spool
            .acknowledge(embargo, &member.email, digests, now)
        {
            Ok(_) => {
                tracing::info!(member = %member.email, embargo, "acknowledgement recorded");
                Reply::new(
                    250,
                    "2.0.0",
                    format!("acknowledgement of {embargo} recorded"),
                )
            }
            Err(SpoolError::Replay(previous)) => {
                self.reject(envelope, &Rejection::Replay(previous), now)
            }
            Err(SpoolError::Refused(_)) => self.reject(
                envelope,
                &Rejection::MemberPost(
                    "the acknowledgement names no embargo whose copy went to its signer",
                ),
                now,
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot record an acknowledgement; answering 451");
                try_later()
            }
        }
    }

    /// Relays a member's post, re-encrypted to every member or to the PST
    /// only (`policy.member_posts`), opening with a note naming who posted
    /// it and from which organization.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn post(
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
            // The certificate came from this mail's pinned roster: it is
            // there. Should that ever break, the mail is kept (451).
            tracing::error!(signer = %post.signer, "a post's signer is not in the roster it was verified against");
            return try_later();
        };
        // A reply stays in its thread (the PST always in it); a poster
        // outside the thread leaves the PST alone as its audience.
        let mut thread = match self.thread(&post.references) {
            Ok(thread) => thread,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up the thread of a member post");
                return try_later();
            }
        };
        let in_list = |t: &[String], email: &str| t.iter().any(|e| e.eq_ignore_ascii_case(email));
        if let Some(t) = &thread
            && !in_list(t, &member.email)
        {
            thread = Some(Vec::new());
        }
        let in_thread = |m: &crate::roster::Member| {
            m.pst || thread.as_deref().is_none_or(|t| in_list(t, &m.email))
        };
        let recipients: Vec<String> = roster
            .members()
            .iter()
            .filter(|m| self.config().policy.member_posts == MemberPosts::List || m.pst)
            .filter(|m| in_thread(m))
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
            match (self.config().policy.member_posts, &thread) {
                (MemberPosts::Pst, _) => "to the PST only",
                (_, Some(_)) => "to the members of its thread",
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
    pub(super) fn join_request(
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
                self.relay
                    .counters
                    .rejected(&self.relay.config().list_address, "rate_limit");
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
        let entity = crate::entity::text_plain(&text);
        let notice = Record::unembargoed(
            String::new(),
            request.from.clone(),
            format!("[join request] {}", request.subject),
            Secret::new(entity),
            now,
        );
        let Some(sealed) = self.seal(&notice) else {
            return try_later();
        };
        let pst = self.directory().roster.pst_addresses();
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
}
