//! `status`: the queue, held embargoes, recent rejections and keys that
//! need attention.

use super::{releases, time_left};
use crate::clock::Clock;
use crate::config::Config;
use crate::keycheck;
use crate::spool::{DeliveryState, Kind};
use chrono::{DateTime, Utc};
use std::io::Write;

/// `status`: the queue, held embargoes, recent rejections and keys that
/// need attention, from the running daemon's state directory. `full_check`:
/// SQLite's `quick_check` of the whole spool first (once for all lists).
pub fn status(
    config: &Config,
    full_check: bool,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let spool = crate::context::open_spool(config, full_check, clock.now())?;
    let now = clock.now();
    let rows = spool.deliveries(None, None)?;
    let pending: Vec<_> = rows
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .collect();
    // Tried and failed for now; never tried and due; never tried and due
    // later (releases, lifted notices, reminders: a healthy queue).
    let retrying: Vec<_> = pending.iter().filter(|d| d.attempts > 0).collect();
    let due = pending
        .iter()
        .filter(|d| d.attempts == 0 && d.next_attempt <= now)
        .count();
    let scheduled: Vec<_> = pending
        .iter()
        .filter(|d| d.attempts == 0 && d.next_attempt > now)
        .collect();
    let failed: Vec<_> = rows
        .iter()
        .filter(|d| matches!(d.state, DeliveryState::Failed | DeliveryState::Bounced))
        .collect();
    let bounced = failed
        .iter()
        .filter(|d| d.state == DeliveryState::Bounced)
        .count();
    writeln!(
        out,
        "QUEUE: {due} due now, {} retrying, {} failed, {bounced} bounced; {} scheduled for later",
        retrying.len(),
        failed.len() - bounced,
        scheduled.len(),
    )?;
    for d in retrying.iter().copied().chain(failed.iter()) {
        writeln!(
            out,
            "  {:<9} {:<36} {:<9} {:<18} tries {:>2}  {}{}",
            d.state,
            d.member,
            d.kind,
            d.message_id,
            d.attempts,
            if d.state == DeliveryState::Pending {
                format!("next {} UTC; ", d.next_attempt.format("%Y-%m-%d %H:%M"))
            } else {
                String::new()
            },
            d.last_error.clone().unwrap_or_default()
        )?;
    }
    // One line per announcement, kind and time: a lifted notice goes to
    // every member at once.
    let mut groups: Vec<(&str, Kind, DateTime<Utc>, Vec<&str>)> = Vec::new();
    for d in &scheduled {
        match groups.iter_mut().find(|(id, kind, at, _)| {
            *id == d.message_id && *kind == d.kind && *at == d.next_attempt
        }) {
            Some(group) => group.3.push(&d.member),
            None => groups.push((&d.message_id, d.kind, d.next_attempt, vec![&d.member])),
        }
    }
    groups.sort_by_key(|g| g.2);
    writeln!(out, "\nSCHEDULED: {}", scheduled.len())?;
    for (id, kind, at, to) in groups {
        let to = match to.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("{} recipients", many.len()),
        };
        writeln!(
            out,
            "  {kind:<9} {to:<36} {id:<18} due {} UTC",
            at.format("%Y-%m-%d %H:%M")
        )?;
    }
    let held: Vec<_> = spool
        .embargoes()?
        .into_iter()
        .filter(|e| e.state(now) == "held")
        .collect();
    writeln!(out, "\nHELD EMBARGOES: {}", held.len())?;
    for e in held {
        writeln!(
            out,
            "  {:<18} lifts {} UTC ({} left); public: {}",
            e.id,
            e.until.format("%Y-%m-%d %H:%M:%S"),
            time_left(&e, now),
            releases(&e)
        )?;
    }
    let since = now - chrono::Duration::days(7);
    let rejections: Vec<_> = spool
        .audit_query(None, None)?
        .into_iter()
        .filter(|r| r.at >= since && (r.event == "rejected" || r.event.contains("replay")))
        .collect();
    writeln!(out, "\nREJECTIONS IN THE LAST 7 DAYS: {}", rejections.len())?;
    for r in rejections.iter().rev().take(20) {
        writeln!(out, "  {}  {}", r.at.format("%Y-%m-%d %H:%M:%S"), r.detail)?;
    }
    let mut keys = Vec::new();
    keys.extend(
        keycheck::list_smime_issues(config, now)
            .into_iter()
            .map(|i| i.problem),
    );
    for m in config.roster.members() {
        keys.extend(
            keycheck::member_issues(m, now)
                .into_iter()
                .map(|i| format!("{}: {}", m.email, i.problem)),
        );
    }
    writeln!(out, "\nKEYS NEEDING ATTENTION: {}", keys.len())?;
    for k in keys {
        writeln!(out, "  {k}")?;
    }
    Ok(())
}
