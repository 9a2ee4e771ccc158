//! The append-only audit trail, the rejection tally that keeps it from
//! growing without bound, pruning, and the clock's leap base.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use rusqlite::{Connection, params};

use crate::clock::{from_millis, to_millis};

use super::{Spool, SpoolError, write_tx};

/// Writes the counts of the tally's rows whose window began before `cut`
/// and forgets them.
pub(super) fn flush_rows(conn: &Connection, at: i64, cut: i64) -> rusqlite::Result<()> {
    let rows: Vec<(String, String, String, i64, i64)> = conn
        .prepare("SELECT event, host, reason, since, more FROM rejection_tally WHERE since < ?1")?
        .query_map([cut], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    for (event, host, reason, since, more) in rows {
        write_count(conn, at, &event, &host, &reason, since, more)?;
    }
    Ok(())
}

/// The one audit record for what a tally window counted beyond the
/// records it wrote one by one (none when it counted nothing more), and the
/// window forgotten.
pub(super) fn write_count(
    conn: &Connection,
    at: i64,
    event: &str,
    host: &str,
    reason: &str,
    since: i64,
    more: i64,
) -> rusqlite::Result<()> {
    if more > 0 {
        let detail = tally_detail(more as u64, event, host, from_millis(since), reason);
        // A count spans peers and lists: the daemon's own record.
        insert_audit(conn, "", at, event, None, None, &detail)?;
    }
    conn.execute(
        "DELETE FROM rejection_tally WHERE event = ?1 AND host = ?2 AND reason = ?3",
        params![event, host, reason],
    )
    .map(drop)
}

/// The text of a count record, the same for the daemon's tally in memory
/// and the spool's.
pub fn tally_detail(n: u64, event: &str, host: &str, since: DateTime<Utc>, reason: &str) -> String {
    let what = if event == "duplicate" {
        "duplicate submissions"
    } else {
        "rejections"
    };
    format!(
        "{n} more {what} from peer {host} since {}: {reason}",
        since.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// What a rejection is counted by (see [`Spool::tally`]).
#[derive(Debug, Clone, Copy)]
pub struct TallyKey<'a> {
    /// The audit event: `rejected` or `duplicate`.
    pub event: &'a str,
    pub host: &'a str,
    pub reason: &'a str,
    /// Recorded one by one in a window.
    pub each: u64,
    pub window: chrono::Duration,
}

/// Distinct rows a tally keeps apart in a window; beyond, one shared count.
pub const TALLY_KEYS: usize = 512;

/// Records a tally writes one by one in a window, all keys together;
/// beyond, only counts. With [`TALLY_KEYS`], a window adds at most
/// 256 + 512 records (about 110 KB), whatever the number of hosts.
pub const TALLY_RECORDED: u64 = 256;

/// Appends one record to `list`'s audit trail (`""`: the daemon's).
pub(super) fn insert_audit(
    conn: &Connection,
    list: &str,
    at: i64,
    event: &str,
    message_id: Option<&str>,
    member: Option<&str>,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, event, message_id, member, detail, list) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![at, event, message_id, member, detail, list])
    .map(|_| ())
}

