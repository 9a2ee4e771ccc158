//! Embargo operations by the operator's CLI and the PST's commands: list,
//! show, extend, release now, cancel.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use rusqlite::{Connection, params};

use crate::clock::{from_millis, to_millis};

use super::audit::insert_audit;
use super::deliveries::insert_receipt;
use super::incoming::{insert_signatures, insert_submission};
use super::types::{CommandOrigin, EmbargoInfo};
use super::{Spool, SpoolError, write_tx};

/// Moves an embargo's lift to `at`: the spool's time, and the pending
/// release, hook and lifted-notice deliveries with it.
fn set_lift_time(tx: &Connection, id: &str, at: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE messages SET embargo_until = ?2 WHERE id = ?1",
        params![id, to_millis(at)],
    )?;
    tx.execute(
        "UPDATE deliveries SET next_attempt_at = ?2 WHERE message_id = ?1 AND state = 'pending' AND kind IN ('release', 'hook', 'lifted')",
        params![id, to_millis(at)],
    )
    .map(drop)
}

impl Spool {
    /// Every embargo, soonest first.
    pub fn embargoes(&self) -> Result<Vec<EmbargoInfo>, SpoolError> {
        let ids: Vec<String> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare(
                    "SELECT id FROM messages WHERE list = ?1 AND kind = 'announcement' ORDER BY embargo_until",
                )
                .map_err(|e| self.db(e))?;
            let rows = stmt
                .query_map([&*self.list], |r| r.get(0))
                .map_err(|e| self.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.db(e))?
        };
        ids.iter().map(|id| self.embargo(id)).collect()
    }

    /// When the announcement `id` was accepted, if it is one of this list's.
    pub fn received_at(&self, id: &str) -> Result<Option<DateTime<Utc>>, SpoolError> {
        let ms: Option<i64> = self
            .lock()
            .query_row(
                "SELECT received_at FROM messages WHERE id = ?1 AND kind = 'announcement' AND list = ?2",
                [id, &*self.list],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        Ok(ms.map(from_millis))
    }

    /// One embargo, by id.
    pub fn embargo(&self, id: &str) -> Result<EmbargoInfo, SpoolError> {
        let (signer, received, until, state): (String, i64, i64, String) = self
            .lock()
            .query_row(
                "SELECT signer, received_at, embargo_until, embargo_state FROM messages WHERE id = ?1 AND kind = 'announcement' AND list = ?2",
                [id, &*self.list],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.db(e))?
            .ok_or_else(|| SpoolError::Refused("no embargo with this id".to_owned()))?;
        let releases = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached("SELECT member, state FROM deliveries WHERE message_id = ?1 AND kind = 'release' ORDER BY member")
                .map_err(|e| self.db(e))?;
            let rows = stmt
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.db(e))?
        };
        let hooks = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT CASE kind WHEN 'cancel-hook' THEN member || ' (cancel)' ELSE member END, state
                     FROM deliveries WHERE message_id = ?1 AND kind IN ('hook', 'cancel-hook') ORDER BY kind DESC, member",
                )
                .map_err(|e| self.db(e))?;
            let rows = stmt
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.db(e))?
        };
        Ok(EmbargoInfo {
            id: id.to_owned(),
            signer,
            received_at: from_millis(received),
            until: from_millis(until),
            cancelled: state == "cancelled",
            releases,
            hooks,
            copies: self.counts(id)?,
        })
    }

    /// Moves a held embargo to a later time; releases, lifted notices and
    /// the reminder move with it.
    pub fn extend(
        &self,
        id: &str,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        actor: &str,
        origin: Option<&CommandOrigin<'_>>,
    ) -> Result<(), SpoolError> {
        self.change(id, (actor, origin), now, "extended", |tx, until| {
            if to <= until {
                return Err(SpoolError::RefusedAt {
                    reason: "the new time is not later than the current embargo time".to_owned(),
                    times: format!(
                        "asked for {}, now {}",
                        to.to_rfc3339(),
                        until.to_rfc3339()
                    ),
                });
            }
            let delta = to_millis(to) - to_millis(until);
            let db = |e| self.db(e);
            set_lift_time(tx, id, to).map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET next_attempt_at = next_attempt_at + ?2 WHERE message_id = ?1 AND state = 'pending' AND kind = 'reminder'",
                params![id, delta],
            )
            .map_err(db)?;
            Ok(format!("embargo moved from {} to {}", until.to_rfc3339(), to.to_rfc3339()))
        })
    }

    /// Lifts a held embargo now: the advisory and the lifted notices are due at once.
    pub fn release_now(
        &self,
        id: &str,
        now: DateTime<Utc>,
        actor: &str,
        origin: Option<&CommandOrigin<'_>>,
    ) -> Result<(), SpoolError> {
        self.change(id, (actor, origin), now, "released-now", |tx, until| {
            let db = |e| self.db(e);
            set_lift_time(tx, id, now).map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET state = 'cancelled' WHERE message_id = ?1 AND state = 'pending' AND kind = 'reminder'",
                [id],
            )
            .map_err(db)?;
            Ok(format!("embargo due {} lifted early", until.to_rfc3339()))
        })
    }

    /// Cancels a held embargo: the advisory is discarded, members are told
    /// at once; the hooks it would have called at the lift are not, and
    /// `cancel_hooks` (the names of the list's hooks called on a cancel)
    /// are called at once.
    pub fn cancel(
        &self,
        id: &str,
        now: DateTime<Utc>,
        actor: &str,
        origin: Option<&CommandOrigin<'_>>,
        cancel_hooks: &[String],
    ) -> Result<(), SpoolError> {
        self.change(id, (actor, origin), now, "cancelled", |tx, _| {
            let db = |e| self.db(e);
            tx.execute("UPDATE messages SET embargo_state = 'cancelled' WHERE id = ?1", [id])
                .map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET state = 'cancelled' WHERE message_id = ?1 AND state = 'pending' AND kind IN ('release', 'hook', 'reminder')",
                [id],
            )
            .map_err(db)?;
            for name in cancel_hooks {
                super::deliveries::insert_delivery(
                    tx,
                    id,
                    name,
                    super::Kind::CancelHook,
                    to_millis(now),
                )
                .map_err(db)?;
            }
            tx.execute(
                "UPDATE deliveries SET next_attempt_at = ?2 WHERE message_id = ?1 AND state = 'pending' AND kind = 'lifted'",
                params![id, to_millis(now)],
            )
            .map_err(db)?;
            Ok("embargo cancelled; held advisory discarded".to_owned())
        })
    }

    /// Applies an embargo change in one transaction that takes the write lock
    /// first (IMMEDIATE), so the worker cannot publish in between the checks
    /// and the change. Refuses, in this order: a replayed command, an
    /// unknown embargo, a cancelled one, one already lifted or released to
    /// any public list. `apply` makes the change, given the embargo time in
    /// force, and returns the audit detail; a command mail's signatures are
    /// recorded and its receipt queued in the same transaction.
    pub(super) fn change(
        &self,
        id: &str,
        (actor, origin): (&str, Option<&CommandOrigin<'_>>),
        now: DateTime<Utc>,
        event: &str,
        apply: impl FnOnce(&rusqlite::Transaction<'_>, DateTime<Utc>) -> Result<String, SpoolError>,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let digests = origin.map(|o| o.digests).unwrap_or_default();
        if origin.is_some() {
            // A PST's command by mail; the operator's CLI may still change
            // (cancel, release) the embargoes of a list being removed.
            self.takes_mail(&tx)?;
        }
        self.not_seen(&tx, digests)?;
        let row: Option<(String, i64, i64, i64)> = tx
            .query_row(
                "SELECT embargo_state, embargo_until,
                   (SELECT COUNT(*) FROM deliveries WHERE message_id = ?1 AND kind IN ('release', 'hook') AND state = 'sent'),
                   (SELECT COUNT(*) FROM deliveries WHERE message_id = ?1 AND kind IN ('release', 'lifted') AND state = 'pending')
                 FROM messages WHERE id = ?1 AND kind = 'announcement' AND list = ?2",
                [id, &*self.list],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        let Some((state, until, released, still_held)) = row else {
            return Err(SpoolError::Refused("no embargo with this id".to_owned()));
        };
        let until = from_millis(until);
        if state == "cancelled" {
            return Err(SpoolError::Refused("the embargo was cancelled".to_owned()));
        }
        if released > 0 {
            return Err(SpoolError::Refused(
                "the embargo was already released to a public list or published by a release hook"
                    .to_owned(),
            ));
        }
        // Past its time but not out (held for a clock leap, or the daemon
        // was down): release-now may still send it at once.
        let held_past = event == "released-now" && still_held > 0;
        if until <= now && !held_past {
            return Err(SpoolError::RefusedAt {
                reason: "the embargo already lifted".to_owned(),
                times: format!("at {}", until.to_rfc3339()),
            });
        }
        if let Some(origin) = origin {
            insert_signatures(&tx, &self.list, origin.digests, id, to_millis(now))
                .map_err(|e| self.db(e))?;
            if let Some(digest) = origin.submission {
                insert_submission(&tx, digest, id, to_millis(now), None).map_err(|e| self.db(e))?;
            }
            // The answer: a fresh receipt (it shows the state after this change).
            insert_receipt(&tx, id, origin.reply_to, now).map_err(|e| self.db(e))?;
        }
        let detail = apply(&tx, until)?;
        insert_audit(
            &tx,
            &self.list,
            to_millis(now),
            event,
            Some(id),
            None,
            &format!("{detail} (by {actor})"),
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }
}

impl Spool {
    /// Records `member`'s acknowledgement of embargo `id` (its signature
    /// identities into the replay cache), with an audit record. Refused
    /// when no copy of that embargo of this list went to `member`; a
    /// second acknowledgement is kept as the first. Returns whether it is
    /// the first.
    pub fn acknowledge(
        &self,
        id: &str,
        member: &str,
        digests: &[String],
        now: DateTime<Utc>,
    ) -> Result<bool, SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        self.takes_mail(&tx)?;
        self.not_seen(&tx, digests)?;
        let had_copy: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM deliveries d JOIN messages m ON m.id = d.message_id
                   WHERE d.message_id = ?1 AND m.list = ?3 AND m.kind = 'announcement'
                     AND d.kind = 'copy' AND d.state = 'sent' AND d.member = ?2 COLLATE NOCASE)",
                params![id, member, &*self.list],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        if !had_copy {
            return Err(SpoolError::Refused(
                "no copy of that embargo went to the signer".to_owned(),
            ));
        }
        let t = to_millis(now);
        let write = || -> rusqlite::Result<bool> {
            let first = tx.execute(
                "INSERT OR IGNORE INTO acks (message_id, member, at) VALUES (?1, ?2, ?3)",
                params![id, member, t],
            )? == 1;
            insert_signatures(&tx, &self.list, digests, id, t)?;
            insert_audit(
                &tx,
                &self.list,
                t,
                "acknowledged",
                Some(id),
                Some(member),
                if first {
                    "the member acknowledged the embargo (signed, verified against its certificate)"
                } else {
                    "the member acknowledged the embargo again"
                },
            )?;
            Ok(first)
        };
        let first = write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(first)
    }

    /// Who acknowledged embargo `id`, and when, by address.
    pub fn acks(&self, id: &str) -> Result<Vec<(String, DateTime<Utc>)>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT a.member, a.at FROM acks a JOIN messages m ON m.id = a.message_id
                 WHERE a.message_id = ?1 AND m.list = ?2 ORDER BY a.member",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![id, &*self.list], |r| {
                Ok((r.get::<_, String>(0)?, from_millis(r.get(1)?)))
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::tests::t;
    use crate::spool::{Finished, Kind, NewMessage, Spool, SpoolError};

    #[test]
    fn operators_extend_release_and_cancel_held_embargoes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        let now = t("2026-11-20T12:00:00Z");
        let until = t("2026-11-22T12:00:00Z");
        let members = vec!["a@x.org".to_owned()];
        let public = vec!["pub@x.org".to_owned()];
        let hooks = vec!["site".to_owned(), "gh#1".to_owned()];
        for (id, digest) in [("m1", "d1"), ("m2", "d2")] {
            let msg = NewMessage {
                hooks: &hooks,
                id,
                signer: "F",
                embargo_until: until,
                sig_digests: &[digest.to_owned()],
                sealed: b"c",
                members: &members,
                public_to: &public,
                reminder: Some(("pst@x.org", t("2026-11-21T12:00:00Z"))),
                ack_reminders: None,
                fetched: None,
                submission: None,
            };
            spool.accept(&msg, now).unwrap();
        }
        let kinds_due = |at| -> Vec<(String, Kind)> {
            spool
                .due(at, 100)
                .unwrap()
                .into_iter()
                .map(|d| (d.message_id, d.kind))
                .collect()
        };
        assert_eq!(spool.embargo("m1").unwrap().state(now), "held");
        assert!(
            matches!(
                spool.extend("m1", t("2026-11-21T00:00:00Z"), now, "test", None),
                Err(SpoolError::RefusedAt { .. })
            ),
            "earlier is no extension"
        );
        spool
            .extend("m1", t("2026-11-23T12:00:00Z"), now, "test", None)
            .unwrap();
        assert_eq!(
            spool.embargo("m1").unwrap().until,
            t("2026-11-23T12:00:00Z")
        );
        let at_old_time: Vec<Kind> = kinds_due(until)
            .into_iter()
            .filter(|(m, _)| m == "m1")
            .map(|(_, k)| k)
            .collect();
        assert!(
            !at_old_time.contains(&Kind::Release)
                && !at_old_time.contains(&Kind::Lifted)
                && !at_old_time.contains(&Kind::Hook),
            "{at_old_time:?}"
        );
        let at_new_time = kinds_due(t("2026-11-23T12:00:00Z"));
        let m1_hooks = at_new_time
            .iter()
            .filter(|(m, k)| m == "m1" && *k == Kind::Hook)
            .count();
        assert_eq!(m1_hooks, 2, "the hooks moved with the lift");
        // The reminder moved by the same day: due at the old embargo time, not before.
        assert!(at_old_time.contains(&Kind::Reminder));
        let just_before = until - chrono::Duration::seconds(1);
        assert!(!kinds_due(just_before).contains(&("m1".to_owned(), Kind::Reminder)));

        spool.release_now("m2", now, "test", None).unwrap();
        let due_now: Vec<Kind> = kinds_due(now)
            .into_iter()
            .filter(|(m, _)| m == "m2")
            .map(|(_, k)| k)
            .collect();
        assert!(
            due_now.contains(&Kind::Release)
                && due_now.contains(&Kind::Lifted)
                && due_now.contains(&Kind::Hook),
            "{due_now:?}"
        );
        assert!(!due_now.contains(&Kind::Reminder));
        assert!(
            matches!(
                spool.cancel("m2", t("2026-11-20T12:00:01Z"), "test", None, &[]),
                Err(SpoolError::RefusedAt { .. })
            ),
            "already lifted"
        );

        spool
            .cancel("m1", now, "test", None, &["site".to_owned()])
            .unwrap();
        let info = spool.embargo("m1").unwrap();
        assert_eq!(info.state(now), "cancelled");
        assert_eq!(
            info.releases,
            [("pub@x.org".to_owned(), "cancelled".to_owned())]
        );
        let state = |s: &str| s.to_owned();
        assert_eq!(
            info.hooks,
            [
                (state("gh#1"), state("cancelled")),
                (state("site"), state("cancelled")),
                (state("site (cancel)"), state("pending")),
            ],
            "the lift's calls cancelled, the cancel's called"
        );
        let m1_now: Vec<Kind> = kinds_due(now)
            .into_iter()
            .filter(|(m, _)| m == "m1")
            .map(|(_, k)| k)
            .collect();
        assert!(
            m1_now.contains(&Kind::Lifted)
                && m1_now.contains(&Kind::CancelHook)
                && !m1_now.contains(&Kind::Release)
                && !m1_now.contains(&Kind::Hook),
            "{m1_now:?}"
        );
        // A hook is no mail: it has no bounce address.
        assert!(
            spool
                .due(now, 100)
                .unwrap()
                .iter()
                .filter(|d| d.kind.is_hook())
                .all(|d| d.bounce_token.is_none())
        );
        assert!(matches!(spool.embargo("nope"), Err(SpoolError::Refused(_))));
        let events: Vec<String> = spool
            .audit_records()
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert!(
            events.contains(&"extended".to_owned()) && events.contains(&"cancelled".to_owned())
        );
    }

    /// A release sent to one public list, or a release hook called (say, a
    /// GitHub advisory published), and nothing can be taken back.
    #[test]
    fn an_embargo_with_a_release_out_cannot_be_cancelled_or_extended() {
        for out in [Kind::Release, Kind::Hook] {
            out_then_refused(out);
        }
    }

    fn out_then_refused(out: Kind) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        let now = t("2026-11-20T12:00:00Z");
        let until = t("2026-11-22T12:00:00Z");
        let public = vec!["pub1@x.org".to_owned(), "pub2@x.org".to_owned()];
        let msg = NewMessage {
            hooks: &["gh".to_owned()],
            id: "m1",
            signer: "F",
            embargo_until: until,
            sig_digests: &["d1".to_owned()],
            sealed: b"c",
            members: &[],
            public_to: &public,
            reminder: None,
            ack_reminders: None,
            fetched: None,
            submission: None,
        };
        spool.accept(&msg, now).unwrap();
        // One list has it already (say, a release-now raced by a clock read).
        let first = spool
            .due(until, 10)
            .unwrap()
            .into_iter()
            .find(|d| d.kind == out)
            .unwrap();
        spool.finish(&first, Finished::Sent, "250", until).unwrap();
        for refused in [
            spool.cancel("m1", now, "test", None, &[]),
            spool.extend("m1", t("2026-11-23T12:00:00Z"), now, "test", None),
        ] {
            assert!(
                matches!(refused, Err(SpoolError::Refused(ref why)) if why.contains("released")),
                "{refused:?}"
            );
        }
    }
}
