//! `roster`: list, add, remove and check the members.

use crate::cli::RosterAction;
use crate::clock::Clock;
use crate::config::Config;
use crate::keycheck::{self, CertRole};
use anyhow::Context;
use sequoia_openpgp::parse::Parse;
use std::io::Write;

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
                    Err(_) if m.smime.is_some() => {
                        let mut s = match &m.smime {
                            Some(Ok(c)) => format!("S/MIME {}", c.fingerprint()),
                            _ => "S/MIME".to_owned(),
                        };
                        for i in keycheck::member_issues(m, now) {
                            s.push_str(&format!("; {}", i.problem));
                        }
                        s
                    }
                    Err(e) => format!("MISSING: {e}"),
                    Ok(cert) => {
                        let role = if m.pst {
                            CertRole::Pst
                        } else {
                            CertRole::Member
                        };
                        let issues = keycheck::cert_issues(&cert, role, &p, now);
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
            // Keys a refresh found for an address under another
            // fingerprint: not used until the PST names them.
            let held = crate::context::open_spool(config, false, now)
                .and_then(|s| s.held_keys())
                .unwrap_or_default();
            if !held.is_empty() {
                writeln!(
                    out,
                    "\nHeld (another certificate published; used only after a signed Roster-Add names it):"
                )?;
                for h in held {
                    writeln!(
                        out,
                        "  {:<40} {} found by {} on {}",
                        h.member,
                        h.fingerprint,
                        h.source,
                        h.at.format("%Y-%m-%d")
                    )?;
                }
            }
            Ok(())
        }
        RosterAction::Refresh => refresh(config, now, out),
        RosterAction::Add {
            email,
            organization,
            key,
            discover,
            fingerprint,
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
            let path = file()?;
            let fingerprint = fingerprint
                .map(|f| {
                    let f = f.replace(' ', "").to_ascii_uppercase();
                    if (f.len() == 40 || f.len() == 64) && f.chars().all(|c| c.is_ascii_hexdigit()) {
                        Ok(f)
                    } else {
                        Err(anyhow::anyhow!(
                            "--fingerprint: give the certificate's fingerprint as 40 or 64 hex digits"
                        ))
                    }
                })
                .transpose()?;
            let (cert, source, found) = match key {
                Some(key) => {
                    let cert = sequoia_openpgp::Cert::from_file(&key).with_context(|| {
                        format!("{}: not an OpenPGP certificate", key.display())
                    })?;
                    if cert.is_tsk() {
                        anyhow::bail!(
                            "{} holds secret key material: give the member's public certificate only",
                            key.display()
                        );
                    }
                    (cert, key.display().to_string(), None)
                }
                None if discover => {
                    let d = config.discovery.as_ref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "--discover needs a [discovery] section in the configuration (see config/example.toml)"
                        )
                    })?;
                    let finder =
                        crate::discovery::Finder::new(d).map_err(|e| anyhow::anyhow!(e))?;
                    let found = crate::discovery::blocking(finder.discover(
                        &email,
                        fingerprint.as_deref(),
                        &p,
                        now,
                    ))
                    .map_err(|e| anyhow::anyhow!(e))?
                    .map_err(|e| anyhow::anyhow!(e.text))?;
                    let text = format!("the {} at {}", found.source, found.url);
                    let origin = found.source.origin();
                    (found.cert, text, Some(origin))
                }
                None => anyhow::bail!(
                    "give the certificate with --key FILE or look it up with --discover"
                ),
            };
            if let Some(f) = &fingerprint
                && !cert.fingerprint().to_hex().eq_ignore_ascii_case(f)
            {
                anyhow::bail!(
                    "{source} holds {}, not the fingerprint given",
                    cert.fingerprint()
                );
            }
            if let Some(i) = keycheck::cert_issues(&cert, CertRole::Member, &p, now)
                .into_iter()
                .find(|i| i.unusable)
            {
                anyhow::bail!("{source}: {} ({})", i.problem, i.fix);
            }
            crate::roster::file::upsert(&path, &email, organization, Some(&cert))
                .map_err(|e| anyhow::anyhow!(e))?;
            let spool = crate::context::open_spool(config, false, now)?;
            spool.set_key_origin(&email, found)?;
            spool.audit(
                now,
                "roster-add",
                None,
                Some(&email),
                &format!(
                    "by the operator: certificate {} from {source}",
                    cert.fingerprint()
                ),
            )?;
            let replaced = config
                .roster
                .find(&email)
                .and_then(|m| m.cert().ok())
                .filter(|old| old.fingerprint() != cert.fingerprint())
                .map(|old| format!(", replacing {}", old.fingerprint()))
                .unwrap_or_default();
            writeln!(
                out,
                "{email} ({organization}) on the roster with key {} (from {source}){replaced}",
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
            crate::context::open_spool(config, false, now)?.forget_member_key(&email)?;
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

/// `roster refresh`: the weekly refresh, now, its report printed.
fn refresh(
    config: &Config,
    now: chrono::DateTime<chrono::Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let d = config.discovery.as_ref().ok_or_else(|| {
        anyhow::anyhow!("roster refresh needs a [discovery] section in the configuration")
    })?;
    let finder = crate::discovery::Finder::new(d).map_err(|e| anyhow::anyhow!(e))?;
    let spool = crate::context::open_spool(config, false, now)?;
    let origins = crate::keyrefresh::origins(&spool, &config.roster)?;
    let p = crate::crypto::policy();
    let results = crate::discovery::blocking(crate::keyrefresh::fetch_all(
        &finder,
        &config.roster,
        &origins,
        &p,
        now,
    ))
    .map_err(|e| anyhow::anyhow!(e))?;
    let updates = config.state_dir.join(crate::roster::UPDATES_DIR);
    let (report, detail) =
        crate::keyrefresh::apply(&results, &updates, &spool, &config.list_address, now)?;
    // The PST hears of it as of the weekly run (the daemon sends it).
    let notices = match &report {
        Some(text) => crate::keyrefresh::seal_report(config, &config.roster, text, now)?,
        None => Vec::new(),
    };
    spool.queue_notices(
        &notices,
        crate::keyrefresh::EVENT,
        &format!("by the operator: {detail}"),
        now,
    )?;
    match report {
        Some(text) => write!(out, "{text}\nThe PST is sent this report.\n")?,
        None => writeln!(
            out,
            "Key refresh of {}: {detail}; nothing new.",
            config.list_address
        )?,
    }
    Ok(())
}
