//! Authorization: every signature must be a PST certificate's (an
//! announcement or a command) or one member's (a post, `SignedBy::Member`),
//! and the From address one of that certificate's user IDs.

use chrono::{DateTime, Utc};
use sequoia_openpgp::policy::Policy;

use crate::crypto::{self, OpenProblem, SignatureProblem, VerifiedSigner};
use crate::secret::Secret;

use super::mime::{self, Incoming, Protected, SignedEntity, to_crlf};
use super::{Gate, Rejection};

/// Who signed, once the checks passed.
#[derive(Debug, Clone)]
pub(crate) struct Authorized {
    pub signer: String,
    /// The PST, or one other member (a post).
    pub role: SignedBy,
    /// Creation times of the oldest and newest good signature.
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
    /// Identities of the good signatures, for the replay cache.
    pub signature_digests: Vec<String>,
}

/// Whose signatures a mail carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignedBy {
    /// Every signature is a PST key's: an announcement or a command.
    Pst,
    /// Signed by one member outside the PST: a post.
    Member,
}

/// Authorizes a mail and returns the entity that was signed: the signed
/// part of a `multipart/signed` mail, or the decrypted content of one
/// encrypted to the list key (signed inside, either as an OpenPGP signed
/// message or as a `multipart/signed` entity), and whether it came
/// encrypted. Nothing but that entity is ever relayed.
pub(crate) fn authorize(
    mail: Incoming,
    gate: &Gate<'_>,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<(Authorized, Secret, bool), Rejection> {
    let known = gate.known;
    let encrypted = matches!(mail.body, Protected::Encrypted(_));
    let (verified, entity) = match mail.body {
        Protected::Signed(signed) if signed.smime => {
            return smime(signed, gate, &mail.from, now).map(|(a, e)| (a, e, false));
        }
        Protected::SmimeEnveloped(der) => {
            let list = gate.list_smime.ok_or(Rejection::Malformed(
                "S/MIME encrypted mail, but this list has no S/MIME certificate (list.smime_cert); encrypt to its OpenPGP key",
            ))?;
            let plain = Secret::new(
                list.decrypt(&der)
                    .map_err(|_| Rejection::Smime(crypto::smime::SmimeProblem::NotForList))?,
            );
            let canonical = Secret::new(to_crlf(plain.expose()));
            drop(plain);
            if canonical.expose().len() > gate.max_size {
                return Err(Rejection::Malformed(
                    "the decrypted S/MIME content is larger than the message size limit",
                ));
            }
            if crate::lines::has_bare_cr(canonical.expose()) {
                return Err(Rejection::Malformed(
                    "bare CR in the decrypted content; lines must end in CRLF",
                ));
            }
            // Signed inside as Outlook does (opaque signed-data), or as
            // Thunderbird and KMail do (multipart/signed).
            if let Some(cms) = mime::opaque_signed(canonical.expose(), &gate.policy.mime)? {
                return smime_opaque(&cms, gate, &mail.from, now).map(|(a, e)| (a, e, true));
            }
            let canonical = canonical.expose();
            let inner = mime::signed_entity(canonical, &gate.policy.mime).map_err(|e| match e {
                Rejection::Unsigned => Rejection::EncryptedUnsigned,
                other => other,
            })?;
            if !inner.smime {
                return Err(Rejection::Malformed(
                    "an OpenPGP signature inside S/MIME encryption; sign and encrypt with one of them",
                ));
            }
            return smime(inner, gate, &mail.from, now).map(|(a, e)| (a, e, true));
        }
        Protected::Signed(signed) => (detached(&signed, known, p, now)?, signed.signed_part),
        Protected::Inline(body) => {
            if !gate.policy.inline_pgp {
                return Err(Rejection::InlineRefused);
            }
            let block = mime::whole_inline_block(&body)?;
            let (signer, text) = crypto::verify_inline(p, now, known, block, gate.max_size)
                .map_err(Rejection::Signature)?;
            let mut entity = b"Content-Type: text/plain; charset=\"utf-8\"\r\n\r\n".to_vec();
            entity.extend_from_slice(&to_crlf(text.expose()));
            (signer, Secret::new(entity))
        }
        Protected::Encrypted(ciphertext) => {
            let opened =
                crypto::open_announcement(gate.list, p, now, known, &ciphertext, gate.max_size)
                    .map_err(|e| match e {
                        OpenProblem::Signature(problem) => Rejection::Signature(problem),
                        other => Rejection::Encrypted(other),
                    })?;
            match opened.signer {
                Some(signer) => {
                    // Signed inside the OpenPGP message: what it holds is
                    // parsed later (embargo fields, advisory, keys), so it
                    // is held to the same structure limits first.
                    let entity = Secret::new(to_crlf(opened.plaintext.expose()));
                    mime::check_entity(entity.expose(), &gate.policy.mime)?;
                    (signer, entity)
                }
                None => {
                    // RFC 3156: the entity was signed in canonical (CRLF) form.
                    let canonical = Secret::new(to_crlf(opened.plaintext.expose()));
                    let inner = mime::signed_entity(canonical.expose(), &gate.policy.mime)
                        .map_err(|e| match e {
                            Rejection::Unsigned => Rejection::EncryptedUnsigned,
                            other => other,
                        })?;
                    if inner.smime {
                        return Err(Rejection::Malformed(
                            "an S/MIME signature inside OpenPGP encryption; sign with OpenPGP inside, or send S/MIME signed only",
                        ));
                    }
                    (detached(&inner, known, p, now)?, inner.signed_part)
                }
            }
        }
    };
    let is_pst = |f: &sequoia_openpgp::Fingerprint| gate.pst.iter().any(|c| c.fingerprint() == *f);
    let role = if verified.signers.iter().all(is_pst) {
        SignedBy::Pst
    } else if verified.signers.len() == 1 {
        SignedBy::Member
    } else {
        // A member's signature beside the PST's, or two members': neither
        // an announcement nor one member's post.
        return Err(Rejection::Signature(SignatureProblem::Mixed));
    };
    if !crypto::has_email(&verified.cert, p, now, &mail.from) {
        return Err(Rejection::FromNotSigner {
            from: crate::quote::Quoted::new(&mail.from),
            signer: verified.cert.fingerprint().to_hex(),
        });
    }
    let auth = Authorized {
        signer: verified.cert.fingerprint().to_hex(),
        role,
        oldest: verified.oldest,
        newest: verified.newest,
        signature_digests: verified.signature_digests,
    };
    Ok((auth, entity, encrypted))
}

