//! A member's certificate kept as its packets: a parsed Sequoia `Cert` takes
//! about 16 KB, its serialized form about 1.2 KB, so a roster of thousands
//! holds the bytes and parses one only when it is asked something new
//! (about 100 µs). What every copy asks, the keys it is encrypted to, is
//! derived once and kept until the next moment the answer could change.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::parse::Parse;
use openpgp::serialize::Marshal;
use openpgp::types::Features;
use openpgp::{Cert, Fingerprint, KeyID};
use sequoia_openpgp as openpgp;

/// The keys a copy to one certificate is encrypted to, as the list's
/// policy judges them at one moment, and until when it can receive.
#[derive(Debug, Clone)]
pub struct EncryptionKeys {
    /// The certificate's advertised features (SEIPDv1 or v2).
    pub features: Features,
    /// Its usable encryption keys: alive, not revoked, supported.
    pub keys: Vec<Key<PublicParts, UnspecifiedRole>>,
    /// Its primary key's version (a v6 key takes a copy of its own).
    pub version: u8,
    /// When it stops being able to receive, if it will.
    pub until: Option<DateTime<Utc>>,
}

impl EncryptionKeys {
    /// `cert`'s encryption keys under `p` at `now`, or why it cannot
    /// receive (see [`super::usable_for_encryption`]).
    pub fn of(
        cert: &Cert,
        p: &dyn openpgp::policy::Policy,
        now: DateTime<Utc>,
    ) -> Result<EncryptionKeys, String> {
        use openpgp::cert::Preferences;
        let vc = super::usable_for_encryption(cert, p, now)?;
        let valid: Vec<_> = vc
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .key_flags(super::encryption_flags())
            .collect();
        Ok(EncryptionKeys {
            features: vc.features().unwrap_or_else(Features::empty),
            until: super::capability_ends(&vc, &valid),
            keys: valid
                .iter()
                .map(|ka| ka.key().clone().role_into_unspecified())
                .collect(),
            version: cert.primary_key().key().version(),
        })
    }

    /// The recipients to hand Sequoia's `Encryptor`, named as
    /// `Recipient::from` a key amalgamation names them: by fingerprint
    /// when the certificate reads SEIPDv2, else by key ID.
    pub fn recipients(&self) -> Vec<openpgp::serialize::stream::Recipient<'_>> {
        self.keys
            .iter()
            .map(|key| {
                let handle: openpgp::KeyHandle = if self.features.supports_seipdv2() {
                    key.fingerprint().into()
                } else {
                    key.keyid().into()
                };
                openpgp::serialize::stream::Recipient::new(self.features.clone(), handle, key)
            })
            .collect()
    }
}

/// A certificate kept serialized, with its fingerprint and key IDs.
/// Clones share it (and what was derived from it).
#[derive(Clone)]
pub struct KeptCert(Arc<Kept>);

struct Kept {
    packets: Box<[u8]>,
    fingerprint: Fingerprint,
    /// Every key's fingerprint (primary first): what a signature's issuer
    /// is matched against without parsing.
    keys: Box<[Fingerprint]>,
    /// The last [`EncryptionKeys`] derived, under [`super::policy`].
    derived: Mutex<Option<Derived>>,
    /// When the key check (`keycheck::member_issues`) last found nothing
    /// wrong with the certificate, for which role (PST or not), and until
    /// when that answer holds: the status API asks it of every member.
    fine: Mutex<Option<Fine>>,
}

/// From, until (exclusive), and whether for a PST member.
type Fine = (DateTime<Utc>, DateTime<Utc>, bool);

/// An answer and the times it holds for: from `from` until just before
/// `until`, no key, signature or expiry of the certificate changes state.
struct Derived {
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    keys: Result<Arc<EncryptionKeys>, String>,
}

/// A derived answer is taken again at least this often, whatever the
/// certificate says: the policy's algorithm cut-offs are dates too.
const REDERIVE_AT_LEAST_EVERY: chrono::Duration = chrono::Duration::days(1);

impl std::fmt::Debug for KeptCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeptCert({}, {} octets)",
            self.0.fingerprint,
            self.0.packets.len()
        )
    }
}

impl KeptCert {
    /// Keeps `cert`'s public parts (secret key material is never kept).
    pub fn new(cert: &Cert) -> anyhow::Result<KeptCert> {
        let mut packets = Vec::new();
        cert.serialize(&mut packets)?;
        Ok(KeptCert(Arc::new(Kept {
            packets: packets.into_boxed_slice(),
            fingerprint: cert.fingerprint(),
            keys: cert.keys().map(|k| k.key().fingerprint()).collect(),
            derived: Mutex::new(None),
            fine: Mutex::new(None),
        })))
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.0.fingerprint
    }

