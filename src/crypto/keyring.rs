//! Certificates found by the keys a signature names: the census and the
//! verifier look a signature's issuers up in an index of key IDs, so what
//! a mail costs does not grow with the roster (a scan of every member's
//! keys per signature cost a junk mail 2 ms at 3,000 members).

use std::collections::HashMap;
use std::sync::Arc;

use sequoia_openpgp::{Cert, Fingerprint, KeyHandle, KeyID};

use super::KeptCert;

/// Certificates, and where each of their keys is, by key ID. The PST's
/// are held parsed (every announcement is checked against them); the
/// other members' are kept serialized ([`KeptCert`]) and parsed when a
/// signature names one of their keys.
/// The most certificates [`Keyring::naming`] gives for one look-up. A
/// signature names its one key (by key ID, fingerprint, or both); anyone
/// can list thousands of key IDs in a signature's unhashed area, and each
/// kept certificate named costs a parse (about 100 µs). The PST's come
/// first, so a PST signature is found whatever else it names.
pub(super) const MOST_NAMED: usize = 8;

#[derive(Debug, Default, Clone)]
pub struct Keyring {
    certs: Vec<Entry>,
    /// Key ID → (certificate, the key's fingerprint).
    by_id: HashMap<KeyID, Vec<(usize, Fingerprint)>>,
}

#[derive(Debug, Clone)]
enum Entry {
    Parsed(Arc<Cert>),
    Kept(KeptCert),
}

impl Keyring {
    pub fn new(certs: Vec<Arc<Cert>>) -> Keyring {
        Keyring::with_kept(certs, Vec::new())
    }

    /// The certificates `parsed`, then `kept`.
    pub fn with_kept(parsed: Vec<Arc<Cert>>, kept: Vec<KeptCert>) -> Keyring {
        let mut ring = Keyring::default();
        for cert in parsed {
            let keys: Vec<_> = cert.keys().map(|k| k.key().fingerprint()).collect();
            ring.add(Entry::Parsed(cert), keys);
        }
        for cert in kept {
            let keys = cert.key_fingerprints().to_vec();
            ring.add(Entry::Kept(cert), keys);
        }
        ring
    }

    fn add(&mut self, entry: Entry, keys: Vec<Fingerprint>) {
        let i = self.certs.len();
        self.certs.push(entry);
        for key in keys {
            let at = self.by_id.entry(KeyID::from(&key)).or_default();
            if !at.iter().any(|(j, f)| *j == i && *f == key) {
                at.push((i, key));
            }
        }
    }

    /// The positions of the certificates with a key that one of
    /// `issuers` names (by key ID or fingerprint), each once, in order.
    fn positions(&self, issuers: &[KeyHandle]) -> Vec<usize> {
        let mut found: Vec<usize> = issuers
            .iter()
            .filter_map(|issuer| {
                let at = self.by_id.get(&KeyID::from(issuer.clone()))?;
                Some(
                    at.iter()
                        .filter(move |(_, key)| KeyHandle::from(key).aliases(issuer))
                        .map(|(i, _)| *i),
                )
            })
            .flatten()
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Whether a key of one of the certificates is named by `issuers`
    /// (nothing is parsed).
    pub fn names_any(&self, issuers: &[KeyHandle]) -> bool {
        !self.positions(issuers).is_empty()
    }

    /// The certificates with a key that one of `issuers` names (by key ID
    /// or fingerprint), each once, in the order given, at most
    /// [`MOST_NAMED`]; a kept one is parsed now (one that no longer parses
    /// is left out).
    pub fn naming(&self, issuers: &[KeyHandle]) -> Vec<Arc<Cert>> {
        self.positions(issuers)
            .into_iter()
            .take(MOST_NAMED)
            .filter_map(|i| match &self.certs[i] {
                Entry::Parsed(cert) => Some(cert.clone()),
                Entry::Kept(kept) => kept.cert().ok().map(Arc::new),
            })
            .collect()
    }

    /// Every certificate's fingerprint, in order.
    pub fn fingerprints(&self) -> impl Iterator<Item = Fingerprint> + '_ {
        self.certs.iter().map(|e| match e {
            Entry::Parsed(cert) => cert.fingerprint(),
            Entry::Kept(kept) => kept.fingerprint().clone(),
        })
    }
}

