//! Verifying a PST's signature (detached, inline, inside an encrypted mail
//! to the list) and saying exactly why one is not good enough.

use super::Keyring;
use std::cell::RefCell;
use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use openpgp::cert::prelude::*;
use openpgp::crypto::{KeyPair, SessionKey};
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, DetachedVerifierBuilder, MessageLayer, MessageStructure,
    VerificationError, VerificationHelper, VerifierBuilder,
};
use openpgp::policy::Policy;
use openpgp::types::{RevocationStatus, SymmetricAlgorithm};
use openpgp::{Cert, Fingerprint, KeyHandle};
use sequoia_openpgp as openpgp;

use crate::secret::Secret;

use super::census::{
    FoundKey, Inside, PacketLimits, census, census_detached, census_encrypted, named_keys, precheck,
};
use super::problem::{CLOCK_SKEW_S, OpenProblem, SignatureProblem};
use super::{ListKey, at, sha256_hex};

/// How far ahead a signature may be dated and still be verified, so that a
/// PST signature from a clock far in the future is recognised as the PST's
/// (and the PST told) rather than reported as a bad signature.
pub(super) const LOOKAHEAD_DAYS: i64 = 366;

/// Good signatures, each by one of the offered certificates.
#[derive(Debug, Clone)]
pub struct VerifiedSigner {
    /// The first signer's certificate.
    pub cert: Cert,
    /// Fingerprints of every signing certificate, sorted, without duplicates.
    pub signers: Vec<Fingerprint>,
    /// Creation time of the oldest and of the newest good signature: the
    /// caller holds them to its freshness window.
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
    /// One identity per good signature, for the replay cache (see
    /// `signature_identity`): re-encoding or editing unauthenticated bytes
    /// does not make a replay look new. Sorted, without duplicates.
    pub signature_digests: Vec<String>,
}

/// Verifies `sig` (armored or binary detached signature) over `data`.
///
/// Policy: there must be at least one signature, and every signature must
/// verify and come from a PST certificate whose signing key is alive and not
/// revoked at `now` (matched by full fingerprint, since only PST certificates
/// are offered to the verifier). One bad or unknown signature beside a good
/// one rejects the mail: a forwarded or tampered announcement fails closed.
pub fn verify_detached(
    p: &dyn Policy,
    now: DateTime<Utc>,
    pst: &Keyring,
    data: &[u8],
    sig: &[u8],
) -> Result<VerifiedSigner, SignatureProblem> {
    let seen = census_detached(sig, pst, now)?;
    precheck(&seen.read, pst, data)?;
    with_lookahead(now, seen.future, |reference| {
        verify_detached_at(p, now, reference, pst, data, sig)
    })
}

/// Verification happens at `now` plus the tolerated clock skew, so a
/// signature's own expiry is honoured. Only if that fails is it tried again
/// a year ahead: a PST signature from a clock far in the future then
/// verifies, and the caller tells the PST (it refuses anything newer than
/// `CLOCK_SKEW_S`) rather than calling the signature bad. The second try
/// (hashing the whole message again) is made only when the census saw a
/// signature dated ahead (`future`): for any other, it cannot change the
/// verdict.
pub(super) fn with_lookahead<T>(
    now: DateTime<Utc>,
    future: bool,
    mut attempt: impl FnMut(DateTime<Utc>) -> Result<T, SignatureProblem>,
) -> Result<T, SignatureProblem> {
    match attempt(now + chrono::Duration::seconds(CLOCK_SKEW_S)) {
        Err(SignatureProblem::Bad) if future => {
            attempt(now + chrono::Duration::days(LOOKAHEAD_DAYS)).map_err(|_| SignatureProblem::Bad)
        }
        other => other,
    }
}

