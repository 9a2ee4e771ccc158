//! The spool's schema and its migrations: what the spool stores, table by
//! table, and how an older spool is brought up to `SCHEMA_VERSION` in one
//! transaction.

use rusqlite::Connection;
use rusqlite::OptionalExtension;

use super::write_tx;

/// The schema version this code writes (`PRAGMA user_version`). Version 7:
/// sealed records in framing v3 (`record`: an announcement's scope), which
/// an older program cannot read, so it refuses the spool by its version
/// instead; and the index on `deliveries.copy_id`. Version 8: several
/// lists in one spool (`list` on messages, the replay cache and the audit
/// trail; an older spool's rows go to the list that opens it first).
/// Version 9: `member_keys` (where a member's key was found, a different
/// key held for the PST). Version 10: release hooks (`hook` and
/// `cancel-hook` deliveries; the table is rebuilt for its CHECK).
pub(super) const SCHEMA_VERSION: i64 = 10;

/// `messages`: one row per message the list keeps, sealed to the list key
/// (an announcement with its embargo time and state, or a post, refusal or
/// notice), never in the clear.
pub(super) fn messages_ddl(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    id           TEXT PRIMARY KEY,
    received_at  INTEGER NOT NULL,
    signer       TEXT NOT NULL,
    embargo_until INTEGER NOT NULL,
    embargo_state TEXT NOT NULL DEFAULT 'held' CHECK (embargo_state IN ('held', 'cancelled')),
    kind         TEXT NOT NULL DEFAULT 'announcement' CHECK (kind IN ('announcement', 'refusal', 'post', 'notice')),
    sealed       BLOB NOT NULL,
    -- The list's address in lower case (version 8).
    list         TEXT NOT NULL DEFAULT ''
);"
    )
}

/// `deliveries`: one row per recipient and kind of each message, pending
/// until an outcome; `copy_id` names the row a worker is sending.
pub(super) fn deliveries_ddl(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    message_id      TEXT NOT NULL REFERENCES messages(id),
    member          TEXT NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'copy' CHECK (kind IN ('copy', 'release', 'receipt', 'lifted', 'reminder', 'refusal', 'post', 'notice', 'hook', 'cancel-hook')),
    copy_id         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'skipped', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    first_failed_at INTEGER,
    -- The remote diagnostic of a delivery status notification that came
    -- back for it after the smarthost took it, and when (version 8).
    bounce          TEXT,
    bounced_at      INTEGER,
    -- The secret its envelope sender carries (`<list>+bounce-<token>`),
    -- apart from the copy id, which is public in its Message-ID; none for
    -- a public release, sent from the list's own address (version 8).
    bounce_token    TEXT,
    PRIMARY KEY (message_id, member, kind)
);"
    )
}

pub(super) const OTHER_TABLES: &str = "
-- The replay cache: the identity of every good signature taken (SHA-256 of
-- the packet with its unhashed area emptied), and the message it came with,
-- per list (version 8).
CREATE TABLE IF NOT EXISTS seen_signatures (
    list        TEXT NOT NULL DEFAULT '',
    digest      TEXT NOT NULL,
    message_id  TEXT NOT NULL REFERENCES messages(id),
    -- When it was taken (a command's signature is kept under the
    -- announcement it changed, which can be much older). Version 6.
    at          INTEGER,
    PRIMARY KEY (list, digest)
);
-- The lists the spool has held (version 8): each list's key (a one-list
-- file whose address changed renames its list only under the same key),
-- and whether it takes mail: a reload that removes a list closes it here
-- first, so that no process (`submit` neither) commits mail for it after
-- the check that its queue is empty.
CREATE TABLE IF NOT EXISTS lists (
    address     TEXT PRIMARY KEY,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'closing', 'removed'))
);
-- Members' acknowledgements of an embargo (version 8): one each, kept
-- with the signature that made it in the replay cache.
CREATE TABLE IF NOT EXISTS acks (
    message_id  TEXT NOT NULL REFERENCES messages(id),
    member      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (message_id, member)
);
-- Members' keys found by discovery (version 9): where each came from (a
-- weekly refresh asks there first), and a certificate of another
-- fingerprint found for the address, held until
-- the PST's signed Roster-Add takes it (never switched to silently).
CREATE TABLE IF NOT EXISTS member_keys (
    list            TEXT NOT NULL,
    member          TEXT NOT NULL COLLATE NOCASE,
    origin          TEXT,
    held_fpr        TEXT,
    held_source     TEXT,
    held_at         INTEGER,
    held_cert       BLOB,
    PRIMARY KEY (list, member)
);
-- A list's messages by kind (its embargoes, its receipts owed).
CREATE INDEX IF NOT EXISTS messages_list ON messages (list, kind);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
-- The thread a member's reply belongs to, by the copy id its In-Reply-To
-- names (version 7).
CREATE INDEX IF NOT EXISTS deliveries_copy ON deliveries (copy_id);
-- Release hooks' calls due (version 10): read apart from the rest.
CREATE INDEX IF NOT EXISTS deliveries_hooks_due ON deliveries (next_attempt_at)
    WHERE state = 'pending' AND kind IN ('hook', 'cancel-hook');
