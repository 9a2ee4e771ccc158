//! S/MIME (RFC 8551) for members with an X.509 certificate: each copy is
//! the same wrapped message as an OpenPGP copy (`message/rfc822;
//! forwarded=no` around the protected-headers entity), `multipart/signed`
//! by the list's own S/MIME certificate, then enveloped (AES-256-CBC) to
//! that member's certificate alone. OpenSSL's CMS does the cryptography
//! (it is linked already, through Sequoia's backend and native-tls); see
//! docs/ARCHITECTURE.md for why CBC, why the wrapper, and what each reader
//! was measured to take.

use std::path::Path;

use chrono::{DateTime, Utc};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;

/// The list's own S/MIME identity: its certificate (with the chain that
/// follows it in the file) and secret key.
#[derive(Clone)]
pub struct SmimeIdentity {
    pub cert: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl std::fmt::Debug for SmimeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SmimeIdentity({}, key redacted)",
            fingerprint(&self.cert)
        )
    }
}

impl SmimeIdentity {
    /// Reads the certificate file (PEM: the list's certificate first, then
    /// any intermediates) and the key file (PEM); they must belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<SmimeIdentity, String> {
        let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|_| format!("{}: not a PEM certificate", cert.display()))?
            .into_iter();
        let first = certs
            .next()
            .ok_or_else(|| format!("{}: no certificate in it", cert.display()))?;
        let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
        // An empty passphrase: an encrypted key fails here instead of
        // OpenSSL prompting on a terminal.
        let key_parsed = PKey::private_key_from_pem_passphrase(&key_pem, b"")
            .map_err(|_| format!("{}: not an unencrypted PEM private key", key.display()))?;
        if !matches!(
            key_parsed.id(),
            openssl::pkey::Id::RSA | openssl::pkey::Id::EC
        ) {
            return Err(format!(
                "{}: an RSA or EC key is needed (copies are signed with SHA-256)",
                key.display()
            ));
        }
        let matches = first
            .public_key()
            .map(|pk| pk.public_eq(&key_parsed))
            .unwrap_or(false);
        if !matches {
            return Err(format!(
                "{} is not the key of the certificate in {}",
                key.display(),
                cert.display()
            ));
        }
        Ok(SmimeIdentity {
            cert: first,
            chain: certs.collect(),
            key: key_parsed,
        })
    }

    /// Every problem with the list's own certificate at `now` for signing
    /// as `address`: (problem, unusable). An expired or mismatched list
    /// certificate still signs, but readers flag every copy.
    pub fn problems(
        &self,
        address: &str,
        now: DateTime<Utc>,
        warn_days: i64,
    ) -> Vec<(String, bool)> {
        let mut out = validity(&self.cert, now, warn_days);
        if let Some(ku) = self.cert.key_usage() {
            use openssl::x509::X509KeyUsage as Ku;
            let ec = self.key.id() == openssl::pkey::Id::EC;
            if !ku.contains(if ec {
                Ku::KEY_AGREEMENT
            } else {
                Ku::KEY_ENCIPHERMENT
            }) {
                out.push((
                    "the key usage forbids encryption to it: S/MIME members cannot encrypt posts and acknowledgements to the list".into(),
                    false,
                ));
            }
        }
        if let Some(ku) = self.cert.key_usage()
            && !ku.contains(openssl::x509::X509KeyUsage::DIGITAL_SIGNATURE)
        {
            out.push(("the key usage lacks digitalSignature".into(), true));
        }
        if let Some(eku) = self.cert.extended_key_usage()
            && !eku.contains(openssl::x509::X509ExtendedKeyUsage::SMIME)
        {
            out.push(("the extended key usage lacks emailProtection".into(), true));
        }
        out.extend(weak_signature_problem(&self.cert));
        if !emails(&self.cert)
            .iter()
            .any(|e| e.eq_ignore_ascii_case(address))
        {
            out.push((
                format!(
                    "the certificate does not name {address}: readers flag the copies' signature"
                ),
                false,
            ));
        }
        out
    }

    /// Decrypts CMS enveloped data (DER or BER) addressed to the list's
    /// certificate: a member's S/MIME post.
    pub fn decrypt(&self, der: &[u8]) -> Result<Vec<u8>, String> {
        CmsContentInfo::from_der(der)
            .and_then(|cms| cms.decrypt(&self.key, &self.cert))
            .map_err(|_| "the S/MIME message is not encrypted to the list's certificate".to_owned())
    }

    /// A detached CMS signature (DER) over `content`, made with SHA-256,
    /// carrying the list's certificate and chain.
    pub fn sign_detached(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        let mut chain = Stack::new().map_err(|e| e.to_string())?;
        for c in &self.chain {
            chain.push(c.clone()).map_err(|e| e.to_string())?;
        }
        let cms = CmsContentInfo::sign(
            Some(&self.cert),
            Some(&self.key),
            Some(&chain),
            Some(content),
            CMSOptions::DETACHED | CMSOptions::BINARY,
        )
        .map_err(|e| format!("S/MIME signing failed: {e}"))?;
        cms.to_der().map_err(|e| e.to_string())
    }

    /// `entity` (a MIME entity, CRLF) as `multipart/signed` by the list.
    pub fn signed_entity(&self, entity: &[u8]) -> Result<Vec<u8>, String> {
        let signature = self.sign_detached(entity)?;
        let boundary = loop {
            let b = format!("es-{}", crate::crypto::random_hex(12));
            if memchr::memmem::find(entity, b.as_bytes()).is_none() {
                break b;
            }
        };
        let mut out = Vec::with_capacity(entity.len() + signature.len() * 2 + 512);
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"{boundary}\"\r\n\r\n\
This is an S/MIME signed message\r\n--{boundary}\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(entity);
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(&crate::lines::base64_lines(&signature));
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        Ok(out)
    }
}

