//! Every OpenPGP operation of the relay, with the policy passed in: the
//! list key and the policy here; verifying the PST's signatures
//! (`verify`), counting packets first (`census`), sealing (`seal`), and
//! what a mail client does, for the demo and tests (`client`).

use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use openpgp::cert::prelude::*;
use openpgp::crypto::KeyPair;
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::serialize::SerializeInto;
use openpgp::types::{HashAlgorithm, KeyFlags, RevocationStatus};
use openpgp::{Cert, Fingerprint};
use sequoia_openpgp as openpgp;

mod census;
mod cleartext;
mod client;
mod kept;
mod keyring;
mod problem;
mod seal;
mod seipd;
pub mod smime;
mod verify;

pub use census::*;
pub use client::*;
pub use kept::{EncryptionKeys, KeptCert};
pub use keyring::Keyring;
pub use problem::*;
pub use seal::*;
pub use verify::*;

fn at(now: DateTime<Utc>) -> SystemTime {
    SystemTime::from(now)
}

pub(crate) fn encryption_flags() -> KeyFlags {
    KeyFlags::empty()
        .set_transport_encryption()
        .set_storage_encryption()
}

/// The list's own key: signs every outgoing copy and decrypts the spool.
#[derive(Clone)]
pub struct ListKey {
    tsk: Cert,
}

impl std::fmt::Debug for ListKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListKey({})", self.tsk.fingerprint())
    }
}

impl ListKey {
    /// Reads a transferable secret key and checks it can sign and decrypt
    /// without a passphrase.
    pub fn load(path: &Path) -> anyhow::Result<ListKey> {
        let tsk = Cert::from_file(path)?;
        Self::from_cert(tsk)
    }

    pub fn from_cert(tsk: Cert) -> anyhow::Result<ListKey> {
        let key = ListKey { tsk };
        let p = policy();
        if !key.tsk.is_tsk() {
            anyhow::bail!(
                "holds no secret key material (a certificate was given, not the secret key)"
            );
        }
        key.signing_keypair(&p, None)?;
        if key.decryption_keypairs(&p).is_empty() {
            anyhow::bail!(
                "has no unencrypted secret encryption subkey (passphrase-protected keys are not supported yet)"
            );
        }
        Ok(key)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.tsk.fingerprint()
    }

    /// Whether `other` is this very key, with the same signatures (an
    /// extended expiry is a change).
    pub fn same_as(&self, other: &ListKey) -> bool {
        self.tsk == other.tsk
    }

    /// The public certificate, as members import it to verify copies.
    pub fn cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    fn signing_keypair(&self, p: &dyn Policy, now: Option<SystemTime>) -> anyhow::Result<KeyPair> {
        self.tsk
            .keys()
            .unencrypted_secret()
            .with_policy(p, now)
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .next()
            .ok_or_else(|| {
                anyhow::anyhow!("has no usable unencrypted signing key (expired, revoked or passphrase-protected?)")
            })?
            .key()
            .clone()
            .into_keypair()
    }

    fn decryption_keypairs(&self, p: &dyn Policy) -> Vec<KeyPair> {
        self.tsk
            .keys()
            .unencrypted_secret()
            .with_policy(p, None)
            .key_flags(encryption_flags())
            .filter_map(|ka| ka.key().clone().into_keypair().ok())
            .collect()
    }
}

/// Why a member copy could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The member's certificate cannot receive: the member is skipped, never sent plaintext.
    #[error("{0}")]
    Recipient(String),
    #[error("encryption failed: {0}")]
    Crypto(String),
}

/// Checks that `cert` can receive encrypted mail now; the error says why not
/// (revoked, expired, no encryption subkey, rejected by policy).
pub fn usable_for_encryption<'a>(
    cert: &'a Cert,
    p: &'a dyn Policy,
    now: DateTime<Utc>,
) -> Result<ValidCert<'a>, String> {
    let vc = cert.with_policy(p, at(now)).map_err(|e| {
        format!(
            "certificate {} not valid under policy: {e}",
            cert.fingerprint()
        )
    })?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(format!("certificate {} is revoked", cert.fingerprint()));
    }
    if let Err(e) = vc.alive() {
        return Err(format!(
            "certificate {} is not alive (expired?): {e}",
            cert.fingerprint()
        ));
    }
    let usable = vc
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .key_flags(encryption_flags())
        .count();
    if usable == 0 {
        return Err(format!(
            "certificate {} has no usable encryption subkey (expired, revoked or missing)",
            cert.fingerprint()
        ));
    }
    Ok(vc)
}

/// When a capability of `vc` ends, given its keys that have it now: it
/// lasts as long as its longest-lived key, and the primary. `None`: never.
pub(crate) fn capability_ends(
    vc: &sequoia_openpgp::cert::ValidCert<'_>,
    keys: &[sequoia_openpgp::cert::amalgamation::key::ValidErasedKeyAmalgamation<
        '_,
        sequoia_openpgp::packet::key::PublicParts,
    >],
) -> Option<DateTime<Utc>> {
    let expires = keys
        .iter()
        .map(|k| k.key_expiration_time())
        .max_by_key(|t| t.map_or(i64::MAX, |t| DateTime::<Utc>::from(t).timestamp()))
        .flatten()
        .map(DateTime::<Utc>::from);
    let primary = vc
        .primary_key()
        .key_expiration_time()
        .map(DateTime::<Utc>::from);
    match (expires, primary) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Armored public certificate (the roster file's keys, notices, the demo).
pub fn armored_public(cert: &Cert) -> anyhow::Result<Vec<u8>> {
    cert.armored().to_vec()
}

/// The list's OpenPGP policy, used for every signature checked, key judged
/// and copy sealed: sequoia's standard policy (no MD5 or SHA-1 data
/// signatures, no RSA under 2048 bits, among others) and, explicitly, no DSA
/// and no ElGamal at all, whatever their size: GnuPG has not made such keys
/// by default for a decade, and a PST or member still holding one is told
/// by `check` and the weekly key check to replace it.
pub fn policy() -> openpgp::policy::StandardPolicy<'static> {
    use openpgp::policy::AsymmetricAlgorithm as A;
    let mut p = openpgp::policy::StandardPolicy::new();
    for algo in [
        A::RSA1024,
        A::DSA1024,
        A::DSA2048,
        A::DSA3072,
        A::DSA4096,
        A::ElGamal1024,
        A::ElGamal2048,
        A::ElGamal3072,
        A::ElGamal4096,
    ] {
        p.reject_asymmetric_algo(algo);
    }
    p.reject_hash(HashAlgorithm::MD5);
    p
}

/// The e-mail addresses of a certificate's user IDs that are valid under the policy now.
pub fn valid_emails(cert: &Cert, p: &dyn Policy, now: DateTime<Utc>) -> Vec<String> {
    let Ok(vc) = cert.with_policy(p, at(now)) else {
        return Vec::new();
    };
    vc.userids()
        .revoked(false)
        .filter_map(|ua| ua.userid().email_normalized().ok().flatten())
        .collect()
}

/// Whether `address` (any case) is a valid user ID of `cert` now.
pub fn has_email(cert: &Cert, p: &dyn Policy, now: DateTime<Utc>, address: &str) -> bool {
    valid_emails(cert, p, now)
        .iter()
        .any(|e| e.eq_ignore_ascii_case(address))
}

/// HMAC-SHA256 of `data` under `key`, lower-case hex (as webhook receivers
/// compare it, `sha256=<hex>`): what a release hook's body is signed with
/// (issue 21).
pub fn hmac_sha256_hex(key: &[u8], data: &[u8]) -> Result<String, String> {
    let key = openssl::pkey::PKey::hmac(key).map_err(|e| format!("HMAC key: {e}"))?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
        .map_err(|e| format!("HMAC: {e}"))?;
    signer.update(data).map_err(|e| format!("HMAC: {e}"))?;
    let mac = signer.sign_to_vec().map_err(|e| format!("HMAC: {e}"))?;
    Ok(mac.iter().map(|b| format!("{b:02x}")).collect())
}

/// Upper-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut ctx = HashAlgorithm::SHA256
        .context()
        .expect("SHA-256 is always available")
        .for_digest();
    ctx.update(data);
    openpgp::fmt::hex::encode(ctx.into_digest().expect("SHA-256 digest"))
}

