//! Sealing with the list key: what the spool keeps (to the list itself), a
//! member's copy (one shared, signed ciphertext per announcement and a PKESK
//! per member), detached signatures by the list.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use openpgp::crypto::{KeyPair, SessionKey};
use openpgp::packet::pkesk::PKESK3;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::policy::Policy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient, Signer};
use openpgp::types::{HashAlgorithm, SymmetricAlgorithm};
use openpgp::{Cert, Fingerprint, KeyHandle};
use sequoia_openpgp as openpgp;

use crate::secret::Secret;

use super::{EncryptionKeys, ListKey, SealError, at, encryption_flags};

/// Writes `plaintext` as literal data signed by `signer` into `message`
/// (inside whatever encryption it already has) and finishes it.
pub(super) fn signed_literal(
    message: Message<'_>,
    signer: KeyPair,
    now: DateTime<Utc>,
    plaintext: &[u8],
) -> Result<(), SealError> {
    let crypto = |e: anyhow::Error| SealError::Crypto(e.to_string());
    let message = Signer::new(message, signer)
        .map_err(crypto)?
        .creation_time(at(now))
        .build()
        .map_err(crypto)?;
    let mut w = LiteralWriter::new(message).build().map_err(crypto)?;
    w.write_all(plaintext)
        .map_err(|e| SealError::Crypto(e.to_string()))?;
    w.finalize().map_err(crypto)
}

/// One announcement signed by the list key and encrypted once, under a
/// fresh session key that never serves another announcement: each member's
/// copy is its own PKESK (to that member's key alone) before this same
/// ciphertext. The design note "one session key, one PKESK per member":
/// ~11× less work than encrypting each copy separately at 1 MB.
pub struct SharedSeal {
    algo: SymmetricAlgorithm,
    session_key: SessionKey,
    /// The SEIPDv1 packet (signed literal data inside), serialized.
    ciphertext: Vec<u8>,
    /// The ciphertext's part of each copy's armor checksum, computed once.
    crc: crate::armor::Suffix,
    /// The ciphertext's armor lines after the line a copy's PKESK shares
    /// with it, by where that line ends (the PKESK's length modulo a
    /// line): armored once for all copies whose PKESKs are that long, and
    /// sent from here, not copied into each.
    lines: [OnceLock<Arc<Vec<u8>>>; 48],
}

/// How many armorings of one announcement's ciphertext are kept (one per
/// PKESK length modulo a line: one for all X25519 members, one or two per
/// RSA key size); copies of other lengths are armored whole, each its own.
const KEPT_LINES: usize = 4;

/// One member's copy of a [`SharedSeal`], armored: its own head (the armor
/// header, its PKESK's lines) and trailer (the checksum line), around the
/// armor lines it shares with every copy whose PKESK is as long.
#[derive(Debug, Clone)]
pub struct ArmoredCopy {
    pub head: Vec<u8>,
    pub shared: Arc<Vec<u8>>,
    pub tail: Vec<u8>,
}

impl ArmoredCopy {
    /// An armored message made whole elsewhere (Sequoia's), in `head`.
    pub fn whole(armored: Vec<u8>) -> ArmoredCopy {
        ArmoredCopy {
            head: armored,
            shared: Arc::default(),
            tail: Vec::new(),
        }
    }

    /// The whole armored message in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.shared, &self.tail].concat()
    }
}

impl std::fmt::Debug for SharedSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SharedSeal({} octets, session key redacted)",
            self.ciphertext.len()
        )
    }
}

impl ListKey {
    /// Signs spool contents with the list key and encrypts them to its own
    /// encryption keys (binary), so the spool can be neither read nor forged
    /// without the list's secret key.
    pub fn seal_to_self(&self, p: &dyn Policy, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let vc = self.tsk.with_policy(p, None)?;
        let recipients: Vec<Recipient> = vc
            .keys()
            .supported()
            .key_flags(encryption_flags())
            .map(Into::into)
            .collect();
        if recipients.is_empty() {
            anyhow::bail!("list key has no encryption subkey");
        }
        let signer = self.signing_keypair(p, None)?;
        let mut sink = Vec::with_capacity(plaintext.len() + 512);
        let message = Message::new(&mut sink);
        let message = Encryptor::for_recipients(message, recipients).build()?;
        let message = Signer::new(message, signer)?.build()?;
        let mut w = LiteralWriter::new(message).build()?;
        w.write_all(plaintext)?;
        w.finalize()?;
        Ok(sink)
    }