/// A member's X.509 certificate.
#[derive(Debug, Clone)]
pub struct SmimeCert {
    pub cert: X509,
}

impl SmimeCert {
    /// Reads `address`'s certificate from a file, PEM or DER. Of a PEM
    /// file with several (a chain), the one naming the address that is no
    /// CA's, else the first that is no CA's: never a CA's key by mistake.
    pub fn load_for(path: &Path, address: &str) -> Result<SmimeCert, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("certificate file {} unreadable: {e}", path.display()))?;
        let certs = X509::stack_from_pem(&bytes)
            .ok()
            .filter(|c| !c.is_empty())
            .or_else(|| X509::from_der(&bytes).ok().map(|c| vec![c]))
            .ok_or_else(|| {
                format!(
                    "certificate file {} is not an X.509 certificate (PEM or DER)",
                    path.display()
                )
            })?;
        let names = |c: &X509| emails(c).iter().any(|e| e.eq_ignore_ascii_case(address));
        let cert = certs
            .iter()
            .find(|c| !is_ca(c) && names(c))
            .or_else(|| certs.iter().find(|c| !is_ca(c)))
            .unwrap_or(&certs[0])
            .clone();
        Ok(SmimeCert { cert })
    }

    /// SHA-256 fingerprint, upper-case hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// SHA-256 of the certificate's public key (SubjectPublicKeyInfo),
    /// upper-case hex: who signed, whichever certificate carries the key
    /// (a signature binds the key, not the certificate).
    pub fn key_fingerprint(&self) -> Option<String> {
        self.cert
            .public_key()
            .and_then(|k| k.public_key_to_der())
            .ok()
            .map(|der| {
                openssl::sha::sha256(&der)
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect()
            })
    }

    /// `content` enveloped to this certificate alone: AES-256-CBC, the key
    /// transported by RSA (PKCS #1 v1.5) or agreed by ECDH, as the
    /// certificate's key type says. DER.
    pub fn envelope(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        let mut to = Stack::new().map_err(|e| e.to_string())?;
        to.push(self.cert.clone()).map_err(|e| e.to_string())?;
        let cms = CmsContentInfo::encrypt(&to, content, Cipher::aes_256_cbc(), CMSOptions::BINARY)
            .map_err(|e| format!("S/MIME encryption failed: {e}"))?;
        cms.to_der().map_err(|e| e.to_string())
    }

    /// The e-mail addresses the certificate names (subjectAltName
    /// rfc822Name, and the subject's emailAddress), lower case.
    pub fn emails(&self) -> Vec<String> {
        emails(&self.cert)
    }

    /// When the certificate stops being valid.
    pub fn not_after(&self) -> Option<DateTime<Utc>> {
        asn1_time(self.cert.not_after())
    }

    /// Every problem with the certificate for receiving copies at `now`
    /// as `address` (expiry within `warn_days` is named): (problem, unusable).
    pub fn problems(
        &self,
        address: &str,
        now: DateTime<Utc>,
        warn_days: i64,
    ) -> Vec<(String, bool)> {
        let c = &self.cert;
        let mut out = validity(c, now, warn_days);
        if is_ca(c) {
            out.push((
                "a CA's certificate (keyCertSign), not the member's own".into(),
                true,
            ));
        }
        let key = c.public_key().ok();
        let (rsa, ec) = match key.as_ref().map(|k| k.id()) {
            Some(openssl::pkey::Id::RSA) => (true, false),
            Some(openssl::pkey::Id::EC) => (false, true),
            _ => (false, false),
        };
        if !rsa && !ec {
            out.push((
                "the certificate's key is neither RSA nor EC: copies cannot be encrypted to it"
                    .into(),
                true,
            ));
        }
        if rsa && key.as_ref().is_some_and(|k| k.bits() < 2048) {
            out.push((
                format!(
                    "RSA key of {} bits (under 2048)",
                    key.as_ref().map_or(0, |k| k.bits())
                ),
                true,
            ));
        }
        if ec {
            out.push((
                "an EC certificate: Thunderbird's NSS (3.87) and gpgsm 2.2 cannot decrypt ECDH S/MIME; prefer an RSA certificate".into(),
                false,
            ));
        }
        if let Some(ku) = c.key_usage() {
            use openssl::x509::X509KeyUsage as Ku;
            let needed = if ec {
                Ku::KEY_AGREEMENT
            } else {
                Ku::KEY_ENCIPHERMENT
            };
            if !ku.contains(needed) {
                out.push((
                    format!(
                        "the key usage lacks {} (copies cannot be encrypted to it)",
                        if ec {
                            "keyAgreement"
                        } else {
                            "keyEncipherment"
                        }
                    ),
                    true,
                ));
            }
        }
        if let Some(eku) = c.extended_key_usage()
            && !eku.contains(openssl::x509::X509ExtendedKeyUsage::SMIME)
        {
            out.push(("the extended key usage lacks emailProtection".into(), true));
        }
        if let Some(ku) = c.key_usage()
            && !ku.contains(openssl::x509::X509KeyUsage::DIGITAL_SIGNATURE)
        {
            out.push((
                "the certificate cannot sign (no digitalSignature): the member's posts and acknowledgements cannot be verified".into(),
                false,
            ));
        }
        out.extend(weak_signature_problem(c));
        if !self
            .emails()
            .iter()
            .any(|e| e.eq_ignore_ascii_case(address))
        {
            out.push((format!("the certificate does not name {address}"), false));
        }
        out
    }
}

