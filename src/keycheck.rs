//! Key health: what makes a certificate unusable for its role on the list,
//! or weak, or about to expire. Shared by `embargo-relay check`, `status`
//! and the daemon's weekly key check.

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;
use sequoia_openpgp::types::{HashAlgorithm, PublicKeyAlgorithm, RevocationStatus};

/// A key that expires this soon is reported.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 30;

/// What the certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertRole {
    /// A member: copies are encrypted to it.
    Member,
    /// A PST member: a member whose signatures make announcements.
    Pst,
}

/// One problem with a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyIssue {
    pub problem: String,
    pub fix: String,
    /// The certificate cannot be used at all now (as opposed to weak or expiring).
    pub unusable: bool,
}

fn issue(problem: String, fix: &str, unusable: bool) -> KeyIssue {
    KeyIssue {
        problem,
        fix: fix.to_owned(),
        unusable,
    }
}

const NEW_KEY: &str =
    "ask for a new certificate (Ed25519/Cv25519 or RSA 3072+) and replace the key file";
const UPDATED: &str = "ask the key holder to extend the key and send the updated certificate, then replace the key file";

/// Until when member `m` can receive copies, S/MIME or OpenPGP: `None`
/// when its key never expires; `now` when it cannot receive now (no
/// usable key, an unreadable certificate), so a key that just expired
/// counts as the soonest, not as none.
pub(crate) fn member_receives_until(
    m: &crate::roster::Member,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match &m.smime {
        Some(Ok(c)) => c.not_after().map(|t| t.max(now)),
        Some(Err(_)) => Some(now),
        // The keys the fan-out keeps derived, under the list's policy.
        None => match m.kept().map(|c| c.encryption_keys(now)) {
            Ok(Ok(keys)) => keys.until,
            _ => Some(now),
        },
    }
}

/// Every problem with `cert` for `role` at `now` under `policy` (the
/// list's policy, `crypto::policy`). Empty: the certificate is fine.
pub(crate) fn cert_issues(
    cert: &Cert,
    role: CertRole,
    policy: &dyn Policy,
    now: DateTime<Utc>,
) -> Vec<KeyIssue> {
    cert_issues_and_warning(cert, role, policy, now).0
}

/// [`cert_issues`], and from when an expiry will come within the warning
/// period (if one will): until then, and until the certificate itself
/// changes state, a certificate found fine stays fine.
fn cert_issues_and_warning(
    cert: &Cert,
    role: CertRole,
    policy: &dyn Policy,
    now: DateTime<Utc>,
) -> (Vec<KeyIssue>, Option<DateTime<Utc>>) {
    let mut warn_from: Option<DateTime<Utc>> = None;
    let mut out = weak_parts(cert);
    let at = std::time::SystemTime::from(now);
    if let RevocationStatus::Revoked(_) = cert.revocation_status(policy, at) {
        out.push(issue("the certificate is revoked".into(), NEW_KEY, true));
        return (out, warn_from);
    }
    let vc = match cert.with_policy(policy, at) {
        Ok(vc) => vc,
        Err(e) => {
            out.push(issue(
                format!(
                    "the certificate is rejected by the list's policy ({e}); the policy refuses, among others, RSA under 2048 bits, DSA, ElGamal, MD5 and SHA-1"
                ),
                NEW_KEY,
                true,
            ));
            return (out, warn_from);
        }
    };
    if vc.alive().is_err() {
        let when = vc
            .primary_key()
            .key_expiration_time()
            .map(|t| format!(" on {}", DateTime::<Utc>::from(t).format("%Y-%m-%d")))
            .unwrap_or_default();
        out.push(issue(
            format!("the certificate expired{when}"),
            UPDATED,
            true,
        ));
        return (out, warn_from);
    }
    let mut needs = vec![(
        "no usable encryption subkey (copies cannot be encrypted to it)",
        sequoia_openpgp::types::KeyFlags::empty()
            .set_transport_encryption()
            .set_storage_encryption(),
    )];
    if role == CertRole::Pst {
        needs.push((
            "no usable signing key (its announcements cannot be verified)",
            sequoia_openpgp::types::KeyFlags::empty().set_signing(),
        ));
    }
    let soon = now + chrono::Duration::days(EXPIRY_WARNING_DAYS);
    for (missing, flags) in needs {
        let keys: Vec<_> = vc
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .key_flags(flags)
            .collect();
        if keys.is_empty() {
            out.push(issue(missing.to_owned(), NEW_KEY, true));
            continue;
        }
        let ends = crate::crypto::capability_ends(&vc, &keys);
        if let Some(t) = ends {
            let from = t - chrono::Duration::days(EXPIRY_WARNING_DAYS);
            warn_from = Some(warn_from.map_or(from, |w| w.min(from)));
        }
        if let Some(t) = ends.filter(|t| *t <= soon) {
            out.push(issue(
                format!(
                    "expires on {} (in {} days)",
                    t.format("%Y-%m-%d"),
                    (t - now).num_days()
                ),
                UPDATED,
                false,
            ));
        }
    }
    out.dedup();
    (out, warn_from)
}