    /// Every key's fingerprint, the primary's first.
    pub fn key_fingerprints(&self) -> &[Fingerprint] {
        &self.0.keys
    }

    /// Every key's key ID.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyID> + '_ {
        self.0.keys.iter().map(KeyID::from)
    }

    /// The certificate, parsed now.
    pub fn cert(&self) -> anyhow::Result<Cert> {
        Cert::from_bytes(&self.0.packets[..])
    }

    /// Whether the key check found nothing wrong for this role at a time
    /// whose answer holds at `now` (see [`KeptCert::found_fine`]).
    pub(crate) fn fine_at(&self, now: DateTime<Utc>, pst: bool) -> bool {
        let fine = self
            .0
            .fine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(*fine, Some((from, until, role)) if role == pst && from <= now && now < until)
    }

    /// The key check found nothing wrong with `cert` (this certificate,
    /// parsed) at `now` for this role, and nothing will be until `warn_from`
    /// (when an expiry comes within the warning period), if then: kept
    /// until that, or the certificate's next change, or a day.
    pub(crate) fn found_fine(
        &self,
        cert: &Cert,
        now: DateTime<Utc>,
        warn_from: Option<DateTime<Utc>>,
        pst: bool,
    ) {
        let until = next_change(cert, now)
            .min(now + REDERIVE_AT_LEAST_EVERY)
            .min(warn_from.unwrap_or(DateTime::<Utc>::MAX_UTC));
        *self
            .0
            .fine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now, until, pst));
    }

    /// The keys a copy made at `now` is encrypted to, under the list's
    /// policy, or why the certificate cannot receive; parsed and judged
    /// only when `now` is outside the times the last answer holds for.
    pub fn encryption_keys(&self, now: DateTime<Utc>) -> Result<Arc<EncryptionKeys>, String> {
        let mut derived = self
            .0
            .derived
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = derived.as_ref().filter(|d| d.from <= now && now < d.until) {
            return d.keys.clone();
        }
        let cert = self
            .cert()
            .map_err(|e| format!("certificate {} unreadable: {e}", self.0.fingerprint))?;
        let keys = EncryptionKeys::of(&cert, &super::policy(), now).map(Arc::new);
        *derived = Some(Derived {
            from: now,
            until: next_change(&cert, now).min(now + REDERIVE_AT_LEAST_EVERY),
            keys: keys.clone(),
        });
        keys
    }
}

