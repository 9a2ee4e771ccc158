//! The durable store (SQLite, WAL, `synchronous=FULL`): accepted announcements
//! sealed to the list key, one delivery row per member, the replay cache and
//! the audit trail. It never holds plaintext.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::{from_millis, to_millis};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// An embargo operation that cannot be done, with the reason.
    #[error("{0}")]
    Refused(String),
    /// The same, where the reason involves embargo times: `times` is for
    /// the operator's CLI and the PST's encrypted refusal, never for a
    /// reply in the clear (an embargo's time is itself confidential).
    #[error("{reason} ({times})")]
    RefusedAt { reason: String, times: String },
    /// The same signature was accepted before.
    #[error("signature already seen (message {0})")]
    Replay(String),
    #[error("spool database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `PRAGMA quick_check` failed, or SQLite said the file is corrupt.
    #[error(
        "the spool {path} is damaged ({report}); stop the daemon and restore it from a backup (deploy/README.md, Backups), or set it aside and start afresh with `embargo-relay run --new-spool`"
    )]
    Damaged { path: PathBuf, report: String },
    /// The state directory has held a spool, and it is gone or empty.
    #[error(
        "the spool {path} is missing or empty, but this state directory has held one ({marker} exists): held releases, the audit trail and replay protection would be lost. Restore it from a backup, or start afresh with `embargo-relay run --new-spool`"
    )]
    Missing { path: PathBuf, marker: PathBuf },
}

/// Written beside a new spool: a state directory that has it has held a
/// spool, so a missing or empty one there is damage, not a fresh start.
const MARKER: &str = "spool.created";

/// Written beside a spool that failed its `quick_check`, removed when one
/// passes: what `submit` (which skips the check) goes by.
const DAMAGED: &str = "spool.damaged";

/// Whether SQLite says the file is not a sound database.
fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

impl SpoolError {
    /// The spool itself is unusable (damaged or missing), rather than busy
    /// or refusing one write.
    pub fn is_damage(&self) -> bool {
        match self {
            SpoolError::Damaged { .. } | SpoolError::Missing { .. } => true,
            SpoolError::Db { source, .. } => is_corrupt(source),
            _ => false,
        }
    }

    /// A constraint of the schema refused the write: the data as given can
    /// never be stored, so trying again cannot help (a refusal, not a 451).
    pub fn is_constraint(&self) -> bool {
        matches!(
            self,
            SpoolError::Db {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.code == rusqlite::ErrorCode::ConstraintViolation
        )
    }
}

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 6;

fn messages_ddl(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    id           TEXT PRIMARY KEY,
    received_at  INTEGER NOT NULL,
    signer       TEXT NOT NULL,
    embargo_until INTEGER NOT NULL,
    embargo_state TEXT NOT NULL DEFAULT 'held' CHECK (embargo_state IN ('held', 'cancelled')),
    kind         TEXT NOT NULL DEFAULT 'announcement' CHECK (kind IN ('announcement', 'refusal', 'post', 'notice')),
    sealed       BLOB NOT NULL
);"
    )
}

fn deliveries_ddl(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (
    message_id      TEXT NOT NULL REFERENCES messages(id),
    member          TEXT NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'copy' CHECK (kind IN ('copy', 'release', 'receipt', 'lifted', 'reminder', 'refusal', 'post', 'notice')),
    copy_id         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'skipped', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    first_failed_at INTEGER,
    PRIMARY KEY (message_id, member, kind)
);"
    )
}

