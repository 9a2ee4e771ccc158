//! What each kind of delivery is, as a message ready for the wire: a
//! member's copy (sealed once per announcement, a PKESK per member), the
//! public advisory, the PST's receipts and reminders, lifted notices, key
//! notices.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::context::Pinned;
use crate::crypto::SealError;
use crate::outbound::{CopyHeaders, Wire};
use crate::record::Record;
use crate::spool::{DueDelivery, Kind, SpoolError};
use crate::{embargo, outbound};

/// Why a message could not be built.
#[derive(Debug)]
pub(super) enum BuildError {
    /// The recipient cannot receive it (no usable key): skipped, never
    /// sent plaintext.
    Recipient(String),
    /// Sealing or assembling failed (e.g. the list's key expired): the
    /// operator can fix that, so it is retried.
    Seal(String),
    /// The spool could not be read for what the message says: the worker
    /// pauses, as for any spool error.
    Spool(SpoolError),
    /// Nothing to send any more (a reminder to acknowledge, to a member
    /// who has): ended as skipped, with the reason.
    NotNeeded(String),
}

impl From<SealError> for BuildError {
    fn from(e: SealError) -> BuildError {
        match e {
            SealError::Recipient(why) => BuildError::Recipient(why),
            SealError::Crypto(why) => BuildError::Seal(why),
        }
    }
}

/// Builds what a delivery sends: a member's sealed copy or a public release.
pub(super) fn build(relay: &Pinned, a: &Record, d: &DueDelivery) -> Result<Wire, BuildError> {
    crate::failpoint::hit("build");
    match d.kind {
        Kind::Copy => seal_copy(
            relay,
            a,
            d,
            Some(a.terms.until),
            outbound::PLACEHOLDER_SUBJECT,
        ),
        Kind::Post => seal_copy(relay, a, d, None, outbound::POST_SUBJECT),
        Kind::Release => release_message(relay, a, d),
        Kind::Receipt => receipt_message(relay, a, d),
        Kind::Lifted => lifted_message(relay, a, d),
        // The PST's reminder goes to the announcement's From; a member's
        // row is its reminder to acknowledge.
        Kind::Reminder if d.to.eq_ignore_ascii_case(&a.from) => reminder_message(relay, a, d),
        Kind::Reminder => ack_reminder_message(relay, a, d),
        Kind::Notice => notice_message(relay, a, d),
        // Called by `hook.rs`, never built as mail.
        Kind::Hook | Kind::CancelHook => Err(BuildError::NotNeeded(
            "a release hook is called, not mailed".to_owned(),
        )),
        Kind::Refusal => {
            let pst = pst_cert_for(relay, a, &d.to)?;
            let reason = String::from_utf8_lossy(a.entity.expose()).into_owned();
            notice(
                relay,
                a,
                d,
                &To::pgp(relay, &pst)?,
                &a.subject,
                &reason,
                outbound::REFUSAL_SUBJECT,
            )
        }
    }
}

/// The certificate that signed the announcement (receipts and reminders go to it).
/// A mail the PST signed with S/MIME names its pinned certificate: the
/// receipt goes to that PST member's OpenPGP certificate.
pub(super) fn signer_cert(
    relay: &Pinned,
    a: &Record,
) -> Result<Arc<sequoia_openpgp::Cert>, BuildError> {
    let directory = relay.directory();
    let by_smime = || {
        directory
            .roster
            .members()
            .iter()
            .filter(|m| m.pst)
            .find(|m| {
                matches!(&m.smime_signing, Some(Ok(c)) if c.key_fingerprint().is_some_and(|k| k.eq_ignore_ascii_case(&a.signer)))
            })
            .and_then(|m| m.cert().ok().map(Arc::new))
    };
    directory
        .pst
        .iter()
        .find(|c| c.fingerprint().to_hex() == a.signer)
        .cloned()
        .or_else(by_smime)
        .ok_or_else(|| {
            BuildError::Recipient("the signing PST certificate is no longer configured".to_owned())
        })
}

/// The PST certificate a receipt to `address` is encrypted to: the one
/// whose user ID it is (a command may come from another PST member), else
/// the announcement's signer.
pub(super) fn pst_cert_for(
    relay: &Pinned,
    a: &Record,
    address: &str,
) -> Result<Arc<sequoia_openpgp::Cert>, BuildError> {
    let p = crate::crypto::policy();
    let now = relay.clock.now();
    let has_address = |c: &sequoia_openpgp::Cert| crate::crypto::has_email(c, &p, now, address);
    // The announcement's own signer first: PST members may share an address.
    if let Ok(signer) = signer_cert(relay, a)
        && has_address(&signer)
    {
        return Ok(signer);
    }
    let directory = relay.directory();
    let owner = directory.pst.iter().find(|c| has_address(c));
    owner.cloned().map_or_else(|| signer_cert(relay, a), Ok)
}

