//! Writes of what arrives: an accepted announcement with its deliveries,
//! posts and join requests, refusals and notices to the PST, the replay cache,
//! submission and fetched-mail digests, join-request counts.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use rusqlite::{Connection, params};

use crate::clock::to_millis;

use super::audit::insert_audit;
use super::deliveries::{insert_delivery, insert_notice};
use super::types::{Kind, NewMessage, NewPost};
use super::{Spool, SpoolError, write_tx};

/// Adds a message's signature identities to the replay cache.
pub(super) fn insert_signatures(
    conn: &Connection,
    list: &str,
    digests: &[String],
    id: &str,
    at: i64,
) -> rusqlite::Result<()> {
    for digest in digests {
        conn.execute(
            "INSERT INTO seen_signatures (list, digest, message_id, at) VALUES (?1, ?2, ?3, ?4)",
            params![list, digest, id, at],
        )?;
    }
    Ok(())
}

/// Records what became of a fetched mail (first outcome wins).
pub(super) fn insert_fetched(
    conn: &Connection,
    digest: &str,
    at: i64,
    outcome: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO fetched (digest, at, outcome) VALUES (?1, ?2, ?3)",
        params![digest, at, outcome],
    )
    .map(drop)
}

/// The message a signature identity was first seen with on `list`, if any.
pub(super) fn seen_before(
    conn: &Connection,
    list: &str,
    digests: &[String],
) -> rusqlite::Result<Option<String>> {
    for digest in digests {
        let seen: Option<String> = conn
            .query_row(
                "SELECT message_id FROM seen_signatures WHERE list = ?1 AND digest = ?2",
                params![list, digest],
                |r| r.get(0),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(seen);
        }
    }
    Ok(None)
}

pub(super) fn insert_submission(
    tx: &rusqlite::Transaction<'_>,
    digest: &str,
    message_id: &str,
    at: i64,
    reply: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO submissions (digest, message_id, at, reply) VALUES (?1, ?2, ?3, ?4)",
        params![digest, message_id, at, reply],
    )
    .map(drop)
}

impl Spool {
    /// `Err(Replay)` naming the message that carried any of `digests` before.
    pub(super) fn not_seen(&self, conn: &Connection, digests: &[String]) -> Result<(), SpoolError> {
        match seen_before(conn, &self.list, digests).map_err(|e| self.db(e))? {
            Some(previous) => Err(SpoolError::Replay(previous)),
            None => Ok(()),
        }
    }