impl Spool {
    /// When `event` was last recorded in the audit trail, if ever.
    pub fn last_event(&self, event: &str) -> Result<Option<DateTime<Utc>>, SpoolError> {
        let ms: Option<i64> = self
            .lock()
            .query_row(
                "SELECT MAX(at) FROM audit WHERE list = ?1 AND event = ?2",
                [&*self.list, event],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        Ok(ms.map(from_millis))
    }

    /// Appends an audit record on its own.
    pub fn audit(
        &self,
        now: DateTime<Utc>,
        event: &str,
        message_id: Option<&str>,
        member: Option<&str>,
        detail: &str,
    ) -> Result<(), SpoolError> {
        insert_audit(
            &self.lock(),
            &self.list,
            to_millis(now),
            event,
            message_id,
            member,
            detail,
        )
        .map_err(|e| self.db(e))
    }

    /// Forgets what only ever guards against replays and resends once it
    /// cannot matter: replay-cache entries and submission digests of
    /// messages received before `before` (a signature that old is refused
    /// by its age anyway), fetched-mail digests and join-request counts
    /// older than `scratch_before`. The audit trail is kept. Returns the
    /// rows removed.
    pub fn prune(
        &self,
        before: DateTime<Utc>,
        scratch_before: DateTime<Utc>,
    ) -> Result<usize, SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        // By when each was taken: a command's signature and digest are kept
        // under the (maybe much older) announcement it changed. Rows from
        // before version 6 have no time of their own: their message's.
        // This list's own replay cache and submissions, by its own
        // `before` (each list has its signature_max_age); the scratch
        // tables are the daemon's, with one cut for all.
        let mut removed = 0;
        for sql in [
            "DELETE FROM seen_signatures WHERE list = ?2 AND COALESCE(at, (SELECT received_at FROM messages WHERE id = message_id)) < ?1",
            "DELETE FROM submissions WHERE at < ?1 AND message_id IN (SELECT id FROM messages WHERE list = ?2)",
        ] {
            removed += tx
                .execute(sql, params![to_millis(before), &*self.list])
                .map_err(|e| self.db(e))?;
        }
        for sql in [
            "DELETE FROM fetched WHERE at < ?1",
            "DELETE FROM join_requests WHERE at < ?1",
        ] {
            removed += tx
                .execute(sql, [to_millis(scratch_before)])
                .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(removed)
    }

    /// Records a rejection (or a repeated duplicate) by a process that does
    /// not live for a window, such as `submit`: the first `each` of an
    /// `event`, `host` and `reason` in a `window` get their own audit
    /// record; the others are counted, and written as one record when the
    /// window has passed (at the next such rejection, or by the daemon's
    /// [`Spool::flush_tally`]). Beyond [`TALLY_KEYS`] distinct rows, one shared
    /// row counts for all, so the tally cannot grow without bound either.
    pub fn tally(
        &self,
        now: DateTime<Utc>,
        key: &TallyKey<'_>,
        message_id: Option<&str>,
        detail: &str,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let t = to_millis(now);
        let run = || -> rusqlite::Result<()> {
            let find = |host: &str, reason: &str| {
                tx.query_row(
                    "SELECT since, seen, more FROM rejection_tally WHERE event = ?1 AND host = ?2 AND reason = ?3",
                    params![key.event, host, reason],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()
            };
            // One window for all rows, as the daemon's tally in memory: once
            // it has passed, its counts are written and a new one begins.
            let oldest: Option<i64> =
                tx.query_row("SELECT MIN(since) FROM rejection_tally", [], |r| r.get(0))?;
            if oldest.is_some_and(|since| since <= t - key.window.num_milliseconds()) {
                flush_rows(&tx, t, i64::MAX)?;
            }
            let (mut host, mut reason) = (key.host, key.reason);
            let mut row = find(host, reason)?;
            if row.is_none() {
                let rows: i64 =
                    tx.query_row("SELECT COUNT(*) FROM rejection_tally", [], |r| r.get(0))?;
                if rows >= TALLY_KEYS as i64 {
                    (host, reason) = ("(many hosts)", "(various reasons)");
                    row = find(host, reason)?;
                }
            }
            let (since, seen, more) = row.unwrap_or((t, 0, 0));
            let seen = seen + 1;
            let recorded: i64 = tx.query_row(
                "SELECT COALESCE(SUM(MIN(seen, ?1)), 0) FROM rejection_tally",
                [key.each as i64],
                |r| r.get(0),
            )?;
            let more = if seen > key.each as i64 || recorded >= TALLY_RECORDED as i64 {
                more + 1
            } else {
                insert_audit(&tx, &self.list, t, key.event, message_id, None, detail)?;
                more
            };
            tx.execute(
                "INSERT OR REPLACE INTO rejection_tally (event, host, reason, since, seen, more) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.event, host, reason, since, seen, more],
            )?;
            Ok(())
        };
        run().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Writes the counts [`Spool::tally`] kept in windows that began
    /// before `before` (all of them with `None`), one audit record each,
    /// and forgets those windows.
    pub fn flush_tally(
        &self,
        now: DateTime<Utc>,
        before: Option<DateTime<Utc>>,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let cut = before.map_or(i64::MAX, to_millis);
        flush_rows(&tx, to_millis(now), cut).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// The clock's leap base an earlier daemon kept, if any.
    pub fn leap_base(&self) -> Result<Option<crate::clock::LeapBase>, SpoolError> {
        self.lock()
            .query_row("SELECT boot, wall, uptime FROM leap_base", [], |r| {
                Ok(crate::clock::LeapBase {
                    boot: r.get(0)?,
                    wall: from_millis(r.get(1)?),
                    uptime: r.get(2)?,
                })
            })
            .optional()
            .map_err(|e| self.db(e))
    }

    /// Keeps the clock's leap base for the next daemon of this boot.
    pub fn set_leap_base(&self, base: &crate::clock::LeapBase) -> Result<(), SpoolError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO leap_base (one, boot, wall, uptime) VALUES (1, ?1, ?2, ?3)",
                params![base.boot, to_millis(base.wall), base.uptime],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    /// Writes an `event` record for `message_id` unless there is one
    /// already, in one transaction (two tasks cannot both write it);
    /// returns whether it wrote.
    pub fn audit_once(
        &self,
        now: DateTime<Utc>,
        event: &str,
        message_id: &str,
        detail: &str,
    ) -> Result<bool, SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let there: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM audit WHERE message_id = ?1 AND event = ?2)",
                [message_id, event],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        if !there {
            insert_audit(
                &tx,
                &self.list,
                to_millis(now),
                event,
                Some(message_id),
                None,
                detail,
            )
            .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(!there)
    }

    /// Whether the audit trail has an `event` record for `message_id`.
    pub fn audited(&self, message_id: &str, event: &str) -> Result<bool, SpoolError> {
        self.lock()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM audit WHERE message_id = ?1 AND event = ?2)",
                [message_id, event],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::CommandOrigin;
    use crate::spool::tests::{accept_at, t};

    /// Pruning forgets the replay-cache entries and submission digests of
    /// messages received before the cut, and scratch rows (fetched mail,
    /// join-request counts) older than theirs; later ones stay.
    #[test]
    fn prune_forgets_only_what_is_older_than_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        accept_at(&spool, "old", "2026-11-01T12:00:00Z");
        accept_at(&spool, "new", "2026-11-20T12:00:00Z");
        // A command after the cut about the old announcement: its signature
        // and digest are kept by their own time, not the announcement's.
        let cmd = ["d-cmd".to_owned()];
        spool
            .extend(
                "old",
                t("2026-12-31T12:00:00Z"),
                t("2026-11-15T12:00:00Z"),
                "test",
                Some(&CommandOrigin {
                    digests: &cmd,
                    reply_to: "pst@x.org",
                    submission: Some("sub-cmd"),
                }),
            )
            .unwrap();
        let removed = spool
            .prune(t("2026-11-10T00:00:00Z"), t("2026-11-10T00:00:00Z"))
            .unwrap();
        assert_eq!(
            removed, 3,
            "the old signature, submission and fetched digest"
        );
        assert_eq!(
            spool.replay_of(&cmd).unwrap().as_deref(),
            Some("old"),
            "the later command's signature is still refused as a replay"
        );
        assert_eq!(
            spool.submitted("sub-cmd").unwrap(),
            Some(("old".to_owned(), None))
        );
        assert_eq!(spool.submitted("sub-old").unwrap(), None);
        // Another list's replay cache and submissions are its own to
        // prune, by its own age limit: this list's prune leaves them.
        let other = spool.for_list("other@example.org");
        accept_at(&other, "other", "2026-11-01T12:00:00Z");
        let d = ["d-other".to_owned()];
        spool
            .prune(t("2026-11-10T00:00:00Z"), t("2026-11-10T00:00:00Z"))
            .unwrap();
        assert_eq!(other.replay_of(&d).unwrap().as_deref(), Some("other"));
        assert!(other.submitted("sub-other").unwrap().is_some());
        other
            .prune(t("2026-11-10T00:00:00Z"), t("2026-11-10T00:00:00Z"))
            .unwrap();
        assert_eq!(other.replay_of(&d).unwrap(), None);
        assert_eq!(
            spool.submitted("sub-new").unwrap(),
            Some(("new".to_owned(), None))
        );
        assert_eq!(spool.replay_of(&["d-old".to_owned()]).unwrap(), None);
        assert_eq!(
            spool.replay_of(&["d-new".to_owned()]).unwrap().as_deref(),
            Some("new")
        );
        assert_eq!(
            spool.audit_records().unwrap().len(),
            3,
            "the audit trail is kept"
        );
    }

    /// The spool's tally: eight records a window, then a count, written
    /// when the window has passed (at the next rejection or a flush).
    #[test]
    fn the_tally_records_eight_then_counts_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        let key = TallyKey {
            event: "rejected",
            host: "192.0.2.7",
            reason: "junk",
            each: 8,
            window: chrono::Duration::minutes(1),
        };
        let t0 = t("2026-11-20T12:00:00Z");
        for _ in 0..10 {
            spool.tally(t0, &key, None, "one").unwrap();
        }
        assert_eq!(spool.audit_records().unwrap().len(), 8);
        spool.flush_tally(t0, Some(t0)).unwrap();
        assert_eq!(spool.audit_records().unwrap().len(), 8, "not yet passed");
        spool
            .tally(t0 + chrono::Duration::seconds(61), &key, None, "one")
            .unwrap();
        let records = spool.audit_records().unwrap();
        assert_eq!(records.len(), 10, "{records:?}");
        assert!(
            records[8].detail.starts_with(
                "2 more rejections from peer 192.0.2.7 since 2026-11-20 12:00:00 UTC: junk"
            ),
            "{records:?}"
        );
        assert_eq!(records[9].detail, "one", "a new window records again");
        spool.flush_tally(t0, None).unwrap();
        assert_eq!(spool.audit_records().unwrap().len(), 10, "nothing more");
        let rows: i64 = spool
            .lock()
            .query_row("SELECT COUNT(*) FROM rejection_tally", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "flushed windows are forgotten");

        // Many hosts: at most TALLY_RECORDED records one by one in a
        // window, all hosts together; the rest are counted.
        let before = spool.audit_records().unwrap().len();
        let t1 = t0 + chrono::Duration::minutes(5);
        for i in 0..300 {
            let host = format!("198.51.100.{i}");
            let key = TallyKey { host: &host, ..key };
            spool.tally(t1, &key, None, "one").unwrap();
        }
        let added = spool.audit_records().unwrap().len() - before;
        assert_eq!(added, TALLY_RECORDED as usize);
        spool.flush_tally(t1, None).unwrap();
        let counts = spool.audit_records().unwrap()[before..]
            .iter()
            .filter(|r| r.detail.starts_with("1 more rejections"))
            .count();
        assert_eq!(counts, 300 - TALLY_RECORDED as usize);
    }
}