-- A notification's delivery, by the token of its bounce address.
CREATE INDEX IF NOT EXISTS deliveries_bounce ON deliveries (bounce_token);
-- Whether any copy of a message is still untried, asked after every copy.
CREATE INDEX IF NOT EXISTS deliveries_untried ON deliveries (message_id, kind, state, attempts);
-- What was accepted, by the digest of its envelope and bytes: the same
-- submission again (an MTA resending after a lost 250) is answered as
-- accepted, and nothing is relayed twice.
CREATE TABLE IF NOT EXISTS submissions (
    digest      TEXT PRIMARY KEY,
    message_id  TEXT NOT NULL REFERENCES messages(id),
    at          INTEGER NOT NULL,
    -- The answer it got when it was refused (a refusal to the PST); none
    -- when it was accepted.
    reply       TEXT
);
-- Join requests taken, for their rate limit per sender and peer.
CREATE TABLE IF NOT EXISTS join_requests (
    at          INTEGER NOT NULL,
    sender      TEXT NOT NULL,
    peer        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS join_requests_at ON join_requests (at);
-- Digests of mail fetched from a mailbox and what became of it, so a mail
-- fetched again after a crash is deleted, not relayed twice.
CREATE TABLE IF NOT EXISTS fetched (
    digest      TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL
);
-- The audit trail: append-only (the triggers below refuse UPDATE and
-- DELETE); details name fields and peers, never a mail's text.
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    message_id  TEXT,
    member      TEXT,
    detail      TEXT NOT NULL,
    -- The list's address in lower case; '' for what concerns the daemon as
    -- a whole (a peer refused before its mail named a list). Version 8.
    list        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_list ON audit (list, seq);
-- Where the daemon measures clock leaps from (`clock::LeapBase`), so a
-- restart on the same boot does not measure from a clock that leapt.
CREATE TABLE IF NOT EXISTS leap_base (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    boot        TEXT NOT NULL,
    wall        INTEGER NOT NULL,
    uptime      REAL NOT NULL
);
-- `audited`: has this message an event of this kind (e.g. release-held)?
CREATE INDEX IF NOT EXISTS audit_message_event ON audit (message_id, event);
-- Rejections counted rather than each recorded, by processes that do not
-- live for a window (`submit`): one row per event, peer and reason.
CREATE TABLE IF NOT EXISTS rejection_tally (
    event       TEXT NOT NULL,
    host        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    since       INTEGER NOT NULL,
    seen        INTEGER NOT NULL,
    more        INTEGER NOT NULL,
    PRIMARY KEY (event, host, reason)
);
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// The audit trail refuses UPDATE: made with the other tables, and made
/// again after the two writes that may mark its rows' list (the migration
/// to version 8 and `Spool::adopt`), each inside its one transaction.
pub(super) const AUDIT_NO_UPDATE: &str = "
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;";

/// Creates the schema, or brings an older spool up to [`SCHEMA_VERSION`].
/// Runs in one IMMEDIATE transaction, so a daemon and `submit` opening the
/// same spool at once do not both migrate it.
///
/// A spool older than version 8 held one list: its rows are marked as
/// `list`'s, the list that opens it (the daemon's first list).
pub(super) fn migrate(conn: &mut Connection, list: &str) -> rusqlite::Result<()> {
    // Table rebuilds need foreign keys off; it cannot change inside a transaction.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let tx = write_tx(conn)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "the spool has schema version {version}, newer than this program's {SCHEMA_VERSION}: run the newer embargo-relay"
            )),
        ));
    }
    let table_sql = |name: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
    };
    if table_sql("messages")?.is_some_and(|sql| !sql.contains("'notice'")) {
        // Versions 0 to 2: the kind CHECKs lack 'post' (0) or 'notice'
        // (before 3). SQLite cannot alter a CHECK, so both tables are
        // rebuilt (sqlite.org/lang_altertable.html), copying the columns
        // the old table has (version 2 added first_failed_at).
        for (table, ddl) in [
            ("messages", messages_ddl("rebuilt")),
            ("deliveries", deliveries_ddl("rebuilt")),
        ] {
            rebuild(&tx, table, &ddl)?;
        }
    }
    if table_sql("deliveries")?.is_some_and(|sql| !sql.contains("'cancel-hook'")) {
        // Before version 10: the kind CHECK lacks the hooks. Rebuilt with
        // the columns it has (the bounce columns are added below if it
        // is older than 8); its indexes are made again with the others.
        rebuild(&tx, "deliveries", &deliveries_ddl("rebuilt"))?;
    }
    tx.execute_batch(&messages_ddl("messages"))?;
    tx.execute_batch(&deliveries_ddl("deliveries"))?;
    // Before version 6, `seen_signatures` had no `at`.
    let seen_exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seen_signatures')",
        [],
        |r| r.get(0),
    )?;
    let seen_has_at: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('seen_signatures') WHERE name = 'at')",
        [],
        |r| r.get(0),
    )?;
    if seen_exists && !seen_has_at {
        tx.execute_batch("ALTER TABLE seen_signatures ADD COLUMN at INTEGER;")?;
    }
    if version < 8 {
        mark_lists(&tx, list, seen_exists)?;
    }
    tx.execute_batch(OTHER_TABLES)?;
    tx.execute_batch(AUDIT_NO_UPDATE)?;
    // Bounces (version 8): deliveries made before have no such columns.
    for (column, ty) in [
        ("bounce", "TEXT"),
        ("bounced_at", "INTEGER"),
        ("bounce_token", "TEXT"),
    ] {
        let has: bool = tx.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('deliveries') WHERE name = '{column}')"),
            [],
            |r| r.get(0),
        )?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE deliveries ADD COLUMN {column} {ty};"))?;
        }
    }
    // Version 4 made `submissions` without its `reply` column.
    let has_reply: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('submissions') WHERE name = 'reply')",
        [],
        |r| r.get(0),
    )?;
    if !has_reply {
        tx.execute_batch("ALTER TABLE submissions ADD COLUMN reply TEXT;")?;
    }
    let broken: Option<String> = tx
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .optional()?;
    if let Some(table) = broken {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            Some(format!(
                "spool migration left a broken reference in {table}"
            )),
        ));
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    conn.pragma_update(None, "foreign_keys", "ON")
}

