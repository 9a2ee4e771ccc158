//! `embargo-relay check`: loads everything the daemon would and reports
//! each problem with the file, the field and the fix.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::keycheck::{self, CertRole};

/// One problem `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: PathBuf,
    pub field: String,
    pub problem: String,
    pub fix: String,
    /// Worth a look, but possibly meant (a public listener behind a
    /// firewall): reported, and `check` still exits 0.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

/// Everything wrong with the configuration at `path` at `now`; empty when clean.
pub fn findings(path: &Path, now: DateTime<Utc>) -> Vec<Finding> {
    read(path, now).0
}

/// The findings, and what the file serves (its form and lists) when it loads.
fn read(path: &Path, now: DateTime<Utc>) -> (Vec<Finding>, Option<String>) {
    let lists = match Config::load_all(path) {
        Ok(lists) => lists,
        Err(e) => return (vec![config_finding(path, e)], None),
    };
    let addresses: Vec<&str> = lists.iter().map(|c| c.list_address.as_str()).collect();
    let form = match &lists[..] {
        [one] => format!("one list, {}", one.list_address),
        _ => format!(
            "{} lists in [[list]] tables, one spool: {}",
            lists.len(),
            addresses.join(", ")
        ),
    };
    let several = lists.len() > 1;
    let mut out = Vec::new();
    for (i, config) in lists.iter().enumerate() {
        for mut f in list_findings(path, config, i == 0, now) {
            if several {
                f.field = format!("[[list]] #{} ({}) {}", i + 1, config.list_address, f.field);
            }
            out.push(f);
        }
    }
    (out, Some(form))
}

/// What is wrong with one list of the file (with `daemon_wide`, also with
/// what its lists share: the spool, the listener).
fn list_findings(
    path: &Path,
    config: &Config,
    daemon_wide: bool,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let p = crate::crypto::policy();
    let mut out = Vec::new();
    let list_cert = config.list_key.cert();
    for i in keycheck::cert_issues(&list_cert, CertRole::Pst, &p, now) {
        out.push(Finding {
            file: path.to_owned(),
            field: "list.secret_key".into(),
            problem: format!("the list key: {}", i.problem),
            fix: "extend or replace the list key; members must then import the new certificate"
                .into(),
            warning: false,
        });
    }
    for i in keycheck::list_smime_issues(config, now) {
        out.push(Finding {
            file: path.to_owned(),
            field: "list.smime_cert".into(),
            problem: i.problem,
            fix: i.fix,
            warning: !i.unusable,
        });
    }
    if daemon_wide
        && let Some(http) = &config.http
        && let crate::config::HttpListen::Tcp(addr) = &http.listen
        && !addr.ip().is_loopback()
    {
        out.push(Finding {
            file: path.to_owned(),
            field: "http.listen".into(),
            problem: format!(
                "the status API listens on {addr}, not loopback, and speaks plain HTTP: the bearer token would cross the network in the clear"
            ),
            fix: "listen on 127.0.0.1 or a Unix socket and put a TLS reverse proxy in front".into(),
            warning: true,
        });
    }
    if daemon_wide
        && let Some(http) = &config.http
        && let Err(problem) = http.token()
    {
        out.push(Finding {
            file: path.to_owned(),
            field: "http.token_file".into(),
            problem,
            fix: "write one line of 32+ random characters (openssl rand -hex 32) readable by the daemon's user, or pass the credential http-token".into(),
            warning: false,
        });
    }
    // The spool and the listener are every list's: checked with the first.
    if daemon_wide && let Err(e) = crate::spool::Spool::inspect(&config.state_dir) {
        let fix = if e.is_damage() {
            "stop the daemon; restore the spool from a backup (deploy/README.md, Backups), or start afresh with `embargo-relay run --new-spool`"
        } else {
            "check that this user may read the state directory"
        };
        out.push(Finding {
            file: path.to_owned(),
            field: "list.state_dir".into(),
            problem: e.to_string(),
            fix: fix.into(),
            warning: false,
        });
    }
    if daemon_wide {
        let key = config.list_key.fingerprint().to_hex();
        let (file, list) = (&config.neighbours, &config.list_address);
        match crate::spool::Spool::inspect_orphans(&config.state_dir, file, list, &key) {
            Ok(orphans) => {
                for (list, pending) in orphans.into_iter().filter(|(_, n)| *n > 0) {
                    out.push(Finding {
                        file: path.to_owned(),
                        field: "list".into(),
                        problem: format!(
                            "the spool holds {pending} pending deliveries of the list {list}, which this file does not name: the daemon refuses to start, as they would never be sent"
                        ),
                        fix: format!(
                            "put the list {list} back in the file; remove it by a reload once its queue is empty"
                        ),
                        warning: false,
                    });
                }
            }
            Err(e) => out.push(Finding {
                file: path.to_owned(),
                field: "list.state_dir".into(),
                problem: e.to_string(),
                fix: "check that this user may read the state directory".into(),
                warning: false,
            }),
        }
    }
    let listen = config.smtp.listen;
    if daemon_wide && !listen.ip().is_loopback() {
        out.push(Finding {
            file: path.to_owned(),
            field: "inbound.smtp.listen".into(),
            problem: format!(
                "the SMTP listener binds {listen}, which is not loopback: anyone who can reach it may send to the list directly, past your MTA's limits"
            ),
            fix: "bind 127.0.0.1 behind your MTA, or make sure only the MTA and the PST's hosts can reach this address (firewall)".into(),
            warning: true,
        });
    }
    let (mut in_config, mut in_file) = (0, 0);
    let mut seen: Vec<(String, &str)> = Vec::new();
    for m in config.roster.members() {
        let (file, index) = if m.added {
            in_file += 1;
            (config.roster_file.clone().unwrap_or_default(), in_file - 1)
        } else {
            in_config += 1;
            (path.to_owned(), in_config - 1)
        };
        // A problem with the member's S/MIME certificate (an S/MIME
        // member's own, or a PST member's pinned one).
        let smime_finding = |i: keycheck::KeyIssue| Finding {
            file: file.clone(),
            field: format!("member[{index}].smime_cert ({})", m.email),
            problem: i.problem,
            fix: i.fix,
            warning: !i.unusable,
        };
        if m.is_smime() {
            out.extend(
                keycheck::member_issues(m, now)
                    .into_iter()
                    .map(smime_finding),
            );
            continue;
        }
        let field = format!("member[{index}].key ({})", m.email);
        let cert = match m.cert() {
            Ok(c) => c,
            Err(e) => {
                out.push(Finding {
                    file,
                    field,
                    problem: e.to_owned(),
                    fix: format!(
                        "put the member's armored certificate at {} (or remove the member)",
                        m.key_path.display()
                    ),
                    warning: false,
                });
                continue;
            }
        };
        let role = if m.pst {
            CertRole::Pst
        } else {
            CertRole::Member
        };
        // The PST's From must be a user ID of the signing key: an address
        // that is not one refuses every announcement the PST sends.
        if m.pst
            && !crate::crypto::valid_emails(&cert, &p, now)
                .iter()
                .any(|e| e.eq_ignore_ascii_case(&m.email))
        {
            out.push(Finding {
                file: file.clone(),
                field: format!("member[{index}].email ({})", m.email),
                problem: format!(
                    "the PST member's address is not a valid user ID of its certificate {}: announcements from it would be refused (From is not a user ID of the signing key)",
                    cert.fingerprint()
                ),
                fix: "use the address that is on the PST key, or add it to the key as a user ID and export the certificate again".into(),
                warning: false,
            });
        }
        for i in keycheck::cert_issues(&cert, role, &p, now) {
            out.push(Finding {
                file: file.clone(),
                field: field.clone(),
                problem: i.problem,
                fix: i.fix,
                warning: false,
            });
        }
        // A PST member's pinned S/MIME certificate: its S/MIME mail is
        // verified against it alone.
        out.extend(
            keycheck::smime_signing_issues(m, now)
                .into_iter()
                .map(smime_finding),
        );
        let fpr = cert.fingerprint().to_hex();
        if let Some((_, other)) = seen.iter().find(|(f, _)| *f == fpr) {
            out.push(Finding {
                file,
                field,
                problem: format!("the same certificate {fpr} as {other}"),
                fix: "each member needs its own key: remove the duplicate or fix the key path"
                    .into(),
                warning: false,
            });
        } else {
            seen.push((fpr, &m.email));
        }
    }
    out
}