/// Not yet valid, expired (unusable), or expiring within `warn_days`.
fn validity(c: &X509, now: DateTime<Utc>, warn_days: i64) -> Vec<(String, bool)> {
    match (asn1_time(c.not_before()), asn1_time(c.not_after())) {
        (None, _) | (_, None) => vec![("the certificate's validity cannot be read".into(), true)],
        (Some(from), _) if from > now => vec![(
            format!(
                "the certificate is valid only from {}",
                from.format("%Y-%m-%d")
            ),
            true,
        )],
        (_, Some(to)) if to <= now => vec![(
            format!("the certificate expired on {}", to.format("%Y-%m-%d")),
            true,
        )],
        (_, Some(to)) if to <= now + chrono::Duration::days(warn_days) => vec![(
            format!(
                "expires on {} (in {} days)",
                to.format("%Y-%m-%d"),
                (to - now).num_days()
            ),
            false,
        )],
        _ => Vec::new(),
    }
}

/// A CA's certificate: one that may sign certificates.
fn is_ca(c: &X509) -> bool {
    c.key_usage()
        .is_some_and(|ku| ku.contains(openssl::x509::X509KeyUsage::KEY_CERT_SIGN))
}

/// The warning for a certificate signed with SHA-1, MD5 or older.
fn weak_signature_problem(c: &X509) -> Option<(String, bool)> {
    weak_signature(c).then(|| {
        (
            "the certificate is signed with SHA-1, MD5 or older".into(),
            false,
        )
    })
}