/// Every problem with a member's key for its role: its OpenPGP
/// certificate's ([`cert_issues`]), its S/MIME certificate's, or why it
/// has none that can be read.
pub(crate) fn member_issues(m: &crate::roster::Member, now: DateTime<Utc>) -> Vec<KeyIssue> {
    let policy = crate::crypto::policy();
    if let Some(smime) = &m.smime {
        return match smime {
            Err(e) => vec![issue(
                e.clone(),
                "put the member's X.509 certificate (PEM or DER) there, or remove the member",
                true,
            )],
            Ok(cert) => cert
                .problems(&m.email, now, EXPIRY_WARNING_DAYS)
                .into_iter()
                .map(|(problem, unusable)| {
                    issue(
                        format!("S/MIME certificate {}: {problem}", short(&cert.fingerprint())),
                        "a new S/MIME certificate is needed (RSA 2048+, keyEncipherment, emailProtection, the address in subjectAltName), sent to the list's operator",
                        unusable,
                    )
                })
                .collect(),
        };
    }
    let unreadable = |e: String| {
        vec![issue(
            e,
            "put the member's armored certificate there, or remove the member",
            true,
        )]
    };
    let kept = match m.kept() {
        Err(e) => return unreadable(e.to_owned()),
        Ok(kept) => kept,
    };
    let role = if m.pst {
        CertRole::Pst
    } else {
        CertRole::Member
    };
    // Found fine before, and nothing has changed since: not parsed again
    // (the status API asks this of every member per request).
    if !kept.fine_at(now, m.pst) {
        let cert = match m.cert() {
            Err(e) => return unreadable(e),
            Ok(cert) => cert,
        };
        let (issues, warn_from) = cert_issues_and_warning(&cert, role, &policy, now);
        if !issues.is_empty() {
            let mut out = issues;
            out.extend(smime_signing_issues(m, now));
            return out;
        }
        kept.found_fine(&cert, now, warn_from, m.pst);
    }
    smime_signing_issues(m, now)
}

/// Problems with a PST member's pinned S/MIME certificate (`smime_cert`
/// beside its OpenPGP key), if it has one: unreadable, expired, unable to
/// sign. Its S/MIME-signed mail is refused until they are fixed.
pub(crate) fn smime_signing_issues(m: &crate::roster::Member, now: DateTime<Utc>) -> Vec<KeyIssue> {
    match &m.smime_signing {
        None => Vec::new(),
        Some(Err(e)) => vec![issue(
            format!("pinned S/MIME certificate: {e}"),
            "put the PST member's X.509 certificate there, or remove smime_cert",
            true,
        )],
        Some(Ok(c)) => {
            crate::crypto::smime::pst_signing_problems(c, &m.email, now, EXPIRY_WARNING_DAYS)
                .into_iter()
                .map(|(problem, unusable)| {
                    issue(
                        format!(
                            "pinned S/MIME certificate {}: {problem}",
                            short(&c.fingerprint())
                        ),
                        "renew the PST member's S/MIME certificate and replace its smime_cert file",
                        unusable,
                    )
                })
                .collect()
        }
    }
}

