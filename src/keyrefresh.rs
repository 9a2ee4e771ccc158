//! The weekly key refresh (and `roster refresh`): each member's
//! certificate is fetched again from where it is published (Web Key
//! Directory, the keyserver; where it was found first, first), updates of
//! the same fingerprint are merged (a new expiry, new subkeys, a
//! revocation) and kept under the state directory (`roster::UPDATES_DIR`),
//! and another fingerprint found for the address is held for the PST,
//! never switched to. A failure is reported, never fatal.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;
use sequoia_openpgp::serialize::SerializeInto;

use crate::discovery::{Finder, Lookup, Source, changes, merge_same};
use crate::roster::Roster;
use crate::spool::{HeldKey, Spool};

/// The audit event of a refresh (its time schedules the next).
pub(crate) const EVENT: &str = "key-refresh";

/// How often the daemon refreshes (as the key check).
const REFRESH_EVERY_DAYS: i64 = 7;

/// What the refresh found for one member.
#[derive(Debug)]
pub(crate) struct Refreshed {
    pub email: String,
    pub organization: String,
    /// A member of the roster file (a `Roster-Add` can change its key), not
    /// of the configuration file.
    pub added: bool,
    pub outcome: Outcome,
}

/// What one member's sources gave.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Updates of the same certificate, merged: what changed, and from where.
    pub merged: Option<(Box<Cert>, Vec<String>, Source)>,
    /// Another certificate for the address, from a source that vouches for it.
    pub other: Option<(Box<Cert>, Source, String)>,
    /// Sources that failed, in words (when none gave the certificate).
    pub failures: Vec<String>,
    /// Some source serves the member's certificate.
    pub published: bool,
    /// The member's own certificate cannot be read: nothing to refresh.
    pub no_certificate: bool,
}

/// Refreshes every member of `roster`, eight at a time. `origins`: where
/// each member's key was found (address in lower case), asked there first.
pub(crate) async fn fetch_all(
    finder: &Finder,
    roster: &Roster,
    origins: &std::collections::HashMap<String, String>,
    p: &(dyn Policy + Sync),
    now: DateTime<Utc>,
) -> Vec<Refreshed> {
    let futures: Vec<_> = roster
        .members()
        .iter()
        // S/MIME certificates are not published by WKD or keyservers.
        .filter(|m| !m.is_smime())
        .map(|m| refresh_member(finder, m, origins, p, now))
        .collect();
    futures_util::stream::iter(futures)
        .buffered(8)
        .collect()
        .await
}

async fn refresh_member(
    finder: &Finder,
    m: &crate::roster::Member,
    origins: &std::collections::HashMap<String, String>,
    p: &(dyn Policy + Sync),
    now: DateTime<Utc>,
) -> Refreshed {
    let outcome = match m.cert() {
        Err(_) => Outcome {
            no_certificate: true,
            ..Outcome::default()
        },
        Ok(cert) => {
            let origin = origins
                .get(&m.email.to_ascii_lowercase())
                .map(String::as_str);
            refresh_one(finder, &m.email, &cert, origin, p, now).await
        }
    };
    Refreshed {
        email: m.email.clone(),
        organization: m.organization.clone(),
        added: m.added,
        outcome,
    }
}

