//! Which list the spool's rows are: rows a program from before several
//! lists wrote (list `''`) adopted at every open, a one-list installation
//! whose address changed, and lists the configuration no longer names.

use rusqlite::{Connection, OptionalExtension, params};

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
    // What was left is already in the list's cache.
    tx.execute("DELETE FROM seen_signatures WHERE list = ''", [])?;
    tx.commit()
}

/// The list a one-list file's list was called before (see
/// `Spool::adopt_renamed`), if it is one: the spool's one list the file does
/// not name, under the same key, not removed, while `list` has no
/// messages.
fn renamed_from(
    conn: &Connection,
    file: &crate::config::Neighbours,
    list: &str,
    key: &str,
) -> rusqlite::Result<Option<String>> {
    if !file.one_list_form {
        return Ok(None);
    }
    let orphans = orphans_of(conn, &file.lists)?;
    let [(old, _)] = &orphans[..] else {
        return Ok(None);
    };
    let known: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM messages WHERE list = ?1)",
        [list],
        |r| r.get(0),
    )?;
    let same_key: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM lists WHERE address = ?1 AND key = ?2 AND state != 'removed')",
        [old, key],
        |r| r.get(0),
    )?;
    Ok((!known && same_key).then(|| old.clone()))
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
    /// Refuses, inside a write transaction that commits mail for this
    /// list, a list that is closing or removed.
    pub(super) fn takes_mail(&self, conn: &Connection) -> Result<(), SpoolError> {
        let state: Option<String> = conn
            .query_row(
                "SELECT state FROM lists WHERE address = ?1",
                [&*self.list],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        match state.as_deref() {
            Some("closing" | "removed") => Err(SpoolError::Closed(self.list.to_string())),
            _ => Ok(()),
        }
    }

    /// Notes this list and its key (the fingerprint) in the spool; its
    /// state stays as it is.
    pub fn register(&self, key: &str) -> Result<(), SpoolError> {
        self.lock()
            .execute(
                "INSERT INTO lists (address, key) VALUES (?1, ?2)
                 ON CONFLICT (address) DO UPDATE SET key = excluded.key",
                [&*self.list, key],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    /// Sets whether this list takes mail: `active`, `closing` (a reload
    /// removing it checks its queue) or `removed`.
    pub fn set_list_state(&self, state: &str) -> Result<(), SpoolError> {
        self.lock()
            .execute(
                "UPDATE lists SET state = ?2 WHERE address = ?1",
                [&*self.list, state],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    /// [`Spool::orphans`] of the spool in `state_dir`, read without
    /// changing anything (for `check`): none when there is no spool yet, or
    /// one from before lists were marked (its first opener adopts it).
    pub fn inspect_orphans(
        state_dir: &std::path::Path,
        file: &crate::config::Neighbours,
        list: &str,
        key: &str,
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
        if renamed_from(&conn, file, list, key).map_err(db)?.is_some() {
            // The first open renames it (`adopt_renamed`).
            return Ok(Vec::new());
        }
        orphans_of(&conn, &file.lists).map_err(db)
    }

    /// Lists of the spool (by their messages) that `configured` does not
    /// name, each with its deliveries still pending.
    pub fn orphans(&self, configured: &[String]) -> Result<Vec<(String, u64)>, SpoolError> {
        orphans_of(&self.lock(), configured).map_err(|e| self.db(e))
    }

    /// A one-list file (the `[list]` form) whose list has a new address:
    /// the spool's one other list becomes this handle's list (messages,
    /// replay cache, audit trail), in one transaction, with an audit
    /// record; as a one-list spool was before lists were marked. Only
    /// under the same list key, never a list a reload removed, and only
    /// while this list has no messages of its own. Returns the old name
    /// when it renamed.
    pub fn adopt_renamed(
        &self,
        file: &crate::config::Neighbours,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, SpoolError> {
        let Some(old) =
            renamed_from(&self.lock(), file, &self.list, key).map_err(|e| self.db(e))?
        else {
            return Ok(None);
        };
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        let rename = || -> rusqlite::Result<()> {
            let new = &*self.list;
            tx.execute("UPDATE messages SET list = ?2 WHERE list = ?1", [&old, new])?;
            tx.execute(
                "UPDATE OR IGNORE seen_signatures SET list = ?2 WHERE list = ?1",
                [&old, new],
            )?;
            tx.execute("DELETE FROM seen_signatures WHERE list = ?1", [&old])?;
            tx.execute("DELETE FROM lists WHERE address = ?1", [&old])?;
            tx.execute_batch("DROP TRIGGER IF EXISTS audit_no_update;")?;
            tx.execute("UPDATE audit SET list = ?2 WHERE list = ?1", [&old, new])?;
            tx.execute_batch(AUDIT_NO_UPDATE)?;
            super::audit::insert_audit(
                &tx,
                new,
                crate::clock::to_millis(now),
                "list-renamed",
                None,
                None,
                &format!(
                    "the configuration's one list is now {new}; the spool's list {old} (the same key) became it"
                ),
            )
        };
        rename().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(Some(old))
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
    use crate::spool::tests::{accept_at, t};
    use crate::spool::{NewMessage, Spool, SpoolError};

    /// A one-list file whose address changed keeps its spool (renamed, with
    /// a record, the trail still append-only): only in the `[list]` form,
    /// under the same key, and never a list a reload removed. A list the
    /// file does not name is reported with its pending deliveries.
    #[test]
    fn a_renamed_single_list_keeps_its_spool_and_orphans_are_named() {
        use crate::config::Neighbours;
        let dir = tempfile::tempdir().unwrap();
        let old = Spool::open(dir.path(), "old@x.org").unwrap();
        old.register("KEY").unwrap();
        accept_at(&old, "e1", "2026-12-01T12:00:00Z");
        drop(old);
        let now = t("2026-12-02T12:00:00Z");
        let file = |lists: &[&str], one_list_form: bool| Neighbours {
            first: lists[0].to_owned(),
            lists: lists.iter().map(|l| l.to_string()).collect(),
            one_list_form,
            ..Neighbours::default()
        };
        let new = Spool::open(dir.path(), "new@x.org").unwrap();
        let two = file(&["new@x.org", "b@x.org"], false);
        assert_eq!(
            new.adopt_renamed(&two, "KEY", now).unwrap(),
            None,
            "two lists"
        );
        // (Its copy and its lifted notice.)
        assert_eq!(
            new.orphans(&two.lists).unwrap(),
            [("old@x.org".to_owned(), 2)]
        );
        let one = file(&["new@x.org"], true);
        assert_eq!(
            new.adopt_renamed(&file(&["new@x.org"], false), "KEY", now)
                .unwrap(),
            None,
            "one [[list]] table is not the one-list form"
        );
        assert_eq!(
            new.adopt_renamed(&one, "OTHER", now).unwrap(),
            None,
            "another key: another list"
        );
        assert_eq!(
            new.adopt_renamed(&one, "KEY", now).unwrap().as_deref(),
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
        assert!(new.orphans(&one.lists).unwrap().is_empty());
        assert!(
            new.lock()
                .execute("UPDATE audit SET detail = ''", [])
                .is_err()
        );
        // Known already: nothing more to rename.
        assert_eq!(new.adopt_renamed(&one, "KEY", now).unwrap(), None);
        // A list a reload removed is never adopted.
        let gone = new.for_list("gone@x.org");
        gone.register("KEY2").unwrap();
        accept_at(&gone, "e2", "2026-12-01T12:00:00Z");
        gone.set_list_state("removed").unwrap();
        let third = Spool::open(dir.path(), "third@x.org").unwrap();
        let only_third = file(&["third@x.org"], true);
        assert_eq!(third.adopt_renamed(&only_third, "KEY2", now).unwrap(), None);
    }

    /// A list closed for removal takes no more mail, in any process.
    #[test]
    fn a_closing_list_commits_no_mail() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "a@x.org").unwrap();
        spool.register("KEY").unwrap();
        spool.set_list_state("closing").unwrap();
        let members = ["m@x.org".to_owned()];
        let refused = spool.accept(
            &NewMessage {
                hooks: &[],
                id: "e1",
                signer: "FPR",
                embargo_until: t("2026-12-30T12:00:00Z"),
                sig_digests: &[],
                sealed: b"x",
                members: &members,
                public_to: &[],
                reminder: None,
                ack_reminders: None,
                fetched: None,
                submission: None,
            },
            t("2026-12-01T12:00:00Z"),
        );
        assert!(matches!(refused, Err(SpoolError::Closed(_))), "{refused:?}");
        spool.set_list_state("active").unwrap();
        accept_at(&spool, "e2", "2026-12-01T12:00:00Z");
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