impl From<Vec<Arc<Cert>>> for Keyring {
    fn from(certs: Vec<Arc<Cert>>) -> Keyring {
        Keyring::new(certs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is found by its key ID and by its fingerprint, subkeys too,
    /// each certificate once, parsed or kept; a stranger's is not found.
    /// Members 0 and 1 are held parsed, the others kept.
    #[test]
    fn keys_are_found_by_id_and_fingerprint() {
        let now =
            crate::clock::Clock::now(&crate::clock::SystemClock) - chrono::Duration::minutes(1);
        let certs: Vec<Arc<Cert>> = (0..5)
            .map(|i| {
                Arc::new(
                    crate::crypto::generate_key(&format!("M{i} <m{i}@x.org>"), now, None).unwrap(),
                )
            })
            .collect();
        let stranger = crate::crypto::generate_key("S <s@x.org>", now, None).unwrap();
        let ring = Keyring::with_kept(
            certs[..2].to_vec(),
            certs[2..]
                .iter()
                .map(|c| KeptCert::new(c).unwrap())
                .collect(),
        );
        let public = |c: &Arc<Cert>| Cert::clone(c).strip_secret_key_material();
        for (i, cert) in certs.iter().enumerate() {
            for key in cert.keys() {
                let by_fpr = [KeyHandle::from(key.key().fingerprint())];
                let by_id = [KeyHandle::from(key.key().keyid())];
                for handles in [
                    &by_fpr[..],
                    &by_id[..],
                    &[by_fpr[0].clone(), by_id[0].clone()][..],
                ] {
                    let found = ring.naming(handles);
                    assert_eq!(found.len(), 1, "member {i}");
                    assert!(ring.names_any(handles), "member {i}");
                    assert_eq!(public(&found[0]), public(cert), "member {i}");
                    assert_eq!(i < 2, Arc::ptr_eq(&found[0], cert), "member {i}");
                }
            }
        }
        let two = [
            KeyHandle::from(certs[3].fingerprint()),
            KeyHandle::from(certs[1].keyid()),
        ];
        let found = ring.naming(&two);
        assert_eq!(found.len(), 2);
        assert!(Arc::ptr_eq(&found[0], &certs[1]));
        assert_eq!(public(&found[1]), public(&certs[3]));
        for key in stranger.keys() {
            let by_id = [KeyHandle::from(key.key().keyid())];
            assert!(ring.naming(&by_id).is_empty() && !ring.names_any(&by_id));
        }
        let fingerprints: Vec<_> = ring.fingerprints().collect();
        let expected: Vec<_> = certs.iter().map(|c| c.fingerprint()).collect();
        assert_eq!(fingerprints, expected);
    }

    /// A look-up naming every key of a big roster parses at most
    /// `MOST_NAMED` certificates, the parsed (PST) ones first.
    #[test]
    fn a_signature_naming_everyone_costs_a_few_parses() {
        let now =
            crate::clock::Clock::now(&crate::clock::SystemClock) - chrono::Duration::minutes(1);
        let certs: Vec<Arc<Cert>> = (0..MOST_NAMED + 6)
            .map(|i| {
                Arc::new(
                    crate::crypto::generate_key(&format!("M{i} <m{i}@x.org>"), now, None).unwrap(),
                )
            })
            .collect();
        let ring = Keyring::with_kept(
            certs[..1].to_vec(),
            certs[1..]
                .iter()
                .map(|c| KeptCert::new(c).unwrap())
                .collect(),
        );
        // Named in reverse: the PST's key last.
        let everyone: Vec<KeyHandle> = certs
            .iter()
            .rev()
            .map(|c| KeyHandle::from(c.keyid()))
            .collect();
        let found = ring.naming(&everyone);
        assert_eq!(found.len(), MOST_NAMED);
        assert!(Arc::ptr_eq(&found[0], &certs[0]), "the PST's first");
        assert!(ring.names_any(&everyone));
    }
}