/// Problems with the list's own S/MIME certificate (none without one).
pub(crate) fn list_smime_issues(
    config: &crate::config::Config,
    now: DateTime<Utc>,
) -> Vec<KeyIssue> {
    config
        .smime
        .as_ref()
        .map(|id| {
            id.problems(&config.list_address, now, EXPIRY_WARNING_DAYS)
                .into_iter()
                .map(|(problem, unusable)| {
                    issue(
                        format!("the list's S/MIME certificate: {problem}"),
                        "renew the list's S/MIME certificate (digitalSignature, emailProtection, the list address in subjectAltName) and replace list.smime_cert and list.smime_key",
                        unusable,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first 16 hex digits of a fingerprint, for a report.
fn short(fpr: &str) -> &str {
    &fpr[..fpr.len().min(16)]
}

/// Weak algorithms anywhere in the certificate, whatever a policy says:
/// RSA under 2048 bits, DSA or ElGamal keys, SHA-1 or MD5 self-signatures.
fn weak_parts(cert: &Cert) -> Vec<KeyIssue> {
    let mut out = Vec::new();
    for ka in cert.keys() {
        let key = ka.key();
        let id = key.keyid();
        match key.pk_algo() {
            #[allow(deprecated)]
            PublicKeyAlgorithm::RSAEncryptSign
            | PublicKeyAlgorithm::RSAEncrypt
            | PublicKeyAlgorithm::RSASign => {
                if let Some(bits) = key.mpis().bits().filter(|b| *b < 2048) {
                    out.push(issue(
                        format!("RSA key {id} has {bits} bits (under 2048)"),
                        NEW_KEY,
                        false,
                    ));
                }
            }
            #[allow(deprecated)]
            PublicKeyAlgorithm::DSA
            | PublicKeyAlgorithm::ElGamalEncrypt
            | PublicKeyAlgorithm::ElGamalEncryptSign => out.push(issue(
                format!("key {id} uses {} (refused by policy)", key.pk_algo()),
                NEW_KEY,
                false,
            )),
            _ => {}
        }
    }
    let weak = |h: HashAlgorithm| matches!(h, HashAlgorithm::SHA1 | HashAlgorithm::MD5);
    let newest_weak = |sigs: &mut dyn Iterator<Item = &sequoia_openpgp::packet::Signature>| {
        sigs.max_by_key(|s| s.signature_creation_time())
            .map(|s| s.hash_algo())
            .filter(|h| weak(*h))
    };
    for ua in cert.userids() {
        if let Some(h) = newest_weak(&mut ua.self_signatures()) {
            out.push(issue(
                format!(
                    "the self-signature on user ID \"{}\" uses {h}",
                    String::from_utf8_lossy(ua.userid().value())
                ),
                "ask the key holder to re-sign the certificate with SHA-256 or better (e.g. extend its expiry) and send it again",
                false,
            ));
        }
    }
    for ka in cert.keys().subkeys() {
        if let Some(h) = newest_weak(&mut ka.self_signatures()) {
            out.push(issue(
                format!("the binding signature of subkey {} uses {h}", ka.key().keyid()),
                "ask the key holder to re-bind the subkey with SHA-256 or better and send the certificate again",
                false,
            ));
        }
    }
    out
}

/// How often the daemon checks the roster's keys.
pub(crate) const CHECK_EVERY_DAYS: i64 = 7;

/// The audit event of a key check (its time schedules the next).
const EVENT: &str = "key-check";

/// The weekly key check inside the daemon (after the key refresh, when
/// `[discovery]` asks for one): five minutes after start and then once a week (counted from the last check in the audit trail, so
/// restarts do not repeat it), the PST gets the members whose keys expire
/// within 30 days or cannot be used, and each such member a signed notice
/// (encrypted when its key allows).
pub(crate) async fn weekly(
    relay: std::sync::Arc<crate::context::Relay>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut next = relay.clock.now() + chrono::Duration::minutes(5);
    loop {
        let r = relay.clone();
        let last = tokio::task::spawn_blocking(move || r.spool.last_event(EVENT)).await;
        if let Ok(Ok(Some(last))) = last {
            next = next.max(last + chrono::Duration::days(CHECK_EVERY_DAYS));
        }
        relay.key_check.set(Some(next));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = relay.clock.sleep_until(next) => {}
        }
        relay.key_check.set(None);
        // Keys fetched again first, so the check sees what was merged.
        if crate::keyrefresh::run_if_due(&relay, &shutdown).await {
            relay.wake.notify_one();
        }
        let r = relay.clone();
        match tokio::task::spawn_blocking(move || run_if_due(&r)).await {
            Ok(Ok(queued)) => {
                if queued {
                    relay.wake.notify_one();
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the weekly key check failed; trying again in an hour")
            }
            Err(_) => tracing::error!("the weekly key check panicked; trying again in an hour"),
        }
        next = relay.clock.now() + chrono::Duration::hours(1);
    }
}

/// Runs the key check if a week has passed since the last; true if it queued notices.
pub(crate) fn run_if_due(relay: &crate::context::Relay) -> anyhow::Result<bool> {
    let now = relay.clock.now();
    if relay
        .spool
        .last_event(EVENT)?
        .is_some_and(|last| now - last < chrono::Duration::days(CHECK_EVERY_DAYS))
    {
        return Ok(false);
    }
    // One configuration and roster for the whole check.
    let crate::context::Snapshot { config, directory } = relay.snapshot();
    let mut affected: Vec<(&crate::roster::Member, Vec<String>)> = Vec::new();
    for m in directory.roster.members() {
        let problems: Vec<String> = member_issues(m, now)
            .into_iter()
            .map(|i| format!("{} ({})", i.problem, i.fix))
            .collect();
        if !problems.is_empty() {
            affected.push((m, problems));
        }
    }
    let seal = |to: &str, subject: &str, text: String| -> anyhow::Result<(String, Vec<u8>)> {
        let notice = crate::record::Record::unembargoed(
            config.list_key.fingerprint().to_hex(),
            config.list_address.clone(),
            subject.to_owned(),
            crate::secret::Secret::new(text.into_bytes()),
            now,
        );
        Ok((to.to_owned(), notice.seal(&config.list_key)?))
    };
    let mut notices = Vec::new();
    let list_smime = list_smime_issues(&config, now);
    if !affected.is_empty() || !list_smime.is_empty() {
        let mut report = format!(
            "Weekly key check of {}: {} member(s) have keys that expire within {EXPIRY_WARNING_DAYS} days or cannot be used.\n\
Members whose key cannot be used receive no announcements until it is fixed.\n\n",
            config.list_address,
            affected.len()
        );
        for i in &list_smime {
            report.push_str(&format!("{} ({})\n", i.problem, i.fix));
        }
        for (m, problems) in &affected {
            report.push_str(&format!("{} ({}):\n", m.email, m.organization));
            for problem in problems {
                report.push_str(&format!("  - {problem}\n"));
            }
        }
        for pst in directory.roster.members().iter().filter(|m| m.pst) {
            notices.push(seal(
                &pst.email,
                "Weekly key check: members' keys need attention",
                report.clone(),
            )?);
        }
        for (m, problems) in &affected {
            let text = format!(
                "Your certificate on the list {} needs attention:\n\n{}\n\
If it cannot be used, you receive no embargoed announcements until it is fixed.\n\
Send your updated certificate to the Product Security Team.\n",
                config.list_address,
                problems
                    .iter()
                    .map(|p| format!("  - {p}\n"))
                    .collect::<String>()
            );
            notices.push(seal(
                &m.email,
                "Your key on the list needs attention",
                text,
            )?);
        }
    }
    let detail = format!(
        "{} member(s) with key problems: {}",
        affected.len(),
        affected
            .iter()
            .map(|(m, _)| m.email.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    relay.spool.queue_notices(&notices, EVENT, &detail, now)?;
    tracing::info!(
        members = affected.len(),
        notices = notices.len(),
        "weekly key check done"
    );
    Ok(!notices.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::CertBuilder;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .into()
    }

    fn born() -> std::time::SystemTime {
        (now() - chrono::Duration::days(1)).into()
    }

    #[test]
    fn a_good_member_key_has_no_issues() {
        let (cert, _) = CertBuilder::general_purpose(Some("m <m@x.example>"))
            .set_creation_time(born())
            .generate()
            .unwrap();
        let p = crate::crypto::policy();
        assert_eq!(cert_issues(&cert, CertRole::Pst, &p, now()), vec![]);
    }

    #[test]
    fn revoked_signing_only_and_expiring_keys_are_named() {
        let p = crate::crypto::policy();
        let (cert, rev) = CertBuilder::general_purpose(Some("m <m@x.example>"))
            .set_creation_time(born())
            .generate()
            .unwrap();
        let revoked = cert.insert_packets(rev).unwrap().0;
        let issues = cert_issues(&revoked, CertRole::Member, &p, now());
        assert!(issues[0].problem.contains("revoked") && issues[0].unusable);

        let (signer, _) = CertBuilder::new()
            .add_userid("s <s@x.example>")
            .add_signing_subkey()
            .set_creation_time(born())
            .generate()
            .unwrap();
        let issues = cert_issues(&signer, CertRole::Member, &p, now());
        assert!(
            issues[0].problem.contains("no usable encryption subkey"),
            "{issues:?}"
        );

        let (enc_only, _) = CertBuilder::new()
            .add_userid("e <e@x.example>")
            .add_transport_encryption_subkey()
            .set_creation_time(born())
            .generate()
            .unwrap();
        let issues = cert_issues(&enc_only, CertRole::Pst, &p, now());
        assert!(
            issues[0].problem.contains("no usable signing key"),
            "{issues:?}"
        );
        assert!(cert_issues(&enc_only, CertRole::Member, &p, now()).is_empty());

        let (short, _) = CertBuilder::general_purpose(Some("t <t@x.example>"))
            .set_creation_time(born())
            .set_validity_period(std::time::Duration::from_secs(11 * 86400))
            .generate()
            .unwrap();
        let issues = cert_issues(&short, CertRole::Member, &p, now());
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0]
                .problem
                .contains("expires on 2026-12-04 (in 10 days)"),
            "{issues:?}"
        );
        assert!(!issues[0].unusable);
        let later = now() + chrono::Duration::days(12);
        let issues = cert_issues(&short, CertRole::Member, &p, later);
        assert!(
            issues[0].problem.contains("expired") && issues[0].unusable,
            "{issues:?}"
        );
    }
}

#[cfg(test)]
mod receives {
    use super::*;
    use crate::roster::Member;

    /// A member's key that expires in ten days receives until then; one
    /// that has expired, or cannot be read, counts as expiring now (not as
    /// never): the soonest expiry an alert watches.
    #[test]
    fn an_expired_or_unreadable_key_receives_until_now() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let member = |name: &str, born: DateTime<Utc>, days: Option<u64>| {
            let path = dir.path().join(format!("{name}.asc"));
            let validity = days.map(|d| std::time::Duration::from_secs(d * 86_400));
            let cert =
                crate::crypto::generate_key(&format!("M <{name}@x.org>"), born, validity).unwrap();
            std::fs::write(&path, crate::crypto::armored_public(&cert).unwrap()).unwrap();
            Member::load(format!("{name}@x.org"), "Org".into(), path, false)
        };
        let day = chrono::Duration::days(1);
        let expiring = member_receives_until(&member("soon", now - day, Some(11)), now);
        assert_eq!(expiring.map(|t| (t - now).num_days()), Some(9));
        let lasting = member_receives_until(&member("ever", now - day, None), now);
        assert_eq!(lasting, None, "never expires");
        let expired = member_receives_until(&member("gone", now - day * 30, Some(10)), now);
        assert_eq!(expired, Some(now));
        let unreadable = Member::load(
            "none@x.org".into(),
            "Org".into(),
            dir.path().join("missing.asc"),
            false,
        );
        assert_eq!(member_receives_until(&unreadable, now), Some(now));
    }

    /// A member found fine is not judged again until something could
    /// change: at every moment, forwards and back, over two months of a key
    /// that expires in forty days (and one born tomorrow, and one that
    /// never expires), PST or not, the member's issues are those judged
    /// afresh.
    #[test]
    fn a_member_found_fine_is_judged_again_when_it_could_change() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let day = chrono::Duration::days(1);
        let p = crate::crypto::policy();
        for (name, born, days, pst) in [
            ("forty", now - day, Some(41), false),
            ("forty-pst", now - day, Some(41), true),
            ("tomorrow", now + day, Some(60), false),
            ("ever", now - day, None, true),
        ] {
            let path = dir.path().join(format!("{name}.asc"));
            let validity = days.map(|d| std::time::Duration::from_secs(d * 86_400));
            let cert =
                crate::crypto::generate_key(&format!("M <{name}@x.org>"), born, validity).unwrap();
            std::fs::write(&path, crate::crypto::armored_public(&cert).unwrap()).unwrap();
            let m = Member::load(format!("{name}@x.org"), "Org".into(), path, pst);
            let role = if pst { CertRole::Pst } else { CertRole::Member };
            let mut moments: Vec<DateTime<Utc>> = (0..120)
                .map(|h| now + chrono::Duration::hours(h * 12))
                .collect();
            let back: Vec<_> = moments.iter().rev().copied().collect();
            moments.extend(back);
            let mut fine = 0;
            for t in moments {
                let fresh = cert_issues(&cert, role, &p, t);
                let got = member_issues(&m, t);
                assert_eq!(got, fresh, "{name} at {t}");
                fine += usize::from(got.is_empty());
            }
            assert!(fine > 0, "{name}");
        }
    }
}