pub(super) fn verify_detached_at(
    p: &dyn Policy,
    now: DateTime<Utc>,
    reference: DateTime<Utc>,
    pst: &Keyring,
    data: &[u8],
    sig: &[u8],
) -> Result<VerifiedSigner, SignatureProblem> {
    let helper = PstVerifier {
        pst,
        p,
        now,
        decrypting: false,
        outcome: None,
    };
    let mut v = DetachedVerifierBuilder::from_bytes(sig)
        .map_err(|_| SignatureProblem::Malformed)?
        .with_policy(p, Some(at(reference)), helper)
        .map_err(|_| SignatureProblem::Malformed)?;
    let verified = v.verify_bytes(data);
    let outcome = v.into_helper().outcome;
    match (verified, outcome) {
        (Ok(()), Some(Ok(signer))) => Ok(signer),
        (_, Some(Err(SignatureProblem::Unsigned))) => Err(SignatureProblem::Malformed),
        (_, Some(Err(problem))) => Err(problem),
        _ => Err(SignatureProblem::Bad),
    }
}

/// Verifies a cleartext-signed (inline PGP) body and returns its signed
/// text, by the same rule as a detached signature (every signature good and
/// from one of `certs`). The text is at most `limit` octets.
pub fn verify_inline(
    p: &dyn Policy,
    now: DateTime<Utc>,
    certs: &Keyring,
    body: &[u8],
    limit: usize,
) -> Result<(VerifiedSigner, Secret), SignatureProblem> {
    let (seen, literal) = census(body, limit, certs, now)?;
    if named_keys(&seen.read, certs)?.1 {
        return Err(SignatureProblem::SameKeyTwice);
    }
    // The literal data is what every signature covers (for a
    // cleartext-signed text, the text Sequoia's parser made of it): each
    // signature is checked over it, one hash per way of hashing, before
    // Sequoia's verifier hashes it once per signature.
    if let Some(literal) = &literal {
        precheck(&seen.read, certs, literal.expose())?;
    }
    verify_message(p, now, certs, body, limit, seen.future)
}

/// Verifies a signed OpenPGP message (or cleartext-signed text) already
/// counted by a census, and returns its literal data, at most `limit`
/// octets.
pub(super) fn verify_message(
    p: &dyn Policy,
    now: DateTime<Utc>,
    certs: &Keyring,
    body: &[u8],
    limit: usize,
    future: bool,
) -> Result<(VerifiedSigner, Secret), SignatureProblem> {
    with_lookahead(now, future, |reference| {
        let outcome = RefCell::new(None);
        let helper = Watched {
            verifier: PstVerifier {
                pst: certs,
                p,
                now,
                decrypting: false,
                outcome: None,
            },
            outcome: &outcome,
        };
        let mut text = Vec::new();
        let read = VerifierBuilder::from_bytes(body)
            .map_err(|_| SignatureProblem::Malformed)?
            .buffer_size(limit.max(1 << 16))
            .with_policy(p, Some(at(reference)), helper)
            .and_then(|v| Ok(v.take(limit as u64 + 1).read_to_end(&mut text)?));
        let text = Secret::new(text);
        match (read, outcome.into_inner()) {
            (Ok(_), _) if text.len() > limit => Err(SignatureProblem::Malformed),
            (Ok(_), Some(Ok(signer))) => Ok((signer, text)),
            (_, Some(Err(SignatureProblem::Unsigned))) => Err(SignatureProblem::Malformed),
            (_, Some(Err(problem))) => Err(problem),
            _ => Err(SignatureProblem::Bad),
        }
    })
}

/// A [`PstVerifier`] whose judgement can be read even when verification
/// failed (the builder consumes the helper on error).
pub(super) struct Watched<'a> {
    verifier: PstVerifier<'a>,
    outcome: &'a RefCell<Option<Result<VerifiedSigner, SignatureProblem>>>,
}

impl VerificationHelper for Watched<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        self.verifier.get_certs(ids)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let outcome = self.verifier.judge(structure);
        let ok = outcome.is_ok();
        *self.outcome.borrow_mut() = Some(outcome);
        if ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("signature rejected"))
        }
    }
}

/// A decrypted announcement.
pub struct OpenedAnnouncement {
    pub plaintext: Secret,
    /// The PST signature inside the OpenPGP message (RFC 3156 §6.2 combined
    /// form, `gpg --sign --encrypt`); `None` when the message carried no
    /// signature, so the plaintext must be a `multipart/signed` entity itself.
    pub signer: Option<VerifiedSigner>,
}