async fn refresh_one(
    finder: &Finder,
    email: &str,
    cert: &Cert,
    origin: Option<&str>,
    p: &(dyn Policy + Sync),
    now: DateTime<Utc>,
) -> Outcome {
    let fpr = cert.fingerprint().to_hex();
    let mut lookups: Vec<Lookup> = Vec::new();
    // Where the key was found first, then the rest; by address from a
    // keyserver that vouches for it too, so a new key is seen even while
    // the old one stays published under its fingerprint.
    let keyserver_first = origin == Some("keyserver");
    for step in if keyserver_first { [1, 0] } else { [0, 1] } {
        if step == 0 {
            lookups.extend(finder.wkd(email).await);
        } else {
            lookups.extend(finder.keyserver_by_fingerprint(&fpr).await);
            if finder.keyserver_vouches() {
                lookups.extend(finder.keyserver_by_email(email).await);
            }
        }
    }
    let served: Vec<(Source, String, &Cert)> = lookups
        .iter()
        .filter_map(|l| l.outcome.as_ref().ok().map(|c| (l, c)))
        .flat_map(|(l, certs)| certs.iter().map(move |c| (l.source, l.url.to_string(), c)))
        .collect();
    let mut out = Outcome::default();
    let same: Vec<&(Source, String, &Cert)> = served
        .iter()
        .filter(|(_, _, c)| c.fingerprint() == cert.fingerprint())
        .collect();
    let mut too_large = None;
    if let Some(merged) = merge_same(
        cert,
        &same
            .iter()
            .map(|(_, _, c)| (*c).clone())
            .collect::<Vec<_>>(),
    ) {
        out.published = true;
        let changes = changes(cert, &merged, p, now);
        let size = merged.to_vec().map_or(usize::MAX, |v| v.len());
        if size > crate::discovery::MAX_ANSWER {
            too_large = Some(format!(
                "the published certificate, merged, is {size} bytes (more than {}): not taken",
                crate::discovery::MAX_ANSWER
            ));
        } else if !changes.is_empty() {
            out.merged = Some((Box::new(merged), changes, same[0].0));
        }
    }
    out.other = served
        .iter()
        .find(|(s, _, c)| {
            c.fingerprint() != cert.fingerprint()
                && s.vouches_for_address()
                && crate::crypto::has_email(c, p, now, email)
                && crate::crypto::usable_for_encryption(c, p, now).is_ok()
        })
        .map(|(s, u, c)| (Box::new((*c).clone()), *s, u.clone()));
    if !out.published && out.other.is_none() || too_large.is_some() {
        out.failures = lookups
            .iter()
            .filter(|l| l.outcome.is_err())
            .map(Lookup::describe)
            .chain(too_large)
            .collect();
    }
    out
}

