//! Read-only queries for operators (`status`, `audit`, `embargo show`) and
//! the fan-out's receipts.

use rusqlite::params;

use crate::clock::from_millis;

use super::types::{AuditRecord, DeliveryCounts, DeliveryRow, DeliveryTally, Kind};
use super::{Spool, SpoolError};

impl Spool {
    /// Each delivery of one kind of a message: (recipient, state, last error).
    pub fn delivery_report(
        &self,
        message_id: &str,
        kind: Kind,
    ) -> Result<Vec<(String, String, Option<String>)>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT member, CASE WHEN bounce IS NULL THEN state ELSE 'bounced' END, COALESCE(bounce, last_error)
                 FROM deliveries WHERE message_id = ?1 AND kind = ?2 ORDER BY member",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![message_id, kind.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Changes whenever another connection commits (`PRAGMA data_version`):
    /// how the daemon notices the operator's CLI within a second.
    pub fn data_version(&self) -> Result<i64, SpoolError> {
        self.lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.db(e))
    }

    /// Delivery states of one message.
    pub fn counts(&self, message_id: &str) -> Result<DeliveryCounts, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT CASE WHEN bounce IS NULL THEN state ELSE 'bounced' END, COUNT(*) FROM deliveries
                 WHERE message_id = ?1 AND kind = 'copy' GROUP BY 1",
            )
            .map_err(|e| self.db(e))?;
        let mut counts = DeliveryCounts::default();
        let rows = stmt
            .query_map([message_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| self.db(e))?;
        for row in rows {
            let (state, n) = row.map_err(|e| self.db(e))?;
            match state.as_str() {
                "pending" => counts.pending = n as usize,
                "sent" => counts.sent = n as usize,
                "skipped" => counts.skipped = n as usize,
                _ => counts.failed += n as usize,
            }
        }
        Ok(counts)
    }

    /// The audit trail of one message, oldest first.
    pub fn audit_for(&self, message_id: &str) -> Result<Vec<AuditRecord>, SpoolError> {
        self.audit_query(Some(message_id), None)
    }

    /// The audit trail of one message and/or one recipient (both `None`:
    /// all of it), oldest first.
    pub fn audit_query(
        &self,
        message_id: Option<&str>,
        member: Option<&str>,
    ) -> Result<Vec<AuditRecord>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT at, event, message_id, member, detail FROM audit
                 WHERE list IN (?3, '') AND (?1 IS NULL OR message_id = ?1) AND (?2 IS NULL OR member = ?2 COLLATE NOCASE)
                 ORDER BY seq",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![message_id, member, &*self.list], audit_row)
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// The newest `limit` audit records of this list and the daemon,
    /// newest first (the status API: bounded work, however long the trail).
    pub fn audit_newest(&self, limit: usize) -> Result<Vec<AuditRecord>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT at, event, message_id, member, detail FROM audit
                 WHERE list IN (?1, '') ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![&*self.list, limit as i64], audit_row)
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// This list's deliveries counted by kind and state (a bounced one as
    /// `bounced`), with each group's earliest next attempt and earliest
    /// embargo time: what the status API and the metrics show, in one
    /// grouped query instead of every row.
    pub fn delivery_tally(&self) -> Result<Vec<DeliveryTally>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT d.kind, CASE WHEN d.bounce IS NULL THEN d.state ELSE 'bounced' END AS s,
                        COUNT(*), MIN(d.next_attempt_at), MIN(m.embargo_until)
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE m.list = ?1 GROUP BY d.kind, s",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![&*self.list], |r| {
                Ok(DeliveryTally {
                    kind: parsed(r, 0)?,
                    state: parsed(r, 1)?,
                    count: r.get::<_, i64>(2)?.max(0) as usize,
                    first_attempt: from_millis(r.get(3)?),
                    first_embargo: from_millis(r.get(4)?),
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Deliveries of one message and/or to one recipient (both `None`: all).
    pub fn deliveries(
        &self,
        message_id: Option<&str>,
        member: Option<&str>,
    ) -> Result<Vec<DeliveryRow>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT d.message_id, d.member, d.kind, CASE WHEN d.bounce IS NULL THEN d.state ELSE 'bounced' END,
                        d.attempts, d.next_attempt_at, COALESCE(d.bounce, d.last_error)
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE m.list = ?3 AND (?1 IS NULL OR d.message_id = ?1) AND (?2 IS NULL OR d.member = ?2 COLLATE NOCASE)
                 ORDER BY m.received_at, d.message_id, d.kind, d.member",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![message_id, member, &*self.list], |r| {
                Ok(DeliveryRow {
                    message_id: r.get(0)?,
                    member: r.get(1)?,
                    kind: parsed(r, 2)?,
                    state: parsed(r, 3)?,
                    attempts: r.get(4)?,
                    next_attempt: from_millis(r.get(5)?),
                    last_error: r.get(6)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Who the message that `id` names went to: `id` is the left side of
    /// a Message-ID this list wrote, a delivery's copy id (the outer
    /// Message-ID) or a message id (the protected one inside). An
    /// announcement's copy or lifted notice names its copies' recipients,
    /// a post its posts' recipients; a receipt, reminder, refusal, notice
    /// or release names no member (the PST's, or public). `None`: no
    /// message of this list has that id.
    pub fn thread_of(&self, id: &str) -> Result<Option<Vec<String>>, SpoolError> {
        use rusqlite::OptionalExtension;
        let conn = self.lock();
        let by_copy: Option<(String, String)> = conn
            .query_row(
                "SELECT d.message_id, d.kind FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE d.copy_id = ?1 AND m.list = ?2",
                params![id, &*self.list],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        let (message, kind) = match by_copy {
            Some((message, kind)) => (message, kind),
            None => {
                let by_id: Option<String> = conn
                    .query_row(
                        "SELECT kind FROM messages WHERE id = ?1 AND list = ?2",
                        params![id, &*self.list],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.db(e))?;
                match by_id.as_deref() {
                    Some("announcement") => (id.to_owned(), "copy".to_owned()),
                    Some("post") => (id.to_owned(), "post".to_owned()),
                    Some(_) => return Ok(Some(Vec::new())),
                    None => return Ok(None),
                }
            }
        };
        let rows = match kind.as_str() {
            "copy" | "lifted" => "copy",
            "post" => "post",
            _ => return Ok(Some(Vec::new())),
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT member FROM deliveries WHERE message_id = ?1 AND kind = ?2 ORDER BY member",
            )
            .map_err(|e| self.db(e))?;
        let members = stmt
            .query_map(params![message, rows], |r| r.get(0))
            .map_err(|e| self.db(e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.db(e))?;
        Ok(Some(members))
    }

    /// The whole audit trail, oldest first.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>, SpoolError> {
        self.audit_query(None, None)
    }
}

/// Column `i` of `r`, read as text and parsed: an unknown value is an error
/// naming the column, never taken for another.
/// An audit record from a row of `at, event, message_id, member, detail`.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        at: from_millis(r.get(0)?),
        event: r.get(1)?,
        message_id: r.get(2)?,
        member: r.get(3)?,
        detail: r.get(4)?,
    })
}

fn parsed<T: std::str::FromStr<Err = String>>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}
