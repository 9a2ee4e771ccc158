//! Rejections counted rather than each written out, so junk cannot grow
//! the audit trail without bound: in memory for the daemon, in the spool for
//! `submit`.

use chrono::{DateTime, Utc};

use super::Intake;

/// Rejections counted rather than each written out: the first
/// [`RECORDED_EACH`] of a reason from a peer host in a window get their own
/// audit records at once; the others are counted and written as one record
/// when the window ends ([`Intake::flush_tally`], every minute and at
/// shutdown). Junk at 1,500 mails a second then adds a few records a
/// minute, not 0.5 GB an hour.
#[derive(Default)]
pub(super) struct Tally {
    since: Option<DateTime<Utc>>,
    /// (event, peer host, reason) → how many in this window.
    seen: std::collections::HashMap<(String, String, String), u64>,
    /// (event, peer host, reason) → how many beyond the ones recorded.
    more: std::collections::HashMap<(String, String, String), u64>,
    /// Records written one by one in this window, all keys together.
    recorded: u64,
}

/// Rejections of one reason from one host recorded one by one in a window.
pub(super) const RECORDED_EACH: u64 = 8;

/// The tally's window.
pub(super) const TALLY_WINDOW: chrono::Duration = chrono::Duration::minutes(1);

impl Intake {
    /// Audits a rejection (`event` "rejected") or a duplicate, or counts it
    /// if ones like it (same event, peer host and reason) were audited in
    /// this window.
    pub(super) fn tally_or_audit(
        &self,
        now: DateTime<Utc>,
        key: (&str, &str, &str),
        message_id: Option<&str>,
        detail: &str,
    ) {
        let (event, host, reason) = key;
        let Some(tally) = &self.tally else {
            let key = crate::spool::TallyKey {
                event,
                host,
                reason,
                each: RECORDED_EACH,
                window: TALLY_WINDOW,
            };
            if let Err(e) = self.records().tally(now, &key, message_id, detail) {
                tracing::error!(error = %e, "could not write the audit record of a rejection");
            }
            return;
        };
        {
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            tally.since.get_or_insert(now);
            // Many hosts or reasons in one window share one count, so the
            // tally itself cannot grow without bound between flushes.
            let mut key = (event.to_owned(), host.to_owned(), reason.to_owned());
            if tally.seen.len() >= crate::spool::TALLY_KEYS && !tally.seen.contains_key(&key) {
                key = (
                    event.to_owned(),
                    "(many hosts)".to_owned(),
                    "(various reasons)".to_owned(),
                );
            }
            let seen = tally.seen.entry(key.clone()).or_insert(0);
            *seen += 1;
            if *seen > RECORDED_EACH || tally.recorded >= crate::spool::TALLY_RECORDED {
                *tally.more.entry(key).or_insert(0) += 1;
                return;
            }
            tally.recorded += 1;
        }
        if let Err(e) = self.records().audit(now, event, message_id, None, detail) {
            tracing::error!(error = %e, "could not write the audit record of a rejection");
        }
    }

    /// Writes what `Intake::tally_or_audit` counted since the window
    /// began, one record per event, peer host and reason, and starts a new
    /// window; also the counts `submit` left in the spool whose window has
    /// passed (all of them when `all`, at shutdown).
    pub fn flush_tally(&self, now: DateTime<Utc>, all: bool) {
        let before = (!all).then(|| now - TALLY_WINDOW);
        if let Err(e) = self.records().flush_tally(now, before) {
            tracing::error!(error = %e, "could not write the count of rejections");
        }
        let Some(tally) = &self.tally else { return };
        let (since, more) = {
            let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
            let since = tally.since.take();
            tally.seen.clear();
            tally.recorded = 0;
            (since, std::mem::take(&mut tally.more))
        };
        let Some(since) = since else { return };
        for ((event, host, reason), n) in more.into_iter().filter(|(_, n)| *n > 0) {
            let detail = crate::spool::tally_detail(n, &event, &host, since, &reason);
            if let Err(e) = self.records().audit(now, &event, None, None, &detail) {
                tracing::error!(error = %e, "could not write the count of rejections");
            }
        }
    }
}