const OTHER_TABLES: &str = "
CREATE TABLE IF NOT EXISTS seen_signatures (
    digest      TEXT PRIMARY KEY,
    message_id  TEXT NOT NULL REFERENCES messages(id),
    -- When it was taken (a command's signature is kept under the
    -- announcement it changed, which can be much older). Version 6.
    at          INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
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
CREATE TABLE IF NOT EXISTS fetched (
    digest      TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    message_id  TEXT,
    member      TEXT,
    detail      TEXT NOT NULL
);
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
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// Creates the schema, or brings an older spool up to [`SCHEMA_VERSION`].
/// Runs in one IMMEDIATE transaction, so a daemon and `submit` opening the
/// same spool at once do not both migrate it.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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
    let old: Option<String> = tx
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if old.is_some_and(|sql| !sql.contains("'notice'")) {
        // Versions 0 to 2: the kind CHECKs lack 'post' (0) or 'notice'
        // (before 3). SQLite cannot alter a CHECK, so both tables are
        // rebuilt (sqlite.org/lang_altertable.html), copying the columns
        // the old table has (version 2 added first_failed_at).
        for (table, ddl) in [
            ("messages", messages_ddl("rebuilt")),
            ("deliveries", deliveries_ddl("rebuilt")),
        ] {
            let columns: Vec<String> = tx
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let columns = columns.join(", ");
            tx.execute_batch(&format!(
                "{ddl}\nINSERT INTO rebuilt ({columns}) SELECT {columns} FROM {table};\nDROP TABLE {table};\nALTER TABLE rebuilt RENAME TO {table};"
            ))?;
        }
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
    tx.execute_batch(OTHER_TABLES)?;
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

/// A new, verified announcement to commit, already sealed to the list key.
#[derive(Debug)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub signer: &'a str,
    /// When the announcement's embargo lifts.
    pub embargo_until: DateTime<Utc>,
    /// Identities of its signatures (replay cache keys); any seen before
    /// makes the message a replay.
    pub sig_digests: &'a [String],
    pub sealed: &'a [u8],
    /// One delivery is created per member address.
    pub members: &'a [String],
    /// The public lists the held advisory goes to at `embargo_until`
    /// (empty: no advisory held).
    pub public_to: &'a [String],
    /// The PST address to remind, and when (none if that time has passed).
    pub reminder: Option<(&'a str, DateTime<Utc>)>,
    /// SHA-256 of the raw mail as fetched from a mailbox, recorded in the
    /// same transaction so that a crash before the mailbox copy is deleted
    /// never processes it twice.
    pub fetched: Option<&'a str>,
    /// The submission's digest (envelope and bytes), so that the same
    /// submission again is answered as accepted.
    pub submission: Option<&'a str>,
}

/// A verified member post to commit, sealed to the list key.
#[derive(Debug)]
pub struct NewPost<'a> {
    pub id: &'a str,
    /// Fingerprint of the member certificate that signed it.
    pub signer: &'a str,
    pub sig_digests: &'a [String],
    pub sealed: &'a [u8],
    /// Who gets a copy: every member, or the PST only (`member_posts`).
    pub recipients: &'a [String],
    /// The raw mail's digest when it was fetched from a mailbox.
    pub fetched: Option<&'a str>,
    /// The submission's digest (see [`NewMessage::submission`]).
    pub submission: Option<&'a str>,
    /// A join request's envelope sender and peer, for its rate limit.
    pub join_from: Option<(&'a str, &'a str)>,
    /// The audit record: its event (`member-post`, `join-request`) and detail.
    pub event: &'a str,
    pub detail: &'a str,
}

/// What a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A member's encrypted copy of the announcement.
    Copy,
    /// The public advisory, to one public list, at the embargo time.
    Release,
    /// The signed, encrypted receipt to the PST member who sent it.
    Receipt,
    /// A member's encrypted notice that the embargo has lifted.
    Lifted,
    /// The PST's encrypted reminder before the embargo lifts.
    Reminder,
    /// Why an authenticated PST mail was refused, encrypted to its signer.
    Refusal,
    /// A member's post (a reply to an announcement), re-encrypted to one recipient.
    Post,
    /// A notice from the list to one roster member (the weekly key check):
    /// encrypted when the member's key is usable, else signed only.
    Notice,
}

impl Kind {
    /// Every kind, for the one mapping to and from the spool's text.
    const ALL: [Kind; 8] = [
        Kind::Copy,
        Kind::Release,
        Kind::Receipt,
        Kind::Lifted,
        Kind::Reminder,
        Kind::Refusal,
        Kind::Post,
        Kind::Notice,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Copy => "copy",
            Kind::Release => "release",
            Kind::Receipt => "receipt",
            Kind::Lifted => "lifted",
            Kind::Reminder => "reminder",
            Kind::Refusal => "refusal",
            Kind::Notice => "notice",
            Kind::Post => "post",
        }
    }
}

/// The spool's text for a kind, back; an unknown one is an error, never
/// taken for a member copy.
impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown delivery kind `{s}` in the spool"))
    }
}

/// A delivery whose time has come.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub message_id: String,
    /// The member's address, or the public list's for a release.
    pub member: String,
    pub kind: Kind,
    /// The embargo time in force (the spool's, which operators may change).
    pub embargo_until: DateTime<Utc>,
    /// The embargo was cancelled: nothing is published.
    pub embargo_cancelled: bool,
    pub copy_id: String,
    pub attempts: u32,
    /// When an attempt first failed transiently (the retry lifetime runs from then).
    pub first_failed: Option<DateTime<Utc>>,
}

/// A change asked for by signed mail: its signatures (against replays) and
/// where the receipt goes.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub digests: &'a [String],
    pub reply_to: &'a str,
    /// The command mail's submission digest (see [`NewMessage::submission`]).
    pub submission: Option<&'a str>,
}

/// An embargo as operators see it.
#[derive(Debug, Clone)]
pub struct EmbargoInfo {
    pub id: String,
    pub signer: String,
    pub received_at: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub cancelled: bool,
    /// Public lists and the state of the release to each.
    pub releases: Vec<(String, String)>,
    pub copies: DeliveryCounts,
}

impl EmbargoInfo {
    /// `held`, `lifted` or `cancelled` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.cancelled {
            "cancelled"
        } else if self.until > now {
            "held"
        } else {
            "lifted"
        }
    }
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub event: String,
    pub message_id: Option<String>,
    pub member: Option<String>,
    pub detail: String,
}

/// One delivery as the operator's CLI shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub message_id: String,
    pub member: String,
    /// `copy`, `release`, `receipt`, …
    pub kind: String,
    /// `pending`, `sent`, `skipped`, `failed`, `cancelled`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// Per-state counts of a message's deliveries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: usize,
    pub sent: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// Handle to the spool; cheap to clone. Calls block: async callers use
/// `spawn_blocking`.
#[derive(Clone)]
pub struct Spool {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Set at the first sign of corruption: the intake then answers 451
    /// and the watchdog stops being fed.
    damaged: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spool({})", self.path.display())
    }
}

