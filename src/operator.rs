//! The operator's `embargo` commands: list, show, extend, cancel, release
//! now. They change the spool directly; a running daemon notices within a
//! second (`PRAGMA data_version`).

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::cli::EmbargoAction;
use crate::clock::Clock;
use crate::config::Config;
use crate::spool::{EmbargoInfo, Spool};

/// Who the audit trail names for changes made here.
const ACTOR: &str = "operator (CLI)";

/// Runs one `embargo` command, writing its report to `out`.
pub fn embargo(
    config: &Config,
    action: EmbargoAction,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let spool = Spool::open(&config.state_dir)?;
    let now = clock.now();
    match action {
        EmbargoAction::List => list(&spool, now, out),
        EmbargoAction::Show { id } => show(&spool, &id, now, out),
        EmbargoAction::Extend { id, time } => {
            let to: DateTime<Utc> = DateTime::parse_from_rfc3339(&time)
                .with_context(|| {
                    format!(
                        "`{time}` is not an RFC 3339 time with an offset, e.g. 2026-12-10T16:00:00Z"
                    )
                })?
                .into();
            spool.extend(&id, to, now, ACTOR, None)?;
            writeln!(
                out,
                "embargo {id} now lifts at {} UTC",
                to.format("%Y-%m-%d %H:%M:%S")
            )?;
            Ok(())
        }
        EmbargoAction::Cancel { id } => {
            spool.cancel(&id, now, ACTOR, None)?;
            writeln!(
                out,
                "embargo {id} cancelled: the held advisory is discarded, members are being told"
            )?;
            Ok(())
        }
        EmbargoAction::ReleaseNow { id } => {
            spool.release_now(&id, now, ACTOR, None)?;
            writeln!(
                out,
                "embargo {id} lifted now: the advisory and the members' notices go out within a second"
            )?;
            Ok(())
        }
    }
}

fn list(spool: &Spool, now: DateTime<Utc>, out: &mut dyn Write) -> anyhow::Result<()> {
    let embargoes = spool.embargoes()?;
    if embargoes.is_empty() {
        writeln!(out, "no embargoes")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<18} {:<20} {:<12} {:<10} PUBLIC RELEASES",
        "ID", "LIFTS (UTC)", "TIME LEFT", "STATE"
    )?;
    for e in embargoes {
        writeln!(
            out,
            "{:<18} {:<20} {:<12} {:<10} {}",
            e.id,
            e.until.format("%Y-%m-%d %H:%M:%S"),
            time_left(&e, now),
            e.state(now),
            releases(&e)
        )?;
    }
    Ok(())
}

fn show(spool: &Spool, id: &str, now: DateTime<Utc>, out: &mut dyn Write) -> anyhow::Result<()> {
    let e = spool.embargo(id)?;
    writeln!(out, "embargo      {}", e.id)?;
    writeln!(out, "state        {}", e.state(now))?;
    writeln!(
        out,
        "lifts        {} UTC ({} left)",
        e.until.format("%Y-%m-%d %H:%M:%S"),
        time_left(&e, now)
    )?;
    writeln!(
        out,
        "received     {} UTC, signed by {}",
        e.received_at.format("%Y-%m-%d %H:%M:%S"),
        e.signer
    )?;
    writeln!(out, "releases     {}", releases(&e))?;
    let c = &e.copies;
    writeln!(
        out,
        "copies       {} sent, {} pending, {} skipped, {} failed",
        c.sent, c.pending, c.skipped, c.failed
    )?;
    writeln!(out, "audit")?;
    for r in spool.audit_for(id)? {
        writeln!(
            out,
            "  {}  {:<14} {:<32} {}",
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.event,
            r.member.unwrap_or_default(),
            r.detail
        )?;
    }
    Ok(())
}

fn time_left(e: &EmbargoInfo, now: DateTime<Utc>) -> String {
    let left = e.until - now;
    if e.cancelled || left <= chrono::Duration::zero() {
        return "-".to_owned();
    }
    let (d, h, m) = (
        left.num_days(),
        left.num_hours() % 24,
        left.num_minutes() % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h}h {m}m")
    }
}

fn releases(e: &EmbargoInfo) -> String {
    if e.releases.is_empty() {
        return "none held".to_owned();
    }
    e.releases
        .iter()
        .map(|(to, state)| format!("{to} ({state})"))
        .collect::<Vec<_>>()
        .join(", ")
}
