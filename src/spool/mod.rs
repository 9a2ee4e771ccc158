//! The durable store (SQLite, WAL, `synchronous=FULL`): accepted announcements
//! sealed to the list key, one delivery row per member, the replay cache and
//! the audit trail. It never holds plaintext. This file opens it (checks,
//! damage, the marker) and holds its errors; the tables are `schema.rs`,
//! the rest is split by job (`incoming`, `deliveries`, `embargoes`,
//! `audit`, `reports`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::Connection;

mod audit;
mod deliveries;
mod embargoes;
mod incoming;
mod keys;
mod lists;
mod reports;
mod schema;
mod types;

pub use audit::*;
pub use keys::HeldKey;
use schema::*;
pub use types::*;

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
    /// The list is being removed (or was): it takes no more mail.
    #[error("the list {0} is being removed from this server; it takes no more mail")]
    Closed(String),
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

/// Handle to the spool; cheap to clone. Calls block: async callers use
/// `spawn_blocking`.
#[derive(Clone)]
pub struct Spool {
    conn: Arc<Mutex<Connection>>,
    /// A second connection, read-only, for the check every copy makes
    /// just before it is sent ([`Spool::still_due`]): in WAL mode it reads
    /// the last commit while a commit of outcomes waits for the disk on
    /// the first, instead of waiting for that commit. Opened when first
    /// used; `None` if it could not be (the first connection is used).
    reader: Arc<std::sync::OnceLock<Option<Mutex<Connection>>>>,
    path: PathBuf,
    /// Set at the first sign of corruption: the intake then answers 451
    /// and the watchdog stops being fed.
    damaged: Arc<std::sync::atomic::AtomicBool>,
    /// The list this handle reads and writes (its address in lower case):
    /// one spool holds every list of the daemon, each message and audit
    /// record marked with its list, and a handle sees its own list alone
    /// (and the daemon-wide audit records, list `""`).
    list: Arc<str>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spool({}, {})", self.path.display(), self.list)
    }
}

impl Spool {
    /// Opens (creating if needed) `spool.sqlite` in `state_dir`, which is
    /// made private to the daemon's user. A spool that fails SQLite's
    /// `quick_check`, or a missing or empty one where one was before
    /// (`spool.created`), is refused: never used silently as a new one.
    ///
    /// The handle is for `list` (see [`Spool::for_list`]); a spool written
    /// before lists were marked (schema version 7 and older) belongs to
    /// the list that opens it first: the daemon's first list.
    pub fn open(state_dir: &Path, list: &str) -> Result<Spool, SpoolError> {
        let opened = Self::open_with(state_dir, list, true);
        if let Err(SpoolError::Damaged { report, .. }) = &opened {
            let _ = std::fs::write(state_dir.join(DAMAGED), format!("{report}\n"));
        }
        opened
    }

    /// [`Spool::open`] without the `quick_check`, which reads the whole
    /// file: for `submit`, run once per mail (a 290 MB spool took 0.9 s
    /// a mail). Corruption it meets still marks the spool damaged, and the
    /// daemon, `check` and `status` run the check.
    pub fn open_unchecked(state_dir: &Path, list: &str) -> Result<Spool, SpoolError> {
        Self::open_with(state_dir, list, false)
    }

    /// A handle on the same spool (one connection, one lock) for another
    /// list of the daemon.
    pub fn for_list(&self, list: &str) -> Spool {
        Spool {
            list: list.to_ascii_lowercase().into(),
            ..self.clone()
        }
    }

    /// The list this handle is for (its address in lower case).
    pub fn list(&self) -> &str {
        &self.list
    }

    fn open_with(state_dir: &Path, list: &str, check: bool) -> Result<Spool, SpoolError> {
        let list = list.to_ascii_lowercase();
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
        // 8 MiB of page cache (SQLite's default is 2): an announcement to
        // thousands writes three rows each with their indexes in one
        // transaction, which spilled pages to the WAL before it committed.
        conn.pragma_update(None, "cache_size", -8192).map_err(db)?;
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
        migrate(&mut conn, &list).map_err(db)?;
        lists::adopt_unmarked(&mut conn, &list).map_err(db)?;
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
            reader: Arc::default(),
            path,
            damaged: Arc::default(),
            list: list.into(),
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
            // Kept beside the spool, so that `submit` (which does not run
            // the full check) refuses it too.
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::write(dir.join(DAMAGED), format!("{why}\n"));
            }
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

