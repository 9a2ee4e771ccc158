//! The delivery queue: what is due, each outcome, retries and holds, and
//! the PST's receipt once every copy was tried.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use crate::clock::{from_millis, to_millis};

use super::audit::insert_audit;
use super::types::{DueDelivery, Finished, Kind, Outcome, Recorded, Recording};
use super::{Spool, SpoolError, write_tx};

/// Queues a receipt to `to`, replacing an earlier one for the same message.
pub(super) fn insert_receipt(
    conn: &Connection,
    message_id: &str,
    to: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM deliveries WHERE message_id = ?1 AND member = ?2 AND kind = 'receipt'",
        params![message_id, to],
    )?;
    insert_delivery(conn, message_id, to, Kind::Receipt, to_millis(now))
}

/// The most release-hook rows one read of due deliveries takes.
const HOOKS_PER_READ: usize = 32;

/// Queues one delivery of `message_id` to `to`, due at `due`, with a fresh
/// copy id (a resend after a crash keeps it; a re-queue makes a new one).
/// Every delivery row is made here.
pub(super) fn insert_delivery(
    conn: &Connection,
    message_id: &str,
    to: &str,
    kind: Kind,
    due: i64,
) -> rusqlite::Result<()> {
    // A release goes to a public list from the list's own address; a hook
    // is no mail.
    let token = (kind != Kind::Release && !kind.is_hook()).then(|| crate::crypto::random_hex(12));
    conn.prepare_cached(
        "INSERT INTO deliveries (message_id, member, kind, copy_id, state, next_attempt_at, bounce_token) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6)",
    )?
    .execute(params![message_id, to, kind.as_str(), crate::crypto::random_hex(12), due, token])
    .map(drop)
}

/// Keeps one notice from the list (a sealed text) and queues it to `to`.
pub(super) fn insert_notice(
    conn: &Connection,
    list: &str,
    to: &str,
    sealed: &[u8],
    t: i64,
) -> rusqlite::Result<()> {
    let id = format!("notice-{}", crate::crypto::random_hex(8));
    conn.execute(
        "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, kind, list) VALUES (?1, ?2, '', ?2, ?3, 'notice', ?4)",
        params![id, t, sealed, list],
    )?;
    insert_delivery(conn, &id, to, Kind::Notice, t)
}

/// The delivery of `list` whose bounce address carries `token`: (message
/// id, recipient, kind).
fn find_bounced(
    conn: &Connection,
    token: &str,
    list: &str,
) -> rusqlite::Result<Option<(String, String, Kind)>> {
    use rusqlite::OptionalExtension;
    let found: Option<(String, String, String)> = conn
        .query_row(
            "SELECT d.message_id, d.member, d.kind FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.bounce_token = ?1 AND m.list = ?2",
            params![token, list],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    found
        .map(|(m, to, kind)| {
            let kind = kind.parse::<Kind>().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
            })?;
            Ok((m, to, kind))
        })
        .transpose()
}

/// Ends a delivery (`sent`, `skipped` or `failed`) with its audit record
/// (and a notice to queue with it), in the caller's transaction.
fn finish_in(
    conn: &Connection,
    list: &str,
    d: &DueDelivery,
    state: Finished,
    detail: &str,
    notice: Option<(&str, &[u8])>,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    if let Some((to, sealed)) = notice {
        insert_notice(conn, list, to, sealed, to_millis(now))?;
    }
    conn.prepare_cached(
        "UPDATE deliveries SET state = ?3, attempts = attempts + ?4, last_error = ?5
         WHERE message_id = ?1 AND member = ?2 AND kind = ?6 AND copy_id = ?7",
    )?
    .execute(params![
        d.message_id,
        d.to,
        state.as_str(),
        i64::from(state != Finished::Skipped),
        (state != Finished::Sent).then_some(detail),
        d.kind.as_str(),
        d.copy_id
    ])?;
    let event = match (d.kind, state) {
        (Kind::Release, Finished::Sent) => "released",
        (Kind::Release, Finished::Failed) => "release-failed",
        (Kind::Receipt, Finished::Sent) => "receipt-sent",
        (Kind::Receipt, _) => "receipt-failed",
        (Kind::Lifted, Finished::Sent) => "lifted-sent",
        (Kind::Reminder, Finished::Sent) => "reminder-sent",
        (Kind::Refusal, Finished::Sent) => "refusal-sent",
        (Kind::Post, Finished::Sent) => "post-sent",
        (Kind::Notice, Finished::Sent) => "notice-sent",
        (Kind::Hook, Finished::Sent) => "hook-called",
        (Kind::Hook, Finished::Failed) => "hook-failed",
        (Kind::CancelHook, Finished::Sent) => "cancel-hook-called",
        (Kind::CancelHook, Finished::Failed) => "cancel-hook-failed",
        _ => state.as_str(),
    };
    insert_audit(
        conn,
        list,
        to_millis(now),
        event,
        Some(&d.message_id),
        Some(&d.to),
        detail,
    )?;
    if super::types::redoes_receipt(d, Some(state), false) {
        // The PST hears of every copy that will never arrive (and every
        // hook that was not called): its receipt is sent again, now
        // listing this one.
        redo_receipt(conn, &d.message_id, now)?;
    }
    Ok(())
}

