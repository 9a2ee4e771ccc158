//! A PST's `Roster-Add` and `Roster-Remove` applied to the roster file.

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;

/// Checks a `Roster-Add` and writes it to the roster file; the receipt text.
#[allow(clippy::too_many_arguments)]
pub(super) fn add_member(
    path: &std::path::Path,
    roster: &crate::roster::Roster,
    keys: Option<&[u8]>,
    email: &str,
    organization: &str,
    fingerprint: &str,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<String, String> {
    use crate::address::EntryError;
    use sequoia_openpgp::parse::Parse;
    let (email, organization) =
        crate::address::check_entry(email, organization, |e| roster.find(e).is_some()).map_err(
            |e| match e {
                EntryError::Email(p) => p,
                EntryError::Organization(p) => format!("the organization {p}"),
                EntryError::Twice(_) => "the address is already a member".to_owned(),
            },
        )?;
    let email = email.as_str();
    let keys =
        keys.ok_or("attach the member's certificate (application/pgp-keys) to the signed mail")?;
    let cert = Cert::from_bytes(keys)
        .map_err(|_| "the attached certificate cannot be read".to_owned())?
        .strip_secret_key_material();
    let fpr = cert.fingerprint().to_hex();
    if fpr != fingerprint {
        return Err(format!(
            "the attached certificate is {fpr}, not the fingerprint given"
        ));
    }
    if !crate::crypto::has_email(&cert, p, now, email) {
        return Err(format!("the address is not a user ID of certificate {fpr}"));
    }
    crate::crypto::usable_for_encryption(&cert, p, now)?;
    crate::roster::file::add(path, email, organization, &cert)?;
    Ok(format!(
        "Added {email} ({organization}) with certificate {fpr}. They receive every announcement from now on."
    ))
}

/// Removes a member that a `Roster-Add` added; the receipt text.
pub(super) fn remove_member(
    path: &std::path::Path,
    roster: &crate::roster::Roster,
    email: &str,
) -> Result<String, String> {
    let member = roster
        .find(email)
        .ok_or_else(|| "the address is not a member".to_owned())?;
    if !member.added {
        return Err(
            "the address is a member of the configuration file, not the roster file; remove it there"
                .to_owned(),
        );
    }
    if !crate::roster::file::remove(path, email)? {
        return Err("the address is not in the roster file".to_owned());
    }
    Ok(format!(
        "Removed {email} ({}). They receive nothing from now on; copies already queued for them are skipped.",
        member.organization
    ))
}