    /// Commits a verified announcement and its deliveries in one fsynced
    /// transaction; only after this returns may the sender be told 250.
    pub fn accept(&self, msg: &NewMessage<'_>, now: DateTime<Utc>) -> Result<(), SpoolError> {
        if crate::failpoint::fails("spool-corrupt") {
            return Err(self.db(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some("failpoint spool-corrupt".to_owned()),
            )));
        }
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        self.takes_mail(&tx)?;
        self.not_seen(&tx, msg.sig_digests)?;
        let t = to_millis(now);
        tx.execute(
            "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, list) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![msg.id, t, msg.signer, to_millis(msg.embargo_until), msg.sealed, &*self.list],
        )
        .map_err(|e| self.db(e))?;
        insert_signatures(&tx, &self.list, msg.sig_digests, msg.id, t).map_err(|e| self.db(e))?;
        if let Some(digest) = msg.submission {
            insert_submission(&tx, digest, msg.id, t, None).map_err(|e| self.db(e))?;
        }
        if let Some(digest) = msg.fetched {
            insert_fetched(&tx, digest, t, &format!("accepted as {}", msg.id))
                .map_err(|e| self.db(e))?;
        }
        let until = to_millis(msg.embargo_until);
        let rows = msg.members.iter().map(|m| (m.as_str(), Kind::Copy, t));
        let releases = msg
            .public_to
            .iter()
            .map(|p| (p.as_str(), Kind::Release, until));
        let hooks = msg.hooks.iter().map(|h| (h.as_str(), Kind::Hook, until));
        let lifted = msg
            .members
            .iter()
            .map(|m| (m.as_str(), Kind::Lifted, until));
        let reminder = msg
            .reminder
            .map(|(to, at)| (to, Kind::Reminder, to_millis(at)));
        let ack_reminders = msg.ack_reminders.into_iter().flat_map(|(at, to)| {
            to.iter()
                .map(move |m| (m.as_str(), Kind::Reminder, to_millis(at)))
        });
        for (to, kind, due) in rows
            .chain(releases)
            .chain(hooks)
            .chain(lifted)
            .chain(reminder)
            .chain(ack_reminders)
        {
            insert_delivery(&tx, msg.id, to, kind, due).map_err(|e| self.db(e))?;
        }
        insert_audit(
            &tx,
            &self.list,
            t,
            "accepted",
            Some(msg.id),
            None,
            &format!(
                "signed by {}; embargo until {}; {} member copies queued; {} public releases held; {} release hooks",
                msg.signer,
                msg.embargo_until.to_rfc3339(),
                msg.members.len(),
                msg.public_to.len(),
                msg.hooks.len()
            ),
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Keeps a notice to the PST (sealed like an announcement: a refusal of
    /// its mail, a receipt for a roster command, a held release) and queues
    /// it to `to`; the mail's signatures are recorded, so a replay of it is
    /// refused without another notice.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_notice_to_pst(
        &self,
        id: &str,
        signer: &str,
        to: &str,
        sealed: &[u8],
        digests: &[String],
        submission: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        if crate::failpoint::fails("notice") {
            return Err(self.db(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("failpoint notice".to_owned()),
            )));
        }
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        self.takes_mail(&tx)?;
        self.not_seen(&tx, digests)?;
        let queued: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        if queued {
            // A once-only notice (e.g. of a replay) that is already queued.
            return Ok(());
        }
        let t = to_millis(now);
        let write = || -> rusqlite::Result<()> {
            tx.execute(
                "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, kind, list) VALUES (?1, ?2, ?3, ?2, ?4, 'refusal', ?5)",
                params![id, t, signer, sealed, &*self.list],
            )?;
            insert_signatures(&tx, &self.list, digests, id, t)?;
            if let Some((digest, reply)) = submission {
                insert_submission(&tx, digest, id, t, Some(reply))?;
            }
            insert_delivery(&tx, id, to, Kind::Refusal, t)?;
            Ok(())
        };
        write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Queues notices from the list (each a sealed text to one address)
    /// and their audit record, in one transaction.
    pub fn queue_notices(
        &self,
        notices: &[(String, Vec<u8>)],
        event: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let t = to_millis(now);
        let write = || -> rusqlite::Result<()> {
            for (to, sealed) in notices {
                insert_notice(&tx, &self.list, to, sealed, t)?;
            }
            insert_audit(&tx, &self.list, t, event, None, None, detail)
        };
        write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Commits a member post and one `post` delivery per recipient, with its
    /// signatures in the replay cache, in one transaction.
    pub fn accept_post(&self, post: &NewPost<'_>, now: DateTime<Utc>) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        self.takes_mail(&tx)?;
        self.not_seen(&tx, post.sig_digests)?;
        let t = to_millis(now);
        let write = || -> rusqlite::Result<()> {
            tx.execute(
                "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, kind, list) VALUES (?1, ?2, ?3, ?2, ?4, 'post', ?5)",
                params![post.id, t, post.signer, post.sealed, &*self.list],
            )?;
            insert_signatures(&tx, &self.list, post.sig_digests, post.id, t)?;
            if let Some(digest) = post.submission {
                insert_submission(&tx, digest, post.id, t, None)?;
            }
            if let Some((sender, peer)) = post.join_from {
                tx.execute(
                    "INSERT INTO join_requests (at, sender, peer) VALUES (?1, ?2, ?3)",
                    params![t, sender.to_ascii_lowercase(), peer],
                )?;
            }
            for to in post.recipients {
                insert_delivery(&tx, post.id, to, Kind::Post, t)?;
            }
            if let Some(digest) = post.fetched {
                insert_fetched(&tx, digest, t, &format!("{} {}", post.event, post.id))?;
            }
            insert_audit(
                &tx,
                &self.list,
                t,
                post.event,
                Some(post.id),
                None,
                post.detail,
            )
        };
        write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// The message that carried any of these signatures before, if any.
    pub fn replay_of(&self, digests: &[String]) -> Result<Option<String>, SpoolError> {
        seen_before(&self.lock(), &self.list, digests).map_err(|e| self.db(e))
    }

    /// What became of a mail fetched before with this digest, if anything.
    pub fn fetched(&self, digest: &str) -> Result<Option<String>, SpoolError> {
        self.lock()
            .query_row(
                "SELECT outcome FROM fetched WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))
    }

    /// Records that a fetched mail was dealt with (accepted, rejected).
    pub fn record_fetched(
        &self,
        digest: &str,
        outcome: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        insert_fetched(&self.lock(), digest, to_millis(now), outcome).map_err(|e| self.db(e))
    }

    /// Join requests taken since `since` from `sender` and from `peer`.
    pub fn join_requests_since(
        &self,
        since: DateTime<Utc>,
        sender: &str,
        peer: &str,
    ) -> Result<(u64, u64), SpoolError> {
        let (by_sender, by_peer): (i64, i64) = self
            .lock()
            .query_row(
                "SELECT
                   (SELECT COUNT(*) FROM join_requests WHERE at >= ?1 AND sender = ?2),
                   (SELECT COUNT(*) FROM join_requests WHERE at >= ?1 AND peer = ?3)",
                params![to_millis(since), sender.to_ascii_lowercase(), peer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.db(e))?;
        Ok((by_sender.max(0) as u64, by_peer.max(0) as u64))
    }

    /// What a submission with this digest became, if it was seen: the
    /// message id, and the reply it got if it was refused.
    pub fn submitted(&self, digest: &str) -> Result<Option<(String, Option<String>)>, SpoolError> {
        self.lock()
            .query_row(
                "SELECT message_id, reply FROM submissions WHERE digest = ?1",
                [digest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::tests::{new_message, t};
    use crate::spool::{Finished, NewMessage, Spool, SpoolError};

    #[test]
    fn accept_queues_one_delivery_per_member_and_refuses_replays() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        let members = vec!["a@x.org".to_owned(), "b@y.org".to_owned()];
        let digests = ["d1".to_owned()];
        let msg = new_message("m1", &members, &digests);
        let now = t("2026-11-20T12:00:00Z");
        spool.accept(&msg, now).unwrap();
        let due = spool.due(now, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_ne!(due[0].copy_id, due[1].copy_id);
        let again = NewMessage { id: "m2", ..msg };
        assert!(matches!(spool.accept(&again, now), Err(SpoolError::Replay(id)) if id == "m1"));
        // A list named twice breaks a key: told apart from a passing fault,
        // so the intake refuses it instead of answering 451 forever.
        let twice = ["oss@x.org".to_owned(), "oss@x.org".to_owned()];
        let dup = NewMessage {
            id: "m3",
            sig_digests: &["d3".to_owned()],
            public_to: &twice,
            ..msg
        };
        let err = spool.accept(&dup, now).unwrap_err();
        assert!(err.is_constraint(), "{err}");
        assert!(!SpoolError::Replay("m1".into()).is_constraint());

        spool
            .finish(&due[0], Finished::Sent, "250 ok", now)
            .unwrap();
        let later = t("2026-11-20T12:05:00Z");
        spool
            .retry_later(&due[1], "451 busy", later, now, true)
            .unwrap();
        assert!(spool.due(now, 10).unwrap().is_empty());
        assert_eq!(spool.next_due_after(now).unwrap(), Some(later));
        assert!(spool.next_due_after(later).unwrap() > Some(later));
        let retry = &spool.due(later, 10).unwrap()[0];
        assert_eq!(retry.attempts, 1);
        assert_eq!(
            retry.first_failed,
            Some(now),
            "the retry lifetime starts at the first failure"
        );
        let c = spool.counts("m1").unwrap();
        assert_eq!((c.sent, c.pending), (1, 1));
        let events: Vec<String> = spool
            .audit_records()
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(events, ["accepted", "sent", "deferred"]);
    }
}