/// Makes `table` again as `ddl` (a table named `rebuilt`) says, copying
/// the columns the old table has: SQLite cannot alter a CHECK.
fn rebuild(tx: &rusqlite::Transaction<'_>, table: &str, ddl: &str) -> rusqlite::Result<()> {
    let columns: Vec<String> = tx
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let columns = columns.join(", ");
    tx.execute_batch(&format!(
        "{ddl}\nINSERT INTO rebuilt ({columns}) SELECT {columns} FROM {table};\nDROP TABLE {table};\nALTER TABLE rebuilt RENAME TO {table};"
    ))
}

/// Version 8: the rows of a spool that held one list are marked as that
/// list's. The messages table has its column by now (made, or rebuilt
/// above, with the default ''); the audit trail gets its column the same
/// way (its append-only triggers are dropped for this one update, inside
/// the migration's transaction, and made again with the other tables); the
/// replay cache is rebuilt with the list in its key.
fn mark_lists(
    tx: &rusqlite::Transaction<'_>,
    list: &str,
    seen_exists: bool,
) -> rusqlite::Result<()> {
    let has_column = |table: &str| -> rusqlite::Result<bool> {
        tx.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'list')"
            ),
            [],
            |r| r.get(0),
        )
    };
    if !has_column("messages")? {
        tx.execute_batch("ALTER TABLE messages ADD COLUMN list TEXT NOT NULL DEFAULT '';")?;
    }
    tx.execute("UPDATE messages SET list = ?1 WHERE list = ''", [list])?;
    let audit_exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit')",
        [],
        |r| r.get(0),
    )?;
    if audit_exists && !has_column("audit")? {
        tx.execute_batch(
            "ALTER TABLE audit ADD COLUMN list TEXT NOT NULL DEFAULT '';
             DROP TRIGGER IF EXISTS audit_no_update;",
        )?;
        tx.execute("UPDATE audit SET list = ?1", [list])?;
    }
    if seen_exists && !has_column("seen_signatures")? {
        tx.execute_batch(
            "CREATE TABLE seen_rebuilt (
                list TEXT NOT NULL DEFAULT '', digest TEXT NOT NULL,
                message_id TEXT NOT NULL REFERENCES messages(id), at INTEGER,
                PRIMARY KEY (list, digest));",
        )?;
        tx.execute(
            "INSERT INTO seen_rebuilt (list, digest, message_id, at) SELECT ?1, digest, message_id, at FROM seen_signatures",
            [list],
        )?;
        tx.execute_batch(
            "DROP TABLE seen_signatures; ALTER TABLE seen_rebuilt RENAME TO seen_signatures;",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::t;
    use crate::spool::{NewPost, Spool, SpoolError};

    /// A spool a newer release wrote is refused, named, and left as it is
    /// (never migrated down, never read by guesswork).
    #[test]
    fn a_spool_newer_than_this_program_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        drop(Spool::open(dir.path(), "list@example.org").unwrap());
        let path = dir.path().join("spool.sqlite");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let e = Spool::open(dir.path(), "list@example.org")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!(
                "the spool has schema version {}, newer than this program's {SCHEMA_VERSION}: run the newer embargo-relay",
                SCHEMA_VERSION + 1
            )),
            "{e}"
        );
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION + 1, "left as it was");
    }

    /// Version 9 to 10: the deliveries table is rebuilt for the hooks'
    /// kinds, keeping its rows, its indexes and its bounce tokens.
    #[test]
    fn a_version_9_spool_takes_hook_deliveries_after_migration() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-11-20T12:00:00Z");
        {
            let spool = Spool::open(dir.path(), "list@example.org").unwrap();
            let members = ["a@x.org".to_owned(), "b@x.org".to_owned()];
            let (digests, public) = (["d1".to_owned()], ["oss@x.org".to_owned()]);
            let msg = crate::spool::NewMessage {
                public_to: &public,
                ..crate::spool::tests::new_message("m1", &members, &digests)
            };
            spool.accept(&msg, now).unwrap();
            // Back to version 9: the old CHECK, the same rows.
            let v9 = deliveries_ddl("old").replace(", 'hook', 'cancel-hook'", "");
            assert!(!v9.contains("hook"));
            spool
                .lock()
                .execute_batch(&format!(
                    "PRAGMA foreign_keys = OFF; {v9}
                     INSERT INTO old SELECT * FROM deliveries; DROP TABLE deliveries;
                     ALTER TABLE old RENAME TO deliveries; PRAGMA user_version = 9;"
                ))
                .unwrap();
            let refused = spool.lock().execute(
                "INSERT INTO deliveries (message_id, member, kind, copy_id, state, next_attempt_at) VALUES ('m1', 'h', 'hook', 'c', 'pending', 0)",
                [],
            );
            assert!(refused.is_err(), "version 9 has no hooks");
        }
        let before: Vec<(String, String, Option<String>)> = {
            let conn = Connection::open(dir.path().join("spool.sqlite")).unwrap();
            let mut stmt = conn
                .prepare("SELECT member, kind, bounce_token FROM deliveries ORDER BY member, kind")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert!(!before.is_empty());
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        let conn = spool.lock();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let after: Vec<(String, String, Option<String>)> = conn
            .prepare("SELECT member, kind, bounce_token FROM deliveries ORDER BY member, kind")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(after, before, "every row kept");
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' AND name LIKE 'deliveries_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 5, "its indexes made again");
        for kind in ["hook", "cancel-hook"] {
            conn.execute(
                "INSERT INTO deliveries (message_id, member, kind, copy_id, state, next_attempt_at) VALUES ('m1', 'h', ?1, 'c', 'pending', 0)",
                [kind],
            )
            .unwrap();
        }
    }

    #[test]
    fn a_version_0_spool_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The schema as the first release wrote it (no user_version, no 'post').
            let conn = Connection::open(dir.path().join("spool.sqlite")).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (id TEXT PRIMARY KEY, received_at INTEGER NOT NULL, signer TEXT NOT NULL,
                   embargo_until INTEGER NOT NULL,
                   embargo_state TEXT NOT NULL DEFAULT 'held' CHECK (embargo_state IN ('held', 'cancelled')),
                   kind TEXT NOT NULL DEFAULT 'announcement' CHECK (kind IN ('announcement', 'refusal')),
                   sealed BLOB NOT NULL);
                 CREATE TABLE seen_signatures (digest TEXT PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id));
                 CREATE TABLE deliveries (message_id TEXT NOT NULL REFERENCES messages(id), member TEXT NOT NULL,
                   kind TEXT NOT NULL DEFAULT 'copy' CHECK (kind IN ('copy', 'release', 'receipt', 'lifted', 'reminder', 'refusal')),
                   copy_id TEXT NOT NULL,
                   state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'skipped', 'failed', 'cancelled')),
                   attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_error TEXT,
                   PRIMARY KEY (message_id, member, kind));
                 CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, event TEXT NOT NULL,
                   message_id TEXT, member TEXT, detail TEXT NOT NULL);
                 INSERT INTO messages (id, received_at, signer, embargo_until, sealed) VALUES ('old', 1, 'F', 2, x'00');
                 INSERT INTO seen_signatures VALUES ('d-old', 'old');
                 INSERT INTO deliveries (message_id, member, copy_id, state, next_attempt_at) VALUES ('old', 'a@x.org', 'c', 'pending', 1);
                 INSERT INTO audit (at, event, message_id, detail) VALUES (1, 'accepted', 'old', 'kept');
                 CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
            )
            .unwrap();
        }
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
        let version: i64 = spool
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let now = t("2026-11-20T12:00:00Z");
        assert_eq!(
            spool.due(now, 10).unwrap().len(),
            1,
            "the old delivery is kept"
        );
        assert_eq!(spool.sealed("old").unwrap(), vec![0u8]);
        // The new kinds are accepted, and the replay cache still holds.
        let post = |id: &'static str, digest: &'static str| {
            let digests = [digest.to_owned()];
            let to = ["a@x.org".to_owned()];
            spool.accept_post(
                &NewPost {
                    id,
                    signer: "M",
                    sig_digests: &digests,
                    sealed: b"p",
                    recipients: &to,
                    fetched: None,
                    submission: None,
                    join_from: None,
                    event: "member-post",
                    detail: "test",
                },
                now,
            )
        };
        post("p1", "d-new").unwrap();
        assert!(matches!(post("p2", "d-old"), Err(SpoolError::Replay(id)) if id == "old"));
        assert_eq!(spool.due(now, 10).unwrap().len(), 2);
        // Version 8: the old rows are the opening list's, and no other
        // list of the spool sees them; its replay cache is its own.
        let other = spool.for_list("other@example.org");
        assert!(other.due(now, 10).unwrap().is_empty());
        assert!(other.sealed("old").is_err());
        assert!(other.audit_records().unwrap().is_empty());
        assert_eq!(other.replay_of(&["d-old".to_owned()]).unwrap(), None);
        assert!(
            spool
                .audit_records()
                .unwrap()
                .iter()
                .any(|r| r.detail == "kept"),
            "the old audit trail is the list's"
        );
        let refused = spool.lock().execute("UPDATE audit SET detail = 'x'", []);
        assert!(refused.is_err(), "the audit trail is append-only again");
        drop(spool);
        // Opening again changes nothing.
        assert_eq!(
            Spool::open(dir.path(), "list@example.org")
                .unwrap()
                .due(now, 10)
                .unwrap()
                .len(),
            2
        );
    }
}