/// Signed with SHA-1, MD5 or older.
fn weak_signature(c: &X509) -> bool {
    matches!(
        c.signature_algorithm().object().nid(),
        Nid::MD2WITHRSAENCRYPTION
            | Nid::MD4WITHRSAENCRYPTION
            | Nid::MD5WITHRSAENCRYPTION
            | Nid::SHA1WITHRSAENCRYPTION
            | Nid::SHA1WITHRSA
            | Nid::ECDSA_WITH_SHA1
            | Nid::DSAWITHSHA1
    )
}

/// The e-mail addresses a certificate names, lower case.
fn emails(c: &X509) -> Vec<String> {
    let mut out: Vec<String> = c
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|n| n.email().map(str::to_ascii_lowercase))
        .collect();
    out.extend(
        c.subject_name()
            .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
            .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase())),
    );
    out
}

/// Why an S/MIME signature (the PST's, or a member's post) is not taken. Its words go into a clear
/// refusal: they name the problem, never the mail's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmimeProblem {
    #[error("the S/MIME signature cannot be read ({0})")]
    Unreadable(&'static str),
    #[error("the S/MIME signature has no signer")]
    NoSigner,
    #[error("the S/MIME signature has {0} signers; one PST signature per mail")]
    Several(usize),
    #[error(
        "the S/MIME signature is not by a PST certificate or a member's (certificates are pinned by fingerprint; a CA does not make a PST)"
    )]
    Unpinned,
    #[error("the S/MIME signature does not verify: the signed part was changed after signing")]
    Bad,
    #[error("the S/MIME signature uses {0}; SHA-256 or stronger is needed")]
    Weak(&'static str),
    #[error("the S/MIME signature has no signing time; its freshness cannot be checked")]
    NoTime,
    #[error("the signing certificate cannot be used now: {0}")]
    Certificate(String),
    #[error("the S/MIME message is not encrypted to the list's certificate")]
    NotForList,
}

/// A good PST S/MIME signature: which pinned certificate made it, when it
/// says it was made, and its identity for the replay cache.
#[derive(Debug, Clone)]
pub struct SmimeVerified {
    /// Index into the pinned certificates.
    pub signer: usize,
    pub fingerprint: String,
    pub signing_time: DateTime<Utc>,
    /// The replay identity: SHA-256 of the signer's key fingerprint and the
    /// signed attributes, hex.
    pub digest: String,
}

/// The largest detached S/MIME signature read (certificates included).
pub const MAX_SIGNATURE: usize = 64 << 10;

/// Verifies a detached S/MIME (CMS SignedData) `signature` over `content`
/// (the first part of a `multipart/signed`, byte for byte) against the
/// PST's `pinned` certificates only: no CA decides who the PST is, and a
/// certificate the mail carries is never used to find the signer. One
/// signer; SHA-256 or stronger; a signing time; the certificate valid at
/// `now`.
pub fn verify_detached(
    content: &[u8],
    signature: &[u8],
    pinned: &[SmimeCert],
    now: DateTime<Utc>,
) -> Result<SmimeVerified, SmimeProblem> {
    if signature.len() > MAX_SIGNATURE {
        return Err(SmimeProblem::Unreadable("larger than 64 KiB"));
    }
    verify(Some(content), signature, pinned, now).map(|(v, _)| v)
}

/// As [`verify_detached`] for opaque signed-data (`smime-type=signed-data`,
/// the content inside the CMS, as Outlook signs inside its encryption):
/// returns the signed content too. `max` bounds the whole CMS.
pub fn verify_attached(
    signed_data: &[u8],
    pinned: &[SmimeCert],
    now: DateTime<Utc>,
    max: usize,
) -> Result<(SmimeVerified, Vec<u8>), SmimeProblem> {
    if signed_data.len() > max {
        return Err(SmimeProblem::Unreadable(
            "larger than the message size limit",
        ));
    }
    verify(None, signed_data, pinned, now)
}