/// The first moment after `now` at which a key of `cert` is created or
/// expires, or a signature on it is made or expires (or becomes usable
/// within the clock skew Sequoia tolerates): the validity of its keys
/// can change only at such a moment. Far in the future when there is none.
fn next_change(cert: &Cert, now: DateTime<Utc>) -> DateTime<Utc> {
    const SKEW: Duration = Duration::from_secs(30 * 60);
    fn note(
        times: &mut Vec<Option<SystemTime>>,
        sig: &openpgp::packet::Signature,
        born: [SystemTime; 2],
    ) {
        let made = sig.signature_creation_time();
        times.extend([
            made,
            made.and_then(|m| m.checked_sub(SKEW)),
            sig.signature_expiration_time(),
        ]);
        if let Some(v) = sig.key_validity_period() {
            times.extend(born.map(|b| b.checked_add(v)));
        }
        for inner in sig.embedded_signatures() {
            times.extend([
                inner.signature_creation_time(),
                inner.signature_expiration_time(),
            ]);
        }
    }
    let primary = cert.primary_key().key().creation_time();
    let mut times = Vec::new();
    for ka in cert.keys() {
        let born = ka.key().creation_time();
        times.push(Some(born));
        for sig in ka.signatures() {
            note(&mut times, sig, [born, primary]);
        }
    }
    for ua in cert.userids() {
        for sig in ua.signatures() {
            note(&mut times, sig, [primary, primary]);
        }
    }
    for ua in cert.user_attributes() {
        for sig in ua.signatures() {
            note(&mut times, sig, [primary, primary]);
        }
    }
    let now = SystemTime::from(now);
    times
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
        .map_or(DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::generate_key;
    use openpgp::cert::CertBuilder;
    use openpgp::types::ReasonForRevocation;

    fn keys_of(r: &Result<Arc<EncryptionKeys>, String>) -> Result<Vec<Fingerprint>, ()> {
        r.as_ref()
            .map(|k| k.keys.iter().map(Key::fingerprint).collect())
            .map_err(|_| ())
    }

    /// Certificates whose keys change state at many moments: made in the
    /// future, expiring, a subkey that expires before the primary, a
    /// second encryption subkey born later, a revoked subkey.
    fn changing_certs(t0: DateTime<Utc>) -> Vec<(&'static str, Cert)> {
        let day = chrono::Duration::days(1);
        let hour = chrono::Duration::hours(1);
        let p = crate::crypto::policy();
        let mut out = vec![
            (
                "expires in 10 days",
                generate_key(
                    "A <a@x.org>",
                    t0 - day,
                    Some(Duration::from_secs(10 * 86400)),
                )
                .unwrap(),
            ),
            (
                "never expires",
                generate_key("B <b@x.org>", t0 - day, None).unwrap(),
            ),
            (
                "born in 3 hours",
                generate_key(
                    "C <c@x.org>",
                    t0 + hour * 3,
                    Some(Duration::from_secs(2 * 86400)),
                )
                .unwrap(),
            ),
        ];
        let (two, _) = CertBuilder::new()
            .add_userid("D <d@x.org>")
            .set_creation_time(SystemTime::from(t0 - day))
            .add_subkey(
                openpgp::types::KeyFlags::empty().set_transport_encryption(),
                Duration::from_secs(3 * 86400),
                None,
            )
            .add_subkey(
                openpgp::types::KeyFlags::empty().set_storage_encryption(),
                Duration::from_secs(7 * 86400),
                None,
            )
            .generate()
            .unwrap();
        out.push(("two subkeys, expiring apart", two));
        let (revoked, _) = CertBuilder::new()
            .add_userid("E <e@x.org>")
            .set_creation_time(SystemTime::from(t0 - day))
            .add_transport_encryption_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let mut signer = revoked
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let sub = revoked.keys().subkeys().next().unwrap().key().clone();
        let rev = openpgp::cert::SubkeyRevocationBuilder::new()
            .set_reason_for_revocation(ReasonForRevocation::KeySuperseded, b"")
            .unwrap()
            .set_signature_creation_time(SystemTime::from(t0 + hour * 5))
            .unwrap()
            .build(&mut signer, &revoked, &sub, None)
            .unwrap();
        let (revoked, _) = revoked.insert_packets(rev).unwrap();
        assert!(revoked.with_policy(&p, None).is_ok());
        out.push(("a subkey revoked in 5 hours", revoked));
        out
    }

    /// For every certificate, at moments around each change (and before
    /// and after the times an answer holds for, the clock going back
    /// too), the kept answer is the one derived from scratch.
    #[test]
    fn the_kept_answer_is_the_fresh_one_at_every_moment() {
        let t0 = crate::clock::Clock::now(&crate::clock::SystemClock);
        let p = crate::crypto::policy();
        let minute = chrono::Duration::minutes(1);
        let mut moments: Vec<DateTime<Utc>> = (0..14 * 24)
            .map(|h| t0 - chrono::Duration::hours(2) + chrono::Duration::hours(h))
            .collect();
        for (_, cert) in changing_certs(t0) {
            let mut t = t0 - chrono::Duration::days(2);
            for _ in 0..40 {
                let n = next_change(&cert, t);
                if n == DateTime::<Utc>::MAX_UTC {
                    break;
                }
                moments.extend([n - minute, n, n + minute]);
                t = n;
            }
        }
        let forwards = moments.clone();
        moments.extend(forwards.iter().rev());
        for (what, cert) in changing_certs(t0) {
            let kept = KeptCert::new(&cert).unwrap();
            let mut changes = 0;
            let mut last = None;
            for &now in &moments {
                let fresh = EncryptionKeys::of(&cert, &p, now).map(Arc::new);
                let got = kept.encryption_keys(now);
                assert_eq!(keys_of(&got), keys_of(&fresh), "{what} at {now}");
                assert_eq!(
                    got.as_ref().ok().map(|k| k.until),
                    fresh.as_ref().ok().map(|k| k.until),
                    "{what} at {now}"
                );
                if last.as_ref() != Some(&keys_of(&fresh)) {
                    changes += 1;
                    last = Some(keys_of(&fresh));
                }
            }
            assert!(changes > 1 || what == "never expires", "{what}: {changes}");
        }
    }

    /// The kept form is the public certificate: no secret key material,
    /// the same fingerprint and keys when parsed again.
    #[test]
    fn the_kept_form_is_the_public_certificate() {
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let tsk = generate_key("F <f@x.org>", now, None).unwrap();
        assert!(tsk.is_tsk());
        let kept = KeptCert::new(&tsk).unwrap();
        let back = kept.cert().unwrap();
        assert!(!back.is_tsk());
        assert_eq!(back, tsk.clone().strip_secret_key_material());
        assert_eq!(kept.fingerprint(), &tsk.fingerprint());
        let keys: Vec<_> = tsk.keys().map(|k| k.key().fingerprint()).collect();
        assert_eq!(kept.key_fingerprints(), &keys[..]);
    }
}