/// Sends the PST's receipt for `message_id` again (fresh, as things stand
/// then). Before the first receipt is queued there is nothing to redo; it
/// will say the same.
fn redo_receipt(conn: &Connection, message_id: &str, now: DateTime<Utc>) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deliveries SET state = 'pending', attempts = 0, first_failed_at = NULL, last_error = NULL,
           bounce = NULL, bounced_at = NULL,
           next_attempt_at = ?2, copy_id = ?3 WHERE message_id = ?1 AND kind = 'receipt'",
        params![message_id, to_millis(now), crate::crypto::random_hex(12)],
    )
    .map(drop)
}

/// Records a transient failure (or a postponement) and when to try again,
/// with its audit record, in the caller's transaction.
fn retry_in(
    conn: &Connection,
    list: &str,
    d: &DueDelivery,
    error: &str,
    next: DateTime<Utc>,
    now: DateTime<Utc>,
    failed: bool,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4,
           first_failed_at = CASE WHEN ?7 THEN COALESCE(first_failed_at, ?8) ELSE first_failed_at END
         WHERE message_id = ?1 AND member = ?2 AND kind = ?5 AND copy_id = ?6",
        params![
            d.message_id,
            d.to,
            to_millis(next),
            error,
            d.kind.as_str(),
            d.copy_id,
            failed,
            to_millis(now)
        ],
    )?;
    insert_audit(
        conn,
        list,
        to_millis(now),
        "deferred",
        Some(&d.message_id),
        Some(&d.to),
        &format!("{error}; next attempt at {}", next.to_rfc3339()),
    )?;
    if super::types::redoes_receipt(d, None, failed) {
        // A hook's first failure is told at once (the PST may publish by
        // hand); it is retried meanwhile, and a failure for good is told again.
        redo_receipt(conn, &d.message_id, now)?;
    }
    Ok(())
}