fn verify(
    detached: Option<&[u8]>,
    signature: &[u8],
    pinned: &[SmimeCert],
    now: DateTime<Utc>,
) -> Result<(SmimeVerified, Vec<u8>), SmimeProblem> {
    use cms::cert::x509::der::{self, Decode, Encode};
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    const SIGNED_DATA: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
    const SIGNING_TIME: der::oid::ObjectIdentifier =
        der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
    // BER as some signers write it (gpgsm: indefinite lengths), read by
    // OpenSSL once (the verification below uses the same parse) and
    // written again as DER for the structure checks below.
    let mut parsed =
        CmsContentInfo::from_der(signature).map_err(|_| SmimeProblem::Unreadable("not CMS"))?;
    let der = parsed
        .to_der()
        .map_err(|_| SmimeProblem::Unreadable("not CMS"))?;
    let info = ContentInfo::from_der(&der).map_err(|_| SmimeProblem::Unreadable("not DER CMS"))?;
    if info.content_type != SIGNED_DATA {
        return Err(SmimeProblem::Unreadable("not SignedData"));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|_| SmimeProblem::Unreadable("damaged SignedData"))?;
    let signers: Vec<_> = signed.signer_infos.0.iter().collect();
    let si = match signers.as_slice() {
        [] => return Err(SmimeProblem::NoSigner),
        [one] => *one,
        more => return Err(SmimeProblem::Several(more.len())),
    };
    match (detached, signed.encap_content_info.econtent.is_some()) {
        (Some(_), true) => {
            return Err(SmimeProblem::Unreadable(
                "content inside the signature, not detached",
            ));
        }
        (None, false) => return Err(SmimeProblem::Unreadable("no content inside the signature")),
        _ => {}
    }
    match si.digest_alg.oid.to_string().as_str() {
        // SHA-256, SHA-384, SHA-512
        "2.16.840.1.101.3.4.2.1" | "2.16.840.1.101.3.4.2.2" | "2.16.840.1.101.3.4.2.3" => {}
        "1.3.14.3.2.26" => return Err(SmimeProblem::Weak("SHA-1")),
        "1.2.840.113549.2.5" => return Err(SmimeProblem::Weak("MD5")),
        _ => return Err(SmimeProblem::Weak("an unknown digest")),
    }
    match si.signature_algorithm.oid.to_string().as_str() {
        // rsaEncryption, sha256/384/512WithRSA, RSASSA-PSS, ecdsa-with-SHA256/384/512
        "1.2.840.113549.1.1.1"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.113549.1.1.12"
        | "1.2.840.113549.1.1.13"
        | "1.2.840.113549.1.1.10"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10045.4.3.3"
        | "1.2.840.10045.4.3.4" => {}
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => return Err(SmimeProblem::Weak("SHA-1")),
        "1.2.840.113549.1.1.4" => return Err(SmimeProblem::Weak("MD5")),
        _ => return Err(SmimeProblem::Weak("an unknown signature algorithm")),
    }
    let time = si
        .signed_attrs
        .as_ref()
        .and_then(|attrs| attrs.iter().find(|a| a.oid == SIGNING_TIME))
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.to_der().ok())
        .and_then(|d| cms::cert::x509::time::Time::from_der(&d).ok())
        .and_then(|t| DateTime::from_timestamp(t.to_unix_duration().as_secs() as i64, 0))
        .ok_or(SmimeProblem::NoTime)?;
    // The replay identity: what the signature covers (the signed
    // attributes, DER, with the content's digest and the signing time), not
    // the signature value, which a third party can re-encode into another
    // that verifies (ECDSA's (r, n-s); PSS with a leading zero dropped).
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or(SmimeProblem::NoTime)?
        .to_der()
        .map_err(|_| SmimeProblem::Unreadable("damaged signed attributes"))?;
    // Only the pinned certificates the signer identifier names (issuer and
    // serial, or subject key id) are tried: an unknown signer costs no
    // verification per pin.
    let names = |pin: &SmimeCert| match &si.sid {
        cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(is) => {
            let issuer = is
                .issuer
                .to_der()
                .ok()
                .and_then(|d| openssl::x509::X509Name::from_der(&d).ok());
            let same_issuer = issuer.is_some_and(|n| {
                matches!(
                    n.try_cmp(pin.cert.issuer_name()),
                    Ok(std::cmp::Ordering::Equal)
                )
            });
            let serial = |b: &[u8]| {
                b.iter()
                    .skip_while(|b| **b == 0)
                    .copied()
                    .collect::<Vec<u8>>()
            };
            let pinned_serial = pin
                .cert
                .serial_number()
                .to_bn()
                .map(|bn| bn.to_vec())
                .unwrap_or_default();
            same_issuer && serial(is.serial_number.as_bytes()) == serial(&pinned_serial)
        }
        cms::signed_data::SignerIdentifier::SubjectKeyIdentifier(ski) => pin
            .cert
            .subject_key_id()
            .is_some_and(|k| k.as_slice() == ski.0.as_bytes()),
    };
    // OpenSSL verifies, offered that pinned certificate alone and told to
    // use no other (NOINTERN) and to build no chain (pinning, not PKI).
    for (i, pin) in pinned.iter().enumerate().filter(|(_, p)| names(p)) {
        let mut certs = Stack::new().map_err(|_| SmimeProblem::Unreadable("out of memory"))?;
        certs
            .push(pin.cert.clone())
            .map_err(|_| SmimeProblem::Unreadable("out of memory"))?;
        // The content is written out only when it is inside the CMS: a
        // detached signature's content is the caller's already.
        let mut out = Vec::new();
        let verdict = parsed.verify(
            Some(&certs),
            None,
            detached,
            detached.is_none().then_some(&mut out),
            CMSOptions::BINARY | CMSOptions::NOINTERN | CMSOptions::NO_SIGNER_CERT_VERIFY,
        );
        if verdict.is_err() {
            // Named by the identifier (which no signature covers), but not
            // verified by its key: another pin may share the identifier.
            continue;
        }
        if let Some((problem, _)) = signing_problems(&pin.cert, now).into_iter().next() {
            return Err(SmimeProblem::Certificate(problem));
        }
        let Some(key) = pin.key_fingerprint() else {
            return Err(SmimeProblem::Unreadable("the pinned certificate's key"));
        };
        let mut identity = key.clone().into_bytes();
        identity.extend_from_slice(&attrs);
        let digest = openssl::sha::sha256(&identity)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        return Ok((
            SmimeVerified {
                signer: i,
                fingerprint: key,
                signing_time: time,
                digest,
            },
            out,
        ));
    }
    if pinned.iter().any(names) {
        Err(SmimeProblem::Bad)
    } else {
        Err(SmimeProblem::Unpinned)
    }
}