/// Decrypts a mail encrypted to the list key and judges the signatures in
/// it by the same rules as a detached one: none at all is fine (the caller
/// then requires a signed MIME entity inside), but every signature present
/// must be a good PST signature. The plaintext is returned only when that
/// holds; it is never larger than `limit`.
pub fn open_announcement(
    list: &ListKey,
    p: &dyn Policy,
    now: DateTime<Utc>,
    pst: &Keyring,
    ciphertext: &[u8],
    limit: usize,
) -> Result<OpenedAnnouncement, OpenProblem> {
    // As `verify_detached`: at now (+ skew) first, a year ahead only to
    // recognise a future-dated PST signature.
    // The census first: it stops at the packet limits, so the scan for
    // unprotected data below reads a bounded number of packets.
    // Sequoia 2.4.2 can panic on malformed ciphertext (see `open_at`).
    // The armor is decoded once, here, not by each of the three passes
    // below (`crate::armor::dearmor_message` says why).
    let binary = crate::armor::dearmor_message(ciphertext);
    let ciphertext = binary.as_deref().unwrap_or(ciphertext);
    let census = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        census_encrypted(list, p, ciphertext, limit, pst, now)
    }))
    .map_err(|_| OpenProblem::Failed)??;
    if holds_unprotected_data(ciphertext) {
        return Err(OpenProblem::Unprotected);
    }
    if census.tried {
        // As the decrypting pass would find: offered to the list key, and
        // none of the (at most `PacketLimits::PKESK_TRIES`) tries worked.
        return Err(OpenProblem::NotForList);
    }
    let (found, seen) = (census.key, census.seen);
    // Decrypted to its integrity check, which held: a stranger's mail is
    // refused now, and what it holds is checked from what the census kept,
    // not decrypted again (twice the cost, with the lookahead three times).
    if found.is_some() {
        seen.only_strangers().map_err(OpenProblem::Signature)?;
        match census.inside {
            Some(Inside::Unsigned(plaintext)) => {
                return Ok(OpenedAnnouncement {
                    plaintext,
                    signer: None,
                });
            }
            Some(Inside::Signed(message, prechecked)) => {
                prechecked.map_err(OpenProblem::Signature)?;
                let (signer, plaintext) =
                    verify_message(p, now, pst, message.expose(), limit, seen.future)
                        .map_err(OpenProblem::Signature)?;
                return Ok(OpenedAnnouncement {
                    plaintext,
                    signer: Some(signer),
                });
            }
            Some(Inside::NotForList) => {
                return Err(OpenProblem::Signature(SignatureProblem::Bad));
            }
            None => {}
        }
    }
    open_decrypting(
        list,
        p,
        now,
        pst,
        ciphertext,
        limit,
        found.as_ref(),
        seen.future,
    )
}

/// Sequoia's decrypting verifier over the ciphertext, with the look a year
/// ahead when `future`: for what the census could not read (and, in the
/// tests, the reference the census's verdicts are held to).
#[allow(clippy::too_many_arguments)]
pub(super) fn open_decrypting(
    list: &ListKey,
    p: &dyn Policy,
    now: DateTime<Utc>,
    pst: &Keyring,
    ciphertext: &[u8],
    limit: usize,
    found: Option<&FoundKey>,
    future: bool,
) -> Result<OpenedAnnouncement, OpenProblem> {
    let mut other = None;
    let opened = with_lookahead(now, future, |reference| {
        match open_at(list, p, now, reference, pst, ciphertext, limit, found) {
            Ok(opened) => Ok(opened),
            Err(OpenProblem::Signature(problem)) => Err(problem),
            Err(problem) => {
                other = Some(problem);
                // Not a signature problem: stop, and report it below.
                Err(SignatureProblem::Malformed)
            }
        }
    });
    match (opened, other) {
        (_, Some(problem)) => Err(problem),
        (Ok(opened), None) => Ok(opened),
        (Err(problem), None) => Err(OpenProblem::Signature(problem)),
    }
}

