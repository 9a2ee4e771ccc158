//! Certificates found by the keys a signature names: the census and the
//! verifier look a signature's issuers up in an index of key IDs, so what
//! a mail costs does not grow with the roster (a scan of every member's
//! keys per signature cost a junk mail 2 ms at 3,000 members).

use std::collections::HashMap;
use std::sync::Arc;

use sequoia_openpgp::{Cert, KeyHandle, KeyID};

/// Certificates, and where each of their keys is, by key ID.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    certs: Vec<Arc<Cert>>,
    by_id: HashMap<KeyID, Vec<usize>>,
}

impl Keyring {
    pub fn new(certs: Vec<Arc<Cert>>) -> Keyring {
        let mut by_id: HashMap<KeyID, Vec<usize>> = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for key in cert.keys() {
                let at = by_id.entry(key.key().keyid()).or_default();
                if !at.contains(&i) {
                    at.push(i);
                }
            }
        }
        Keyring { certs, by_id }
    }

    /// Every certificate, in the order given.
    pub fn certs(&self) -> &[Arc<Cert>] {
        &self.certs
    }

    /// The certificates with a key that one of `issuers` names (by key ID
    /// or fingerprint), each once, in the order given.
    pub fn naming(&self, issuers: &[KeyHandle]) -> Vec<&Arc<Cert>> {
        let mut found: Vec<usize> = issuers
            .iter()
            .filter_map(|issuer| self.by_id.get(&KeyID::from(issuer.clone())))
            .flatten()
            .copied()
            .collect();
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .map(|i| &self.certs[i])
            .filter(|cert| {
                cert.keys()
                    .any(|k| issuers.iter().any(|i| k.key().key_handle().aliases(i)))
            })
            .collect()
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
    /// each certificate once; a stranger's is not found.
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
        let ring = Keyring::new(certs.clone());
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
                    assert!(Arc::ptr_eq(found[0], cert), "member {i}");
                }
            }
        }
        let two = [
            KeyHandle::from(certs[3].fingerprint()),
            KeyHandle::from(certs[1].keyid()),
        ];
        let found = ring.naming(&two);
        assert!(Arc::ptr_eq(found[0], &certs[1]) && Arc::ptr_eq(found[1], &certs[3]));
        for key in stranger.keys() {
            assert!(
                ring.naming(&[KeyHandle::from(key.key().keyid())])
                    .is_empty()
            );
        }
    }
}