/// What makes a pinned PST certificate unfit to sign now: (problem, unusable).
fn signing_problems(c: &X509, now: DateTime<Utc>) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = validity(c, now, 0)
        .into_iter()
        .filter(|(_, unusable)| *unusable)
        .collect();
    if let Ok(key) = c.public_key()
        && key.id() == openssl::pkey::Id::RSA
        && key.bits() < 2048
    {
        out.push((
            format!("has an RSA key of {} bits (under 2048)", key.bits()),
            true,
        ));
    }
    if let Some(ku) = c.key_usage()
        && !ku.contains(openssl::x509::X509KeyUsage::DIGITAL_SIGNATURE)
    {
        out.push(("its key usage lacks digitalSignature".into(), true));
    }
    out
}

/// Problems with a PST member's pinned S/MIME signing certificate, for
/// `check` and the key check: (problem, unusable).
pub fn pst_signing_problems(
    cert: &SmimeCert,
    address: &str,
    now: DateTime<Utc>,
    warn_days: i64,
) -> Vec<(String, bool)> {
    let mut out = validity(&cert.cert, now, warn_days);
    // Validity is above (with the warning window); the rest as at verify time.
    out.extend(
        signing_problems(&cert.cert, now)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("the certificate")),
    );
    out.extend(weak_signature_problem(&cert.cert));
    if !emails(&cert.cert)
        .iter()
        .any(|e| e.eq_ignore_ascii_case(address))
    {
        out.push((format!("the certificate does not name {address}: its mail would be refused (From is not the signer's)"), true));
    }
    out
}