/// Whether a top-level packet is Symmetrically Encrypted Data (tag 9): no
/// integrity protection, the EFAIL malleability. Only the outer packet
/// sequence is read; nothing is decrypted.
pub(super) fn holds_unprotected_data(ciphertext: &[u8]) -> bool {
    use openpgp::packet::Tag;
    use openpgp::parse::{PacketParser, PacketParserResult};
    let Ok(mut ppr) = PacketParser::from_bytes(ciphertext) else {
        return false;
    };
    while let PacketParserResult::Some(pp) = ppr {
        if pp.packet.tag() == Tag::SED {
            return true;
        }
        match pp.next() {
            Ok((_, next)) => ppr = next,
            Err(_) => return false,
        }
    }
    false
}

#[allow(clippy::too_many_arguments)]
pub(super) fn open_at(
    list: &ListKey,
    p: &dyn Policy,
    now: DateTime<Utc>,
    reference: DateTime<Utc>,
    pst: &Keyring,
    ciphertext: &[u8],
    limit: usize,
    found: Option<&FoundKey>,
) -> Result<OpenedAnnouncement, OpenProblem> {
    let state = RefCell::new(OpenState::default());
    let helper = PstOpener {
        verifier: PstVerifier {
            pst,
            p,
            now,
            decrypting: true,
            outcome: None,
        },
        keypairs: list.decryption_keypairs(p),
        list_cert: list.cert(),
        state: &state,
        found,
    };
    let mut plaintext = Vec::new();
    // Sequoia 2.4.2 panics on some malformed ciphertexts (an SEIPDv1 packet
    // shorter than its own header, found by fuzzing: an `unwrap` in
    // `parse.rs`). Such a mail is refused like any other that fails to
    // decrypt, rather than ending the intake task with a 451 forever.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        DecryptorBuilder::from_bytes(ciphertext)
            .map(|b| b.buffer_size(limit.max(1 << 16)))
            .and_then(|b| b.with_policy(p, Some(at(reference)), helper))
            .and_then(|d| Ok(d.take(limit as u64 + 1).read_to_end(&mut plaintext)?))
    }));
    let plaintext = Secret::new(plaintext);
    let Ok(read) = read else {
        tracing::warn!("the OpenPGP parser panicked on an encrypted mail; refused");
        return Err(OpenProblem::Failed);
    };
    let state = state.into_inner();
    match (read, state.outcome) {
        (_, _) if !state.decrypted && !state.attempted => Err(OpenProblem::Malformed),
        (_, _) if !state.decrypted => Err(OpenProblem::NotForList),
        // Reading stopped at the limit, before any signature was reached.
        (Ok(_), _) if plaintext.len() > limit => Err(OpenProblem::TooLarge(limit)),
        (_, Some(Err(problem))) if problem != SignatureProblem::Unsigned => {
            Err(OpenProblem::Signature(problem))
        }
        (Err(_), _) | (_, None) => Err(OpenProblem::Failed),
        (Ok(_), Some(outcome)) => Ok(OpenedAnnouncement {
            plaintext,
            signer: outcome.ok(),
        }),
    }
}

/// What the decryption helper saw, readable even when decryption failed.
#[derive(Default)]
pub(super) struct OpenState {
    /// A PKESK was offered to the list key.
    attempted: bool,
    /// The list key decrypted the session key.
    decrypted: bool,
    outcome: Option<Result<VerifiedSigner, SignatureProblem>>,
}

pub(super) struct PstOpener<'a> {
    verifier: PstVerifier<'a>,
    keypairs: Vec<KeyPair>,
    /// Named as the decrypting certificate, so that Sequoia rejects
    /// signatures whose Intended Recipient subpackets name someone else (a
    /// PST mail to another party, re-encrypted to the list).
    list_cert: Cert,
    state: &'a RefCell<OpenState>,
    /// The session key the census found, tried before any PKESK.
    found: Option<&'a FoundKey>,
}

