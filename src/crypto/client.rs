//! What a member's or PST's mail client does, for the demo, the tests and
//! the benchmarks: open a copy, make a key, sign as the PST. Not used by the
//! daemon.

use std::io::{Read, Write};

use chrono::{DateTime, Utc};
use openpgp::cert::prelude::*;
use openpgp::crypto::KeyPair;
use openpgp::parse::Parse;
use openpgp::parse::stream::DecryptorBuilder;
use openpgp::policy::Policy;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::{Cert, Fingerprint, KeyHandle};
use sequoia_openpgp as openpgp;

use crate::secret::Secret;

use super::seal::Opener;
use super::{at, encryption_flags};

/// What opening a member copy revealed (used by the demo and the tests).
#[derive(Debug)]
pub struct OpenedCopy {
    pub plaintext: Secret,
    /// Whom the PKESK packets name: a copy for one member names only that member's key.
    pub recipients: Vec<KeyHandle>,
    /// The certificate whose good signature was inside.
    pub signer: Option<Fingerprint>,
}

/// Decrypts a member copy with that member's secret key and verifies the
/// list's signature inside; fails unless the signature is good.
pub fn open_copy(
    p: &dyn Policy,
    member_tsk: &Cert,
    list_cert: &Cert,
    ciphertext: &[u8],
) -> anyhow::Result<OpenedCopy> {
    open_copy_at(p, member_tsk, list_cert, ciphertext, None)
}

/// [`open_copy`] as a reader at `at` (default: now) sees it.
pub fn open_copy_at(
    p: &dyn Policy,
    member_tsk: &Cert,
    list_cert: &Cert,
    ciphertext: &[u8],
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<OpenedCopy> {
    let at = at.map(std::time::SystemTime::from);
    let keypairs = member_tsk
        .keys()
        .unencrypted_secret()
        .with_policy(p, None)
        .key_flags(encryption_flags())
        .filter_map(|ka| ka.key().clone().into_keypair().ok())
        .collect();
    let helper = Opener {
        keypairs,
        verify_with: Some(list_cert.clone()),
        recipients: Vec::new(),
        signer: None,
    };
    let mut d = DecryptorBuilder::from_bytes(ciphertext)?.with_policy(p, at, helper)?;
    let mut out = Vec::new();
    d.read_to_end(&mut out)?;
    let helper = d.into_helper();
    Ok(OpenedCopy {
        plaintext: Secret::new(out),
        recipients: helper.recipients,
        signer: helper.signer,
    })
}

/// Generates a v4 certificate like GnuPG 2.2 makes (Ed25519 signing,
/// Cv25519 encryption, SEIPDv1 only), so every client can read what is sent to it.
pub fn generate_key(
    userid: &str,
    created: DateTime<Utc>,
    validity: Option<std::time::Duration>,
) -> anyhow::Result<Cert> {
    let (cert, _rev) = CertBuilder::general_purpose(Some(userid))
        .set_profile(openpgp::Profile::RFC4880)?
        .set_features(openpgp::types::Features::empty().set_seipdv1())?
        .set_creation_time(at(created))
        .set_validity_period(validity)
        .generate()?;
    Ok(cert)
}

/// Armored secret key (for key files written by the demo and tests).
pub fn armored_secret(cert: &Cert) -> anyhow::Result<Vec<u8>> {
    cert.as_tsk().armored().to_vec()
}

/// The signing key of `tsk` usable at `now`, as a keypair.
pub fn signing_keypair(p: &dyn Policy, tsk: &Cert, now: DateTime<Utc>) -> anyhow::Result<KeyPair> {
    tsk.keys()
        .unencrypted_secret()
        .with_policy(p, at(now))
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no usable signing key"))?
        .key()
        .clone()
        .into_keypair()
}

/// Makes an armored detached signature over `data` with `tsk`, as a mail
/// client signing a PGP/MIME part does.
pub fn sign_detached(
    p: &dyn Policy,
    tsk: &Cert,
    now: DateTime<Utc>,
    data: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let keypair = signing_keypair(p, tsk, now)?;
    let mut sink = Vec::new();
    let message = Message::new(&mut sink);
    let message = Armorer::new(message)
        .kind(openpgp::armor::Kind::Signature)
        .build()?;
    let mut signer = Signer::new(message, keypair)?
        .detached()
        .creation_time(at(now))
        .build()?;
    signer.write_all(data)?;
    signer.finalize()?;
    Ok(sink)
}