impl Spool {
    /// Pending deliveries due at `now`: releases first, then release
    /// hooks (at most [`HOOKS_PER_READ`]: a backlog of calls to a hung
    /// endpoint never fills a read), lifted notices, the rest, oldest
    /// message first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueDelivery>, SpoolError> {
        let mut due = self.due_of(now, limit, false)?;
        let hooks = self.due_of(now, HOOKS_PER_READ.min(limit), true)?;
        let releases = due.iter().take_while(|d| d.kind == Kind::Release).count();
        due.splice(releases..releases, hooks);
        due.truncate(limit);
        Ok(due)
    }

    /// [`Spool::due`]'s rows of hooks, or of everything else.
    fn due_of(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        hooks: bool,
    ) -> Result<Vec<DueDelivery>, SpoolError> {
        let conn = self.lock();
        // The hooks' rows by their partial index (`deliveries_hooks_due`).
        let sql = if hooks {
            "SELECT d.message_id, d.member, d.kind, d.copy_id, d.attempts, m.embargo_until, m.embargo_state, d.first_failed_at, d.bounce_token FROM deliveries d
             JOIN messages m ON m.id = d.message_id
             WHERE d.state = 'pending' AND d.kind IN ('hook', 'cancel-hook') AND d.next_attempt_at <= ?1 AND m.list = ?3
             ORDER BY d.next_attempt_at, d.message_id, d.member LIMIT ?2"
        } else {
            "SELECT d.message_id, d.member, d.kind, d.copy_id, d.attempts, m.embargo_until, m.embargo_state, d.first_failed_at, d.bounce_token FROM deliveries d
             JOIN messages m ON m.id = d.message_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND m.list = ?3
               AND d.kind NOT IN ('hook', 'cancel-hook')
             ORDER BY d.kind = 'release' DESC, d.kind = 'lifted' DESC, m.received_at, d.message_id, d.member LIMIT ?2"
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![to_millis(now), limit as i64, &*self.list], |r| {
                let kind = r.get::<_, String>(2)?.parse::<Kind>().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?;
                Ok(DueDelivery {
                    message_id: r.get(0)?,
                    to: r.get(1)?,
                    kind,
                    copy_id: r.get(3)?,
                    attempts: r.get(4)?,
                    embargo_until: from_millis(r.get(5)?),
                    embargo_cancelled: r.get::<_, String>(6)? == "cancelled",
                    first_failed: r.get::<_, Option<i64>>(7)?.map(from_millis),
                    bounce_token: r.get(8)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Whether this very delivery row is still pending and due at `now`:
    /// false once an operator or the PST changed it (extended, cancelled,
    /// re-queued) after the batch was read.
    pub fn still_due(&self, d: &DueDelivery, now: DateTime<Utc>) -> Result<bool, SpoolError> {
        let n: i64 = self
            .read_lock()
            .prepare_cached(
                "SELECT COUNT(*) FROM deliveries WHERE message_id = ?1 AND member = ?2 AND kind = ?3
                 AND copy_id = ?4 AND state = 'pending' AND next_attempt_at <= ?5",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![d.message_id, d.to, d.kind.as_str(), d.copy_id, to_millis(now)],
                    |r| r.get(0),
                )
            })
            .map_err(|e| self.db(e))?;
        Ok(n > 0)
    }

    /// When the next pending delivery not yet due at `now` falls due, if any.
    pub fn next_due_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, SpoolError> {
        let ms: Option<i64> = self
            .lock()
            .query_row(
                "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.state = 'pending' AND d.next_attempt_at > ?1 AND m.list = ?2",
                params![to_millis(now), &*self.list],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        Ok(ms.map(from_millis))
    }

    /// The sealed announcement of a message.
    pub fn sealed(&self, message_id: &str) -> Result<Vec<u8>, SpoolError> {
        self.lock()
            .query_row(
                "SELECT sealed FROM messages WHERE id = ?1 AND list = ?2",
                [message_id, &*self.list],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))
    }

    /// Ends a delivery (`sent`, `skipped` or `failed`) with its audit record, atomically.
    pub fn finish(
        &self,
        d: &DueDelivery,
        state: Finished,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        self.finish_telling(d, state, detail, None, now)
    }

    /// [`Spool::finish`], queueing in the same transaction a notice (a
    /// sealed text, to its address): a skipped member's, say, that a
    /// message was not sent to them.
    pub fn finish_telling(
        &self,
        d: &DueDelivery,
        state: Finished,
        detail: &str,
        notice: Option<(&str, &[u8])>,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        finish_in(&tx, &self.list, d, state, detail, notice, now).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Records the outcomes of many deliveries in one transaction (one
    /// `fsync` for all: group commit), each under its own savepoint, so
    /// one that the spool refuses is that entry's error and not the
    /// others'. The outer error: nothing was recorded (also when an
    /// entry's error made SQLite roll the whole transaction back: a full
    /// disk). Then, for each announcement a member copy among them belongs
    /// to, the PST's receipt is queued if every copy has now been tried
    /// (its own transaction, after the outcomes are durable); the
    /// announcements whose receipt could not be queued are returned, for
    /// the caller to try again ([`Spool::queue_receipts`]).
    pub fn record(&self, batch: &[Recording]) -> Result<Recorded, SpoolError> {
        let Some(now) = batch.iter().map(|r| r.at).max() else {
            return Ok(Recorded::default());
        };
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut conn = self.lock();
            let mut tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
            for r in batch {
                let mut sp = tx.savepoint().map_err(|e| self.db(e))?;
                let d = &r.delivery;
                let done = match &r.outcome {
                    Outcome::Finished {
                        state,
                        detail,
                        notice,
                    } => {
                        let notice = notice.as_ref().map(|(to, n)| (to.as_str(), n.as_slice()));
                        finish_in(&sp, &self.list, d, *state, detail, notice, r.at)
                    }
                    Outcome::Later {
                        error,
                        next,
                        failed,
                    } => retry_in(&sp, &self.list, d, error, *next, r.at, *failed),
                };
                // Committed (released) if it went in; dropped otherwise,
                // rolled back to before this entry.
                let done = match done {
                    Ok(()) => sp.commit(),
                    Err(e) => {
                        if sp.rollback().is_err() {
                            // What this entry did may still be in the
                            // transaction: none of the batch stands.
                            return Err(self.db(e));
                        }
                        drop(sp);
                        Err(e)
                    }
                };
                if let Err(e) = done {
                    if tx.is_autocommit() {
                        // SQLite ended the whole transaction (a full
                        // disk, no memory): none of the batch stands.
                        return Err(self.db(e));
                    }
                    results.push(Err(self.db(e)));
                } else {
                    results.push(Ok(()));
                }
            }
            tx.commit().map_err(|e| self.db(e))?;
        }
        let mut asked: Vec<(String, String)> = Vec::new();
        for (r, result) in batch.iter().zip(&results) {
            if let (Some(to), Ok(())) = (&r.receipt_to, result) {
                let pair = (r.delivery.message_id.clone(), to.clone());
                if !asked.contains(&pair) {
                    asked.push(pair);
                }
            }
        }
        let receipts_owed = self.queue_receipts(asked, now);
        Ok(Recorded {
            results,
            receipts_owed,
        })
    }

    /// Queues the PST's receipt of each (announcement, PST address) whose
    /// copies have all been tried; returns those it could not (a spool
    /// error, logged), to be tried again.
    pub fn queue_receipts(
        &self,
        asked: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        asked
            .into_iter()
            .filter(|(message_id, to)| {
                match self.queue_receipt_when_tried(message_id, to, now) {
                    Ok(queued) => {
                        if queued {
                            tracing::debug!(%message_id, "every copy tried: receipt queued");
                        }
                        false
                    }
                    Err(e) => {
                        tracing::error!(%message_id, error = %e, "cannot queue the receipt yet; trying again");
                        true
                    }
                }
            })
            .collect()
    }

    /// The delivery of this list whose bounce address carries `token`:
    /// (message id, recipient, kind).
    pub fn bounce_target(&self, token: &str) -> Result<Option<(String, String, Kind)>, SpoolError> {
        find_bounced(&self.lock(), token, &self.list).map_err(|e| self.db(e))
    }

    /// Records that the delivery with bounce token `copy_id` (of this list) came back:
    /// a delivery status notification says the recipient's server refused
    /// it after the smarthost took it (`diagnostic`, the remote answer).
    /// With its audit record; for a copy, lifted notice or release the
    /// PST's receipt is sent again, now naming it. Returns the delivery
    /// (message id, recipient, kind), or `None` when no delivery of this
    /// list has that token (a forged or stray notification); with whether
    /// this one marked it (the first for a sent delivery does).
    pub fn bounced(
        &self,
        copy_id: &str,
        diagnostic: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(String, String, Kind, bool)>, SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let Some((message_id, member, kind)) =
            find_bounced(&tx, copy_id, &self.list).map_err(|e| self.db(e))?
        else {
            return Ok(None);
        };
        let t = to_millis(now);
        let write = || -> rusqlite::Result<bool> {
            // The first notification for a sent delivery counts; another
            // (a repeat, or one for a delivery not sent) changes nothing.
            let marked = tx.execute(
                "UPDATE deliveries SET bounce = ?2, bounced_at = ?3
                 WHERE bounce_token = ?1 AND state = 'sent' AND bounce IS NULL",
                params![copy_id, diagnostic, t],
            )?;
            if marked == 0 {
                return Ok(false);
            }
            insert_audit(
                &tx,
                &self.list,
                t,
                "bounced",
                Some(&message_id),
                Some(&member),
                &format!(
                    "a delivery status notification came back for the {}: the recipient's server refused it after the smarthost took it; its answer, unverified: {diagnostic}",
                    kind.as_str()
                ),
            )?;
            if kind == Kind::Copy {
                tx.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, first_failed_at = NULL, last_error = NULL,
                       bounce = NULL, bounced_at = NULL,
                       next_attempt_at = ?2, copy_id = ?3 WHERE message_id = ?1 AND kind = 'receipt'",
                    params![message_id, t, crate::crypto::random_hex(12)],
                )?;
            }
            Ok(true)
        };
        let marked = write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(Some((message_id, member, kind, marked)))
    }

    /// Records a transient failure and when to try again.
    /// `failed` says it was an attempt that failed (which starts the retry
    /// lifetime), not a postponement.
    pub fn retry_later(
        &self,
        d: &DueDelivery,
        error: &str,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
        failed: bool,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        retry_in(&tx, &self.list, d, error, next, now, failed).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Puts a delivery off until `next` without counting an attempt (a
    /// hold, not a failure).
    pub fn hold_until(
        &self,
        d: &DueDelivery,
        why: &str,
        next: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        self.lock()
            .execute(
                "UPDATE deliveries SET next_attempt_at = ?3, last_error = ?4
                 WHERE message_id = ?1 AND member = ?2 AND kind = ?5 AND copy_id = ?6",
                params![
                    d.message_id,
                    d.to,
                    to_millis(next),
                    why,
                    d.kind.as_str(),
                    d.copy_id
                ],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    /// Announcements whose copies have all been tried but whose receipt
    /// was never queued: a crash came between the last copy's outcome and
    /// the receipt's own transaction. The fan-out queues them at start.
    pub fn receipts_owed(&self) -> Result<Vec<String>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT m.id FROM messages m WHERE m.kind = 'announcement' AND m.list = ?1
                   AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.kind = 'copy')
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.kind = 'copy' AND d.state = 'pending' AND d.attempts = 0)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.kind = 'receipt')",
            )
            .map_err(|e| self.db(e))?;
        let ids = stmt
            .query_map([&*self.list], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| self.db(e))?;
        Ok(ids)
    }

    /// Queues the receipt to `to` once every member copy of the message
    /// has been tried at least once; returns whether it was queued now.
    pub fn queue_receipt_when_tried(
        &self,
        message_id: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, SpoolError> {
        // EXISTS on an index: constant work per copy, not a scan of the
        // whole roster (which made a 3,000-member fan-out quadratic).
        let owed = |conn: &Connection| -> rusqlite::Result<bool> {
            let (untried, receipts): (i64, i64) = conn
                .prepare_cached(
                    "SELECT
                       EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1 AND kind = 'copy' AND state = 'pending' AND attempts = 0),
                       EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1 AND kind = 'receipt')",
                )?
                .query_row([message_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(untried == 0 && receipts == 0)
        };
        let mut conn = self.lock();
        // Asked first outside a write transaction (which takes the write
        // lock): while copies are untried, the answer is no.
        if !owed(&conn).map_err(|e| self.db(e))? {
            return Ok(false);
        }
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        if !owed(&tx).map_err(|e| self.db(e))? {
            return Ok(false);
        }
        crate::failpoint::hit("before-receipt");
        insert_delivery(&tx, message_id, to, Kind::Receipt, to_millis(now))
            .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(true)
    }

    /// The public lists a message's advisory is held for.
    pub fn release_targets(&self, message_id: &str) -> Result<Vec<String>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT member FROM deliveries WHERE message_id = ?1 AND kind = 'release' ORDER BY member")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([message_id], |r| r.get(0))
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Queues a fresh receipt to `to` (replacing an earlier one): the PST
    /// hears of a change, e.g. a late release.
    pub fn requeue_receipt(
        &self,
        message_id: &str,
        to: &str,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        insert_receipt(&self.lock(), message_id, to, now).map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::tests::{new_message, t};
    use crate::spool::{Finished, Kind, Outcome, Recording, Spool};

    /// A spool in `dir` with announcement `m1` to `m0..m2@x.org` accepted
    /// (the members, and the time).
    fn three_members_announced(
        dir: &std::path::Path,
    ) -> (Spool, Vec<String>, chrono::DateTime<chrono::Utc>) {
        let spool = Spool::open(dir, "list@example.org").unwrap();
        let members: Vec<String> = (0..3).map(|i| format!("m{i}@x.org")).collect();
        let now = t("2026-11-20T12:00:00Z");
        let digests = ["d1".to_owned()];
        spool
            .accept(&new_message("m1", &members, &digests), now)
            .unwrap();
        (spool, members, now)
    }

    /// A copy's check before it is sent reads the last commit, on its own
    /// connection: it sees what this handle and another process commit,
    /// not what a transaction still open on the first connection did,
    /// and it does not wait for that transaction.
    #[test]
    fn the_check_before_sending_reads_the_last_commit_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _, now) = three_members_announced(dir.path());
        let due: Vec<_> = spool
            .due(now, 10)
            .unwrap()
            .into_iter()
            .filter(|d| d.kind == Kind::Copy)
            .collect();
        assert_eq!(due.len(), 3);
        assert!(due.iter().all(|d| spool.still_due(d, now).unwrap()));
        // Committed on this handle's first connection: seen.
        spool
            .finish(&due[0], Finished::Sent, "250 ok", now)
            .unwrap();
        assert!(!spool.still_due(&due[0], now).unwrap());
        // Committed by another process: seen.
        let other = Spool::open(dir.path(), "list@example.org").unwrap();
        other
            .finish(&due[1], Finished::Failed, "550 no", now)
            .unwrap();
        assert!(!spool.still_due(&due[1], now).unwrap());
        // A write transaction open on the first connection (a commit of
        // outcomes waiting for the disk): the check answers at once, from
        // the last commit.
        let conn = spool.lock();
        conn.execute_batch(
            "BEGIN IMMEDIATE; UPDATE deliveries SET state = 'sent' WHERE member = 'm2@x.org'",
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (reader, d) = (spool.clone(), due[2].clone());
        std::thread::spawn(move || tx.send(reader.still_due(&d, now).unwrap()));
        let answer = rx.recv_timeout(std::time::Duration::from_secs(5));
        conn.execute_batch("ROLLBACK").unwrap();
        drop(conn);
        assert_eq!(
            answer,
            Ok(true),
            "answered from the last commit, without waiting"
        );
        assert!(spool.still_due(&due[2], now).unwrap());
    }

    /// A batch of outcomes is recorded as one, each as if alone: sent,
    /// skipped with a notice, deferred; the receipt is queued once, by the
    /// batch that has the last untried copy, whatever order they come in.
    #[test]
    fn a_batch_records_each_outcome_and_queues_the_receipt_once() {
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let dir = tempfile::tempdir().unwrap();
            let (spool, members, now) = three_members_announced(dir.path());
            let due = spool.due(now, 10).unwrap();
            let outcomes = [
                Outcome::Finished {
                    state: Finished::Sent,
                    detail: "250 ok".into(),
                    notice: None,
                },
                Outcome::Finished {
                    state: Finished::Skipped,
                    detail: "key expired".into(),
                    notice: Some((due[1].to.clone(), b"sealed notice".to_vec())),
                },
                Outcome::Later {
                    error: "451 busy".into(),
                    next: t("2026-11-20T12:05:00Z"),
                    failed: true,
                },
            ];
            let batch = |i: usize| Recording {
                delivery: due[i].clone(),
                outcome: outcomes[i].clone(),
                at: now,
                receipt_to: Some("pst@example.org".into()),
            };
            let receipts = |spool: &Spool| {
                spool
                    .due(now, 10)
                    .unwrap()
                    .into_iter()
                    .filter(|d| d.kind == Kind::Receipt)
                    .count()
            };
            let first: Vec<Recording> = order[..2].iter().map(|&i| batch(i)).collect();
            let results = spool.record(&first).unwrap().results;
            assert!(results.iter().all(Result::is_ok), "{order:?}");
            assert_eq!(receipts(&spool), 0, "{order:?}: a copy is untried");
            let results = spool.record(&[batch(order[2])]).unwrap().results;
            assert!(results.iter().all(Result::is_ok), "{order:?}");
            assert_eq!(receipts(&spool), 1, "{order:?}: every copy tried");
            // The deferred copy, sent on its retry.
            let retried = Recording {
                outcome: outcomes[0].clone(),
                ..batch(2)
            };
            spool.record(&[retried]).unwrap();
            assert_eq!(receipts(&spool), 1, "{order:?}: queued once");
            let c = spool.counts("m1").unwrap();
            assert_eq!((c.sent, c.pending), (2, 0), "{order:?}");
            let notices = spool
                .due(now, 10)
                .unwrap()
                .into_iter()
                .filter(|d| d.kind == Kind::Notice && d.to == members[1])
                .count();
            assert_eq!(notices, 1, "{order:?}: the skipped member's notice");
            let mut events: Vec<String> = spool
                .audit_records()
                .unwrap()
                .into_iter()
                .map(|r| r.event)
                .collect();
            // The grouped counts (status API, metrics) agree with the rows.
            let tally = spool.delivery_tally().unwrap();
            let count = |state| {
                tally
                    .iter()
                    .filter(|t| t.kind == Kind::Copy && t.state == state)
                    .map(|t| t.count)
                    .sum::<usize>()
            };
            use crate::spool::DeliveryState as S;
            assert_eq!(
                (count(S::Sent), count(S::Skipped), count(S::Pending)),
                (2, 1, 0)
            );
            // The newest audit records first, as many as asked.
            let newest = spool.audit_newest(2).unwrap();
            assert_eq!(newest.len(), 2);
            assert_eq!(newest[0].event, "sent", "the retried copy, last");
            events.sort();
            assert_eq!(
                events,
                ["accepted", "deferred", "sent", "sent", "skipped"],
                "{order:?}"
            );
        }
    }
}