    /// The read-only connection (see `reader`), else the first one.
    fn read_lock(&self) -> MutexGuard<'_, Connection> {
        let reader = self.reader.get_or_init(|| {
            let conn = Connection::open(&self.path).ok()?;
            conn.pragma_update(None, "query_only", true).ok()?;
            conn.busy_timeout(std::time::Duration::from_secs(10)).ok()?;
            Some(Mutex::new(conn))
        });
        match reader {
            Some(conn) => conn.lock().unwrap_or_else(|e| e.into_inner()),
            None => self.lock(),
        }
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
}

/// A write transaction that takes the write lock at once (IMMEDIATE): the
/// daemon and `submit` write the same WAL database, and a deferred
/// transaction that read first fails at once on a stale snapshot.
fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
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
pub(super) mod tests {
    use super::*;

    /// A time from RFC 3339 text, for the spool's tests.
    pub(super) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    /// Announcement `id` to `members`, signed by `FPR` with `digests`,
    /// embargoed until 2026-11-22 12:00 UTC; nothing else queued.
    pub(super) fn new_message<'a>(
        id: &'a str,
        members: &'a [String],
        digests: &'a [String],
    ) -> NewMessage<'a> {
        NewMessage {
            hooks: &[],
            id,
            signer: "FPR",
            embargo_until: t("2026-11-22T12:00:00Z"),
            sig_digests: digests,
            sealed: b"ciphertext",
            members,
            public_to: &[],
            reminder: None,
            ack_reminders: None,
            fetched: None,
            submission: None,
        }
    }

    /// Accepts announcement `id` at `at` for one member, with signature
    /// `d-{id}`, submission `sub-{id}` and fetched digest `fetched-{id}`.
    pub(super) fn accept_at(spool: &Spool, id: &str, at: &str) {
        let members = ["a@x.org".to_owned()];
        let digests = [format!("d-{id}")];
        spool
            .accept(
                &NewMessage {
                    hooks: &[],
                    id,
                    signer: "FPR",
                    embargo_until: t("2026-12-30T12:00:00Z"),
                    sig_digests: &digests,
                    sealed: b"x",
                    members: &members,
                    public_to: &[],
                    reminder: None,
                    ack_reminders: None,
                    fetched: Some(&format!("fetched-{id}")),
                    submission: Some(&format!("sub-{id}")),
                },
                t(at),
            )
            .unwrap();
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
        let spool = Spool::open(dir.path(), "list@example.org").unwrap();
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
        let err = Spool::open(dir.path(), "list@example.org").unwrap_err();
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
        let err = Spool::open(dir.path(), "list@example.org").unwrap_err();
        assert!(matches!(err, SpoolError::Missing { .. }), "{err}");
        assert!(matches!(
            Spool::inspect(dir.path()),
            Err(SpoolError::Missing { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), "list@example.org"),
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
        let fresh = Spool::open(dir.path(), "list@example.org").unwrap();
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
            let spool = Spool::open(dir.path(), "list@example.org").unwrap();
            spool
                .audit(t("2026-11-20T12:00:00Z"), "test", None, None, "x")
                .unwrap();
            let second = Spool::open(dir.path(), "list@example.org").unwrap();
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
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-11-20T12:00:00Z");
        let members = vec!["a@x.org".to_owned()];
        Spool::open(dir.path(), "list@example.org")
            .unwrap()
            .accept(
                &NewMessage {
                    hooks: &[],
                    id: "m1",
                    signer: "F",
                    embargo_until: now + chrono::Duration::days(1),
                    sig_digests: &["d".to_owned()],
                    sealed: b"c",
                    members: &members,
                    public_to: &[],
                    reminder: None,
                    ack_reminders: None,
                    fetched: Some("raw-digest"),
                    submission: None,
                },
                now,
            )
            .unwrap();
        let reopened = Spool::open(dir.path(), "list@example.org").unwrap();
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
