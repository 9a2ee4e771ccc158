//! The operator's commands: `embargo` (list, show, extend, cancel, release
//! now), `roster`, `audit` and `status`. They change the spool directly; a running daemon notices within a
//! second (`PRAGMA data_version`).

use std::io::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};

use sequoia_openpgp::parse::Parse;

use crate::cli::{EmbargoAction, RosterAction};
use crate::clock::Clock;
use crate::config::Config;
use crate::keycheck::{self, CertRole};
use crate::spool::{DeliveryState, EmbargoInfo, Kind, Spool};

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
                .cancel(&id, now, ACTOR, None)
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

/// Runs one `roster` command against `list.roster_file`; a running daemon
/// picks the change up within two seconds.
pub fn roster(
    config: &Config,
    action: RosterAction,
    clock: &dyn Clock,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let now = clock.now();
    let p = crate::crypto::policy();
    let file = || {
        config.roster_file.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "list.roster_file is not set: roster add, remove and import-markdown edit that file \
(members in the configuration file itself are edited there, then `systemctl reload embargo-relay`)"
            )
        })
    };
    let in_config = |email: &str| {
        config
            .roster
            .members()
            .iter()
            .find(|m| !m.added && m.email.eq_ignore_ascii_case(email))
            .is_some()
    };
    match action {
        RosterAction::List => {
            writeln!(
                out,
                "{:<40} {:<24} {:<7} {:<6} KEY",
                "EMAIL", "ORGANIZATION", "SOURCE", "PST"
            )?;
            for m in config.roster.members() {
                let key = match m.cert() {
                    Err(e) => format!("MISSING: {e}"),
                    Ok(cert) => {
                        let role = if m.pst {
                            CertRole::Pst
                        } else {
                            CertRole::Member
                        };
                        let issues = keycheck::cert_issues(cert, role, &p, now);
                        let mut s = cert.fingerprint().to_hex();
                        for i in issues {
                            s.push_str(&format!("; {}", i.problem));
                        }
                        s
                    }
                };
                writeln!(
                    out,
                    "{:<40} {:<24} {:<7} {:<6} {key}",
                    m.email,
                    m.organization,
                    if m.added { "file" } else { "config" },
                    if m.pst { "yes" } else { "" },
                )?;
            }
            Ok(())
        }
        RosterAction::Add {
            email,
            organization,
            key,
        } => {
            // `roster add` replaces an entry of the file: no duplicate check.
            let (email, organization) =
                crate::address::check_entry(&email, &organization, |_| false).map_err(
                    |e| match e {
                        crate::address::EntryError::Organization(p) => {
                            anyhow::anyhow!("--organization {p}")
                        }
                        crate::address::EntryError::Email(p) => anyhow::anyhow!("{email}: {p}"),
                        crate::address::EntryError::Twice(e) => {
                            anyhow::anyhow!("{e} is listed twice")
                        }
                    },
                )?;
            if in_config(&email) {
                anyhow::bail!("{email} is a member in the configuration file; change it there");
            }
            let cert = sequoia_openpgp::Cert::from_file(&key)
                .with_context(|| format!("{}: not an OpenPGP certificate", key.display()))?;
            if cert.is_tsk() {
                anyhow::bail!(
                    "{} holds secret key material: give the member's public certificate only",
                    key.display()
                );
            }
            if let Some(i) = keycheck::cert_issues(&cert, CertRole::Member, &p, now)
                .into_iter()
                .find(|i| i.unusable)
            {
                anyhow::bail!("{}: {} ({})", key.display(), i.problem, i.fix);
            }
            crate::roster::file::upsert(&file()?, &email, organization, Some(&cert))
                .map_err(|e| anyhow::anyhow!(e))?;
            writeln!(
                out,
                "{email} ({organization}) on the roster with key {}",
                cert.fingerprint()
            )?;
            Ok(())
        }
        RosterAction::Remove { email } => {
            if in_config(&email) {
                anyhow::bail!(
                    "{email} is a member in the configuration file; remove it there and reload"
                );
            }
            if !crate::roster::file::remove(&file()?, &email).map_err(|e| anyhow::anyhow!(e))? {
                anyhow::bail!("{email} is not in the roster file");
            }
            writeln!(out, "{email} removed from the roster")?;
            Ok(())
        }
        RosterAction::ImportMarkdown { file: table } => {
            let text = std::fs::read_to_string(&table)
                .with_context(|| format!("cannot read {}", table.display()))?;
            let (rows, bad) = crate::roster::parse_markdown_table(&text);
            let path = file()?;
            let (mut added, mut known) = (0, 0);
            for (_, email, organization) in &rows {
                if config.roster.find(email).is_some() {
                    known += 1;
                    continue;
                }
                crate::roster::file::upsert(&path, email, organization, None)
                    .map_err(|e| anyhow::anyhow!(e))?;
                added += 1;
            }
            writeln!(
                out,
                "{} rows read from {}: {added} imported, {known} already on the roster",
                rows.len(),
                table.display()
            )?;
            for (line, why) in &bad {
                writeln!(out, "line {line} skipped: {why}")?;
            }
            let members = crate::roster::file::load(&path).map_err(|e| anyhow::anyhow!(e))?;
            let lacking: Vec<_> = members.iter().filter(|m| m.cert().is_err()).collect();
            if !lacking.is_empty() {
                writeln!(
                    out,
                    "\n{} member(s) still lack a certificate and receive nothing until it is there:",
                    lacking.len()
                )?;
                for m in lacking {
                    writeln!(
                        out,
                        "  {:<40} {:<24} put it at {} or run `embargo-relay roster add {} --organization … --key FILE`",
                        m.email,
                        m.organization,
                        m.key_path.display(),
                        m.email
                    )?;
                }
            }
            if !bad.is_empty() {
                anyhow::bail!("{} row(s) could not be read (see above)", bad.len());
            }
            Ok(())
        }
    }
}

/// `audit`: who was sent what and when, delivered or not, from the spool's
/// deliveries and its append-only audit trail.
pub fn audit(
    config: &Config,
    embargo: Option<&str>,
    member: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let spool = Spool::open(&config.state_dir)?;
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

/// `status`: the queue, held embargoes, recent rejections and keys that
/// need attention, from the running daemon's state directory.
pub fn status(config: &Config, clock: &dyn Clock, out: &mut dyn Write) -> anyhow::Result<()> {
    let spool = Spool::open(&config.state_dir)?;
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
        .filter(|d| d.state == DeliveryState::Failed)
        .collect();
    writeln!(
        out,
        "QUEUE: {due} due now, {} retrying, {} failed; {} scheduled for later",
        retrying.len(),
        failed.len(),
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
    let p = crate::crypto::policy();
    let mut keys = Vec::new();
    for m in config.roster.members() {
        let role = if m.pst {
            CertRole::Pst
        } else {
            CertRole::Member
        };
        match m.cert() {
            Err(e) => keys.push(format!("{}: {e}", m.email)),
            Ok(cert) => keys.extend(
                keycheck::cert_issues(cert, role, &p, now)
                    .into_iter()
                    .map(|i| format!("{}: {}", m.email, i.problem)),
            ),
        }
    }
    writeln!(out, "\nKEYS NEEDING ATTENTION: {}", keys.len())?;
    for k in keys {
        writeln!(out, "  {k}")?;
    }
    Ok(())
}