fn config_finding(path: &Path, e: ConfigError) -> Finding {
    match e {
        ConfigError::Read { path, source } => Finding {
            file: path,
            field: String::new(),
            problem: format!("cannot read: {source}"),
            fix: "check the path and that this user may read it".into(),
            warning: false,
        },
        ConfigError::Syntax { path, message } => Finding {
            file: path,
            field: String::new(),
            problem: message,
            fix: "correct it; unknown keys are refused, compare with config/embargo-relay.example.toml (one list: a [list] table; several: one [[list]] table each, with shared [defaults])".into(),
            warning: false,
        },
        ConfigError::Choose { path: file, problem } => Finding {
            file,
            field: String::new(),
            problem,
            fix: "name the list with --list ADDRESS".into(),
            warning: false,
        },
        ConfigError::Field {
            path: file,
            field,
            problem,
        } => {
            let fix = format!("correct `{field}` in {}", path.display());
            Finding {
                file,
                field,
                problem,
                fix,
                warning: false,
            }
        }
    }
}

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs `check`; true when the configuration is clean (warnings aside).
pub fn run(
    path: &Path,
    format: Format,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let (found, form) = read(path, now);
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct Report<'a> {
                config: &'a Path,
                /// What the file serves, when it loads.
                #[serde(skip_serializing_if = "Option::is_none")]
                serves: Option<&'a str>,
                clean: bool,
                problems: &'a [Finding],
            }
            let report = Report {
                config: path,
                serves: form.as_deref(),
                clean: found.iter().all(|f| f.warning),
                problems: &found,
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        Format::Text => {
            for f in &found {
                let field = if f.field.is_empty() {
                    String::new()
                } else {
                    format!(" {}:", f.field)
                };
                let level = if f.warning { " warning:" } else { "" };
                writeln!(out, "{}:{field}{level} {}", f.file.display(), f.problem)?;
                writeln!(out, "    fix: {}", f.fix)?;
            }
            let warnings = found.iter().filter(|f| f.warning).count();
            let problems = found.len() - warnings;
            let serves = form.map(|f| format!(" ({f})")).unwrap_or_default();
            match (problems, warnings) {
                (0, 0) => writeln!(out, "{}: clean{serves}", path.display())?,
                (0, w) => writeln!(out, "{}: clean{serves}, {w} warning(s)", path.display())?,
                (p, 0) => writeln!(out, "{p} problem(s)")?,
                (p, w) => writeln!(out, "{p} problem(s), {w} warning(s)")?,
            }
        }
    }
    Ok(found.iter().all(|f| f.warning))
}
