//! Which list the spool's rows are: rows a program from before several
//! lists wrote (list `''`) adopted at every open, a one-list installation
//! whose address changed, and lists the configuration no longer names.

use rusqlite::{Connection, params};

use super::schema::AUDIT_NO_UPDATE;
use super::{Spool, SpoolError, write_tx};

/// Marks rows written without a list (by a program older than schema
/// version 8 still running beside a newer one, which migrated the spool
/// under it) as `list`'s, the file's first list: else nobody would deliver
/// them, and their signatures would not be refused again.
pub(super) fn adopt_unmarked(conn: &mut Connection, list: &str) -> rusqlite::Result<()> {
    let unmarked: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE list = '')
             OR EXISTS (SELECT 1 FROM seen_signatures WHERE list = '')",
        [],
        |r| r.get(0),
    )?;
    if !unmarked {
        return Ok(());
    }
    let tx = write_tx(conn)?;
    tx.execute("UPDATE messages SET list = ?1 WHERE list = ''", [list])?;
    tx.execute(
        "UPDATE OR IGNORE seen_signatures SET list = ?1 WHERE list = ''",
        [list],
    )?;
    tx.commit()
}

/// The lists of the spool (by their messages) that `configured` does not
/// name, each with its deliveries still pending.
fn orphans_of(conn: &Connection, configured: &[String]) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut stmt = conn.prepare(
        "SELECT m.list, (SELECT COUNT(*) FROM deliveries d JOIN messages n ON n.id = d.message_id
                         WHERE n.list = m.list AND d.state = 'pending')
         FROM (SELECT DISTINCT list FROM messages WHERE list != '') m",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter(|(list, _)| !configured.iter().any(|c| c.eq_ignore_ascii_case(list)))
        .map(|(list, n)| (list, n.max(0) as u64))
        .collect())
}

impl Spool {
    /// [`Spool::orphans`] of the spool in `state_dir`, read without
    /// changing anything (for `check`): none when there is no spool yet, or
    /// one from before lists were marked (its first opener adopts it).
    pub fn inspect_orphans(
        state_dir: &std::path::Path,
        configured: &[String],
    ) -> Result<Vec<(String, u64)>, SpoolError> {
        let path = state_dir.join("spool.sqlite");
        if std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
            return Ok(Vec::new());
        }
        let db = |source| SpoolError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(db)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        if version < 8 {
            return Ok(Vec::new());
        }
        let orphans = orphans_of(&conn, configured).map_err(db)?;
        if let ([list], [_]) = (configured, &orphans[..]) {
            let known: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE list = ?1)",
                    [list.to_ascii_lowercase()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !known {
                // A one-list file whose address changed: the first open
                // renames the spool's list (`adopt_renamed`).
                return Ok(Vec::new());
            }
        }
        Ok(orphans)
    }

    /// Lists of the spool (by their messages) that `configured` does not
    /// name, each with its deliveries still pending.
    pub fn orphans(&self, configured: &[String]) -> Result<Vec<(String, u64)>, SpoolError> {
        orphans_of(&self.lock(), configured).map_err(|e| self.db(e))
    }

    /// A one-list file whose list has a new address: the spool's one list
    /// of another name becomes this handle's list (messages, replay cache,
    /// audit trail), in one transaction, with an audit record; as a
    /// one-list spool was before lists were marked. Returns the old name
    /// when it renamed. Nothing happens when the spool knows this list
    /// already or holds more than one.
    pub fn adopt_renamed(
        &self,
        configured: &[String],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, SpoolError> {
        if configured.len() != 1 {
            return Ok(None);
        }
        let orphans = self.orphans(configured)?;
        let known: bool = self
            .lock()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE list = ?1)",
                [&*self.list],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        let [(old, _)] = &orphans[..] else {
            return Ok(None);
        };
        if known {
            return Ok(None);
        }
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let rename = || -> rusqlite::Result<()> {
            let new = &*self.list;
            tx.execute("UPDATE messages SET list = ?2 WHERE list = ?1", [old, new])?;
            tx.execute(
                "UPDATE OR IGNORE seen_signatures SET list = ?2 WHERE list = ?1",
                [old, new],
            )?;
            tx.execute_batch("DROP TRIGGER IF EXISTS audit_no_update;")?;
            tx.execute("UPDATE audit SET list = ?2 WHERE list = ?1", [old, new])?;
            tx.execute_batch(AUDIT_NO_UPDATE)?;
            super::audit::insert_audit(
                &tx,
                new,
                crate::clock::to_millis(now),
                "list-renamed",
                None,
                None,
                &format!(
                    "the configuration's one list is now {new}; the spool's list {old} became it"
                ),
            )
        };
        rename().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(Some(old.clone()))
    }

    /// Deliveries of this list still pending (copies, releases, lifted
    /// notices, reminders, receipts, posts, notices).
    pub fn pending(&self) -> Result<u64, SpoolError> {
        let n: i64 = self
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE m.list = ?1 AND d.state = 'pending'",
                params![&*self.list],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::Spool;
    use crate::spool::tests::{accept_at, t};

    /// A one-list file whose address changed keeps its spool (renamed, with
    /// a record, the trail still append-only); with several lists nothing
    /// is renamed, and a list the file no longer names is reported with
    /// its pending deliveries.
    #[test]
    fn a_renamed_single_list_keeps_its_spool_and_orphans_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let old = Spool::open(dir.path(), "old@x.org").unwrap();
        accept_at(&old, "e1", "2026-12-01T12:00:00Z");
        drop(old);
        let now = t("2026-12-02T12:00:00Z");
        let two = ["new@x.org".to_owned(), "b@x.org".to_owned()];
        let new = Spool::open(dir.path(), "new@x.org").unwrap();
        assert_eq!(new.adopt_renamed(&two, now).unwrap(), None, "two lists");
        // (Its copy and its lifted notice.)
        assert_eq!(new.orphans(&two).unwrap(), [("old@x.org".to_owned(), 2)]);
        let one = ["new@x.org".to_owned()];
        assert_eq!(
            new.adopt_renamed(&one, now).unwrap().as_deref(),
            Some("old@x.org")
        );
        assert_eq!(new.embargoes().unwrap().len(), 1);
        assert_eq!(new.pending().unwrap(), 2);
        assert!(new.replay_of(&["d-e1".to_owned()]).unwrap().is_some());
        assert!(
            new.audit_records()
                .unwrap()
                .iter()
                .any(|r| r.event == "list-renamed")
        );
        assert!(new.orphans(&one).unwrap().is_empty());
        assert!(
            new.lock()
                .execute("UPDATE audit SET detail = ''", [])
                .is_err()
        );
        // Known already: nothing more to rename.
        assert_eq!(new.adopt_renamed(&one, now).unwrap(), None);
    }

    /// Rows an older program wrote beside a newer one (list '') are the
    /// first list's at the next open.
    #[test]
    fn unmarked_rows_go_to_the_first_list_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "a@x.org").unwrap();
        accept_at(&spool, "e1", "2026-12-01T12:00:00Z");
        spool
            .lock()
            .execute_batch("UPDATE messages SET list = ''; UPDATE seen_signatures SET list = '';")
            .unwrap();
        assert!(spool.embargoes().unwrap().is_empty());
        drop(spool);
        let spool = Spool::open(dir.path(), "a@x.org").unwrap();
        assert_eq!(spool.embargoes().unwrap().len(), 1);
        assert!(spool.replay_of(&["d-e1".to_owned()]).unwrap().is_some());
    }
}
