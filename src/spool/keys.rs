//! Members' keys found by discovery: where each came from, and a certificate of another fingerprint held for
//! the PST (`member_keys`, version 9).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::audit::insert_audit;
use super::{Spool, SpoolError};
use crate::clock::{from_millis, to_millis};

/// A certificate of another fingerprint found for a member's address.
#[derive(Debug, Clone)]
pub struct HeldKey {
    pub member: String,
    pub fingerprint: String,
    /// Where it was found (a `discovery::Source` in words, with its URL).
    pub source: String,
    pub at: DateTime<Utc>,
    /// The certificate as found (binary).
    pub cert: Vec<u8>,
}

impl Spool {
    /// Where `member`'s key was found (`wkd`, `keyserver`), if by discovery.
    pub fn key_origin(&self, member: &str) -> Result<Option<String>, SpoolError> {
        self.lock()
            .query_row(
                "SELECT origin FROM member_keys WHERE list = ?1 AND member = ?2",
                params![&*self.list, member],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.db(e))
    }

    /// Records where `member`'s key was found, and forgets a key held for
    /// it (the one taken, or made moot by it).
    pub fn set_key_origin(&self, member: &str, origin: Option<&str>) -> Result<(), SpoolError> {
        self.lock()
            .execute(
                "INSERT INTO member_keys (list, member, origin) VALUES (?1, ?2, ?3)
                 ON CONFLICT (list, member) DO UPDATE SET origin = excluded.origin,
                   held_fpr = NULL, held_source = NULL, held_at = NULL, held_cert = NULL",
                params![&*self.list, member, origin],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }

    /// Holds `cert` (another fingerprint than `member`'s key) for the PST,
    /// in place of one held before, with an audit record. False when the
    /// same fingerprint was already held (nothing new to report).
    pub fn hold_key(&self, held: &HeldKey) -> Result<bool, SpoolError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.db(e))?;
        let before: Option<String> = tx
            .query_row(
                "SELECT held_fpr FROM member_keys WHERE list = ?1 AND member = ?2",
                params![&*self.list, held.member],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))?
            .flatten();
        if before.as_deref() == Some(held.fingerprint.as_str()) {
            return Ok(false);
        }
        let t = to_millis(held.at);
        let write = || -> rusqlite::Result<()> {
            tx.execute(
                "INSERT INTO member_keys (list, member, held_fpr, held_source, held_at, held_cert)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (list, member) DO UPDATE SET held_fpr = excluded.held_fpr,
                   held_source = excluded.held_source, held_at = excluded.held_at,
                   held_cert = excluded.held_cert",
                params![
                    &*self.list,
                    held.member,
                    held.fingerprint,
                    held.source,
                    t,
                    held.cert
                ],
            )?;
            insert_audit(
                &tx,
                &self.list,
                t,
                "key-held",
                None,
                Some(&held.member),
                &format!(
                    "another certificate ({}) found for the address by {}; held until a signed Roster-Add names it",
                    held.fingerprint, held.source
                ),
            )
        };
        write().map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(true)
    }

    /// The key held for `member`, if any.
    pub fn held_key(&self, member: &str) -> Result<Option<HeldKey>, SpoolError> {
        Ok(self
            .held_keys()?
            .into_iter()
            .find(|h| h.member.eq_ignore_ascii_case(member)))
    }

    /// Every key held for the PST, by member.
    pub fn held_keys(&self) -> Result<Vec<HeldKey>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT member, held_fpr, held_source, held_at, held_cert FROM member_keys
                 WHERE list = ?1 AND held_fpr IS NOT NULL ORDER BY member",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params![&*self.list], |r| {
                Ok(HeldKey {
                    member: r.get(0)?,
                    fingerprint: r.get(1)?,
                    source: r.get(2)?,
                    at: from_millis(r.get(3)?),
                    cert: r.get(4)?,
                })
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Forgets where `member`'s key came from and any key held for it
    /// (the member left the roster).
    pub fn forget_member_key(&self, member: &str) -> Result<(), SpoolError> {
        self.lock()
            .execute(
                "DELETE FROM member_keys WHERE list = ?1 AND member = ?2",
                params![&*self.list, member],
            )
            .map(|_| ())
            .map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::spool::Spool;
    use crate::spool::tests::t;

    use super::HeldKey;

    #[test]
    fn a_held_key_is_kept_per_list_until_an_origin_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = Spool::open(dir.path(), "a@x.example").unwrap();
        let b = a.for_list("b@x.example");
        let held = HeldKey {
            member: "m@y.example".into(),
            fingerprint: "AB".into(),
            source: "wkd".into(),
            at: t("2026-12-01T00:00:00Z"),
            cert: vec![1, 2],
        };
        assert!(a.hold_key(&held).unwrap());
        assert!(
            !a.hold_key(&held).unwrap(),
            "the same key again is not news"
        );
        assert_eq!(
            a.held_key("M@y.example").unwrap().unwrap().fingerprint,
            "AB"
        );
        assert!(
            b.held_key("m@y.example").unwrap().is_none(),
            "another list's"
        );
        a.set_key_origin("m@y.example", Some("wkd")).unwrap();
        assert_eq!(a.key_origin("m@y.example").unwrap().as_deref(), Some("wkd"));
        assert!(a.held_key("m@y.example").unwrap().is_none());
        a.hold_key(&held).unwrap();
        a.forget_member_key("m@y.example").unwrap();
        assert!(a.key_origin("m@y.example").unwrap().is_none());
        assert!(a.held_keys().unwrap().is_empty());
        assert!(
            a.audit_records()
                .unwrap()
                .iter()
                .any(|r| r.event == "key-held")
        );
    }
}