    /// Decrypts what [`ListKey::seal_to_self`] made; fails unless the list
    /// key's signature inside is good.
    pub fn open_from_self(&self, p: &dyn Policy, ciphertext: &[u8]) -> anyhow::Result<Secret> {
        let helper = Opener {
            keypairs: self.decryption_keypairs(p),
            verify_with: Some(self.cert()),
            recipients: Vec::new(),
            signer: None,
        };
        let mut d = DecryptorBuilder::from_bytes(ciphertext)?.with_policy(p, None, helper)?;
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        Ok(Secret::new(out))
    }

    /// Signs `plaintext` with the list key and encrypts it to `recipient`
    /// alone, ASCII-armored, honouring the recipient's advertised features
    /// (SEIPDv1 for GnuPG 2.2-era certificates).
    pub fn seal_for(
        &self,
        p: &dyn Policy,
        now: DateTime<Utc>,
        recipient: &EncryptionKeys,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let recipients = recipient.recipients();
        if recipients.is_empty() {
            return Err(SealError::Recipient("no usable encryption key".to_owned()));
        }
        let signer = self
            .signing_keypair(p, Some(at(now)))
            .map_err(|e| SealError::Crypto(format!("list key {e}")))?;
        let mut sink = Vec::with_capacity(plaintext.len() * 4 / 3 + 1024);
        let crypto = |e: anyhow::Error| SealError::Crypto(e.to_string());
        let message = Message::new(&mut sink);
        let message = Armorer::new(message).build().map_err(crypto)?;
        let message = Encryptor::for_recipients(message, recipients)
            .build()
            .map_err(crypto)?;
        signed_literal(message, signer, now, plaintext)?;
        Ok(sink)
    }

    /// Signs `plaintext` and encrypts it once under a fresh session key
    /// (SEIPDv1, which every client reads), for [`ListKey::seal_to_member`].
    pub fn seal_shared(
        &self,
        p: &dyn Policy,
        now: DateTime<Utc>,
        plaintext: &[u8],
    ) -> Result<SharedSeal, SealError> {
        let crypto = |e: anyhow::Error| SealError::Crypto(e.to_string());
        let algo = SymmetricAlgorithm::AES256;
        let session_key = SessionKey::new(algo.key_size().map_err(crypto)?).map_err(crypto)?;
        let signer = self
            .signing_keypair(p, Some(at(now)))
            .map_err(|e| SealError::Crypto(format!("list key {e}")))?;
        let mut ciphertext = Vec::with_capacity(plaintext.len() + 1024);
        let message = Message::new(&mut ciphertext);
        // No recipients: only the SEIPD packet; the PKESKs come per member.
        let message = Encryptor::with_session_key(message, algo, session_key.clone())
            .map_err(crypto)?
            .build()
            .map_err(crypto)?;
        signed_literal(message, signer, now, plaintext)?;
        let crc = crate::armor::Crc24::of_suffix(&ciphertext);
        Ok(SharedSeal {
            algo,
            session_key,
            ciphertext,
            crc,
            lines: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// One member's copy of a [`SharedSeal`]: a PKESK to each of the
    /// member's usable encryption keys (and no one else's), then the shared
    /// ciphertext, ASCII-armored with the CRC-24 line that GnuPG 2.2 and
    /// RNP 0.16 need (see `armor`).
    pub fn seal_to_member(
        &self,
        recipient: &EncryptionKeys,
        shared: &SharedSeal,
    ) -> Result<ArmoredCopy, SealError> {
        use openpgp::serialize::Marshal;
        let crypto = |e: anyhow::Error| SealError::Crypto(e.to_string());
        let mut pkesks = Vec::new();
        let mut any = false;
        for key in &recipient.keys {
            let pkesk =
                PKESK3::for_recipient(shared.algo, &shared.session_key, key).map_err(crypto)?;
            openpgp::Packet::from(openpgp::packet::PKESK::from(pkesk))
                .serialize(&mut pkesks)
                .map_err(crypto)?;
            any = true;
        }
        if !any {
            return Err(SealError::Recipient("no usable encryption key".to_owned()));
        }
        let crc = crate::armor::Crc24::combine(&pkesks, &shared.crc);
        let ciphertext = &shared.ciphertext;
        let from = crate::armor::aligned_from(pkesks.len(), ciphertext.len());
        let mut head = crate::armor::armor_head(&pkesks, ciphertext);
        let slot = &shared.lines[pkesks.len() % shared.lines.len()];
        let kept = shared.lines.iter().filter(|l| l.get().is_some()).count();
        let lines = if slot.get().is_some() || kept < KEPT_LINES {
            slot.get_or_init(|| Arc::new(crate::armor::armor_lines(&ciphertext[from..])))
                .clone()
        } else {
            // A roster of many PKESK lengths (RSA keys of many sizes) does
            // not keep a copy of the armor for each: this one is its own.
            head.extend_from_slice(&crate::armor::armor_lines(&ciphertext[from..]));
            Arc::default()
        };
        Ok(ArmoredCopy {
            head,
            shared: lines,
            tail: crate::armor::armor_trailer(crc),
        })
    }

    /// An armored detached signature by the list key (SHA-512, as the
    /// `micalg=pgp-sha512` of the public release says).
    pub fn sign_detached(
        &self,
        p: &dyn Policy,
        now: DateTime<Utc>,
        data: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let signer = self.signing_keypair(p, Some(at(now)))?;
        let mut sink = Vec::new();
        let message = Message::new(&mut sink);
        let message = Armorer::new(message)
            .kind(openpgp::armor::Kind::Signature)
            .build()?;
        let mut w = Signer::new(message, signer)?
            .hash_algo(HashAlgorithm::SHA512)?
            .detached()
            .creation_time(at(now))
            .build()?;
        w.write_all(data)?;
        w.finalize()?;
        Ok(sink)
    }
}

pub(super) struct Opener {
    pub(super) keypairs: Vec<KeyPair>,
    /// A good signature by this certificate is required.
    pub(super) verify_with: Option<Cert>,
    pub(super) recipients: Vec<KeyHandle>,
    pub(super) signer: Option<Fingerprint>,
}

impl VerificationHelper for Opener {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.verify_with.iter().cloned().collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        if self.verify_with.is_none() {
            return Ok(());
        }
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in results {
                    let good = r.map_err(|e| anyhow::anyhow!("bad signature: {e}"))?;
                    self.signer = Some(good.ka.cert().fingerprint());
                }
            }
        }
        match self.signer {
            Some(_) => Ok(()),
            None => Err(anyhow::anyhow!("no signature by the expected key")),
        }
    }
}