/// `n` random bytes as lowercase hex, for identifiers (copy ids, bounce
/// tokens, MIME boundaries). From OpenSSL's shared CSPRNG (`RAND_bytes`),
/// seeded by the system: Sequoia's `random` sets up a new generator at
/// every call, which a fan-out made a few per copy.
pub fn random_hex(n: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = vec![0u8; n];
    openssl::rand::rand_bytes(&mut buf).expect("the system RNG works");
    let mut out = String::with_capacity(2 * n);
    for b in buf {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use openpgp::KeyHandle;
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient, Signer};
    use shim::{
        census, census_detached, census_encrypted, open_announcement, open_decrypting, precheck,
        verify_detached, verify_detached_at, verify_inline, verify_message,
    };

    /// Identifiers: lowercase hex of the length asked, never the same twice.
    #[test]
    fn random_hex_is_lowercase_hex_and_fresh() {
        let ids: Vec<String> = (0..1000).map(|_| random_hex(12)).collect();
        for id in &ids {
            assert_eq!(id.len(), 24);
            assert!(
                id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Every nibble value turns up (the encoding covers all sixteen).
        let all: std::collections::HashSet<u8> = ids.iter().flat_map(|i| i.bytes()).collect();
        assert_eq!(all.len(), 16);
    }

    /// The verifier's functions over plain certificates, as these tests
    /// hold them (the roster shares its certificates: `Arc<Cert>`).
    mod shim {
        use std::sync::Arc;

        use chrono::{DateTime, Utc};
        use sequoia_openpgp::Cert;
        use sequoia_openpgp::policy::Policy;

        use crate::crypto::{self as c, ListKey};

        fn ring(certs: &[Cert]) -> c::Keyring {
            c::Keyring::new(certs.iter().cloned().map(Arc::new).collect())
        }

        pub(super) fn verify_detached(
            p: &dyn Policy,
            now: DateTime<Utc>,
            pst: &[Cert],
            data: &[u8],
            sig: &[u8],
        ) -> Result<c::VerifiedSigner, c::SignatureProblem> {
            c::verify_detached(p, now, &ring(pst), data, sig)
        }

        pub(super) fn verify_detached_at(
            p: &dyn Policy,
            now: DateTime<Utc>,
            reference: DateTime<Utc>,
            pst: &[Cert],
            data: &[u8],
            sig: &[u8],
        ) -> Result<c::VerifiedSigner, c::SignatureProblem> {
            c::verify_detached_at(p, now, reference, &ring(pst), data, sig)
        }

        pub(super) fn verify_inline(
            p: &dyn Policy,
            now: DateTime<Utc>,
            certs: &[Cert],
            body: &[u8],
            limit: usize,
        ) -> Result<(c::VerifiedSigner, crate::secret::Secret), c::SignatureProblem> {
            c::verify_inline(p, now, &ring(certs), body, limit)
        }

        pub(super) fn verify_message(
            p: &dyn Policy,
            now: DateTime<Utc>,
            certs: &[Cert],
            body: &[u8],
            limit: usize,
            future: bool,
        ) -> Result<(c::VerifiedSigner, crate::secret::Secret), c::SignatureProblem> {
            c::verify_message(p, now, &ring(certs), body, limit, future)
        }

        pub(super) fn open_announcement(
            list: &ListKey,
            p: &dyn Policy,
            now: DateTime<Utc>,
            pst: &[Cert],
            ciphertext: &[u8],
            limit: usize,
        ) -> Result<c::OpenedAnnouncement, c::OpenProblem> {
            c::open_announcement(list, p, now, &ring(pst), ciphertext, limit)
        }

        #[allow(clippy::too_many_arguments)]
        pub(super) fn open_decrypting(
            list: &ListKey,
            p: &dyn Policy,
            now: DateTime<Utc>,
            pst: &[Cert],
            ciphertext: &[u8],
            limit: usize,
            found: Option<&c::FoundKey>,
            future: bool,
        ) -> Result<c::OpenedAnnouncement, c::OpenProblem> {
            c::open_decrypting(list, p, now, &ring(pst), ciphertext, limit, found, future)
        }

        pub(super) fn census(
            bytes: &[u8],
            limit: usize,
            known: &[Cert],
            now: DateTime<Utc>,
        ) -> Result<(c::Seen, Option<crate::secret::Secret>), c::SignatureProblem> {
            c::census(bytes, limit, &ring(known), now)
        }

        pub(super) fn census_detached(
            sig: &[u8],
            known: &[Cert],
            now: DateTime<Utc>,
        ) -> Result<c::Seen, c::SignatureProblem> {
            c::census_detached(sig, &ring(known), now)
        }

        pub(super) fn census_encrypted(
            list: &ListKey,
            p: &dyn Policy,
            ciphertext: &[u8],
            limit: usize,
            known: &[Cert],
            now: DateTime<Utc>,
        ) -> Result<c::Opened, c::OpenProblem> {
            c::census_encrypted(list, p, ciphertext, limit, &ring(known), now)
        }

        pub(super) fn precheck(
            sigs: &[sequoia_openpgp::packet::Signature],
            known: &[Cert],
            data: &[u8],
        ) -> Result<(), c::SignatureProblem> {
            c::precheck(sigs, &ring(known), data)
        }
    }

    #[test]
    fn shared_seal_copies_open_for_their_member_alone() {
        let p = policy();
        let now =
            crate::clock::Clock::now(&crate::clock::SystemClock) - chrono::Duration::minutes(1);
        let list =
            ListKey::from_cert(generate_key("L <l@example.org>", now, None).unwrap()).unwrap();
        let a = generate_key("A <a@example.org>", now, None).unwrap();
        let b = generate_key("B <b@example.org>", now, None).unwrap();
        let shared = list.seal_shared(&p, now, b"the same text\r\n").unwrap();
        let list_cert = list.cert();
        for (member, other) in [(&a, &b), (&b, &a)] {
            let public = member.clone().strip_secret_key_material();
            let copy = list
                .seal_to_member(&EncryptionKeys::of(&public, &p, now).unwrap(), &shared)
                .unwrap()
                .to_vec();
            assert!(copy.starts_with(b"-----BEGIN PGP MESSAGE-----\r\n\r\n"));
            assert!(
                copy.split(|b| *b == b'\n').all(|l| l.len() <= 66),
                "64-character lines"
            );
            let opened = open_copy(&p, member, &list_cert, &copy).unwrap();
            assert_eq!(opened.plaintext.expose(), b"the same text\r\n");
            assert_eq!(opened.recipients.len(), 1, "one PKESK only");
            assert!(
                open_copy(&p, other, &list_cert, &copy).is_err(),
                "not for the other member"
            );
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
            .unwrap()
            .into()
    }

    /// A key made a day before `now()`.
    fn key(userid: &str) -> Cert {
        generate_key(userid, now() - chrono::Duration::days(1), None).unwrap()
    }

    fn signing_pair(cert: &Cert) -> KeyPair {
        let p = policy();
        signing_keypair(&p, cert, now()).unwrap()
    }

    /// A detached signature by `pst` over `data`, its packet `n` times over.
    fn signature_repeated(pst: &Cert, data: &[u8], n: usize) -> Vec<u8> {
        use openpgp::serialize::Marshal;
        let sig = sign_detached(&policy(), pst, now(), data).unwrap();
        let packet = openpgp::PacketPile::from_bytes(&sig)
            .unwrap()
            .into_children()
            .next()
            .unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            packet.serialize(&mut out).unwrap();
        }
        out
    }

    /// Up to the limit of signatures is judged as before; one more is
    /// refused by count, before any hashing: detached, inline (several
    /// signers of one cleartext-signed text), and encrypted.
    #[test]
    fn signatures_over_the_packet_limit_are_refused_before_verifying() {
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let certs = std::slice::from_ref(&pst);
        let data = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let repeated = |n: usize| signature_repeated(&pst, data, n);
        // Up to the limit, each by a key of its own (one key twice is
        // refused on its own account).
        let co: Vec<Cert> = (0..PacketLimits::SIGNATURES)
            .map(|i| key(&format!("Co {i} <co{i}@example.org>")))
            .collect();
        let at_limit: Vec<u8> = co
            .iter()
            .flat_map(|c| signature_repeated(c, data, 1))
            .collect();
        let at_limit = verify_detached(&p, now(), &co, data, &at_limit);
        assert!(at_limit.is_ok(), "{at_limit:?}");
        let over = verify_detached(
            &p,
            now(),
            certs,
            data,
            &repeated(PacketLimits::SIGNATURES + 1),
        );
        assert!(
            matches!(&over, Err(SignatureProblem::TooMany(t)) if t.what == "signatures"),
            "{over:?}"
        );
        // 20,000 copies (4 MB): refused by count, not after minutes of hashing.
        let flood = verify_detached(&p, now(), certs, data, &repeated(20_000));
        assert!(
            matches!(flood, Err(SignatureProblem::TooMany(_))),
            "{flood:?}"
        );

        let inline = |signers: usize| {
            let mut out = Vec::new();
            let message = Message::new(&mut out);
            let mut signer = Signer::new(message, signing_pair(&pst)).unwrap();
            for c in co.iter().take(signers - 1) {
                signer = signer.add_signer(signing_pair(c)).unwrap();
            }
            let mut w = signer.creation_time(at(now())).cleartext().build().unwrap();
            w.write_all(b"hello\n").unwrap();
            w.finalize().unwrap();
            out
        };
        let mut all = vec![pst.clone()];
        all.extend(co.iter().cloned());
        let certs = &all[..];
        assert!(verify_inline(&p, now(), certs, &inline(2), 1 << 20).is_ok());
        assert!(matches!(
            verify_inline(
                &p,
                now(),
                certs,
                &inline(PacketLimits::SIGNATURES + 1),
                1 << 20
            ),
            Err(SignatureProblem::TooMany(_))
        ));

        // Encrypted to the list: nine one-pass signatures inside.
        let list = ListKey::from_cert(key("L <l@example.org>")).unwrap();
        let list_cert = list.cert();
        let sealed = |signers: usize| {
            let mut out = Vec::new();
            let message = Message::new(&mut out);
            let recipients: Vec<Recipient> = list_cert
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .map(Into::into)
                .collect();
            let message = Encryptor::for_recipients(message, recipients)
                .build()
                .unwrap();
            let mut signer = Signer::new(message, signing_pair(&pst)).unwrap();
            for c in co.iter().take(signers - 1) {
                signer = signer.add_signer(signing_pair(c)).unwrap();
            }
            let message = signer.creation_time(at(now())).build().unwrap();
            let mut w = LiteralWriter::new(message).build().unwrap();
            w.write_all(data).unwrap();
            w.finalize().unwrap();
            out
        };
        // The census's verdict on a tampered ciphertext is its own, not
        // thrown away for the real pass to hash everything first.
        let mut tampered = sealed(PacketLimits::SIGNATURES + 1);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            census_encrypted(&list, &p, &tampered, 1 << 20, certs, now()),
            Err(OpenProblem::Failed)
        ));
        let opened = open_announcement(&list, &p, now(), certs, &sealed(2), 1 << 20).unwrap();
        assert_eq!(opened.plaintext.expose(), data);
        let over = open_announcement(&list, &p, now(), certs, &sealed(9), 1 << 20);
        assert!(
            matches!(&over, Err(OpenProblem::Signature(SignatureProblem::TooMany(t))) if t.what == "one-pass signatures"),
            "{:?}",
            over.err()
        );
    }

    /// An encrypted mail is decrypted once: what it holds is judged from
    /// what the census kept. That judgement must be the one the full
    /// decrypting verifier (with its look a year ahead) gives, on every
    /// kind of content and length: compared here, verdict for verdict.
    #[test]
    fn what_the_census_keeps_is_judged_as_the_full_decryption_would() {
        use openpgp::serialize::stream::Compressor;
        let p = policy();
        let list = ListKey::from_cert(key("L <l@example.org>")).unwrap();
        let list_cert = list.cert();
        let pst = key("P <p@example.org>");
        let co = key("Q <q@example.org>");
        let stranger = key("S <s@example.org>");
        let other_list = key("O <o@example.org>");
        let certs = &[
            pst.clone().strip_secret_key_material(),
            co.clone().strip_secret_key_material(),
        ];
        let recipients = || -> Vec<Recipient> {
            list_cert
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .map(Into::into)
                .collect()
        };
        // How the content is made: signers (and when), intended
        // recipients, compression; or raw packets put inside as they are.
        #[derive(Clone, Copy, Debug)]
        enum Make {
            Signed(&'static [usize], i64, bool),
            Named(usize),
            /// Unsigned, in this many compressed packets one in another
            /// (16 is past Sequoia's depth limit once inside the SEIP).
            Unsigned(usize),
            BadSignature,
            /// Text-mode signatures by these signers.
            Text(&'static [usize]),
            /// A PST signature over the literal data put before the
            /// encrypted, unsigned message: outside the encryption.
            SignedOutside,
        }
        let signers = [&pst, &co, &stranger];
        let seal = |make: Make, body: &[u8]| -> Vec<u8> {
            let mut out = Vec::new();
            let message = Message::new(&mut out);
            let message = Encryptor::for_recipients(message, recipients())
                .build()
                .unwrap();
            match make {
                Make::Signed(who, ahead_days, compressed) => {
                    let message = if compressed {
                        Compressor::new(message).build().unwrap()
                    } else {
                        message
                    };
                    let mut s = Signer::new(message, signing_pair(signers[who[0]])).unwrap();
                    for w in &who[1..] {
                        s = s.add_signer(signing_pair(signers[*w])).unwrap();
                    }
                    let when = now() + chrono::Duration::days(ahead_days);
                    let message = s.creation_time(at(when)).build().unwrap();
                    let mut w = LiteralWriter::new(message).build().unwrap();
                    w.write_all(body).unwrap();
                    w.finalize().unwrap();
                }
                Make::Text(who) => {
                    let template = || {
                        openpgp::packet::signature::SignatureBuilder::new(
                            openpgp::types::SignatureType::Text,
                        )
                    };
                    let mut s =
                        Signer::with_template(message, signing_pair(signers[who[0]]), template())
                            .unwrap();
                    // The template is every signer's.
                    for w in &who[1..] {
                        s = s.add_signer(signing_pair(signers[*w])).unwrap();
                    }
                    let message = s.creation_time(at(now())).build().unwrap();
                    let mut w = LiteralWriter::new(message).build().unwrap();
                    w.write_all(body).unwrap();
                    w.finalize().unwrap();
                }
                Make::Named(whom) => {
                    let named = [&list_cert, &other_list][whom];
                    let message = Signer::new(message, signing_pair(&pst))
                        .unwrap()
                        .add_intended_recipient(named)
                        .creation_time(at(now()))
                        .build()
                        .unwrap();
                    let mut w = LiteralWriter::new(message).build().unwrap();
                    w.write_all(body).unwrap();
                    w.finalize().unwrap();
                }
                Make::Unsigned(depth) => {
                    let mut message = message;
                    for _ in 0..depth {
                        message = Compressor::new(message).build().unwrap();
                    }
                    let mut w = LiteralWriter::new(message).build().unwrap();
                    w.write_all(body).unwrap();
                    w.finalize().unwrap();
                }
                Make::SignedOutside => {
                    let mut w = LiteralWriter::new(message).build().unwrap();
                    w.write_all(body).unwrap();
                    w.finalize().unwrap();
                    let sig = openpgp::packet::signature::SignatureBuilder::new(
                        openpgp::types::SignatureType::Binary,
                    )
                    .set_signature_creation_time(at(now()))
                    .unwrap()
                    .sign_message(&mut signing_pair(&pst), body)
                    .unwrap();
                    let mut outside = Vec::new();
                    openpgp::serialize::Marshal::serialize(
                        &openpgp::Packet::from(sig),
                        &mut outside,
                    )
                    .unwrap();
                    outside.extend_from_slice(&out);
                    return outside;
                }
                Make::BadSignature => {
                    // A PST-signed message whose signature is swapped for
                    // one over other bytes, written inside as it is.
                    let mut signed = Vec::new();
                    let m = Message::new(&mut signed);
                    let m = Signer::new(m, signing_pair(&pst))
                        .unwrap()
                        .creation_time(at(now()))
                        .build()
                        .unwrap();
                    let mut w = LiteralWriter::new(m).build().unwrap();
                    w.write_all(body).unwrap();
                    w.finalize().unwrap();
                    let mut packets: Vec<openpgp::Packet> =
                        openpgp::PacketPile::from_bytes(&signed)
                            .unwrap()
                            .into_children()
                            .collect();
                    let bad = openpgp::packet::signature::SignatureBuilder::new(
                        openpgp::types::SignatureType::Binary,
                    )
                    .set_signature_creation_time(at(now()))
                    .unwrap()
                    .sign_message(&mut signing_pair(&pst), b"other bytes")
                    .unwrap();
                    let last = packets.len() - 1;
                    packets[last] = bad.into();
                    let mut message = message;
                    for packet in &packets {
                        openpgp::serialize::Marshal::serialize(packet, &mut message).unwrap();
                    }
                    message.finalize().unwrap();
                    return out;
                }
            }
            out
        };
        // The reference: the decrypting verifier over the ciphertext,
        // as before the census kept anything.
        let reference = |ciphertext: &[u8]| {
            open_decrypting(&list, &p, now(), certs, ciphertext, 1 << 20, None, true)
        };
        let verdict = |r: Result<OpenedAnnouncement, OpenProblem>| {
            r.map(|o| {
                (
                    o.plaintext.expose().to_vec(),
                    o.signer
                        .map(|s| (s.signers, s.oldest, s.newest, s.signature_digests)),
                )
            })
        };
        let makes = [
            Make::Signed(&[0], 0, false),
            Make::Signed(&[0], 0, true),
            Make::Signed(&[0, 1], 0, false),
            Make::Signed(&[2], 0, false),
            Make::Signed(&[0, 2], 0, true),
            Make::Signed(&[2, 0], 0, false),
            Make::Signed(&[0], 30, false),
            Make::Named(0),
            Make::Named(1),
            Make::Unsigned(0),
            Make::Unsigned(1),
            Make::Unsigned(14),
            Make::Unsigned(15),
            Make::Unsigned(16),
            Make::BadSignature,
            Make::Text(&[0]),
            Make::Text(&[0, 1]),
            Make::SignedOutside,
        ];
        let mut kinds = std::collections::BTreeSet::new();
        for len in [0usize, 1, 2, 3, 100, 8191, 8192, 70_001] {
            let body: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            for make in makes {
                let ciphertext = seal(make, &body);
                let ours = verdict(open_announcement(
                    &list,
                    &p,
                    now(),
                    certs,
                    &ciphertext,
                    1 << 20,
                ));
                let theirs = verdict(reference(&ciphertext));
                assert_eq!(ours, theirs, "{make:?}, {len} octets");
                // Judged from what the census kept, not decrypted again.
                let census =
                    census_encrypted(&list, &p, &ciphertext, 1 << 20, certs, now()).unwrap();
                // (What lies outside the encryption, or past Sequoia's depth
                // limit, is Sequoia's to judge.)
                let sequoias = matches!(make, Make::SignedOutside | Make::Unsigned(16..));
                assert_eq!(census.inside.is_none(), sequoias, "{make:?}, {len} octets");
                kinds.insert(match &ours {
                    Ok((_, Some(_))) => "signed".to_owned(),
                    Ok((_, None)) => "unsigned".to_owned(),
                    Err(e) => e.to_string(),
                });
            }
        }
        // The samples reach every verdict they are meant to.
        for expected in [
            "signed",
            "unsigned",
            "signature not from a PST key",
            "signature does not verify",
        ] {
            assert!(kinds.contains(expected), "{expected}: {kinds:?}");
        }
    }

    /// At most `PKESK_TRIES` PKESKs to the list key are tried (a
    /// public-key operation each), once: three that give another session
    /// key and then the right one open; four of them and the right one do
    /// not, and the second pass does not try again.
    #[test]
    fn pkesks_to_the_list_key_are_tried_at_most_four_times() {
        let p = policy();
        let list = ListKey::from_cert(key("L <l@example.org>")).unwrap();
        let list_cert = list.cert();
        let pst = key("P <p@example.org>");
        let certs = &[pst.clone().strip_secret_key_material()];
        let seal = |text: &[u8]| {
            let mut out = Vec::new();
            let recipients: Vec<Recipient> = list_cert
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .map(Into::into)
                .collect();
            let m = Encryptor::for_recipients(Message::new(&mut out), recipients)
                .build()
                .unwrap();
            let m = Signer::new(m, signing_pair(&pst))
                .unwrap()
                .creation_time(at(now()))
                .build()
                .unwrap();
            let mut w = LiteralWriter::new(m).build().unwrap();
            w.write_all(text).unwrap();
            w.finalize().unwrap();
            openpgp::PacketPile::from_bytes(&out)
                .unwrap()
                .into_children()
                .collect::<Vec<_>>()
        };
        let other = seal(b"another message");
        let real = seal(b"the message");
        let with_decoys = |decoys: usize| {
            let mut out = Vec::new();
            for _ in 0..decoys {
                openpgp::serialize::Marshal::serialize(&other[0], &mut out).unwrap();
            }
            for packet in &real {
                openpgp::serialize::Marshal::serialize(packet, &mut out).unwrap();
            }
            out
        };
        let opened = open_announcement(&list, &p, now(), certs, &with_decoys(3), 1 << 20)
            .expect("the fourth PKESK tried is the right one");
        assert_eq!(opened.plaintext.expose(), b"the message");
        // Four decoys (each a session key with a good checksum that fails
        // the quick check) and the right one fifth: not tried, and
        // answered as a changed ciphertext is.
        assert_eq!(
            open_announcement(&list, &p, now(), certs, &with_decoys(4), 1 << 20).err(),
            Some(OpenProblem::Failed)
        );
        assert!(matches!(
            census_encrypted(&list, &p, &with_decoys(4), 1 << 20, certs, now()),
            Err(OpenProblem::Failed)
        ));
        // No oracle on the ciphertext: a change that fails the quick check
        // (the random prefix) and one that fails the integrity check (the
        // end) get the same answer.
        let sealed = with_decoys(0);
        // Where the SEIPD packet's ciphertext starts: after its tag, its
        // length octets and its version octet.
        let seip = openpgp::serialize::MarshalInto::to_vec(real.last().unwrap()).unwrap();
        let length_octets = match seip[1] {
            0..=191 | 224..=254 => 1,
            192..=223 => 2,
            255 => 5,
        };
        let body = sealed.len() - seip.len() + 1 + length_octets + 1;
        for at in [body, sealed.len() - 3] {
            let mut changed = sealed.clone();
            changed[at] ^= 0x01;
            assert_eq!(
                open_announcement(&list, &p, now(), certs, &changed, 1 << 20).err(),
                Some(OpenProblem::Failed),
                "a change at octet {at} of {}",
                sealed.len()
            );
        }
    }

    /// The precheck (one hash per way of hashing, not per signature) agrees
    /// with Sequoia's verifier on every signature it lets through or
    /// refuses as bad: binary and text-mode signatures, good and bad,
    /// dated ahead or not, over data of every length with CR, LF and CRLF
    /// line ends; and it refuses before hashing what cannot pass.
    #[test]
    fn the_precheck_judges_detached_signatures_as_the_verifier_does() {
        // Each kind of key a PST may sign with (EdDSA, RSA, ECDSA): the
        // precheck's public-key check is the backend's for each.
        for suite in [
            openpgp::cert::CipherSuite::Cv25519,
            openpgp::cert::CipherSuite::RSA3k,
            openpgp::cert::CipherSuite::P256,
        ] {
            precheck_agrees_for(suite);
        }
    }

    fn precheck_agrees_for(suite: openpgp::cert::CipherSuite) {
        use openpgp::packet::signature::SignatureBuilder;
        use openpgp::types::SignatureType;
        let p = policy();
        let key_of = |userid: &str| {
            CertBuilder::general_purpose(Some(userid))
                .set_cipher_suite(suite)
                .set_creation_time(at(now() - chrono::Duration::days(1)))
                .generate()
                .unwrap()
                .0
        };
        let pst = key_of("P <p@example.org>");
        let co = key_of("Q <q@example.org>");
        let stranger = key("S <s@example.org>");
        let certs = &[
            pst.clone().strip_secret_key_material(),
            co.clone().strip_secret_key_material(),
        ];
        // A signature made as a client makes it (Sequoia's stream signer
        // puts text in its text form itself).
        let sign = |who: &Cert, typ: SignatureType, ahead_s: i64, data: &[u8]| {
            let mut out = Vec::new();
            let template = SignatureBuilder::new(typ);
            let mut s = Signer::with_template(Message::new(&mut out), signing_pair(who), template)
                .unwrap()
                .creation_time(at(now() + chrono::Duration::seconds(ahead_s)))
                .detached()
                .build()
                .unwrap();
            s.write_all(data).unwrap();
            s.finalize().unwrap();
            out
        };
        let reference = |data: &[u8], sig: &[u8]| {
            with_lookahead(now(), true, |r| {
                verify_detached_at(&p, now(), r, certs, data, sig)
            })
            .map(|v| (v.signers, v.signature_digests))
        };
        let ours = |data: &[u8], sig: &[u8]| {
            verify_detached(&p, now(), certs, data, sig).map(|v| (v.signers, v.signature_digests))
        };
        let (bin, text) = (SignatureType::Binary, SignatureType::Text);
        let made = openpgp::PacketPile::from_bytes(&sign(&pst, text, 0, b"x")).unwrap();
        assert!(
            matches!(made.into_children().next(), Some(openpgp::Packet::Signature(s)) if s.typ() == text),
            "the template makes text-mode signatures"
        );
        let mut verdicts = std::collections::BTreeSet::new();
        for len in [0usize, 1, 2, 3, 64, 1000, 70_001] {
            let data: Vec<u8> = (0..len)
                .map(|i| match i % 13 {
                    3 => b'\n',
                    7 => b'\r',
                    11 if i % 2 == 0 => b'\r',
                    12 => b'\n',
                    _ => b'a' + (i % 26) as u8,
                })
                .collect();
            let other: Vec<u8> = [&data[..], b"x"].concat();
            let sets: Vec<Vec<u8>> = vec![
                sign(&pst, bin, 0, &data),
                sign(&pst, text, 0, &data),
                [sign(&pst, text, 0, &data), sign(&co, bin, 0, &data)].concat(),
                sign(&pst, text, 0, &other),
                sign(&pst, bin, 0, &other),
                sign(&pst, text, 86_400, &data),
                sign(&pst, text, 86_400, &other),
                sign(&stranger, text, 0, &data),
                [sign(&pst, bin, 0, &data), sign(&stranger, bin, 0, &data)].concat(),
                [sign(&pst, bin, 0, &data), sign(&co, text, 0, &other)].concat(),
            ];
            for (i, sig) in sets.iter().enumerate() {
                let (a, b) = (ours(&data, sig), reference(&data, sig));
                assert_eq!(a, b, "{suite:?}, set {i}, {len} octets");
                verdicts.insert(format!("{:?}", a.map(|_| "good")));
            }
            // What cannot pass is refused before anything is hashed.
            let twice = [sign(&pst, bin, 0, &data), sign(&pst, text, 1, &data)].concat();
            assert_eq!(ours(&data, &twice), Err(SignatureProblem::SameKeyTwice));
        }
        for expected in ["Ok(\"good\")", "Err(Bad)", "Err(NotPst)"] {
            assert!(verdicts.contains(expected), "{expected}: {verdicts:?}");
        }
        // Three ways of hashing (three hash algorithms) are refused.
        let data = b"data\r\n";
        let three = [
            HashAlgorithm::SHA256,
            HashAlgorithm::SHA384,
            HashAlgorithm::SHA512,
        ];
        let keys: Vec<Cert> = (0..3)
            .map(|i| key(&format!("K{i} <k{i}@example.org>")))
            .collect();
        let mut sigs = Vec::new();
        for (k, h) in keys.iter().zip(three) {
            let mut out = Vec::new();
            let template = SignatureBuilder::new(bin);
            let mut s = Signer::with_template(Message::new(&mut out), signing_pair(k), template)
                .unwrap()
                .hash_algo(h)
                .unwrap()
                .detached()
                .build()
                .unwrap();
            s.write_all(data).unwrap();
            s.finalize().unwrap();
            sigs.extend(out);
        }
        let two_ways = verify_detached(&p, now(), &keys, data, &sigs);
        assert!(
            matches!(&two_ways, Err(SignatureProblem::TooMany(t)) if t.limit == HASHINGS),
            "{two_ways:?}"
        );
    }

    /// Inline too: the precheck over the literal data (a cleartext-signed
    /// text as Sequoia's parser makes it) gives the verdict Sequoia's
    /// verifier gives, for cleartext-signed texts and signed messages,
    /// good and bad, text and binary, dated ahead or not, over texts of
    /// every length with CR, LF and CRLF line ends, dashes, trailing
    /// spaces and no final line end.
    #[test]
    fn the_precheck_judges_inline_signatures_as_the_verifier_does() {
        use openpgp::packet::signature::SignatureBuilder;
        use openpgp::types::SignatureType;
        let p = policy();
        let pst = key("P <p@example.org>");
        let co = key("Q <q@example.org>");
        let certs = &[
            pst.clone().strip_secret_key_material(),
            co.clone().strip_secret_key_material(),
        ];
        const BLOCK: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
        let cleartext = |who: &[&Cert], ahead_s: i64, data: &[u8]| {
            let mut out = Vec::new();
            let mut s = Signer::new(Message::new(&mut out), signing_pair(who[0])).unwrap();
            for other in &who[1..] {
                s = s.add_signer(signing_pair(other)).unwrap();
            }
            let mut s = s
                .creation_time(at(now() + chrono::Duration::seconds(ahead_s)))
                .cleartext()
                .build()
                .unwrap();
            s.write_all(data).unwrap();
            s.finalize().unwrap();
            out
        };
        let message = |who: &Cert, typ: SignatureType, ahead_s: i64, data: &[u8]| {
            let mut out = Vec::new();
            let m = Message::new(&mut out);
            let s = Signer::with_template(m, signing_pair(who), SignatureBuilder::new(typ))
                .unwrap()
                .creation_time(at(now() + chrono::Duration::seconds(ahead_s)))
                .build()
                .unwrap();
            let mut l = LiteralWriter::new(s).build().unwrap();
            l.write_all(data).unwrap();
            l.finalize().unwrap();
            crate::armor::armor_message(&out)
        };
        // One text's cleartext under another's signature block.
        let swapped = |text_of: &[u8], block_of: &[u8]| {
            let at = |m: &[u8]| memchr::memmem::find(m, BLOCK).unwrap();
            [&text_of[..at(text_of)], &block_of[at(block_of)..]].concat()
        };
        let ours = |body: &[u8]| {
            verify_inline(&p, now(), certs, body, 1 << 20)
                .map(|(v, text)| (v.signers, v.signature_digests, text.expose().to_vec()))
        };
        let reference = |body: &[u8]| {
            verify_message(&p, now(), certs, body, 1 << 20, true)
                .map(|(v, text)| (v.signers, v.signature_digests, text.expose().to_vec()))
        };
        let (bin, text) = (SignatureType::Binary, SignatureType::Text);
        let mut verdicts = std::collections::BTreeSet::new();
        for len in [0usize, 1, 2, 3, 64, 1000, 70_001] {
            let data: Vec<u8> = (0..len)
                .map(|i| match i % 17 {
                    3 => b'\n',
                    4 if i % 3 == 0 => b'-',
                    7 => b'\r',
                    9 => b' ',
                    10 => b'\n',
                    11 if i % 2 == 0 => b'\r',
                    12 => b'\n',
                    13 => b'\t',
                    _ => b'a' + (i % 26) as u8,
                })
                .collect();
            let other: Vec<u8> = [&data[..], b"x"].concat();
            let bodies: Vec<Vec<u8>> = vec![
                cleartext(&[&pst], 0, &data),
                cleartext(&[&pst, &co], 0, &data),
                cleartext(&[&pst], 86_400, &data),
                swapped(
                    &cleartext(&[&pst], 0, &data),
                    &cleartext(&[&pst], 0, &other),
                ),
                swapped(
                    &cleartext(&[&pst, &co], 0, &data),
                    &cleartext(&[&pst, &co], 86_400, &other),
                ),
                message(&pst, bin, 0, &data),
                message(&pst, text, 0, &data),
                message(&pst, text, 86_400, &data),
            ];
            for (i, body) in bodies.iter().enumerate() {
                let (a, b) = (ours(body), reference(body));
                assert_eq!(a, b, "body {i}, {len} octets");
                // The precheck itself ran, over the text the census kept,
                // and judged as the verifier did.
                let (seen, literal) = census(body, 1 << 20, certs, now()).unwrap();
                let literal = literal.expect("the census keeps the literal data");
                let prechecked = precheck(&seen.read, certs, literal.expose());
                assert_eq!(prechecked.is_ok(), a.is_ok(), "body {i}, {len} octets");
                verdicts.insert(format!("{:?}", a.map(|_| "good")));
            }
            // A signed message whose signature is over other data.
            let good = openpgp::PacketPile::from_bytes(&message(&pst, text, 0, &data)).unwrap();
            let bad = openpgp::PacketPile::from_bytes(&message(&pst, text, 0, &other)).unwrap();
            let mut packets: Vec<openpgp::Packet> = good.into_children().collect();
            let last = packets.len() - 1;
            packets[last] = bad.into_children().last().unwrap();
            let mut spliced = Vec::new();
            for packet in &packets {
                openpgp::serialize::Marshal::serialize(packet, &mut spliced).unwrap();
            }
            let (a, b) = (ours(&spliced), reference(&spliced));
            assert_eq!(a, b, "spliced, {len} octets");
            assert_eq!(
                a.err(),
                Some(SignatureProblem::Bad),
                "spliced, {len} octets"
            );
        }
        for expected in ["Ok(\"good\")", "Err(Bad)"] {
            assert!(verdicts.contains(expected), "{expected}: {verdicts:?}");
        }
    }

    /// A second try a year ahead hashes everything again: made only when a
    /// signature is dated ahead; a stranger's mail is refused unhashed.
    #[test]
    fn the_census_spares_the_hashing_it_can() {
        let p = policy();
        let pst = key("P <p@example.org>");
        let stranger = key("S <s@example.org>");
        let certs = &[pst.clone().strip_secret_key_material()];
        for future in [false, true] {
            let mut tries = 0;
            let r: Result<(), _> = with_lookahead(now(), future, |_| {
                tries += 1;
                Err(SignatureProblem::Bad)
            });
            assert_eq!(r, Err(SignatureProblem::Bad));
            assert_eq!(tries, if future { 2 } else { 1 });
        }
        let data = b"data\r\n";
        let sig = |who: &Cert, ahead: i64| {
            let mut out = Vec::new();
            let m = Message::new(&mut out);
            let mut s = Signer::new(m, signing_pair(who))
                .unwrap()
                .creation_time(at(now() + chrono::Duration::seconds(ahead)))
                .detached()
                .build()
                .unwrap();
            s.write_all(data).unwrap();
            s.finalize().unwrap();
            out
        };
        let seen = |s: &[u8]| census_detached(s, certs, now()).unwrap();
        assert!(seen(&sig(&pst, 0)).only_strangers().is_ok());
        assert!(!seen(&sig(&pst, 0)).future);
        assert!(!seen(&sig(&pst, CLOCK_SKEW_S)).future);
        assert!(seen(&sig(&pst, CLOCK_SKEW_S + 1)).future);
        assert_eq!(
            seen(&sig(&stranger, 0)).only_strangers(),
            Err(SignatureProblem::NotPst)
        );
        // A stranger's beside the PST's is left to the verifier.
        let both = [sig(&stranger, 0), sig(&pst, 0)].concat();
        assert!(seen(&both).only_strangers().is_ok());
        assert_eq!(
            verify_detached(&p, now(), certs, data, &sig(&stranger, 0)).err(),
            Some(SignatureProblem::NotPst)
        );
        assert!(verify_detached(&p, now(), certs, data, &both).is_err());
        assert!(verify_detached(&p, now(), certs, data, &sig(&pst, 0)).is_ok());
    }

    /// The literal-packet and all-packets limits hold too (an inline
    /// message of two literal packets; one of 65 marker packets).
    #[test]
    fn literal_and_packet_counts_are_limited_too() {
        use openpgp::packet::{Literal, Marker};
        use openpgp::serialize::Marshal;
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let certs = std::slice::from_ref(&pst);
        let armor = |packets: Vec<openpgp::Packet>| {
            let mut bin = Vec::new();
            for packet in packets {
                packet.serialize(&mut bin).unwrap();
            }
            crate::armor::armor_message(&bin)
        };
        let literal = || {
            let mut l = Literal::new(openpgp::types::DataFormat::Binary);
            l.set_body(b"x".to_vec());
            openpgp::Packet::from(l)
        };
        let two = verify_inline(
            &p,
            now(),
            certs,
            &armor(vec![literal(), literal()]),
            1 << 20,
        );
        assert!(
            matches!(&two, Err(SignatureProblem::TooMany(t)) if t.what == "literal data packets"),
            "{two:?}"
        );
        let markers = (0..=PacketLimits::PACKETS)
            .map(|_| openpgp::Packet::Marker(Marker::default()))
            .collect();
        let many = verify_inline(&p, now(), certs, &armor(markers), 1 << 20);
        assert!(
            matches!(&many, Err(SignatureProblem::TooMany(t)) if t.what == "packets"),
            "{many:?}"
        );
        // A detached signature part padded with markers: counted too
        // (each is a packet parsed), before the signature after them.
        let data = b"data\r\n";
        let mut padded = Vec::new();
        for _ in 0..PacketLimits::PACKETS {
            openpgp::Packet::Marker(Marker::default())
                .serialize(&mut padded)
                .unwrap();
        }
        padded.extend(signature_repeated(&pst, data, 1));
        let padded = verify_detached(&p, now(), certs, data, &padded);
        assert!(
            matches!(&padded, Err(SignatureProblem::TooMany(t)) if t.what == "packets"),
            "{padded:?}"
        );
    }

    /// Inside an encryption the MDC that ends the plaintext counts as a
    /// packet like any other: the PKESK, the encrypted packet, n markers
    /// and the MDC make 64 packets at n = 61 and one too many at n = 62.
    #[test]
    fn the_mdc_counts_toward_the_packet_limit() {
        use openpgp::packet::Marker;
        use openpgp::serialize::Marshal;
        let p = policy();
        let list = ListKey::from_cert(key("L <l@example.org>")).unwrap();
        let pst = key("P <p@example.org>");
        let certs = &[pst.clone().strip_secret_key_material()];
        let markers_inside = |n: usize| {
            let mut inner = Vec::new();
            for _ in 0..n {
                openpgp::Packet::Marker(Marker::default())
                    .serialize(&mut inner)
                    .unwrap();
            }
            let cert = list.cert();
            let recipients: Vec<Recipient> = cert
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .map(Into::into)
                .collect();
            let mut out = Vec::new();
            let mut m = Encryptor::for_recipients(Message::new(&mut out), recipients)
                .build()
                .unwrap();
            m.write_all(&inner).unwrap();
            m.finalize().unwrap();
            out
        };
        let too_many = |n: usize| {
            matches!(
                open_announcement(&list, &p, now(), certs, &markers_inside(n), 1 << 20),
                Err(OpenProblem::Signature(SignatureProblem::TooMany(t))) if t.what == "packets"
            )
        };
        assert_eq!(PacketLimits::PACKETS, 64);
        assert!(
            !too_many(61),
            "64 packets with the MDC are within the limit"
        );
        assert!(too_many(62), "65 packets with the MDC are over it");
    }

    /// The detached census parses as the detached verifier does: a
    /// cleartext-signature header in front does not hide the signatures
    /// from it, and nothing but signatures (no compressed data to inflate)
    /// passes. A signed message's compressed data is read at most `limit`
    /// octets.
    #[test]
    fn the_packet_census_cannot_be_sidestepped_or_inflated() {
        use openpgp::serialize::stream::Compressor;
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let certs = std::slice::from_ref(&pst);
        let data = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let many = signature_repeated(&pst, data, 2000);
        let mut armored = Vec::new();
        let mut w =
            openpgp::armor::Writer::new(&mut armored, openpgp::armor::Kind::Signature).unwrap();
        w.write_all(&many).unwrap();
        w.finalize().unwrap();
        let mut disguised =
            b"> -----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n".to_vec();
        disguised.extend_from_slice(&armored);
        assert!(matches!(
            verify_detached(&p, now(), certs, data, &disguised),
            Err(SignatureProblem::TooMany(_) | SignatureProblem::Malformed)
        ));
        // Compressed zeros where a signature belongs.
        let bomb = |size: usize| {
            let mut out = Vec::new();
            let message = Message::new(&mut out);
            let message = Compressor::new(message).build().unwrap();
            let mut w = LiteralWriter::new(message).build().unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..size >> 20 {
                w.write_all(&zeros).unwrap();
            }
            w.finalize().unwrap();
            out
        };
        let small = bomb(64 << 20);
        assert!(small.len() < 1 << 20, "{} octets", small.len());
        assert_eq!(
            verify_detached(&p, now(), certs, data, &small).unwrap_err(),
            SignatureProblem::Malformed
        );
        // A signed message whose compressed data inflates past the limit.
        assert!(matches!(
            verify_inline(&p, now(), certs, &small, 1 << 20),
            Err(SignatureProblem::TooMany(t)) if t.what.contains("octets")
        ));
    }

    #[test]
    fn pst_signature_is_accepted_and_others_are_named() {
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let other = key("Eve <eve@example.org>");
        let data = b"Content-Type: text/plain\r\n\r\nhello\r\n";
        let sig = sign_detached(&p, &pst, now(), data).unwrap();
        let ok = verify_detached(&p, now(), std::slice::from_ref(&pst), data, &sig).unwrap();
        assert_eq!(ok.cert.fingerprint(), pst.fingerprint());
        assert_eq!(ok.signature_digests.len(), 1);
        assert_eq!(
            verify_detached(&p, now(), std::slice::from_ref(&pst), b"tampered", &sig).unwrap_err(),
            SignatureProblem::Bad
        );
        let eve_sig = sign_detached(&p, &other, now(), data).unwrap();
        assert_eq!(
            verify_detached(&p, now(), std::slice::from_ref(&pst), data, &eve_sig).unwrap_err(),
            SignatureProblem::NotPst
        );
        assert_eq!(
            verify_detached(&p, now(), std::slice::from_ref(&pst), data, b"garbage").unwrap_err(),
            SignatureProblem::Malformed
        );
    }

    #[test]
    fn replay_identity_ignores_encoding_and_unhashed_subpackets() {
        use openpgp::Packet;
        use openpgp::packet::signature::subpacket::{Subpacket, SubpacketValue};
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let data = b"announcement";
        let armored = sign_detached(&p, &pst, now(), data).unwrap();
        let pile = openpgp::PacketPile::from_bytes(&armored).unwrap();
        let binary = pile.to_vec().unwrap();
        let Some(Packet::Signature(sig)) = pile.into_children().next() else {
            panic!("a signature packet")
        };
        let mut edited = sig.clone();
        edited
            .unhashed_area_mut()
            .add(
                Subpacket::new(
                    SubpacketValue::Unknown {
                        tag: openpgp::packet::signature::subpacket::SubpacketTag::Private(101),
                        body: b"new".to_vec(),
                    },
                    false,
                )
                .unwrap(),
            )
            .unwrap();
        let edited = Packet::from(edited).to_vec().unwrap();
        let doubled = [binary.clone(), binary.clone()].concat();
        let pst = std::slice::from_ref(&pst);
        let id = |sig: &[u8]| {
            verify_detached(&p, now(), pst, data, sig)
                .unwrap()
                .signature_digests
        };
        let original = id(&armored);
        assert_eq!(original.len(), 1);
        assert_eq!(id(&binary), original, "binary instead of armored");
        assert_eq!(id(&edited), original, "an edited unhashed area");
        assert_eq!(
            verify_detached(&p, now(), pst, data, &doubled).unwrap_err(),
            SignatureProblem::SameKeyTwice,
            "the same signature twice is refused before hashing"
        );
        // The 2-byte digest prefix is covered by nothing (Sequoia 2.4 accepts
        // it changed; refusing it would be safe too); flip it (a v4
        // packet with a one-octet length: header 2, fixed fields 4, areas).
        let mut flipped = binary.clone();
        assert_eq!(flipped[0], 0xc2, "new-format signature packet");
        let be16 = |b: &[u8], at: usize| usize::from(b[at]) << 8 | usize::from(b[at + 1]);
        let hashed = be16(&flipped, 2 + 4);
        let unhashed = be16(&flipped, 2 + 6 + hashed);
        flipped[2 + 8 + hashed + unhashed] ^= 0xff;
        if let Ok(v) = verify_detached(&p, now(), pst, data, &flipped) {
            assert_eq!(v.signature_digests, original, "a flipped digest prefix");
        }
        let fresh = sign_detached(&p, &pst[0], now() - chrono::Duration::seconds(1), data).unwrap();
        assert_ne!(id(&fresh), original, "a new signature is a new identity");
    }

    #[test]
    fn a_signature_with_an_expiry_is_good_until_it_expires() {
        use openpgp::packet::signature::SignatureBuilder;
        let p = policy();
        let pst = generate_key(
            "PST <pst@example.org>",
            now() - chrono::Duration::days(2),
            None,
        )
        .unwrap();
        let data = b"signed with default-sig-expire 1d";
        let sign = |created: DateTime<Utc>| {
            let pair = signing_pair(&pst);
            let template = SignatureBuilder::new(openpgp::types::SignatureType::Binary)
                .set_signature_validity_period(std::time::Duration::from_secs(86400))
                .unwrap();
            let mut sink = Vec::new();
            let mut w = Signer::with_template(Message::new(&mut sink), pair, template)
                .unwrap()
                .detached()
                .creation_time(at(created))
                .build()
                .unwrap();
            w.write_all(data).unwrap();
            w.finalize().unwrap();
            sink
        };
        let pst = std::slice::from_ref(&pst);
        let fresh = sign(now() - chrono::Duration::hours(1));
        assert!(verify_detached(&p, now(), pst, data, &fresh).is_ok());
        let expired = sign(now() - chrono::Duration::hours(25));
        assert_eq!(
            verify_detached(&p, now(), pst, data, &expired).unwrap_err(),
            SignatureProblem::Bad
        );
    }

    /// A PST message signed for someone else (Intended Recipient), which
    /// that recipient re-encrypts to the list, is not accepted; the same
    /// signature made for the list is.
    #[test]
    fn a_pst_message_meant_for_someone_else_is_refused_when_reencrypted() {
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let eve = key("Eve <eve@evil.example>");
        let list = ListKey::from_cert(key("List <list@example.org>")).unwrap();
        let signed_for = |recipient: &Cert| {
            let pair = signing_pair(&pst);
            let mut inner = Vec::new();
            let m = Signer::new(Message::new(&mut inner), pair)
                .unwrap()
                .add_intended_recipient(recipient)
                .build()
                .unwrap();
            let mut w = LiteralWriter::new(m).build().unwrap();
            w.write_all(b"Content-Type: text/plain\r\n\r\nembargoed\r\n")
                .unwrap();
            w.finalize().unwrap();
            // The signed packets, encrypted as they are to the list key.
            let vc = list.cert();
            let vc = vc.with_policy(&p, None).unwrap();
            let to: Vec<Recipient> = vc
                .keys()
                .key_flags(encryption_flags())
                .map(Into::into)
                .collect();
            let mut outer = Vec::new();
            let mut m = Encryptor::for_recipients(Message::new(&mut outer), to)
                .build()
                .unwrap();
            m.write_all(&inner).unwrap();
            m.finalize().unwrap();
            outer
        };
        let pst = std::slice::from_ref(&pst);
        let for_list = signed_for(&list.cert());
        assert!(open_announcement(&list, &p, now(), pst, &for_list, 1 << 20).is_ok());
        let for_eve = signed_for(&eve);
        assert!(matches!(
            open_announcement(&list, &p, now(), pst, &for_eve, 1 << 20),
            Err(OpenProblem::Signature(_) | OpenProblem::Failed)
        ));
    }

    #[test]
    fn signatures_dated_ahead_verify_and_report_their_time() {
        let p = policy();
        let pst = key("PST <pst@example.org>");
        let data = b"x";
        let pst = std::slice::from_ref(&pst);
        let ahead =
            sign_detached(&p, &pst[0], now() + chrono::Duration::seconds(60), data).unwrap();
        assert!(
            verify_detached(&p, now(), pst, data, &ahead).is_ok(),
            "a minute of skew"
        );
        // Far ahead still verifies (the PST is told its clock is wrong); the
        // caller refuses it by the reported time.
        let t = now() + chrono::Duration::hours(1);
        let far = sign_detached(&p, &pst[0], t, data).unwrap();
        let v = verify_detached(&p, now(), pst, data, &far).unwrap();
        assert_eq!(v.newest.timestamp(), t.timestamp());
        assert_eq!(v.oldest, v.newest);
    }

    #[test]
    fn revoked_pst_key_is_rejected() {
        let p = policy();
        let born = now() - chrono::Duration::days(2);
        let (cert, revocation) = CertBuilder::general_purpose(Some("PST <pst@example.org>"))
            .set_creation_time(at(born))
            .generate()
            .unwrap();
        let data = b"x";
        let sig = sign_detached(&p, &cert, now() - chrono::Duration::days(1), data).unwrap();
        let (revoked, _) = cert.insert_packets(Some(revocation)).unwrap();
        assert!(matches!(
            verify_detached(&p, now(), std::slice::from_ref(&revoked), data, &sig),
            Err(SignatureProblem::BadKey(..))
        ));
    }

    #[test]
    fn expired_pst_key_is_rejected_even_for_an_old_signature() {
        let p = policy();
        let created = now() - chrono::Duration::days(10);
        let pst = generate_key(
            "PST <pst@example.org>",
            created,
            Some(std::time::Duration::from_secs(86400)),
        )
        .unwrap();
        let data = b"x";
        let sig = sign_detached(&p, &pst, created + chrono::Duration::hours(1), data).unwrap();
        assert!(matches!(
            verify_detached(&p, now(), std::slice::from_ref(&pst), data, &sig),
            Err(SignatureProblem::BadKey(..))
        ));
    }

    #[test]
    fn copy_names_only_its_member_and_carries_the_list_signature() {
        let p = policy();
        let list = ListKey::from_cert(key("List <list@example.org>")).unwrap();
        let member = key("M <m@example.org>");
        let sealed = list
            .seal_for(
                &p,
                now(),
                &EncryptionKeys::of(&member, &p, now()).unwrap(),
                b"secret body",
            )
            .unwrap();
        assert!(sealed.starts_with(b"-----BEGIN PGP MESSAGE-----"));
        let opened = open_copy(&p, &member, &list.cert(), &sealed).unwrap();
        assert_eq!(opened.plaintext.expose(), b"secret body");
        assert_eq!(opened.signer, Some(list.fingerprint()));
        let enc_keys: Vec<KeyHandle> = member
            .keys()
            .subkeys()
            .map(|k| KeyHandle::from(k.key().keyid()))
            .collect();
        assert_eq!(opened.recipients.len(), 1);
        assert!(enc_keys.iter().any(|h| h.aliases(&opened.recipients[0])));
    }

    #[test]
    fn expired_member_cannot_be_sealed_for() {
        let p = policy();
        let t = now() - chrono::Duration::days(10);
        let member = generate_key(
            "M <m@example.org>",
            t,
            Some(std::time::Duration::from_secs(86400)),
        )
        .unwrap();
        match EncryptionKeys::of(&member, &p, now()) {
            Err(why) => assert!(why.contains("not alive"), "{why}"),
            Ok(keys) => panic!("expected a recipient error, got {keys:?}"),
        }
    }

    /// HMAC-SHA256 as RFC 4231 computes it (test cases 1, 2 and 6: a
    /// short key, a text key, a key longer than the block).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let hi = hmac_sha256_hex(&[0x0b; 20], b"Hi There").unwrap();
        assert_eq!(
            hi,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let jefe = hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            jefe,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long = hmac_sha256_hex(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        )
        .unwrap();
        assert_eq!(
            long,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn spool_sealing_round_trips() {
        let p = policy();
        let list =
            ListKey::from_cert(generate_key("List <list@example.org>", now(), None).unwrap())
                .unwrap();
        let sealed = list.seal_to_self(&p, b"CANARY").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"CANARY"));
        assert_eq!(
            list.open_from_self(&p, &sealed).unwrap().expose(),
            b"CANARY"
        );
    }
}