impl Spool {
    /// Opens (creating if needed) `spool.sqlite` in `state_dir`, which is
    /// made private to the daemon's user. A spool that fails SQLite's
    /// `quick_check`, or a missing or empty one where one was before
    /// (`spool.created`), is refused: never used silently as a new one.
    pub fn open(state_dir: &Path) -> Result<Spool, SpoolError> {
        let opened = Self::open_with(state_dir, true);
        if let Err(SpoolError::Damaged { report, .. }) = &opened {
            let _ = std::fs::write(state_dir.join(DAMAGED), format!("{report}\n"));
        }
        opened
    }

    /// [`Spool::open`] without the `quick_check`, which reads the whole
    /// file: for `submit`, run once per mail (a 290 MB spool took 0.9 s
    /// a mail). Corruption it meets still marks the spool damaged, and the
    /// daemon, `check` and `status` run the check.
    pub fn open_unchecked(state_dir: &Path) -> Result<Spool, SpoolError> {
        Self::open_with(state_dir, false)
    }

    fn open_with(state_dir: &Path, check: bool) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        set_private(state_dir, 0o700).map_err(io)?;
        let path = state_dir.join("spool.sqlite");
        let marker = state_dir.join(MARKER);
        let db = |source: rusqlite::Error| {
            if is_corrupt(&source) {
                SpoolError::Damaged {
                    path: path.clone(),
                    report: source.to_string(),
                }
            } else {
                SpoolError::Db {
                    path: path.clone(),
                    source,
                }
            }
        };
        let empty = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        if empty && marker.exists() {
            return Err(SpoolError::Missing { path, marker });
        }
        // SQLite gives the -wal and -shm files the database file's mode:
        // 0600 before the first open, so none of the three is ever wider.
        if !path.exists() {
            create_private(&path).map_err(io)?;
        }
        set_private(&path, 0o600).map_err(io)?;
        let conn = Connection::open(&path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        // The last full check's verdict is kept beside the spool, so that
        // `submit`, which does not run it, refuses a spool found damaged.
        let flag = state_dir.join(DAMAGED);
        if check {
            let report = match quick_check(&conn) {
                Ok(report) => report,
                Err(e) if is_corrupt(&e) => e.to_string(),
                Err(e) => return Err(db(e)),
            };
            if report != "ok" {
                return Err(SpoolError::Damaged { path, report });
            }
            let _ = std::fs::remove_file(&flag);
        } else if flag.exists() {
            let report = format!(
                "found damaged by the last check ({})",
                std::fs::read_to_string(&flag).unwrap_or_default().trim()
            );
            return Err(SpoolError::Damaged { path, report });
        }
        let mut conn = conn;
        migrate(&mut conn).map_err(db)?;
        for suffix in ["-wal", "-shm"] {
            let side = state_dir.join(format!("spool.sqlite{suffix}"));
            if side.exists() {
                set_private(&side, 0o600).map_err(io)?;
            }
        }
        if !marker.exists() {
            write_marker(&marker).map_err(io)?;
        }
        Ok(Spool {
            conn: Arc::new(Mutex::new(conn)),
            path,
            damaged: Arc::default(),
        })
    }

    /// Sets the spool of `state_dir` aside (renamed with the time, never
    /// deleted) and opens a new one: `run --new-spool`, the operator's
    /// choice after damage that no backup can mend. Returns where the old
    /// files went.
    pub fn set_aside(state_dir: &Path, now: DateTime<Utc>) -> Result<Vec<PathBuf>, SpoolError> {
        let io = |source| SpoolError::Io {
            path: state_dir.to_owned(),
            source,
        };
        let stamp = now.format("%Y%m%dT%H%M%SZ");
        let mut moved = Vec::new();
        for name in [
            "spool.sqlite",
            "spool.sqlite-wal",
            "spool.sqlite-shm",
            MARKER,
            DAMAGED,
        ] {
            let from = state_dir.join(name);
            if from.exists() {
                let to = state_dir.join(format!("{name}.set-aside-{stamp}"));
                std::fs::rename(&from, &to).map_err(io)?;
                moved.push(to);
            }
        }
        Ok(moved)
    }

    /// Checks the spool of `state_dir` without creating or changing
    /// anything, for `check`: fine when there is none yet.
    pub fn inspect(state_dir: &Path) -> Result<(), SpoolError> {
        let path = state_dir.join("spool.sqlite");
        let marker = state_dir.join(MARKER);
        let empty = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        if empty {
            return if marker.exists() {
                Err(SpoolError::Missing { path, marker })
            } else {
                Ok(())
            };
        }
        let damaged = |report: String| SpoolError::Damaged {
            path: path.clone(),
            report,
        };
        let db = |source: rusqlite::Error| {
            if is_corrupt(&source) {
                damaged(source.to_string())
            } else {
                SpoolError::Db {
                    path: path.clone(),
                    source,
                }
            }
        };
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(db)?;
        match quick_check(&conn).map_err(db)? {
            ok if ok == "ok" => Ok(()),
            report => Err(damaged(report)),
        }
    }