impl VerificationHelper for PstOpener<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        self.verifier.get_certs(ids)
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let outcome = self.verifier.judge(structure);
        let ok = matches!(outcome, Ok(_) | Err(SignatureProblem::Unsigned));
        self.state.borrow_mut().outcome = Some(outcome);
        if ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("signature rejected"))
        }
    }
}

impl DecryptionHelper for PstOpener<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        // Only the packets addressed to a list key are tried, and at most a
        // few anonymous ones: each try is a public-key operation, and anyone
        // can send a message with thousands of packets.
        if let Some((algo, sk)) = self.found
            && decrypt(*algo, sk)
        {
            let mut state = self.state.borrow_mut();
            state.attempted = true;
            state.decrypted = true;
            return Ok(Some(self.list_cert.clone()));
        }
        const MAX_WILDCARDS: usize = 4;
        let mut wildcards = 0;
        let mut tries = 0;
        for pkesk in pkesks {
            let for_us = |pair: &KeyPair| match pkesk.recipient() {
                Some(id) => pair.public().key_handle().aliases(&id),
                None => true,
            };
            if pkesk.recipient().is_none() {
                wildcards += 1;
                if wildcards > MAX_WILDCARDS {
                    break;
                }
            }
            for pair in &mut self.keypairs {
                if !for_us(pair) {
                    continue;
                }
                tries += 1;
                if tries > PacketLimits::PKESK_TRIES {
                    break;
                }
                self.state.borrow_mut().attempted = true;
                if let Some((algo, sk)) = pkesk.decrypt(pair, sym_algo)
                    && decrypt(algo, &sk)
                {
                    self.state.borrow_mut().decrypted = true;
                    return Ok(Some(self.list_cert.clone()));
                }
            }
        }
        if !pkesks.is_empty() {
            // Encrypted to public keys, none of them ours.
            self.state.borrow_mut().attempted = true;
        }
        Err(anyhow::anyhow!("not encrypted to the list key"))
    }
}

pub(super) struct PstVerifier<'a> {
    pst: &'a Keyring,
    p: &'a dyn Policy,
    now: DateTime<Utc>,
    /// Decrypting a message (encryption and compression layers expected),
    /// rather than checking a detached signature.
    decrypting: bool,
    outcome: Option<Result<VerifiedSigner, SignatureProblem>>,
}

impl PstVerifier<'_> {
    fn judge(&self, structure: MessageStructure) -> Result<VerifiedSigner, SignatureProblem> {
        let mut signer: Option<Cert> = None;
        let mut digests = Vec::new();
        let mut times = Vec::new();
        let mut signers = Vec::new();
        for layer in structure {
            let results = match layer {
                MessageLayer::SignatureGroup { results } => results,
                MessageLayer::Compression { .. } | MessageLayer::Encryption { .. }
                    if self.decrypting =>
                {
                    continue;
                }
                _ => return Err(SignatureProblem::Malformed),
            };
            for result in results {
                let good = result.map_err(|e| match e {
                    VerificationError::MissingKey { .. } => SignatureProblem::NotPst,
                    VerificationError::UnboundKey { cert, .. } => SignatureProblem::BadKey(
                        cert.fingerprint().to_hex(),
                        why_unusable(cert, None, self.p, self.now),
                    ),
                    VerificationError::BadKey { ka, .. } => SignatureProblem::BadKey(
                        ka.cert().fingerprint().to_hex(),
                        why_unusable(ka.cert(), Some(&ka.key().fingerprint()), self.p, self.now),
                    ),
                    VerificationError::BadSignature { sig, .. } => SignatureProblem::bad(sig),
                    _ => SignatureProblem::Malformed,
                })?;
                let cert = good.ka.cert();
                self.alive_now(cert, &good.ka.key().fingerprint())?;
                if good
                    .sig
                    .signature_expiration_time()
                    .is_some_and(|end| end <= at(self.now))
                {
                    return Err(SignatureProblem::Expired);
                }
                let created = good
                    .sig
                    .signature_creation_time()
                    .map(DateTime::<Utc>::from)
                    .ok_or(SignatureProblem::Malformed)?;
                times.push(created);
                digests.push(signature_identity(good.sig, &good.ka.key().fingerprint()));
                // Several signers are fine; the first is matched against From.
                signer.get_or_insert_with(|| cert.clone());
                signers.push(cert.fingerprint());
            }
        }
        digests.sort();
        digests.dedup();
        let cert = signer.ok_or(SignatureProblem::Unsigned)?;
        let (Some(oldest), Some(newest)) = (times.iter().min(), times.iter().max()) else {
            return Err(SignatureProblem::Bad);
        };
        signers.sort();
        signers.dedup();
        Ok(VerifiedSigner {
            cert,
            signers,
            oldest: *oldest,
            newest: *newest,
            signature_digests: digests,
        })
    }

    /// Sequoia judges the key at the signature's creation time; the relay
    /// also demands it be alive and unrevoked now.
    fn alive_now(&self, cert: &Cert, key: &Fingerprint) -> Result<(), SignatureProblem> {
        let bad = || {
            SignatureProblem::BadKey(
                cert.fingerprint().to_hex(),
                why_unusable(cert, Some(key), self.p, self.now),
            )
        };
        let vc = cert.with_policy(self.p, at(self.now)).map_err(|_| bad())?;
        if vc.alive().is_err() || matches!(vc.revocation_status(), RevocationStatus::Revoked(_)) {
            return Err(bad());
        }
        let ok = vc
            .keys()
            .key_handle(key.clone())
            .alive()
            .revoked(false)
            .for_signing()
            .next()
            .is_some();
        if ok { Ok(()) } else { Err(bad()) }
    }
}