/// Keeps what a refresh found: merged certificates under `updates`, other
/// keys held in the spool. Returns the report for the PST (`None`: nothing
/// new they need to hear) and the audit record's detail.
pub(crate) fn apply(
    results: &[Refreshed],
    updates: &std::path::Path,
    spool: &Spool,
    list: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(Option<String>, String)> {
    let mut updated = Vec::new();
    let mut failed = Vec::new();
    let mut not_found = Vec::new();
    let mut newly_held = 0;
    for r in results {
        let who = format!("{} ({})", r.email, r.organization);
        let o = &r.outcome;
        if let Some((merged, changes, source)) = &o.merged {
            crate::roster::store_update(updates, merged).map_err(|e| anyhow::anyhow!(e))?;
            updated.push(format!(
                "  {who}: {} (from the {source})\n",
                changes.join("; ")
            ));
        }
        if let Some((cert, source, url)) = &o.other
            && spool.hold_key(&HeldKey {
                member: r.email.clone(),
                fingerprint: cert.fingerprint().to_hex(),
                source: format!("{source} at {url}"),
                at: now,
                cert: cert.to_vec()?,
            })?
        {
            newly_held += 1;
        }
        if !o.failures.is_empty() {
            failed.push(format!(
                "  {who}:\n{}",
                o.failures
                    .iter()
                    .map(|w| format!("    - {w}\n"))
                    .collect::<String>()
            ));
        } else if !o.published && o.other.is_none() && !o.no_certificate {
            not_found.push(r.email.clone());
        }
    }
    let held = spool.held_keys()?;
    let mut text = format!(
        "Key refresh of {list}: {} member(s) checked where their keys are published.\n",
        results.len()
    );
    if !updated.is_empty() {
        text.push_str(&format!(
            "\nUpdated (the same certificate, merged: the list uses it from now on):\n{}",
            updated.concat()
        ));
    }
    if !held.is_empty() {
        text.push_str(
            "\nAnother certificate is published for these members. It is NOT used: their copies \
stay encrypted to the key on the roster until the new one is taken as said.\n",
        );
        for h in &held {
            let member = results
                .iter()
                .find(|r| r.email.eq_ignore_ascii_case(&h.member));
            let org = member.map_or("?", |r| r.organization.as_str());
            let take = if member.is_some_and(|r| r.added) {
                format!(
                    "send a signed command: Roster-Add: {}, {org}, {}",
                    h.member, h.fingerprint
                )
            } else {
                "a member of the configuration file: ask the operator to replace its key file"
                    .to_owned()
            };
            text.push_str(&format!(
                "  {} ({org}): {} found by {} on {}\n    to take it, {take}\n",
                h.member,
                h.fingerprint,
                h.source,
                h.at.format("%Y-%m-%d"),
            ));
        }
    }
    if !failed.is_empty() {
        text.push_str(&format!(
            "\nCould not be refreshed (tried again next week):\n{}",
            failed.concat()
        ));
    }
    if !not_found.is_empty() {
        text.push_str(&format!(
            "\nNot published where the list looks ({}): {}\n",
            not_found.len(),
            not_found.join(", ")
        ));
    }
    let detail = format!(
        "{} checked, {} updated, {} held ({} new), {} failed, {} not published",
        results.len(),
        updated.len(),
        held.len(),
        newly_held,
        failed.len(),
        not_found.len()
    );
    let tell = !updated.is_empty() || newly_held > 0 || !failed.is_empty();
    Ok((tell.then_some(text), detail))
}

/// The report sealed to each PST member (signed by the list, encrypted).
pub(crate) fn seal_report(
    config: &crate::config::Config,
    roster: &Roster,
    text: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut notices = Vec::new();
    for pst in roster.members().iter().filter(|m| m.pst) {
        let notice = crate::record::Record::unembargoed(
            config.list_key.fingerprint().to_hex(),
            config.list_address.clone(),
            "Key refresh: members' keys changed or need attention".to_owned(),
            crate::secret::Secret::new(text.as_bytes().to_vec()),
            now,
        );
        notices.push((pst.email.clone(), notice.seal(&config.list_key)?));
    }
    Ok(notices)
}

/// The members' origins (address in lower case → `wkd`/`keyserver`).
pub(crate) fn origins(
    spool: &Spool,
    roster: &Roster,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    for m in roster.members() {
        if let Some(o) = spool.key_origin(&m.email)? {
            out.insert(m.email.to_ascii_lowercase(), o);
        }
    }
    Ok(out)
}

/// In the daemon: refreshes the list's keys if `[discovery]` asks for it
/// and a week has passed since the last refresh; the PST gets the report
/// (signed, encrypted) when something changed, is held or failed, and the
/// new roster is in force at once. Errors are logged, never fatal.
pub(crate) async fn run_if_due(
    relay: &std::sync::Arc<crate::context::Relay>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    let config = relay.config();
    let Some(discovery) = config.discovery.clone().filter(|d| d.refresh) else {
        return false;
    };
    let now = relay.clock.now();
    let r = relay.clone();
    let last = tokio::task::spawn_blocking(move || r.spool.last_event(EVENT)).await;
    if let Ok(Ok(Some(last))) = last
        && now - last < chrono::Duration::days(REFRESH_EVERY_DAYS)
    {
        return false;
    }
    let finder = match Finder::new(&discovery) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "key refresh: cannot set up HTTPS");
            return false;
        }
    };
    let roster = relay.directory().roster.clone();
    let r = relay.clone();
    let ro = roster.clone();
    let origins = match tokio::task::spawn_blocking(move || origins(&r.spool, &ro)).await {
        Ok(Ok(o)) => o,
        _ => Default::default(),
    };
    let p = crate::crypto::policy();
    // Nothing is written before `apply`: a shutdown drops the lookups.
    let results = tokio::select! {
        _ = shutdown.cancelled() => return false,
        results = fetch_all(&finder, &roster, &origins, &p, now) => results,
    };
    let r = relay.clone();
    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let config = r.config();
        let updates = config.state_dir.join(crate::roster::UPDATES_DIR);
        let (report, detail) = apply(&results, &updates, &r.spool, &config.list_address, now)?;
        let directory = r.update_roster(|current| current.reread_updates());
        let notices = match report {
            Some(text) => seal_report(&config, &directory.roster, &text, now)?,
            None => Vec::new(),
        };
        r.spool.queue_notices(&notices, EVENT, &detail, now)?;
        tracing::info!(%detail, "key refresh done");
        Ok(!notices.is_empty())
    })
    .await;
    match done {
        Ok(Ok(queued)) => queued,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "key refresh could not be recorded");
            false
        }
        Err(_) => {
            tracing::error!("key refresh panicked");
            false
        }
    }
}