    /// Whether the spool has shown corruption since it was opened.
    pub fn damaged(&self) -> bool {
        self.damaged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs SQLite's `quick_check` now ("ok" when sound).
    pub fn quick_check(&self) -> Result<String, SpoolError> {
        let report = quick_check(&self.lock()).map_err(|e| self.db(e))?;
        if report != "ok" {
            self.mark_damaged(&report);
        }
        Ok(report)
    }

    fn mark_damaged(&self, why: &str) {
        if !self
            .damaged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                spool = %self.path.display(),
                problem = why,
                "the spool is damaged: mail is answered 451 and the watchdog is no longer fed; restore the spool from a backup"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db(&self, source: rusqlite::Error) -> SpoolError {
        if is_corrupt(&source) {
            self.mark_damaged(&source.to_string());
        }
        SpoolError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// While `on`, every write is refused (`PRAGMA query_only`): for
    /// maintenance and for proving how the daemon behaves when the spool
    /// cannot be written.
    pub fn set_read_only(&self, on: bool) -> Result<(), SpoolError> {
        self.lock()
            .pragma_update(None, "query_only", on)
            .map_err(|e| self.db(e))
    }

    /// `Err(Replay)` naming the message that carried any of `digests` before.
    fn not_seen(&self, conn: &Connection, digests: &[String]) -> Result<(), SpoolError> {
        match seen_before(conn, digests).map_err(|e| self.db(e))? {
            Some(previous) => Err(SpoolError::Replay(previous)),
            None => Ok(()),
        }
    }

    /// Commits a verified announcement and its deliveries in one fsynced
    /// transaction; only after this returns may the sender be told 250.
    pub fn accept(&self, msg: &NewMessage<'_>, now: DateTime<Utc>) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        self.not_seen(&tx, msg.sig_digests)?;
        let t = to_millis(now);
        tx.execute(
            "INSERT INTO messages (id, received_at, signer, embargo_until, sealed) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![msg.id, t, msg.signer, to_millis(msg.embargo_until), msg.sealed],
        )
        .map_err(|e| self.db(e))?;
        insert_signatures(&tx, msg.sig_digests, msg.id, t).map_err(|e| self.db(e))?;
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
        let lifted = msg
            .members
            .iter()
            .map(|m| (m.as_str(), Kind::Lifted, until));
        let reminder = msg
            .reminder
            .map(|(to, at)| (to, Kind::Reminder, to_millis(at)));
        for (to, kind, due) in rows.chain(releases).chain(lifted).chain(reminder) {
            insert_delivery(&tx, msg.id, to, kind, due).map_err(|e| self.db(e))?;
        }
        insert_audit(
            &tx,
            t,
            "accepted",
            Some(msg.id),
            None,
            &format!(
                "signed by {}; embargo until {}; {} member copies queued; {} public releases held",
                msg.signer,
                msg.embargo_until.to_rfc3339(),
                msg.members.len(),
                msg.public_to.len()
            ),
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// Keeps a refusal notice for an authenticated PST mail (sealed like an
    /// announcement) and queues it to `to`; the mail's signatures are
    /// recorded, so a replay of it is refused without another notice.
    #[allow(clippy::too_many_arguments)]
    pub fn queue_refusal(
        &self,
        id: &str,
        signer: &str,
        to: &str,
        sealed: &[u8],
        digests: &[String],
        submission: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
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
                "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, kind) VALUES (?1, ?2, ?3, ?2, ?4, 'refusal')",
                params![id, t, signer, sealed],
            )?;
            insert_signatures(&tx, digests, id, t)?;
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
                let id = format!("notice-{}", crate::crypto::random_hex(8));
                tx.execute(
                    "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, kind) VALUES (?1, ?2, '', ?2, ?3, 'notice')",
                    params![id, t, sealed],
                )?;
                insert_delivery(&tx, &id, to, Kind::Notice, t)?;
            }
            insert_audit(&tx, t, event, None, None, detail)
        };
        write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// When `event` was last recorded in the audit trail, if ever.
    pub fn last_event(&self, event: &str) -> Result<Option<DateTime<Utc>>, SpoolError> {
        let ms: Option<i64> = self
            .lock()
            .query_row("SELECT MAX(at) FROM audit WHERE event = ?1", [event], |r| {
                r.get(0)
            })
            .map_err(|e| self.db(e))?;
        Ok(ms.map(from_millis))
    }

    /// Commits a member post and one `post` delivery per recipient, with its
    /// signatures in the replay cache, in one transaction.
    pub fn accept_post(&self, post: &NewPost<'_>, now: DateTime<Utc>) -> Result<(), SpoolError> {
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        self.not_seen(&tx, post.sig_digests)?;
        let t = to_millis(now);
        let write = || -> rusqlite::Result<()> {
            tx.execute(
                "INSERT INTO messages (id, received_at, signer, embargo_until, sealed, kind) VALUES (?1, ?2, ?3, ?2, ?4, 'post')",
                params![post.id, t, post.signer, post.sealed],
            )?;
            insert_signatures(&tx, post.sig_digests, post.id, t)?;
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
            insert_audit(&tx, t, post.event, Some(post.id), None, post.detail)
        };
        write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
    }

    /// The message that carried any of these signatures before, if any.
    pub fn replay_of(&self, digests: &[String]) -> Result<Option<String>, SpoolError> {
        seen_before(&self.lock(), digests).map_err(|e| self.db(e))
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
            to_millis(now),
            event,
            message_id,
            member,
            detail,
        )
        .map_err(|e| self.db(e))
    }

    /// Pending deliveries due at `now`, oldest message first.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueDelivery>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT d.message_id, d.member, d.kind, d.copy_id, d.attempts, m.embargo_until, m.embargo_state, d.first_failed_at FROM deliveries d
                 JOIN messages m ON m.id = d.message_id
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?1
                 ORDER BY d.kind = 'release' DESC, d.kind = 'lifted' DESC, m.received_at, d.message_id, d.member LIMIT ?2",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![to_millis(now), limit as i64], |r| {
                let kind = r.get::<_, String>(2)?.parse::<Kind>().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?;
                Ok(DueDelivery {
                    message_id: r.get(0)?,
                    member: r.get(1)?,
                    kind,
                    copy_id: r.get(3)?,
                    attempts: r.get(4)?,
                    embargo_until: from_millis(r.get(5)?),
                    embargo_cancelled: r.get::<_, String>(6)? == "cancelled",
                    first_failed: r.get::<_, Option<i64>>(7)?.map(from_millis),
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
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE message_id = ?1 AND member = ?2 AND kind = ?3
                 AND copy_id = ?4 AND state = 'pending' AND next_attempt_at <= ?5",
                params![d.message_id, d.member, d.kind.as_str(), d.copy_id, to_millis(now)],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        Ok(n > 0)
    }

    /// When the next pending delivery not yet due at `now` falls due, if any.
    pub fn next_due_after(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, SpoolError> {
        let ms: Option<i64> = self
            .lock()
            .query_row(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending' AND next_attempt_at > ?1",
                [to_millis(now)],
                |r| r.get(0),
            )
            .map_err(|e| self.db(e))?;
        Ok(ms.map(from_millis))
    }

    /// The sealed announcement of a message.
    pub fn sealed(&self, message_id: &str) -> Result<Vec<u8>, SpoolError> {
        self.lock()
            .query_row(
                "SELECT sealed FROM messages WHERE id = ?1",
                [message_id],
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
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        tx.execute(
            "UPDATE deliveries SET state = ?3, attempts = attempts + ?4, last_error = ?5
             WHERE message_id = ?1 AND member = ?2 AND kind = ?6 AND copy_id = ?7",
            params![
                d.message_id,
                d.member,
                state.as_str(),
                i64::from(state != Finished::Skipped),
                (state != Finished::Sent).then_some(detail),
                d.kind.as_str(),
                d.copy_id
            ],
        )
        .map_err(|e| self.db(e))?;
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
            _ => state.as_str(),
        };
        insert_audit(
            &tx,
            to_millis(now),
            event,
            Some(&d.message_id),
            Some(&d.member),
            detail,
        )
        .map_err(|e| self.db(e))?;
        if state == Finished::Failed && matches!(d.kind, Kind::Copy | Kind::Release | Kind::Lifted)
        {
            // The PST hears of every copy that will never arrive: its
            // receipt is sent again, now listing this one. Before the first
            // receipt is queued there is nothing to redo; it will list it.
            tx.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, first_failed_at = NULL, last_error = NULL,
                   next_attempt_at = ?2, copy_id = ?3 WHERE message_id = ?1 AND kind = 'receipt'",
                params![d.message_id, to_millis(now), crate::crypto::random_hex(12)],
            )
            .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))
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
        tx.execute(
            "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4,
               first_failed_at = CASE WHEN ?7 THEN COALESCE(first_failed_at, ?8) ELSE first_failed_at END
             WHERE message_id = ?1 AND member = ?2 AND kind = ?5 AND copy_id = ?6",
            params![
                d.message_id,
                d.member,
                to_millis(next),
                error,
                d.kind.as_str(),
                d.copy_id,
                failed,
                to_millis(now)
            ],
        )
        .map_err(|e| self.db(e))?;
        insert_audit(
            &tx,
            to_millis(now),
            "deferred",
            Some(&d.message_id),
            Some(&d.member),
            &format!("{error}; next attempt at {}", next.to_rfc3339()),
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))
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
        let mut removed = 0;
        for (sql, at) in [
            (
                "DELETE FROM seen_signatures WHERE COALESCE(at, (SELECT received_at FROM messages WHERE id = message_id)) < ?1".to_owned(),
                before,
            ),
            ("DELETE FROM submissions WHERE at < ?1".to_owned(), before),
            (
                "DELETE FROM fetched WHERE at < ?1".to_owned(),
                scratch_before,
            ),
            (
                "DELETE FROM join_requests WHERE at < ?1".to_owned(),
                scratch_before,
            ),
        ] {
            removed += tx.execute(&sql, [to_millis(at)]).map_err(|e| self.db(e))?;
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
                insert_audit(&tx, t, key.event, message_id, None, detail)?;
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
            insert_audit(&tx, to_millis(now), event, Some(message_id), None, detail)
                .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(!there)
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
                    d.member,
                    to_millis(next),
                    why,
                    d.kind.as_str(),
                    d.copy_id
                ],
            )
            .map(drop)
            .map_err(|e| self.db(e))
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

    /// Announcements whose copies have all been tried but whose receipt
    /// was never queued: a crash came between the last copy's outcome and
    /// the receipt's own transaction. The fan-out queues them at start.
    pub fn receipts_owed(&self) -> Result<Vec<String>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT m.id FROM messages m WHERE m.kind = 'announcement'
                   AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.kind = 'copy')
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.kind = 'copy' AND d.state = 'pending' AND d.attempts = 0)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.kind = 'receipt')",
            )
            .map_err(|e| self.db(e))?;
        let ids = stmt
            .query_map([], |r| r.get(0))
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
        let mut conn = self.lock();
        let tx = write_tx(&mut conn).map_err(|e| self.db(e))?;
        // EXISTS on an index: constant work per copy, not a scan of the
        // whole roster (which made a 3,000-member fan-out quadratic).
        let (untried, receipts): (i64, i64) = tx
            .query_row(
                "SELECT
                   EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1 AND kind = 'copy' AND state = 'pending' AND attempts = 0),
                   EXISTS (SELECT 1 FROM deliveries WHERE message_id = ?1 AND kind = 'receipt')",
                [message_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.db(e))?;
        if untried > 0 || receipts > 0 {
            return Ok(false);
        }
        crate::failpoint::hit("before-receipt");
        insert_delivery(&tx, message_id, to, Kind::Receipt, to_millis(now))
            .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(true)
    }

    /// Each delivery of one kind of a message: (recipient, state, last error).
    pub fn delivery_report(
        &self,
        message_id: &str,
        kind: Kind,
    ) -> Result<Vec<(String, String, Option<String>)>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT member, state, last_error FROM deliveries WHERE message_id = ?1 AND kind = ?2 ORDER BY member",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![message_id, kind.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
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
        origin: Option<&Origin<'_>>,
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
        origin: Option<&Origin<'_>>,
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
        origin: Option<&Origin<'_>>,
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
    fn change(
        &self,
        id: &str,
        (actor, origin): (&str, Option<&Origin<'_>>),
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
                "SELECT state, COUNT(*) FROM deliveries WHERE message_id = ?1 AND kind = 'copy' GROUP BY state",
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
                _ => counts.failed = n as usize,
            }
        }
        Ok(counts)
    }

    /// The audit trail of one message, oldest first.
    pub fn audit_for(&self, message_id: &str) -> Result<Vec<AuditRecord>, SpoolError> {
        self.audit_query(Some(message_id), None)
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
                 WHERE (?1 IS NULL OR message_id = ?1) AND (?2 IS NULL OR member = ?2 COLLATE NOCASE)
                 ORDER BY seq",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![message_id, member], |r| {
                Ok(AuditRecord {
                    at: from_millis(r.get(0)?),
                    event: r.get(1)?,
                    message_id: r.get(2)?,
                    member: r.get(3)?,
                    detail: r.get(4)?,
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
                "SELECT d.message_id, d.member, d.kind, d.state, d.attempts, d.next_attempt_at, d.last_error
                 FROM deliveries d JOIN messages m ON m.id = d.message_id
                 WHERE (?1 IS NULL OR d.message_id = ?1) AND (?2 IS NULL OR d.member = ?2 COLLATE NOCASE)
                 ORDER BY m.received_at, d.message_id, d.kind, d.member",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![message_id, member], |r| {
                Ok(DeliveryRow {
                    message_id: r.get(0)?,
                    member: r.get(1)?,
                    kind: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    next_attempt: from_millis(r.get(5)?),
                    last_error: r.get(6)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// The whole audit trail, oldest first.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>, SpoolError> {
        self.audit_query(None, None)
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Sent,
    Skipped,
    Failed,
}

impl Finished {
    fn as_str(self) -> &'static str {
        match self {
            Finished::Sent => "sent",
            Finished::Skipped => "skipped",
            Finished::Failed => "failed",
        }
    }
}

/// Queues a receipt to `to`, replacing an earlier one for the same message.
fn insert_receipt(
    conn: &Connection,
    message_id: &str,
    to: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO deliveries (message_id, member, kind, copy_id, state, next_attempt_at) VALUES (?1, ?2, 'receipt', ?3, 'pending', ?4)",
        params![message_id, to, crate::crypto::random_hex(12), to_millis(now)],
    )
    .map(|_| ())
}

/// The message a signature identity was first seen with, if any.
/// A write transaction that takes the write lock at once (IMMEDIATE): the
/// daemon and `submit` write the same WAL database, and a deferred
/// transaction that read first fails at once on a stale snapshot.
fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Queues one delivery of `message_id` to `to`, due at `due`, with a fresh
/// copy id (a resend after a crash keeps it; a re-queue makes a new one).
/// Every delivery row is made here.
fn insert_delivery(
    conn: &Connection,
    message_id: &str,
    to: &str,
    kind: Kind,
    due: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO deliveries (message_id, member, kind, copy_id, state, next_attempt_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
        params![message_id, to, kind.as_str(), crate::crypto::random_hex(12), due],
    )
    .map(drop)
}

/// Adds a message's signature identities to the replay cache.
fn insert_signatures(
    conn: &Connection,
    digests: &[String],
    id: &str,
    at: i64,
) -> rusqlite::Result<()> {
    for digest in digests {
        conn.execute(
            "INSERT INTO seen_signatures (digest, message_id, at) VALUES (?1, ?2, ?3)",
            params![digest, id, at],
        )?;
    }
    Ok(())
}

/// Records what became of a fetched mail (first outcome wins).
fn insert_fetched(conn: &Connection, digest: &str, at: i64, outcome: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO fetched (digest, at, outcome) VALUES (?1, ?2, ?3)",
        params![digest, at, outcome],
    )
    .map(drop)
}

/// Writes the counts of the tally's rows whose window began before `cut`
/// and forgets them.
fn flush_rows(conn: &Connection, at: i64, cut: i64) -> rusqlite::Result<()> {
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
fn write_count(
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
        insert_audit(conn, at, event, None, None, &detail)?;
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

fn seen_before(conn: &Connection, digests: &[String]) -> rusqlite::Result<Option<String>> {
    for digest in digests {
        let seen: Option<String> = conn
            .query_row(
                "SELECT message_id FROM seen_signatures WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(seen);
        }
    }
    Ok(None)
}

fn insert_audit(
    conn: &Connection,
    at: i64,
    event: &str,
    message_id: Option<&str>,
    member: Option<&str>,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (at, event, message_id, member, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, event, message_id, member, detail],
    )
    .map(|_| ())
}

fn insert_submission(
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

/// `PRAGMA quick_check`'s report, its lines joined ("ok" when sound; at
/// most ten problems).
fn quick_check(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare("PRAGMA quick_check(10)")?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(lines.join("; "))
}

/// Notes, durably, that this state directory holds a spool.
fn write_marker(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(
        b"This state directory holds an embargo-relay spool (spool.sqlite). If that file\n\
goes missing or empty, the daemon refuses to start rather than begin afresh.\n",
    )?;
    file.sync_all()
}

/// Creates an empty file readable and writable by its owner alone.
#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // create, not create_new: `submit` and the daemon may race to make it.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<()> {
    std::fs::File::create(path).map(drop)
}

#[cfg(unix)]
fn set_private(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_private(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    /// Pruning forgets the replay-cache entries and submission digests of
    /// messages received before the cut, and scratch rows (fetched mail,
    /// join-request counts) older than theirs; later ones stay.
    #[test]
    fn prune_forgets_only_what_is_older_than_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let members = vec!["a@x.org".to_owned()];
        let accept = |id: &str, digest: &str, at: &str| {
            let d = [digest.to_owned()];
            let sub = format!("sub-{id}");
            spool
                .accept(
                    &NewMessage {
                        id,
                        signer: "FPR",
                        embargo_until: t("2026-12-30T12:00:00Z"),
                        sig_digests: &d,
                        sealed: b"x",
                        members: &members,
                        public_to: &[],
                        reminder: None,
                        fetched: Some(&format!("fetched-{id}")),
                        submission: Some(&sub),
                    },
                    t(at),
                )
                .unwrap();
        };
        accept("old", "d-old", "2026-11-01T12:00:00Z");
        accept("new", "d-new", "2026-11-20T12:00:00Z");
        // A command after the cut about the old announcement: its signature
        // and digest are kept by their own time, not the announcement's.
        let cmd = ["d-cmd".to_owned()];
        spool
            .extend(
                "old",
                t("2026-12-31T12:00:00Z"),
                t("2026-11-15T12:00:00Z"),
                "test",
                Some(&Origin {
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

    #[test]
    fn every_kind_reads_back_and_an_unknown_one_is_refused() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
        }
        assert!("copy ".parse::<Kind>().is_err());
        assert!("bounce".parse::<Kind>().is_err());
    }

    /// The spool's tally: eight records a window, then a count, written
    /// when the window has passed (at the next rejection or a flush).
    #[test]
    fn the_tally_records_eight_then_counts_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
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

    /// A damaged spool, or a missing or empty one where one was, is
    /// refused by `open` and `inspect`, never used as a new one; setting it
    /// aside keeps the old files and starts afresh.
    #[test]
    fn a_damaged_or_vanished_spool_is_refused_never_used_silently() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        // A fresh directory: a new spool, and the marker beside it.
        assert!(
            Spool::inspect(dir.path()).is_ok(),
            "nothing there yet is fine"
        );
        let spool = Spool::open(dir.path()).unwrap();
        assert!(dir.path().join(MARKER).exists());
        for i in 0..2000 {
            spool
                .audit(
                    t("2026-11-20T12:00:00Z"),
                    "test",
                    None,
                    None,
                    &format!("row {i} {}", "x".repeat(100)),
                )
                .unwrap();
        }
        assert_eq!(spool.quick_check().unwrap(), "ok");
        drop(spool);
        assert!(Spool::inspect(dir.path()).is_ok());
        let path = dir.path().join("spool.sqlite");
        // Everything in the database file itself, none left in the WAL.
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();

        // Random bytes over the last page.
        let len = std::fs::metadata(&path).unwrap().len();
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(len - 4096)).unwrap();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        file.write_all(&noise).unwrap();
        drop(file);
        let err = Spool::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, SpoolError::Damaged { .. }) && err.is_damage(),
            "{err}"
        );
        assert!(err.to_string().contains("--new-spool"), "{err}");
        assert!(matches!(
            Spool::inspect(dir.path()),
            Err(SpoolError::Damaged { .. })
        ));

        // Emptied (a zero-length file), or gone: refused, not a fresh start.
        std::fs::write(&path, b"").unwrap();
        let err = Spool::open(dir.path()).unwrap_err();
        assert!(matches!(err, SpoolError::Missing { .. }), "{err}");
        assert!(matches!(
            Spool::inspect(dir.path()),
            Err(SpoolError::Missing { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            Spool::open(dir.path()),
            Err(SpoolError::Missing { .. })
        ));

        // The operator's choice: set aside (kept), then a new spool.
        std::fs::write(&path, b"").unwrap();
        let moved = Spool::set_aside(dir.path(), t("2026-11-21T08:00:00Z")).unwrap();
        assert!(moved.iter().all(|m| m.exists()), "{moved:?}");
        assert!(
            moved
                .iter()
                .any(|m| m.ends_with("spool.sqlite.set-aside-20261121T080000Z"))
        );
        let fresh = Spool::open(dir.path()).unwrap();
        assert_eq!(fresh.quick_check().unwrap(), "ok");
        assert!(fresh.audit_records().unwrap().is_empty());
    }

    /// The database and its -wal and -shm files are the owner's alone,
    /// whatever the process's umask, on first open and on later ones.
    #[test]
    fn the_spool_and_its_wal_and_shm_files_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let spool = Spool::open(dir.path()).unwrap();
            spool
                .audit(t("2026-11-20T12:00:00Z"), "test", None, None, "x")
                .unwrap();
            let second = Spool::open(dir.path()).unwrap();
            for name in ["spool.sqlite", "spool.sqlite-wal", "spool.sqlite-shm"] {
                let mode = std::fs::metadata(dir.path().join(name))
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{name}");
            }
            drop((spool, second));
        }
    }

    #[test]
    fn accept_queues_one_delivery_per_member_and_refuses_replays() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let members = vec!["a@x.org".to_owned(), "b@y.org".to_owned()];
        let msg = NewMessage {
            id: "m1",
            signer: "FPR",
            embargo_until: t("2026-11-22T12:00:00Z"),
            sig_digests: &["d1".to_owned()],
            sealed: b"ciphertext",
            members: &members,
            public_to: &[],
            reminder: None,
            fetched: None,
            submission: None,
        };
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

    #[test]
    fn operators_extend_release_and_cancel_held_embargoes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let now = t("2026-11-20T12:00:00Z");
        let until = t("2026-11-22T12:00:00Z");
        let members = vec!["a@x.org".to_owned()];
        let public = vec!["pub@x.org".to_owned()];
        for (id, digest) in [("m1", "d1"), ("m2", "d2")] {
            let msg = NewMessage {
                id,
                signer: "F",
                embargo_until: until,
                sig_digests: &[digest.to_owned()],
                sealed: b"c",
                members: &members,
                public_to: &public,
                reminder: Some(("pst@x.org", t("2026-11-21T12:00:00Z"))),
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
            !at_old_time.contains(&Kind::Release) && !at_old_time.contains(&Kind::Lifted),
            "{at_old_time:?}"
        );
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
            due_now.contains(&Kind::Release) && due_now.contains(&Kind::Lifted),
            "{due_now:?}"
        );
        assert!(!due_now.contains(&Kind::Reminder));
        assert!(
            matches!(
                spool.cancel("m2", t("2026-11-20T12:00:01Z"), "test", None),
                Err(SpoolError::RefusedAt { .. })
            ),
            "already lifted"
        );

        spool.cancel("m1", now, "test", None).unwrap();
        let info = spool.embargo("m1").unwrap();
        assert_eq!(info.state(now), "cancelled");
        assert_eq!(
            info.releases,
            [("pub@x.org".to_owned(), "cancelled".to_owned())]
        );
        let m1_now: Vec<Kind> = kinds_due(now)
            .into_iter()
            .filter(|(m, _)| m == "m1")
            .map(|(_, k)| k)
            .collect();
        assert!(
            m1_now.contains(&Kind::Lifted) && !m1_now.contains(&Kind::Release),
            "{m1_now:?}"
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

    #[test]
    fn an_embargo_with_a_release_out_cannot_be_cancelled_or_extended() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let now = t("2026-11-20T12:00:00Z");
        let until = t("2026-11-22T12:00:00Z");
        let public = vec!["pub1@x.org".to_owned(), "pub2@x.org".to_owned()];
        let msg = NewMessage {
            id: "m1",
            signer: "F",
            embargo_until: until,
            sig_digests: &["d1".to_owned()],
            sealed: b"c",
            members: &[],
            public_to: &public,
            reminder: None,
            fetched: None,
            submission: None,
        };
        spool.accept(&msg, now).unwrap();
        // One list has it already (say, a release-now raced by a clock read).
        let first = spool
            .due(until, 10)
            .unwrap()
            .into_iter()
            .find(|d| d.kind == Kind::Release)
            .unwrap();
        spool.finish(&first, Finished::Sent, "250", until).unwrap();
        for refused in [
            spool.cancel("m1", now, "test", None),
            spool.extend("m1", t("2026-11-23T12:00:00Z"), now, "test", None),
        ] {
            assert!(
                matches!(refused, Err(SpoolError::Refused(ref why)) if why.contains("released")),
                "{refused:?}"
            );
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
                 INSERT INTO deliveries (message_id, member, copy_id, state, next_attempt_at) VALUES ('old', 'a@x.org', 'c', 'pending', 1);",
            )
            .unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
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
        drop(spool);
        // Opening again changes nothing.
        assert_eq!(
            Spool::open(dir.path()).unwrap().due(now, 10).unwrap().len(),
            2
        );
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-11-20T12:00:00Z");
        let members = vec!["a@x.org".to_owned()];
        Spool::open(dir.path())
            .unwrap()
            .accept(
                &NewMessage {
                    id: "m1",
                    signer: "F",
                    embargo_until: now + chrono::Duration::days(1),
                    sig_digests: &["d".to_owned()],
                    sealed: b"c",
                    members: &members,
                    public_to: &[],
                    reminder: None,
                    fetched: Some("raw-digest"),
                    submission: None,
                },
                now,
            )
            .unwrap();
        let reopened = Spool::open(dir.path()).unwrap();
        assert_eq!(reopened.due(now, 10).unwrap().len(), 1);
        assert_eq!(reopened.sealed("m1").unwrap(), b"c");
        assert_eq!(
            reopened.fetched("raw-digest").unwrap().as_deref(),
            Some("accepted as m1"),
            "a fetched mail is recorded with its acceptance"
        );
        assert_eq!(reopened.fetched("other").unwrap(), None);
    }
}