/// Why a certificate (or the key of it that signed) cannot make a signature
/// this list accepts now: the reason goes into the rejection, so the sender
/// knows what to fix.
pub(super) fn why_unusable(
    cert: &Cert,
    key: Option<&Fingerprint>,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> String {
    let t = at(now);
    if let RevocationStatus::Revoked(_) = cert.revocation_status(p, t) {
        return "the certificate is revoked (whatever the reason, the list accepts no signature from it)".into();
    }
    if cert.primary_key().key().creation_time() > t {
        return "the certificate is not valid yet (its creation time is in the future)".into();
    }
    let vc = match cert.with_policy(p, t) {
        Ok(vc) => vc,
        Err(e) => return format!("the certificate is rejected by the list's policy: {e}"),
    };
    if vc.alive().is_err() {
        return "the certificate has expired".into();
    }
    let Some(key) = key else {
        return "the signing key is not bound to the certificate".into();
    };
    let Some(ka) = vc.keys().key_handle(key.clone()).next() else {
        return "the signing key is not valid under the list's policy".into();
    };
    if let Err(e) = p.key(&ka) {
        return format!("the signing key is rejected by the list's policy: {e}");
    }
    if !ka.for_signing() {
        return "the signing key is not marked for signing (key flags)".into();
    }
    if ka.alive().is_err() {
        return "the signing key has expired".into();
    }
    if let RevocationStatus::Revoked(_) = ka.revocation_status() {
        return "the signing key is revoked".into();
    }
    "the key is not valid now".into()
}

impl VerificationHelper for PstVerifier<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        // Only the certificates the signatures name (by issuer): a roster of
        // thousands is not cloned for every mail. Sequoia still matches the
        // signing key by fingerprint.
        Ok(self
            .pst
            .naming(ids)
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let outcome = self.judge(structure);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        if ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("signature rejected"))
        }
    }
}

/// A signature's identity for the replay cache: SHA-256 over the signing
/// key's fingerprint, the hash algorithm and the digest the signature
/// covers (signed data + hashed area). Nothing an attacker can change
/// without breaking the signature (the unhashed area, the unprotected
/// digest prefix, the encoding, an ECDSA `s` flipped to `n - s`) is in it.
pub(super) fn signature_identity(sig: &openpgp::packet::Signature, signer: &Fingerprint) -> String {
    let mut input = signer.as_bytes().to_vec();
    input.push(u8::from(sig.hash_algo()));
    input.extend_from_slice(sig.computed_digest().unwrap_or_default());
    sha256_hex(&input)
}