/// The PST's receipt: what happened to the announcement, as it stands now.
pub(super) fn receipt_message(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Result<Wire, BuildError> {
    let pst = pst_cert_for(relay, a, &d.to)?;
    let report = relay
        .spool
        .delivery_report(&d.message_id, Kind::Copy)
        .map_err(BuildError::Spool)?;
    let failed_releases: Vec<(String, String)> = relay
        .spool
        .delivery_report(&d.message_id, Kind::Release)
        .map_err(BuildError::Spool)?
        .into_iter()
        .filter(|(_, state, _)| state == "failed")
        .map(|(to, _, why)| (to, why.unwrap_or_default()))
        .collect();
    let releases = relay
        .spool
        .release_targets(&d.message_id)
        .map_err(BuildError::Spool)?;
    let state = match (d.embargo_cancelled, a.terms.until > relay.clock.now()) {
        (true, _) => "cancelled (the held advisory was discarded)",
        (false, true) => "held",
        (false, false) => "lifted",
    };
    let released: Vec<(String, String)> = relay
        .spool
        .audit_for(&d.message_id)
        .map_err(BuildError::Spool)?
        .into_iter()
        .filter(|r| r.event == "released")
        .map(|r| (r.member.unwrap_or_default(), r.detail))
        .collect();
    let directory = relay.directory();
    let expiring = expiring_before(relay, &report, a.terms.until);
    let acks = acknowledged(relay, &d.message_id)?;
    // Only while the lift is ahead: a receipt after a release-now, a
    // cancel or the lift itself has nothing left to move.
    let warnings = if state == "held" {
        let received = relay
            .spool
            .received_at(&d.message_id)
            .map_err(BuildError::Spool)?;
        let guard = &relay.config().policy.release;
        crate::embargo::release_warnings(a.terms.until, received, guard.min_notice, guard.hours)
    } else {
        Vec::new()
    };
    let mut text = Receipt {
        list_address: &relay.config().list_address,
        roster: &directory.roster,
        record: a,
        message_id: &d.message_id,
        state,
        report: &report,
        releases: &releases,
        released: &released,
        expiring: &expiring,
        acks: &acks,
        warnings: &warnings,
    }
    .text();
    for (to, why) in &failed_releases {
        text.push_str(&format!(
            "\nTHE PUBLIC ADVISORY DID NOT REACH {to}: {why}\nPublish it there yourself.\n"
        ));
    }
    text.push_str(&hooks_text(relay, a, &d.message_id)?);
    let subject = format!("Receipt: {}", a.subject);
    notice(
        relay,
        a,
        d,
        &To::pgp(relay, &pst)?,
        &subject,
        &text,
        outbound::RECEIPT_SUBJECT,
    )
}

/// The receipt's lines on the release hooks: each call and how it stands
/// (a GitHub advisory named, in this encrypted text only), a call that
/// failed for good in capitals, and advisories no hook will publish.
fn hooks_text(relay: &Pinned, a: &Record, id: &str) -> Result<String, BuildError> {
    let mut rows = Vec::new();
    for kind in [Kind::Hook, Kind::CancelHook] {
        for (row, state, why) in relay
            .spool
            .delivery_report(id, kind)
            .map_err(BuildError::Spool)?
        {
            rows.push((kind, row, state, why));
        }
    }
    let mut text = String::new();
    let mut failed = String::new();
    if !rows.is_empty() {
        text.push_str("\nRelease hooks:\n");
    }
    let config = relay.config();
    let publishes = |name: &str| {
        config
            .hook(name)
            .is_some_and(|h| h.kind == crate::config::HookKind::Github)
    };
    for (kind, name, state, why) in &rows {
        let what = if *kind == Kind::CancelHook {
            format!("{name}: called for the cancel")
        } else if publishes(name) {
            let advisories: Vec<String> = a
                .terms
                .github
                .iter()
                .map(|gh| format!("{} in {}/{}", gh.ghsa, gh.owner, gh.repo))
                .collect();
            format!(
                "{name}: publishes GitHub advisories {}",
                advisories.join(", ")
            )
        } else {
            format!("{name}: called at the lift")
        };
        let why = why.as_deref().unwrap_or_default();
        let how = match state.as_str() {
            "sent" => "done".to_owned(),
            "pending" if why.is_empty() => "waiting".to_owned(),
            "pending" => format!("retrying ({why})"),
            "cancelled" => "not called (the embargo was cancelled)".to_owned(),
            "skipped" => format!("not called ({why})"),
            _ => {
                failed.push_str(&format!(
                    "\nTHE RELEASE HOOK {name} FAILED: {why}\nDo by hand what it does (e.g. publish the advisory).\n"
                ));
                format!("FAILED ({why})")
            }
        };
        text.push_str(&format!("  - {what}: {how}\n"));
    }
    // By the rows made at the accept: a github hook configured since has none.
    let github_rows = rows
        .iter()
        .any(|(kind, name, _, _)| *kind == Kind::Hook && publishes(name));
    if !a.terms.github.is_empty() && !github_rows {
        text.push_str(&format!(
            "\nGitHub-Advisory names {} advisory(ies), but this list has no github release hook: publish them yourself at the lift.\n",
            a.terms.github.len()
        ));
    }
    text.push_str(&failed);
    Ok(text)
}

/// The members among `report` (a copy's rows) who can receive now but
/// whose key expires before `until`: they will miss the lifted notice and
/// any update. With when.
fn expiring_before(
    relay: &Pinned,
    report: &[(String, String, Option<String>)],
    until: DateTime<Utc>,
) -> Vec<(String, DateTime<Utc>)> {
    let now = relay.clock.now();
    let directory = relay.directory();
    report
        .iter()
        .filter(|(_, state, _)| state != "skipped")
        .filter_map(|(m, _, _)| {
            let member = directory.roster.find(m)?;
            let ends = crate::keycheck::member_receives_until(member, now)?;
            (ends < until).then(|| (m.clone(), ends))
        })
        .collect()
}

/// Who acknowledged embargo `id`, by address.
fn acknowledged(relay: &Pinned, id: &str) -> Result<Vec<String>, BuildError> {
    Ok(relay
        .spool
        .acks(id)
        .map_err(BuildError::Spool)?
        .into_iter()
        .map(|(m, _)| m)
        .collect())
}

/// Who of the members that have the copy (`report`'s sent rows)
/// acknowledged it and who did not yet.
fn acks_text(
    roster: &crate::roster::Roster,
    report: &[(String, String, Option<String>)],
    acks: &[String],
) -> String {
    // The PST announces; it does not acknowledge.
    let have: Vec<&String> = report
        .iter()
        .filter(|(m, state, _)| state == "sent" && !roster.find(m).is_some_and(|m| m.pst))
        .map(|(m, _, _)| m)
        .collect();
    if have.is_empty() {
        return String::new();
    }
    let rows: String = have
        .iter()
        .map(|m| {
            let organization = roster
                .find(m)
                .map(|m| m.organization.clone())
                .unwrap_or_default();
            let state = if acks.iter().any(|a| a.eq_ignore_ascii_case(m)) {
                "acknowledged"
            } else {
                "not yet"
            };
            format!("  - {m} ({organization}): {state}\n")
        })
        .collect();
    let n = have
        .iter()
        .filter(|m| acks.iter().any(|a| a.eq_ignore_ascii_case(m)))
        .count();
    format!(
        "\nAcknowledged by {n} of the {} members who have the copy:\n{rows}",
        have.len()
    )
}

/// The text that names them, empty when there is none.
fn expiring_text(roster: &crate::roster::Roster, expiring: &[(String, DateTime<Utc>)]) -> String {
    if expiring.is_empty() {
        return String::new();
    }
    let rows: String = expiring
        .iter()
        .map(|(m, when)| {
            let organization = roster
                .find(m)
                .map(|m| m.organization.clone())
                .unwrap_or_default();
            format!(
                "  - {m} ({organization}): expires {} UTC\n",
                when.format("%Y-%m-%d %H:%M")
            )
        })
        .collect();
    format!(
        "\nKeys that expire before the embargo lifts (these members will miss the lifted notice and any update; ask them to extend their keys and send the certificates again):\n{rows}"
    )
}

/// The PST's reminder before the embargo lifts; says plainly if nothing will be published.
pub(super) fn reminder_message(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Result<Wire, BuildError> {
    let pst = signer_cert(relay, a)?;
    let releases = relay
        .spool
        .release_targets(&d.message_id)
        .map_err(BuildError::Spool)?;
    let left = a.terms.until - relay.clock.now();
    let mut text = format!(
        "Reminder: the embargo on announcement {} lifts in about {} hours, at {} UTC ({} in the offset you wrote).\n\nSubject: {}\n\n",
        d.message_id,
        left.num_hours().max(0),
        a.terms.until.format("%Y-%m-%d %H:%M:%S"),
        a.terms
            .until
            .with_timezone(&a.terms.sender_offset)
            .format("%Y-%m-%d %H:%M:%S %:z"),
        a.subject,
    );
    text.push_str(&if releases.is_empty() {
        "NO PUBLIC ADVISORY IS HELD for this embargo: the list will publish nothing when it lifts. Publish the advisory yourself.\n".to_owned()
    } else {
        format!("Public advisory: held; it goes to {} when the embargo lifts.\n", releases.join(", "))
    });
    let report = relay
        .spool
        .delivery_report(&d.message_id, Kind::Copy)
        .map_err(BuildError::Spool)?;
    text.push_str(&expiring_text(
        &relay.directory().roster,
        &expiring_before(relay, &report, a.terms.until),
    ));
    text.push_str(&acks_text(
        &relay.directory().roster,
        &report,
        &acknowledged(relay, &d.message_id)?,
    ));
    notice(
        relay,
        a,
        d,
        &To::pgp(relay, &pst)?,
        &format!("Reminder: {}", a.subject),
        &text,
        outbound::REMINDER_SUBJECT,
    )
}

/// A member's reminder to acknowledge the embargo, with nothing of the
/// announcement in it (no Subject, no text): which embargo, when it lifts,
/// how to acknowledge. Not needed once the member has.
pub(super) fn ack_reminder_message(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Result<Wire, BuildError> {
    let acked = relay
        .spool
        .acks(&d.message_id)
        .map_err(BuildError::Spool)?
        .iter()
        .any(|(m, _)| m.eq_ignore_ascii_case(&d.to));
    if acked {
        return Err(BuildError::NotNeeded(
            "the member acknowledged the embargo; no reminder needed".to_owned(),
        ));
    }
    if d.embargo_cancelled || a.terms.until <= relay.clock.now() {
        return Err(BuildError::NotNeeded(
            "the embargo is over; no reminder to acknowledge it".to_owned(),
        ));
    }
    let has_copy = relay
        .spool
        .delivery_report(&d.message_id, Kind::Copy)
        .map_err(BuildError::Spool)?
        .iter()
        .any(|(m, state, _)| m.eq_ignore_ascii_case(&d.to) && state == "sent");
    if !has_copy {
        return Err(BuildError::NotNeeded(
            "the member has no copy to acknowledge".to_owned(),
        ));
    }
    let (_, to) = member_key(relay, &d.to)?;
    let text = format!(
        "You have not yet acknowledged embargo {id} of the list {list}, which lifts at {} UTC.\n\n\
Please reply to the copy you received, signed and encrypted, with this as the first line of your text:\n\n\
Acknowledge: {id}\n",
        a.terms.until.format("%Y-%m-%d %H:%M"),
        id = d.message_id,
        list = relay.config().list_address,
    );
    notice(
        relay,
        a,
        d,
        &to,
        &format!("Please acknowledge embargo {}", d.message_id),
        &text,
        outbound::ACK_REMINDER_SUBJECT,
    )
}

/// A roster member's address and the certificate to encrypt to, or why
/// there is none (then the member is skipped, never sent plaintext).
pub(super) fn member_key(relay: &Pinned, address: &str) -> Result<(String, To), BuildError> {
    let directory = relay.directory();
    let member = directory
        .roster
        .find(address)
        .ok_or_else(|| BuildError::Recipient("no longer on the roster".to_owned()))?;
    if let Some(smime) = &member.smime {
        let cert = smime
            .as_ref()
            .map_err(|e| BuildError::Recipient(e.clone()))?;
        let now = relay.clock.now();
        if let Some((problem, _)) = cert
            .problems(&member.email, now, 0)
            .into_iter()
            .find(|(_, unusable)| *unusable)
        {
            return Err(BuildError::Recipient(format!(
                "S/MIME certificate: {problem}"
            )));
        }
        return Ok((member.email.clone(), To::Smime(cert.clone())));
    }
    let cert = member
        .kept()
        .map_err(|e| BuildError::Recipient(e.to_owned()))?;
    Ok((member.email.clone(), To::Pgp(cert.clone())))
}

/// The notice a member on the roster gets when a message of the list was
/// not sent to it for a key problem (`reason`): when, why, and what to do;
/// nothing of the message itself. Sealed for the spool; `None` when the
/// address is no member (any more) or sealing fails (logged).
pub(super) fn skipped_notice(relay: &Pinned, d: &DueDelivery, reason: &str) -> Option<Vec<u8>> {
    relay.directory().roster.find(&d.to)?;
    let config = relay.config();
    let now = relay.clock.now();
    let text = format!(
        "The list {} did not send you a message on {} UTC: your certificate on the list cannot be used ({reason}).\n\n\
Nothing was sent to you, not even in plaintext, and nothing of that message is in this notice.\n\
Send your updated certificate to the list's Product Security Team; once the roster has it, ask them for what you missed.\n",
        config.list_address,
        now.format("%Y-%m-%d %H:%M"),
    );
    let notice = Record::unembargoed(
        config.list_key.fingerprint().to_hex(),
        config.list_address.clone(),
        "A message of the list was not sent to you".to_owned(),
        crate::secret::Secret::new(text.into_bytes()),
        now,
    );
    notice
        .seal(&config.list_key)
        .map_err(|e| tracing::error!(error = %e, "sealing a skipped member's notice failed"))
        .ok()
}

/// A delivery's Message-ID: its own random copy id, the same on every
/// retry of it (so a resend after a crash is recognisably the same mail),
/// and nothing that links it to the announcement or to other copies.
pub(super) fn copy_message_id(relay: &Pinned, d: &DueDelivery) -> String {
    format!("{}@{}", d.copy_id, relay.config().hostname)
}

/// A member's notice that the embargo has lifted.
pub(super) fn lifted_message(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Result<Wire, BuildError> {
    let (_, to) = member_key(relay, &d.to)?;
    let releases = relay
        .spool
        .release_targets(&d.message_id)
        .map_err(BuildError::Spool)?;
    if d.embargo_cancelled {
        let text = format!(
            "The embargo on announcement {} was cancelled. The held public advisory was discarded; \
the list will publish nothing.\n\nSubject: {}\n\nKeep the announcement confidential until the PST says otherwise.\n",
            d.message_id, a.subject
        );
        let subject = format!("Embargo cancelled: {}", a.subject);
        return notice(relay, a, d, &to, &subject, &text, outbound::LIFTED_SUBJECT);
    }
    let mut text = format!(
        "The embargo on announcement {} lifted at {} UTC.\n\nSubject: {}\n\n",
        d.message_id,
        a.terms.until.format("%Y-%m-%d %H:%M:%S"),
        a.subject
    );
    text.push_str(&if releases.is_empty() {
        "The list published no advisory; the PST coordinates publication.\n".to_owned()
    } else {
        format!(
            "The public advisory has been sent to {}.\n",
            releases.join(", ")
        )
    });
    notice(
        relay,
        a,
        d,
        &to,
        &format!("Embargo lifted: {}", a.subject),
        &text,
        outbound::LIFTED_SUBJECT,
    )
}

/// A short text from the list to one recipient: protected Subject inside,
/// signed by the list key, encrypted to `cert` alone.
pub(super) fn notice(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
    to: &To,
    subject: &str,
    text: &str,
    outer_subject: &str,
) -> Result<Wire, BuildError> {
    let part = crate::entity::text_plain(text);
    let message_id = copy_message_id(relay, d);
    let headers = CopyHeaders {
        list: &relay.config().list_address,
        member: &d.to,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    // A refusal or a key notice is about no embargo: no embargo notice.
    let notice = (!matches!(d.kind, Kind::Refusal | Kind::Notice)).then_some(outbound::Notice {
        until: a.terms.until,
        announcement: None,
    });
    let inner = outbound::protected_inner(&headers, subject, notice, None, &part)
        .map_err(|e| BuildError::Seal(format!("bad address: {e}")))?;
    let cert = match to {
        To::Smime(cert) => {
            return smime_outer(relay, &headers, outer_subject, cert, inner.expose());
        }
        To::Pgp(cert) => cert,
    };
    let p = crate::crypto::policy();
    let keys = cert
        .encryption_keys(headers.date)
        .map_err(SealError::Recipient)?;
    let armored = relay
        .config()
        .list_key
        .seal_for(&p, headers.date, &keys, inner.expose())?;
    outbound::encrypted_outer(
        &headers,
        outer_subject,
        crate::crypto::ArmoredCopy::whole(armored),
    )
    .map_err(|e| BuildError::Seal(e.to_string()))
}

/// What a member's mail is encrypted to.
pub(super) enum To {
    Pgp(crate::crypto::KeptCert),
    Smime(crate::crypto::smime::SmimeCert),
}

impl To {
    /// A PST member's certificate as a recipient: the roster's own kept
    /// form (with the encryption keys it keeps derived), else kept now.
    fn pgp(relay: &Pinned, cert: &sequoia_openpgp::Cert) -> Result<To, BuildError> {
        let fingerprint = cert.fingerprint();
        let directory = relay.directory();
        let kept = directory
            .roster
            .members()
            .iter()
            .filter(|m| m.pst)
            .filter_map(|m| m.kept().ok())
            .find(|k| k.fingerprint() == &fingerprint);
        match kept {
            Some(kept) => Ok(To::Pgp(kept.clone())),
            None => crate::crypto::KeptCert::new(cert)
                .map(To::Pgp)
                .map_err(|e| BuildError::Seal(format!("PST certificate: {e}"))),
        }
    }
}

/// An S/MIME member's message: `inner` wrapped, signed by the list's S/MIME
/// certificate, enveloped to `cert` alone, under the neutral outer headers.
fn smime_outer(
    relay: &Pinned,
    headers: &CopyHeaders<'_>,
    outer_subject: &str,
    cert: &crate::crypto::smime::SmimeCert,
    inner: &[u8],
) -> Result<Wire, BuildError> {
    let config = relay.config();
    // Not the member's fault: retried until the operator sets it again.
    let list = config.smime.as_ref().ok_or_else(|| {
        BuildError::Seal("the list has no S/MIME certificate (list.smime_cert) any more".to_owned())
    })?;
    let der = crate::crypto::smime::seal_copy(list, cert, inner).map_err(BuildError::Seal)?;
    outbound::smime_outer(headers, outer_subject, &der)
        .map(Wire::from)
        .map_err(|e| BuildError::Seal(e.to_string()))
}

/// What a receipt says, read by the caller (spool, roster, config): its
/// text is a pure function of these.
pub(super) struct Receipt<'a> {
    pub(super) list_address: &'a str,
    pub(super) roster: &'a crate::roster::Roster,
    pub(super) record: &'a Record,
    pub(super) message_id: &'a str,
    /// held, lifted or cancelled.
    pub(super) state: &'a str,
    /// Each member's (address, delivery state, last error).
    pub(super) report: &'a [(String, String, Option<String>)],
    /// The public lists the advisory goes to.
    pub(super) releases: &'a [String],
    /// The public lists it went to, with the detail of each.
    pub(super) released: &'a [(String, String)],
    /// Members whose key expires before the embargo lifts, and when.
    pub(super) expiring: &'a [(String, DateTime<Utc>)],
    /// Members who acknowledged the embargo.
    pub(super) acks: &'a [String],
    /// What the list warns of about the lift time (`embargo::release_warnings`).
    pub(super) warnings: &'a [String],
}

impl Receipt<'_> {
    /// The receipt's text: embargo id and times, who got a copy, who did not and why.
    pub(super) fn text(&self) -> String {
        let Receipt {
            list_address,
            roster,
            record: a,
            message_id,
            state,
            report,
            releases,
            released,
            expiring,
            acks,
            warnings,
        } = *self;
        let organization = |m: &str| {
            roster
                .find(m)
                .map(|m| m.organization.clone())
                .unwrap_or_default()
        };
        let list = |state: &str| -> String {
            report
                .iter()
                .filter(|(_, s, _)| s == state)
                .map(|(m, _, why)| {
                    format!(
                        "  - {m} ({}): {}\n",
                        organization(m),
                        why.as_deref().unwrap_or("")
                    )
                })
                .collect()
        };
        let sent = report.iter().filter(|(_, s, _)| s == "sent").count();
        let local = a.terms.until.with_timezone(&a.terms.sender_offset);
        let mut text = format!(
            "Your announcement was accepted and relayed by {}.\n\nEmbargo id:     {message_id}\nSubject:        {}\n\
Embargo state:  {state}\nEmbargo lifts:  {} UTC ({} in the offset you wrote)\nCopies sent:    {sent} of {} members\n",
            list_address,
            a.subject,
            a.terms.until.format("%Y-%m-%d %H:%M:%S"),
            local.format("%Y-%m-%d %H:%M:%S %:z"),
            report.len(),
        );
        if !warnings.is_empty() {
            text.push_str("\nWarnings about the lift time (not refusals; extend the embargo with a signed `Embargo-Extend:` command if you want to move it):\n");
            for w in warnings {
                text.push_str(&format!("  - {w}\n"));
            }
        }
        if !a.terms.recipients.is_empty() {
            let resolved: String = report
                .iter()
                .map(|(m, _, _)| format!("  - {m} ({})\n", organization(m)))
                .collect();
            text.push_str(&format!(
                "Scope:          Recipients: {}; no other member was sent it. The names gave these {} members, the PST among them:\n{resolved}",
                a.terms.recipients.join(", "),
                report.len(),
            ));
        }
        for (row_state, title) in [
            (
                "skipped",
                "Skipped (no usable key; nothing was sent to them, not even in plaintext)",
            ),
            ("pending", "Still being retried"),
            (
                "failed",
                "NOT DELIVERED (refused permanently, or given up after retries; the remote server's answer follows)",
            ),
            (
                "bounced",
                "BOUNCED (the member's server refused it after our smarthost accepted it; its answer follows)",
            ),
        ] {
            let rows = list(row_state);
            if !rows.is_empty() {
                text.push_str(&format!("\n{title}:\n{rows}"));
            }
        }
        text.push_str(&expiring_text(roster, expiring));
        text.push_str(&acks_text(roster, report, acks));
        text.push_str(&if releases.is_empty() {
            "\nPublic advisory: none held. Nothing will be published by the list.\n".to_owned()
        } else if !released.is_empty() {
            let lines: String = released
                .iter()
                .map(|(to, detail)| format!("  - {to}: {detail}\n"))
                .collect();
            format!("\nPublic advisory:\n{lines}")
        } else {
            format!(
                "\nPublic advisory: held; it goes to {} when the embargo lifts.\n",
                releases.join(", ")
            )
        });
        text
    }
}

/// A notice from the list to a roster member: encrypted to its key when
/// that key is usable, else signed only (it says nothing confidential:
/// which key has which problem).
pub(super) fn notice_message(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Result<Wire, BuildError> {
    let text = String::from_utf8_lossy(a.entity.expose()).into_owned();
    let pst = relay.directory().roster.find(&d.to).is_some_and(|m| m.pst);
    let usable = match member_key(relay, &d.to) {
        Ok((_, To::Pgp(cert))) if cert.encryption_keys(relay.clock.now()).is_ok() => {
            Some(To::Pgp(cert))
        }
        Ok((_, To::Smime(cert))) => Some(To::Smime(cert)),
        _ => None,
    };
    if let Some(to) = usable {
        return notice(
            relay,
            a,
            d,
            &to,
            &a.subject,
            &text,
            outbound::NOTICE_SUBJECT,
        );
    }
    if pst {
        // A PST member's report names other members and their keys: only encrypted.
        return Err(BuildError::Recipient(
            "the PST member's key cannot receive encrypted mail; the key report is not sent in the clear".to_owned(),
        ));
    }
    signed_in_clear(relay, d, &a.subject, &text)
}

/// The public advisory for one public list, signed by the list key.
pub(super) fn release_message(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
) -> Result<Wire, BuildError> {
    let advisory = embargo::public_advisory(a.entity.expose())
        .ok_or_else(|| BuildError::Seal("the held public advisory is missing".to_owned()))?;
    signed_in_clear(relay, d, &a.subject, &advisory)
}

/// A plaintext text/plain message, RFC 3156 `multipart/signed` by the list key.
pub(super) fn signed_in_clear(
    relay: &Pinned,
    d: &DueDelivery,
    subject: &str,
    text: &str,
) -> Result<Wire, BuildError> {
    let config = relay.config();
    let message_id = copy_message_id(relay, d);
    let headers = CopyHeaders {
        list: &config.list_address,
        member: &d.to,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    let p = crate::crypto::policy();
    let sign = |part: &[u8]| config.list_key.sign_detached(&p, headers.date, part);
    outbound::public_release(&headers, subject, text, sign)
        .map(Wire::from)
        .map_err(|e| BuildError::Seal(e.to_string()))
}

/// One member's copy: the entity in protected headers (with the embargo
/// notice for an announcement), signed and encrypted to that member alone,
/// wrapped in RFC 3156.
pub(super) fn seal_copy(
    relay: &Pinned,
    a: &Record,
    d: &DueDelivery,
    until: Option<DateTime<Utc>>,
    outer_subject: &str,
) -> Result<Wire, BuildError> {
    let (email, to) = member_key(relay, &d.to)?;
    let message_id = copy_message_id(relay, d);
    let config = relay.config();
    // A member copy asks for an acknowledgement; a lifted notice does not.
    let ack = (d.kind == Kind::Copy).then_some(d.message_id.as_str());
    // The copy opens with the lift time, the PST's terms and the
    // attachments' digests.
    let notice = until.map(|until| outbound::Notice {
        until,
        announcement: Some(a),
    });
    let headers = CopyHeaders {
        list: &config.list_address,
        member: &email,
        message_id: &message_id,
        date: relay.clock.now(),
    };
    let cert = match to {
        To::Pgp(cert) => cert,
        To::Smime(cert) => {
            let inner =
                outbound::protected_inner(&headers, &a.subject, notice, ack, a.entity.expose())
                    .map_err(|e| BuildError::Seal(format!("bad address: {e}")))?;
            return smime_outer(relay, &headers, outer_subject, &cert, inner.expose());
        }
    };
    let p = crate::crypto::policy();
    // Derived once and kept until the certificate could change state.
    let keys = cert
        .encryption_keys(headers.date)
        .map_err(SealError::Recipient)?;
    if keys.version >= 6 {
        // A v6 key takes a v6 PKESK and SEIPDv2: sealed for it alone.
        let inner = outbound::protected_inner(&headers, &a.subject, notice, ack, a.entity.expose())
            .map_err(|e| BuildError::Seal(format!("bad address: {e}")))?;
        let armored = config
            .list_key
            .seal_for(&p, headers.date, &keys, inner.expose())?;
        return outbound::encrypted_outer(
            &headers,
            outer_subject,
            crate::crypto::ArmoredCopy::whole(armored),
        )
        .map_err(|e| BuildError::Seal(e.to_string()));
    }
    // The first copy's task seals the announcement once; the others wait
    // for it and add only their own PKESK.
    let shared = relay
        .seals
        .cell(&d.message_id, until)
        .get_or_try_init(|| {
            let inner_id = format!("{}@{}", d.message_id, config.hostname);
            let inner_headers = CopyHeaders {
                list: &config.list_address,
                // The same plaintext for every member: To is the list.
                member: &config.list_address,
                message_id: &inner_id,
                date: headers.date,
            };
            let inner = outbound::protected_inner(
                &inner_headers,
                &a.subject,
                notice,
                ack,
                a.entity.expose(),
            )
            .map_err(|e| format!("bad address: {e}"))?;
            config
                .list_key
                .seal_shared(&p, headers.date, inner.expose())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .map_err(SealError::Crypto)?;
    let armored = config.list_key.seal_to_member(&keys, &shared)?;
    outbound::encrypted_outer(&headers, outer_subject, armored)
        .map_err(|e| BuildError::Seal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receipt's text, from data alone: who has the copy, who was
    /// skipped or failed and why, and where the advisory goes.
    #[test]
    fn a_receipt_says_who_has_the_copy_and_who_does_not() {
        let until = chrono::DateTime::parse_from_rfc3339("2026-12-10T16:00:00-05:00").unwrap();
        let record = Record::announcement(
            "ABCD".into(),
            "pst@project.example".into(),
            "CVE-2026-1: thing".into(),
            crate::embargo::Terms {
                until: until.with_timezone(&chrono::Utc),
                sender_offset: *until.offset(),
                public_to: Vec::new(),
                override_reason: None,
                recipients: Vec::new(),
                deployment: None,
                tlp: None,
                github: Vec::new(),
            },
            vec!["oss@lists.example".into()],
            crate::secret::Secret::new(Vec::new()),
        );
        let report = [
            ("a@distro.example".to_owned(), "sent".to_owned(), None),
            (
                "b@distro.example".to_owned(),
                "skipped".to_owned(),
                Some("certificate expired".to_owned()),
            ),
            (
                "c@distro.example".to_owned(),
                "failed".to_owned(),
                Some("550 no such user".to_owned()),
            ),
        ];
        let text = Receipt {
            list_address: "list@project.example",
            roster: &crate::roster::Roster::default(),
            record: &record,
            message_id: "0123456789abcdef",
            state: "held",
            report: &report,
            releases: &["oss@lists.example".to_owned()],
            released: &[],
            expiring: &[(
                "a@distro.example".to_owned(),
                chrono::DateTime::parse_from_rfc3339("2026-12-09T08:00:00Z")
                    .unwrap()
                    .with_timezone(&chrono::Utc),
            )],
            acks: &[],
            warnings: &["the embargo lifts on a Friday".to_owned()],
        }
        .text();
        for expected in [
            "Warnings about the lift time (not refusals",
            "  - the embargo lifts on a Friday\n",
            "Keys that expire before the embargo lifts",
            "a@distro.example (): expires 2026-12-09 08:00 UTC",
            "Embargo id:     0123456789abcdef",
            "Embargo lifts:  2026-12-10 21:00:00 UTC (2026-12-10 16:00:00 -05:00",
            "Copies sent:    1 of 3 members",
            "b@distro.example (): certificate expired",
            "NOT DELIVERED",
            "c@distro.example (): 550 no such user",
            "held; it goes to oss@lists.example when the embargo lifts",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }
}
