//! Embargo operations by the operator's CLI and the PST's commands: list,
//! show, extend, release now, cancel.

use super::*;

impl Spool {
    /// Every embargo, soonest first.
    pub fn embargoes(&self) -> Result<Vec<EmbargoInfo>, SpoolError> {
        let ids: Vec<String> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare(
                    "SELECT id FROM messages WHERE kind = 'announcement' ORDER BY embargo_until",
                )
                .map_err(|e| self.db(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.db(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.db(e))?
        };
        ids.iter().map(|id| self.embargo(id)).collect()
    }

    /// One embargo, by id.
    pub fn embargo(&self, id: &str) -> Result<EmbargoInfo, SpoolError> {
        let (signer, received, until, state): (String, i64, i64, String) = self
            .lock()
            .query_row(
                "SELECT signer, received_at, embargo_until, embargo_state FROM messages WHERE id = ?1 AND kind = 'announcement'",
                [id],
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
        Ok(EmbargoInfo {
            id: id.to_owned(),
            signer,
            received_at: from_millis(received),
            until: from_millis(until),
            cancelled: state == "cancelled",
            releases,
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
            tx.execute("UPDATE messages SET embargo_until = ?2 WHERE id = ?1", params![id, to_millis(to)])
                .map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET next_attempt_at = ?2 WHERE message_id = ?1 AND state = 'pending' AND kind IN ('release', 'lifted')",
                params![id, to_millis(to)],
            )
            .map_err(db)?;
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
            tx.execute("UPDATE messages SET embargo_until = ?2 WHERE id = ?1", params![id, to_millis(now)])
                .map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET next_attempt_at = ?2 WHERE message_id = ?1 AND state = 'pending' AND kind IN ('release', 'lifted')",
                params![id, to_millis(now)],
            )
            .map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET state = 'cancelled' WHERE message_id = ?1 AND state = 'pending' AND kind = 'reminder'",
                [id],
            )
            .map_err(db)?;
            Ok(format!("embargo due {} lifted early", until.to_rfc3339()))
        })
    }

    /// Cancels a held embargo: the advisory is discarded, members are told at once.
    pub fn cancel(
        &self,
        id: &str,
        now: DateTime<Utc>,
        actor: &str,
        origin: Option<&CommandOrigin<'_>>,
    ) -> Result<(), SpoolError> {
        self.change(id, (actor, origin), now, "cancelled", |tx, _| {
            let db = |e| self.db(e);
            tx.execute("UPDATE messages SET embargo_state = 'cancelled' WHERE id = ?1", [id])
                .map_err(db)?;
            tx.execute(
                "UPDATE deliveries SET state = 'cancelled' WHERE message_id = ?1 AND state = 'pending' AND kind IN ('release', 'reminder')",
                [id],
            )
            .map_err(db)?;
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
        self.not_seen(&tx, digests)?;
        let row: Option<(String, i64, i64, i64)> = tx
            .query_row(
                "SELECT embargo_state, embargo_until,
                   (SELECT COUNT(*) FROM deliveries WHERE message_id = ?1 AND kind = 'release' AND state = 'sent'),
                   (SELECT COUNT(*) FROM deliveries WHERE message_id = ?1 AND kind IN ('release', 'lifted') AND state = 'pending')
                 FROM messages WHERE id = ?1 AND kind = 'announcement'",
                [id],
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
                "the embargo was already released to a public list".to_owned(),
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
            insert_signatures(&tx, origin.digests, id, to_millis(now)).map_err(|e| self.db(e))?;
            if let Some(digest) = origin.submission {
                insert_submission(&tx, digest, id, to_millis(now), None).map_err(|e| self.db(e))?;
            }
            // The answer: a fresh receipt (it shows the state after this change).
            insert_receipt(&tx, id, origin.reply_to, now).map_err(|e| self.db(e))?;
        }
        let detail = apply(&tx, until)?;
        insert_audit(
            &tx,
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
