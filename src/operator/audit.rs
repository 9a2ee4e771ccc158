//! `audit`: one embargo's or one member's deliveries and trail.

use crate::config::Config;
use std::io::Write;

/// `audit`: who was sent what and when, delivered or not, from the spool's
/// deliveries and its append-only audit trail.
pub fn audit(
    config: &Config,
    embargo: Option<&str>,
    member: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let spool = crate::context::open_spool(
        config,
        true,
        crate::clock::Clock::now(&crate::clock::SystemClock),
    )?;
    if let Some(id) = embargo {
        let e = spool.embargo(id)?;
        writeln!(
            out,
            "embargo {} received {} UTC, signed by {}, lifts {} UTC{}",
            e.id,
            e.received_at.format("%Y-%m-%d %H:%M:%S"),
            e.signer,
            e.until.format("%Y-%m-%d %H:%M:%S"),
            if e.cancelled { " (cancelled)" } else { "" }
        )?;
    }
    let organization = |m: &str| {
        config
            .roster
            .find(m)
            .map(|m| m.organization.clone())
            .unwrap_or_default()
    };
    writeln!(out, "\nDELIVERIES")?;
    writeln!(
        out,
        "{:<18} {:<9} {:<36} {:<20} {:<9} {:>3}  LAST ANSWER",
        "EMBARGO", "KIND", "TO", "ORGANIZATION", "STATE", "TRY"
    )?;
    for d in spool.deliveries(embargo, member)? {
        writeln!(
            out,
            "{:<18} {:<9} {:<36} {:<20} {:<9} {:>3}  {}",
            d.message_id,
            d.kind,
            d.member,
            organization(&d.member),
            d.state,
            d.attempts,
            d.last_error.unwrap_or_default()
        )?;
    }
    writeln!(out, "\nTRAIL (UTC)")?;
    for r in spool.audit_query(embargo, member)? {
        writeln!(
            out,
            "{}  {:<18} {:<14} {:<36} {}",
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.message_id.unwrap_or_default(),
            r.event,
            r.member.unwrap_or_default(),
            r.detail
        )?;
    }
    Ok(())
}