/// A PST mail signed with S/MIME: verified against the PST's pinned
/// certificates only; From must be one of the signing certificate's
/// addresses. Only the signed part is relayed.
fn smime(
    signed: SignedEntity,
    gate: &Gate<'_>,
    from: &str,
    now: DateTime<Utc>,
) -> Result<(Authorized, Secret), Rejection> {
    let certs = smime_certs(gate);
    let v =
        crypto::smime::verify_detached(signed.signed_part.expose(), &signed.signature, &certs, now)
            .map_err(Rejection::Smime)?;
    let auth = smime_signer(v, &certs, gate, from)?;
    mime::check_entity(signed.signed_part.expose(), &gate.policy.mime)?;
    Ok((auth, signed.signed_part))
}

/// Opaque S/MIME signed-data (the content inside the CMS): verified, and
/// its content is what was signed.
fn smime_opaque(
    cms: &[u8],
    gate: &Gate<'_>,
    from: &str,
    now: DateTime<Utc>,
) -> Result<(Authorized, Secret), Rejection> {
    let certs = smime_certs(gate);
    let (v, content) = crypto::smime::verify_attached(cms, &certs, now, gate.max_size)
        .map_err(Rejection::Smime)?;
    let content = Secret::new(content);
    let auth = smime_signer(v, &certs, gate, from)?;
    if !crate::lines::crlf_only(content.expose()) {
        return Err(Rejection::Malformed(
            "the signed content's lines must end in CRLF",
        ));
    }
    mime::check_entity(content.expose(), &gate.policy.mime)?;
    Ok((auth, content))
}

