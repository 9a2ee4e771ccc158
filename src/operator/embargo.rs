//! `embargo`: list, show, extend, cancel and release now.

use super::{ACTOR, releases, time_left};
use crate::cli::EmbargoAction;
use crate::clock::Clock;
use crate::config::Config;
use crate::spool::Spool;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::io::Write;

/// Runs one `embargo` command, writing its report to `out`.
pub fn embargo(
    config: &Config,
    action: EmbargoAction,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let spool = crate::context::open_spool(config, true, clock.now())?;
    let now = clock.now();
    match action {
        EmbargoAction::List => list(&spool, now, out),
        EmbargoAction::Show { id } => show(&spool, &id, &config.roster.pst_addresses(), now, out),
        EmbargoAction::Extend { id, time } => {
            let to: DateTime<Utc> = DateTime::parse_from_rfc3339(&time)
                .with_context(|| {
                    format!(
                        "`{time}` is not an RFC 3339 time with an offset, e.g. 2026-12-10T16:00:00Z"
                    )
                })?
                .into();
            spool
                .extend(&id, to, now, ACTOR, None)
                .with_context(|| format!("embargo {id}"))?;
            writeln!(
                out,
                "embargo {id} now lifts at {} UTC",
                to.format("%Y-%m-%d %H:%M:%S")
            )?;
            Ok(())
        }
        EmbargoAction::Cancel { id } => {
            spool
                .cancel(&id, now, ACTOR, None, &config.cancel_hook_rows())
                .with_context(|| format!("embargo {id}"))?;
            writeln!(
                out,
                "embargo {id} cancelled: the held advisory is discarded, members are being told"
            )?;
            Ok(())
        }
        EmbargoAction::ReleaseNow { id } => {
            spool
                .release_now(&id, now, ACTOR, None)
                .with_context(|| format!("embargo {id}"))?;
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

fn show(
    spool: &Spool,
    id: &str,
    pst: &[String],
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
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
    if !e.hooks.is_empty() {
        let hooks: Vec<String> = e
            .hooks
            .iter()
            .map(|(name, state)| format!("{name} ({state})"))
            .collect();
        writeln!(out, "hooks        {}", hooks.join(", "))?;
    }
    let c = &e.copies;
    writeln!(
        out,
        "copies       {} sent, {} pending, {} skipped, {} failed",
        c.sent, c.pending, c.skipped, c.failed
    )?;
    // Who has the copy, and whether they acknowledged it.
    // (Not the PST: it announces, it does not acknowledge.)
    let acks = spool.acks(id)?;
    let have: Vec<String> = spool
        .delivery_report(id, crate::spool::Kind::Copy)?
        .into_iter()
        .filter(|(m, state, _)| state == "sent" && !pst.iter().any(|p| p.eq_ignore_ascii_case(m)))
        .map(|(m, _, _)| m)
        .collect();
    writeln!(
        out,
        "acknowledged {} of {} members who have the copy",
        have.iter()
            .filter(|m| acks.iter().any(|(a, _)| a.eq_ignore_ascii_case(m)))
            .count(),
        have.len()
    )?;
    for m in &have {
        match acks.iter().find(|(a, _)| a.eq_ignore_ascii_case(m)) {
            Some((_, at)) => writeln!(
                out,
                "  {m:<40} acknowledged {} UTC",
                at.format("%Y-%m-%d %H:%M")
            )?,
            None => writeln!(out, "  {m:<40} not yet")?,
        }
    }
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