fn fingerprint(cert: &X509) -> String {
    cert.digest(MessageDigest::sha256())
        .map(|d| d.iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_default()
}

fn asn1_time(t: &openssl::asn1::Asn1TimeRef) -> Option<DateTime<Utc>> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    DateTime::from_timestamp(i64::from(d.days) * 86400 + i64::from(d.secs), 0)
}

/// One member's S/MIME copy body: `inner` (the protected-headers entity
/// an OpenPGP copy carries) wrapped as `message/rfc822; forwarded=no`,
/// signed by the list, enveloped to `to`. DER, for the outer message.
pub fn seal_copy(list: &SmimeIdentity, to: &SmimeCert, inner: &[u8]) -> Result<Vec<u8>, String> {
    let mut wrapped = Vec::with_capacity(inner.len() + 96);
    wrapped.extend_from_slice(
        b"Content-Type: message/rfc822; forwarded=no\r\n\r\nMIME-Version: 1.0\r\n",
    );
    wrapped.extend_from_slice(inner);
    let signed = list.signed_entity(&wrapped)?;
    to.envelope(&signed)
}

/// The outer message body for an enveloped copy: the headers' caller
/// writes From/To/Subject; this is the MIME part, base64 lines.
pub fn enveloped_part(der: &[u8]) -> Vec<u8> {
    let mut out = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n"
        .to_vec();
    out.extend_from_slice(&crate::lines::base64_lines(der));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .into()
    }

    struct Spec {
        email: &'static str,
        bits: u32,
        from_days: i64,
        to_days: i64,
        encipher: bool,
        ca: bool,
        digest: fn() -> MessageDigest,
    }

    const GOOD: Spec = Spec {
        email: "m@x.example",
        bits: 2048,
        from_days: -1,
        to_days: 365,
        encipher: true,
        ca: false,
        digest: MessageDigest::sha256,
    };

    fn cert(spec: Spec) -> (X509, PKey<Private>) {
        let key = PKey::from_rsa(Rsa::generate(spec.bits).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "m").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        let at = |days: i64| {
            Asn1Time::from_unix((now() + chrono::Duration::days(days)).timestamp()).unwrap()
        };
        b.set_not_before(&at(spec.from_days)).unwrap();
        b.set_not_after(&at(spec.to_days)).unwrap();
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature();
        if spec.encipher {
            ku.key_encipherment();
        }
        if spec.ca {
            ku.key_cert_sign();
        }
        b.append_extension(ku.build().unwrap()).unwrap();
        b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .email(spec.email)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&key, (spec.digest)()).unwrap();
        (b.build(), key)
    }

    fn problems(spec: Spec) -> Vec<(String, bool)> {
        SmimeCert { cert: cert(spec).0 }.problems("m@x.example", now(), 30)
    }

    #[test]
    fn a_good_certificate_has_no_problems_and_each_fault_is_named() {
        assert_eq!(problems(GOOD), vec![]);
        let named = |spec: Spec, what: &str, unusable: bool| {
            let p = problems(spec);
            assert!(
                p.iter().any(|(t, u)| t.contains(what) && *u == unusable),
                "{what}: {p:?}"
            );
        };
        named(
            Spec {
                to_days: -1,
                from_days: -30,
                ..GOOD
            },
            "expired on 2026-11-23",
            true,
        );
        named(
            Spec {
                from_days: 2,
                ..GOOD
            },
            "valid only from 2026-11-26",
            true,
        );
        named(
            Spec {
                to_days: 10,
                ..GOOD
            },
            "expires on 2026-12-04 (in 10 days)",
            false,
        );
        named(Spec { bits: 1024, ..GOOD }, "RSA key of 1024 bits", true);
        named(
            Spec {
                encipher: false,
                ..GOOD
            },
            "lacks keyEncipherment",
            true,
        );
        named(
            Spec {
                digest: MessageDigest::sha1,
                ..GOOD
            },
            "SHA-1, MD5 or older",
            false,
        );
        named(
            Spec {
                email: "other@x.example",
                ..GOOD
            },
            "does not name m@x.example",
            false,
        );
    }

    #[test]
    fn a_copy_opens_with_the_members_key_and_carries_the_lists_signature() {
        let (list_cert, list_key) = cert(Spec {
            email: "list@x.example",
            ..GOOD
        });
        let list = SmimeIdentity {
            cert: list_cert.clone(),
            chain: Vec::new(),
            key: list_key,
        };
        let (member_cert, member_key) = cert(GOOD);
        let member = SmimeCert {
            cert: member_cert.clone(),
        };
        for len in [0usize, 1, 57, 76, 1000, 70_000] {
            let inner = format!("Content-Type: text/plain\r\n\r\n{}\r\n", "z".repeat(len));
            let der = seal_copy(&list, &member, inner.as_bytes()).unwrap();
            let cms = CmsContentInfo::from_der(&der).unwrap();
            let signed = cms.decrypt(&member_key, &member_cert).unwrap();
            let text = String::from_utf8_lossy(&signed).into_owned();
            assert!(text.starts_with("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256"));
            // The signed part is the wrapped message, exactly.
            let wrapped = format!(
                "Content-Type: message/rfc822; forwarded=no\r\n\r\nMIME-Version: 1.0\r\n{inner}"
            );
            assert!(text.contains(&wrapped), "{len}");
            let mut sig =
                CmsContentInfo::from_der(&list.sign_detached(wrapped.as_bytes()).unwrap()).unwrap();
            let mut certs = Stack::new().unwrap();
            certs.push(list_cert.clone()).unwrap();
            sig.verify(
                Some(&certs),
                None,
                Some(wrapped.as_bytes()),
                None,
                CMSOptions::BINARY | CMSOptions::NO_SIGNER_CERT_VERIFY,
            )
            .unwrap();
        }
        // Another key cannot open it.
        let (_, other_key) = cert(GOOD);
        let der = seal_copy(&list, &member, b"x").unwrap();
        assert!(
            CmsContentInfo::from_der(&der)
                .unwrap()
                .decrypt(&other_key, &member_cert)
                .is_err()
        );
    }

    #[test]
    fn of_a_chain_file_the_members_own_certificate_is_taken_never_the_cas() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = cert(Spec {
            email: "ca@x.example",
            ca: true,
            ..GOOD
        });
        let (own, _) = cert(GOOD);
        let path = dir.path().join("chain.pem");
        let mut pem = ca.to_pem().unwrap();
        pem.extend(own.to_pem().unwrap());
        std::fs::write(&path, pem).unwrap();
        let got = SmimeCert::load_for(&path, "m@x.example").unwrap();
        assert_eq!(got.fingerprint(), fingerprint(&own));
        // A CA's certificate alone is named as unusable.
        std::fs::write(&path, ca.to_pem().unwrap()).unwrap();
        let got = SmimeCert::load_for(&path, "m@x.example").unwrap();
        assert!(
            got.problems("m@x.example", now(), 30)
                .iter()
                .any(|(p, unusable)| p.contains("a CA's certificate") && *unusable)
        );
        // DER too.
        std::fs::write(&path, own.to_der().unwrap()).unwrap();
        assert_eq!(
            SmimeCert::load_for(&path, "m@x.example")
                .unwrap()
                .fingerprint(),
            fingerprint(&own)
        );
    }

    #[test]
    fn the_lists_own_certificate_is_checked_for_signing() {
        let (c, key) = cert(Spec {
            email: "list@x.example",
            to_days: 10,
            ..GOOD
        });
        let id = SmimeIdentity {
            cert: c,
            chain: Vec::new(),
            key,
        };
        let p = id.problems("other@x.example", now(), 30);
        assert!(
            p.iter().any(|(t, u)| t.contains("expires on") && !u),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(t, _)| t.contains("does not name other@x.example")),
            "{p:?}"
        );
        assert!(id.problems("list@x.example", now(), 5).is_empty());
    }

    #[test]
    fn the_lists_certificate_and_key_must_belong_together() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = cert(GOOD);
        let (_, other) = cert(GOOD);
        std::fs::write(dir.path().join("c.pem"), c.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("k.pem"),
            other.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        let err =
            SmimeIdentity::load(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap_err();
        assert!(err.contains("is not the key of the certificate"), "{err}");
    }
}