impl DecryptionHelper for Opener {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        self.recipients = pkesks.iter().filter_map(|p| p.recipient()).collect();
        for pkesk in pkesks {
            for pair in &mut self.keypairs {
                if let Some((algo, sk)) = pkesk.decrypt(pair, sym_algo)
                    && decrypt(algo, &sk)
                {
                    return Ok(None);
                }
            }
        }
        Err(anyhow::anyhow!(
            "no secret key for any recipient of this message"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_key, open_copy, policy};

    /// Copies share their armor lines by PKESK length; once as many
    /// armorings as are kept exist, a copy of another length carries its
    /// own, and either way it opens for its member.
    #[test]
    fn armorings_kept_are_bounded_and_every_copy_opens() {
        let p = policy();
        let now =
            crate::clock::Clock::now(&crate::clock::SystemClock) - chrono::Duration::minutes(1);
        let list =
            ListKey::from_cert(generate_key("L <l@example.org>", now, None).unwrap()).unwrap();
        let member = generate_key("M <m@example.org>", now, None).unwrap();
        let public = member.clone().strip_secret_key_material();
        let text = vec![b'x'; 5000];
        for filled in [0, KEPT_LINES] {
            let shared = list.seal_shared(&p, now, &text).unwrap();
            // Other lengths' armorings, as other members' copies leave them.
            for slot in shared.lines.iter().skip(1).take(filled) {
                slot.set(Arc::new(b"other".to_vec())).unwrap();
            }
            let own = list
                .seal_to_member(&EncryptionKeys::of(&public, &p, now).unwrap(), &shared)
                .unwrap();
            let len = shared.lines.iter().filter(|l| l.get().is_some()).count();
            if filled == 0 {
                assert!(!own.shared.is_empty(), "shared with copies of its length");
                assert_eq!(len, 1);
            } else {
                assert!(own.shared.is_empty(), "its own armor, not kept");
                assert_eq!(len, KEPT_LINES, "nothing more kept");
            }
            let opened = open_copy(&p, &member, &list.cert(), &own.to_vec()).unwrap();
            assert_eq!(opened.plaintext.expose(), &text[..], "filled {filled}");
        }
    }
}
