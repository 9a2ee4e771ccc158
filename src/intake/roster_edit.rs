//! A PST's `Roster-Add` and `Roster-Remove` applied to the roster file.

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;

/// A `Roster-Add`'s certificate and where it came from (in words); or
/// why there is none, and what each source answered (for the encrypted
/// refusal only: it names the member's address).
pub(super) type Candidate = Result<(Cert, String), (String, String)>;

/// A refusal's reason and its detail for the encrypted notice only.
pub(super) type Refusal = (String, String);

fn plain(problem: impl Into<String>) -> Refusal {
    (problem.into(), String::new())
}

/// Checks a `Roster-Add` and writes it to the roster file; the receipt
/// text. For a member of the roster file whose certificate has another
/// fingerprint, the named certificate replaces it (how a key held by the
/// refresh is taken).
#[allow(clippy::too_many_arguments)]
pub(super) fn add_member(
    path: &std::path::Path,
    roster: &crate::roster::Roster,
    find: impl FnOnce() -> (Candidate, Option<&'static str>),
    email: &str,
    organization: &str,
    fingerprint: &str,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<(String, Option<&'static str>), Refusal> {
    use crate::address::EntryError;
    let existing = roster.find(email);
    let (email, organization) = crate::address::check_entry(email, organization, |_| false)
        .map_err(|e| match e {
            EntryError::Email(p) => plain(p),
            EntryError::Organization(p) => plain(format!("the organization {p}")),
            EntryError::Twice(_) => plain("the address is already a member"),
        })?;
    let email = email.as_str();
    let old = match existing {
        None => None,
        Some(m) if !m.added => {
            return Err(plain(
                "the address is a member of the configuration file: the operator changes its key there",
            ));
        }
        Some(m) => match m.cert() {
            Ok(c) if c.fingerprint().to_hex().eq_ignore_ascii_case(fingerprint) => {
                return Err(plain(
                    "the address is already a member with that certificate",
                ));
            }
            Ok(c) => Some(c.fingerprint().to_hex()),
            Err(_) => Some("none readable".to_owned()),
        },
    };
    // Only now, the cheap refusals done: it may mean a lookup over HTTPS.
    let (candidate, origin) = find();
    let (cert, source) = candidate?;
    let cert = cert.strip_secret_key_material();
    let fpr = cert.fingerprint().to_hex();
    if !fpr.eq_ignore_ascii_case(fingerprint) {
        return Err(plain(format!(
            "{source} is {fpr}, not the fingerprint given"
        )));
    }
    if !crate::crypto::has_email(&cert, p, now, email) {
        return Err(plain(format!(
            "the address is not a user ID of certificate {fpr}"
        )));
    }
    crate::crypto::usable_for_encryption(&cert, p, now).map_err(plain)?;
    match old {
        None => {
            crate::roster::file::add(path, email, organization, &cert).map_err(plain)?;
            Ok((
                format!(
                    "Added {email} ({organization}) with certificate {fpr} ({source}). They receive every announcement from now on."
                ),
                origin,
            ))
        }
        Some(old) => {
            crate::roster::file::upsert(path, email, organization, Some(&cert)).map_err(plain)?;
            Ok((
                format!(
                    "Replaced the certificate of {email} ({organization}): {old} -> {fpr} ({source}). Copies from now on are encrypted to the new one."
                ),
                origin,
            ))
        }
    }
}

/// The certificate a `Roster-Add` names: the one attached, else one a
/// refresh holds for the address under that fingerprint, else one looked
/// up by WKD and the keyserver (`[discovery]`). With its origin (`wkd`,
/// `keyserver`) when it was looked up.
pub(super) fn candidate(
    keys: Option<&[u8]>,
    held: Option<crate::spool::HeldKey>,
    discovery: Option<&crate::discovery::DiscoveryConfig>,
    email: &str,
    fingerprint: &str,
    p: &(dyn Policy + Sync),
    now: DateTime<Utc>,
) -> (Candidate, Option<&'static str>) {
    use sequoia_openpgp::parse::Parse;
    if let Some(keys) = keys {
        let cert = Cert::from_bytes(keys)
            .map(|c| (c, "the attached certificate".to_owned()))
            .map_err(|_| plain("the attached certificate cannot be read"));
        return (cert, None);
    }
    if let Some(h) = held.filter(|h| h.fingerprint.eq_ignore_ascii_case(fingerprint)) {
        let origin = if h.source.starts_with("Web Key Directory") {
            "wkd"
        } else {
            "keyserver"
        };
        let cert = Cert::from_bytes(&h.cert)
            .map(|c| {
                (
                    c,
                    format!(
                        "held since {} from the {}",
                        h.at.format("%Y-%m-%d"),
                        h.source
                    ),
                )
            })
            .map_err(|_| plain("the held certificate cannot be read"));
        return (cert, Some(origin));
    }
    let Some(d) = discovery else {
        return (
            Err(plain(
                "attach the member's certificate (application/pgp-keys) to the signed mail (this list does not look keys up: no [discovery])",
            )),
            None,
        );
    };
    let found = crate::discovery::Finder::new(d).and_then(|finder| {
        crate::discovery::blocking(finder.discover(email, Some(fingerprint), p, now))
    });
    let problem = "no certificate was attached, and none with that fingerprint was found by WKD or the keyserver";
    match found {
        Ok(Ok(f)) => {
            let origin = f.source.origin();
            (
                Ok((f.cert, format!("found by the {} at {}", f.source, f.url))),
                Some(origin),
            )
        }
        Ok(Err(missing)) => (Err((problem.to_owned(), missing.short)), None),
        Err(e) => (Err((problem.to_owned(), e)), None),
    }
}

/// Removes a member that a `Roster-Add` added; the receipt text.
pub(super) fn remove_member(
    path: &std::path::Path,
    roster: &crate::roster::Roster,
    email: &str,
) -> Result<String, Refusal> {
    let member = roster
        .find(email)
        .ok_or_else(|| plain("the address is not a member"))?;
    if !member.added {
        return Err(plain(
            "the address is a member of the configuration file, not the roster file; remove it there",
        ));
    }
    if !crate::roster::file::remove(path, email).map_err(plain)? {
        return Err(plain("the address is not in the roster file"));
    }
    Ok(format!(
        "Removed {email} ({}). They receive nothing from now on; copies already queued for them are skipped.",
        member.organization
    ))
}