/// The certificates an S/MIME signature may be by: the PST's pins first,
/// then the S/MIME members'.
fn smime_certs(gate: &Gate<'_>) -> Vec<crypto::smime::SmimeCert> {
    gate.pst_smime
        .iter()
        .chain(gate.member_smime)
        .cloned()
        .collect()
}

/// Who signed, by role; From must be one of the certificate's addresses.
fn smime_signer(
    v: crypto::smime::SmimeVerified,
    certs: &[crypto::smime::SmimeCert],
    gate: &Gate<'_>,
    from: &str,
) -> Result<Authorized, Rejection> {
    let cert = &certs[v.signer];
    let role = if v.signer < gate.pst_smime.len() {
        SignedBy::Pst
    } else {
        SignedBy::Member
    };
    if !cert.emails().iter().any(|e| e.eq_ignore_ascii_case(from)) {
        return Err(Rejection::FromNotSigner {
            from: crate::quote::Quoted::new(from),
            signer: v.fingerprint,
        });
    }
    Ok(Authorized {
        signer: v.fingerprint,
        role,
        oldest: v.signing_time,
        newest: v.signing_time,
        signature_digests: vec![v.digest],
    })
}

fn detached(
    signed: &SignedEntity,
    pst: &crypto::Keyring,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<VerifiedSigner, Rejection> {
    crypto::verify_detached(p, now, pst, signed.signed_part.expose(), &signed.signature)
        .map_err(Rejection::Signature)
}

/// The replay window: a good PST signature older than `max_age`, or dated
/// more than the tolerated clock skew ahead of `now`, is refused (and, being
/// the PST's, the PST is told).
pub(crate) fn fresh(
    auth: &Authorized,
    now: DateTime<Utc>,
    max_age: chrono::Duration,
) -> Result<(), Rejection> {
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    if auth.newest > now + chrono::Duration::seconds(crypto::CLOCK_SKEW_S) {
        return Err(Rejection::SignatureTime(format!(
            "signature is dated {}, in the future (this server's time is {}); check the signing machine's clock",
            fmt(auth.newest),
            fmt(now)
        )));
    }
    if auth.oldest < now - max_age {
        return Err(Rejection::SignatureTime(format!(
            "signature was made {}, more than {} ago (policy.signature_max_age); sign the mail again",
            fmt(auth.oldest),
            span(max_age)
        )));
    }
    Ok(())
}

/// "72 hours", "3 seconds".
fn span(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        _ if s % 3600 == 0 => format!("{} hours", s / 3600),
        _ if s % 60 == 0 => format!("{} minutes", s / 60),
        _ => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_outside_the_window_are_refused() {
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
            .unwrap()
            .into();
        let auth = |oldest: i64, newest: i64| Authorized {
            signer: "X".into(),
            role: SignedBy::Pst,
            oldest: now + chrono::Duration::seconds(oldest),
            newest: now + chrono::Duration::seconds(newest),
            signature_digests: Vec::new(),
        };
        let window = chrono::Duration::hours(72);
        assert!(fresh(&auth(-3600, 0), now, window).is_ok());
        assert!(fresh(&auth(0, crypto::CLOCK_SKEW_S), now, window).is_ok());
        let future = fresh(&auth(0, crypto::CLOCK_SKEW_S + 1), now, window).unwrap_err();
        assert!(future.to_string().contains("in the future"), "{future}");
        let old = fresh(&auth(-72 * 3600 - 1, 0), now, window).unwrap_err();
        assert!(old.to_string().contains("more than 72 hours ago"), "{old}");
        assert!(fresh(&auth(-72 * 3600, 0), now, window).is_ok());
    }
}
