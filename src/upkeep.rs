//! The daemon's upkeep, each a task or a step `daemon` starts: the clock's
//! leap base kept across restarts, the roster file watched, counted
//! rejections flushed and the spool pruned, members who cannot receive
//! copies named at start.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::context::Relay;
use crate::intake::Intake;

/// The clock's leaps are measured from the base an earlier daemon of this
/// boot kept in the spool, or from now (and that kept): a daemon restarted
/// after the clock leapt must not take the leapt clock as right.
pub(crate) fn keep_leap_base(relay: &Relay) -> anyhow::Result<()> {
    let stored = relay.spool.leap_base()?;
    if let Some(base) = &stored
        && relay.clock.adopt_leap_base(base)
    {
        let leap = relay.clock.leap();
        if leap > crate::clock::LEAP_LIMIT {
            tracing::error!(
                leap_s = leap.num_seconds(),
                "the wall clock is ahead of the time that passed since this boot's first daemon start: releases that come due are held"
            );
        }
        return Ok(());
    }
    if let Some(base) = relay.clock.leap_base() {
        relay.spool.set_leap_base(&base)?;
    }
    Ok(())
}

/// Reloads the roster file when it changes on disk: a `Roster-Add` that
/// came through `submit` (another process) or an operator's edit takes
/// effect within two seconds. A file that does not load is logged and the
/// roster in force stays. The same for the refreshed certificates under
/// the state directory (`roster refresh` run by the operator).
pub(crate) async fn watch_roster_file(
    relay: Arc<Relay>,
    path: Option<std::path::PathBuf>,
    updates: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stamps = || (path.as_deref().and_then(stamp), stamp(&updates));
    let mut seen = stamps();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let now = stamps();
        if now == seen {
            continue;
        }
        let file_changed = now.0 != seen.0;
        seen = now;
        let Some(path) = path.as_deref().filter(|_| file_changed) else {
            relay.update_roster(|current| current.reread_updates());
            tracing::info!(dir = %updates.display(), "refreshed certificates changed; merged");
            continue;
        };
        match crate::roster::file::load(path) {
            Ok(members) => {
                let now = relay.update_roster(|current| current.with_file_members(members));
                tracing::info!(file = %path.display(), members = now.roster.members().len(), "roster file changed; reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "roster file changed but does not load; the roster in force stays")
            }
        }
    }
}

/// Keeps what grows in check: every minute the counted rejections are
/// written (and at shutdown, so none is lost); with `prune`, every hour,
/// and at start, the spool forgets replay-cache entries and digests that
/// can no longer matter (`Spool::prune`).
pub(crate) async fn maintenance(
    relay: Arc<Relay>,
    intake: Arc<Intake>,
    prune: bool,
    shutdown: CancellationToken,
) {
    const FLUSH: std::time::Duration = std::time::Duration::from_secs(60);
    const PRUNE_EVERY: u32 = 60;
    let mut tick = tokio::time::interval(FLUSH);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let (i, now) = (intake.clone(), relay.clock.now());
                let _ = tokio::task::spawn_blocking(move || i.flush_tally(now, true)).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let (i, r) = (intake.clone(), relay.clone());
        let prune = prune && ticks.is_multiple_of(PRUNE_EVERY);
        ticks = ticks.wrapping_add(1);
        let _ = tokio::task::spawn_blocking(move || {
            let now = r.clock.now();
            i.flush_tally(now, false);
            // A wall clock that leapt ahead would forget replay-cache
            // entries that are still needed once it is set right.
            let leapt = r.clock.leap() > crate::clock::LEAP_LIMIT;
            if leapt && prune {
                tracing::warn!(
                    "the wall clock leapt ahead; the spool is not pruned until it is right"
                );
            }
            if prune && !leapt {
                // A signature older than signature_max_age (+ the skew) is
                // refused for its age; twice that, at least a week, is kept
                // so that raising the setting later loses nothing.
                let keep = (r.config().policy.signature_max_age * 2).max(chrono::Duration::days(7));
                match r.spool.prune(now - keep, now - chrono::Duration::days(7)) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "spool pruned"),
                    Err(e) => tracing::error!(error = %e, "cannot prune the spool"),
                }
            }
        })
        .await;
    }
}

/// Logs every member who will be skipped, so the operator hears of it at start.
pub(crate) fn warn_about_roster(config: &Config, clock: &SharedClock) {
    for i in crate::keycheck::list_smime_issues(config, clock.now()) {
        tracing::warn!(problem = %i.problem, "the list's S/MIME certificate needs attention");
    }
    for m in config.roster.members() {
        let problem = match (&m.smime, m.kept()) {
            (Some(_), _) => crate::keycheck::member_issues(m, clock.now())
                .into_iter()
                .find(|i| i.unusable)
                .map(|i| i.problem),
            (None, Err(e)) => Some(e.to_owned()),
            (None, Ok(cert)) => cert.encryption_keys(clock.now()).err(),
        };
        if let Some(problem) = problem {
            tracing::warn!(member = %m.email, organization = %m.organization, %problem, "member cannot receive copies until this is fixed");
        }
    }
}
